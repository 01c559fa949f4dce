"""Filter expressions of `select`: a small, safe language over score columns, compiled to polars.

    quality > 0.6 and n_chars >= 200
    not (dup_line_frac > 0.3) or domain in ('news', 'reference')
    0.2 <= alpha_frac < 0.9 and source is not null

The grammar is a subset of Python's expressions, parsed by `ast` and then checked node by node
against a whitelist; the text is never evaluated. Allowed: column names, numbers, 'strings',
true/false, comparisons (`<`, `<=`, `>`, `>=`, `==`, `!=`, chained), `in (...)` / `not in`
with a list of literals, `is null` / `is not null`, `and`, `or`, `not`, parentheses. Anything
else (calls, attributes, subscripts, arithmetic, ...) is refused with its position.

Missing values follow SQL: a comparison with a null (or a NaN score) is unknown, and a document
passes only when the whole expression is true.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

import polars as pl

from assay.errors import ConfigError

#: longest expression accepted, and its deepest nesting (guards against pathological input,
#: not practical limits)
MAX_CHARS = 4096
MAX_DEPTH = 64

_COMPARE = {
    ast.Lt: "__lt__",
    ast.LtE: "__le__",
    ast.Gt: "__gt__",
    ast.GtE: "__ge__",
    ast.Eq: "__eq__",
    ast.NotEq: "__ne__",
}
_SYMBOL = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_NULL = ("null", "None")
_BOOLS = {"true": True, "True": True, "false": False, "False": False}


@dataclass(frozen=True)
class Where:
    """A parsed filter expression: its text, its syntax tree and the columns it names."""

    text: str
    tree: ast.expr
    columns: tuple[str, ...]

    def compile(self, schema: dict[str, Any], *, available: str = "") -> pl.Expr:
        """The polars expression (true = keep; nulls count as false) over columns of `schema`
        (name -> polars dtype). Raises ConfigError for an unknown column (listing `schema`'s,
        or `available` when given) or a type mismatch."""
        expr = _Compiler(self.text, schema, available).condition(self.tree)
        return expr.fill_null(False)


def parse_where(text: str) -> Where:
    """Parse and check a filter expression's syntax; its columns are checked by `compile`."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("where: the filter expression is empty")
    if len(text) > MAX_CHARS:
        raise ConfigError(f"where: the filter expression is longer than {MAX_CHARS} characters")
    source = " ".join(text.splitlines()).strip()
    try:
        tree = ast.parse(source, mode="eval").body
    except SyntaxError as e:
        at = min(max((e.offset or 1) - 1, 0), len(source))
        raise ConfigError(
            f"where: syntax error at position {at + 1}: {e.msg}\n  {source}\n  {' ' * at}^"
        ) from None
    except (RecursionError, MemoryError, ValueError):
        raise ConfigError(
            f"where: the filter expression is nested more than {MAX_DEPTH} deep"
        ) from None
    if _depth(tree) > MAX_DEPTH:
        raise ConfigError(f"where: the filter expression is nested more than {MAX_DEPTH} deep")
    columns: list[str] = []
    _check(tree, source, columns)
    return Where(source, tree, tuple(dict.fromkeys(columns)))


def _depth(tree: ast.AST) -> int:
    """How deep the tree is, without recursion (so that a deep tree cannot overflow)."""
    deepest, todo = 0, [(tree, 1)]
    while todo:
        node, d = todo.pop()
        deepest = max(deepest, d)
        if d <= MAX_DEPTH:
            todo.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _error(text: str, node: ast.AST, what: str) -> ConfigError:
    """A message naming the piece of `text` (one line) at `node`, with a caret under it."""
    at = getattr(node, "col_offset", 0)
    piece = ast.get_source_segment(text, node) or "the expression"
    return ConfigError(f"where: {piece} at position {at + 1} {what}\n  {text}\n  {' ' * at}^")


def _check(node: ast.AST, text: str, columns: list[str]) -> None:
    """Refuse every node outside the grammar; collect the column names."""
    if isinstance(node, ast.BoolOp):
        for v in node.values:
            _check(v, text, columns)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        _check(node.operand, text, columns)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        if not _is_number(node.operand):
            raise _error(text, node, "is not allowed: a sign goes before a number")
    elif isinstance(node, ast.Compare):
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                if not isinstance(right, ast.Tuple | ast.List | ast.Set):
                    raise _error(text, right, "must be a list of values: in (a, b, ...)")
                for item in right.elts:
                    if not _is_literal(item):
                        raise _error(text, item, "is not a literal value")
            elif isinstance(op, ast.Is | ast.IsNot):
                if not _is_null(right):
                    raise _error(text, right, "is not allowed after 'is': use 'is null'")
            elif type(op) not in _COMPARE:  # pragma: no cover - every other op is listed
                raise _error(text, node, "uses an unknown comparison")
        _check(node.left, text, columns)
        for op, right in zip(node.ops, node.comparators, strict=True):
            if not isinstance(op, ast.In | ast.NotIn | ast.Is | ast.IsNot):
                _check(right, text, columns)
    elif isinstance(node, ast.Name):
        if _is_null(node):
            raise _error(text, node, "goes only after 'is': x is null, x is not null")
        if node.id not in _BOOLS:
            columns.append(node.id)
    elif isinstance(node, ast.Constant):
        if node.value is None:
            raise _error(text, node, "goes only after 'is': x is null, x is not null")
        if not _is_literal(node):
            raise _error(text, node, "is not a number, a 'string', true or false")
    else:
        what = {
            ast.Call: "is a function call, which is not allowed",
            ast.Attribute: "is an attribute, which is not allowed",
            ast.Subscript: "is a subscript, which is not allowed",
            ast.BinOp: "is arithmetic, which is not allowed",
        }.get(type(node), "is not allowed (comparisons, and/or/not, in, is null only)")
        raise _error(text, node, what)


def _is_number(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    )


def _is_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        return _is_number(node.operand)
    if isinstance(node, ast.Name):
        return node.id in _BOOLS
    return isinstance(node, ast.Constant) and isinstance(node.value, int | float | str | bool)


def _is_null(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id in _NULL) or (
        isinstance(node, ast.Constant) and node.value is None
    )


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Name):
        return _BOOLS[node.id]
    if isinstance(node, ast.UnaryOp):
        value = _literal(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    assert isinstance(node, ast.Constant)
    return node.value


def _kind_of(dtype: Any) -> str:
    if dtype == pl.Null:  # a field with no value in a batch: compares as unknown
        return "null"
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_numeric():
        return "number"
    if dtype in (pl.String, pl.Categorical, pl.Enum) or isinstance(dtype, pl.Categorical | pl.Enum):
        return "text"
    return str(dtype)


_DTYPES = {"number": pl.Float64, "text": pl.String, "bool": pl.Boolean}


def _member(expr: pl.Expr, kind: str, values: list[Any]) -> pl.Expr:
    """`expr in values`, compared as `==` would (numbers as float64); null for a null."""
    if not values:
        return pl.when(expr.is_null()).then(None).otherwise(False)
    dtype = _DTYPES[kind if kind != "null" else _literal_kind(values[0])]
    return expr.cast(dtype).is_in(pl.Series(values, dtype=dtype).implode())


def _literal_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return "text" if isinstance(value, str) else "number"


class _Compiler:
    """Turn a checked tree into a polars expression, with the kind of what each node gives."""

    def __init__(self, text: str, schema: dict[str, Any], available: str):
        self.text, self.schema, self.available = text, schema, available

    def visit(self, node: ast.AST) -> tuple[pl.Expr, str]:
        if isinstance(node, ast.BoolOp):
            parts = [self.condition(v) for v in node.values]
            combine = pl.Expr.and_ if isinstance(node.op, ast.And) else pl.Expr.or_
            expr = parts[0]
            for p in parts[1:]:
                expr = combine(expr, p)
            return expr, "bool"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return self.condition(node.operand).not_(), "bool"
        if isinstance(node, ast.Compare):
            return self.compare(node), "bool"
        if isinstance(node, ast.Name) and node.id not in _BOOLS:
            return self.column(node)
        value = _literal(node)
        return pl.lit(value), _literal_kind(value)

    def condition(self, node: ast.AST) -> pl.Expr:
        expr, kind = self.visit(node)
        if kind not in ("bool", "null"):
            raise self.error(node, f"is a {kind}, not a condition (compare it)")
        return expr.cast(pl.Boolean) if kind == "null" else expr

    def column(self, node: ast.Name) -> tuple[pl.Expr, str]:
        if node.id not in self.schema:
            names = self.available or ", ".join(self.schema)
            raise self.error(node, f"is not a column; available: {names}")
        dtype = self.schema[node.id]
        kind = _kind_of(dtype)
        expr = pl.col(node.id)
        if dtype in (pl.Float32, pl.Float64):
            expr = expr.fill_nan(None)  # NaN compares as unknown, as a null does
        return expr, kind

    def compare(self, node: ast.Compare) -> pl.Expr:
        terms = []
        left_node = node.left
        left, left_kind = self.visit(left_node)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.Is | ast.IsNot):
                terms.append(left.is_null() if isinstance(op, ast.Is) else left.is_not_null())
                continue
            if isinstance(op, ast.In | ast.NotIn):
                assert isinstance(right_node, ast.Tuple | ast.List | ast.Set)
                values = [_literal(e) for e in right_node.elts]
                for e, v in zip(right_node.elts, values, strict=True):
                    self.same_kind(left_node, left_kind, e, _literal_kind(v))
                member = _member(left, left_kind, values)
                terms.append(member.not_() if isinstance(op, ast.NotIn) else member)
                continue
            right, right_kind = self.visit(right_node)
            self.same_kind(left_node, left_kind, right_node, right_kind)
            if left_kind == "bool" and type(op) not in (ast.Eq, ast.NotEq):
                raise self.error(node, f"orders true/false with {_SYMBOL[type(op)]}")
            terms.append(getattr(left, _COMPARE[type(op)])(right))
            left_node, left, left_kind = right_node, right, right_kind
        expr = terms[0]
        for t in terms[1:]:
            expr = expr.and_(t)
        return expr

    def same_kind(self, a: ast.AST, a_kind: str, b: ast.AST, b_kind: str) -> None:
        if "null" in (a_kind, b_kind):
            return
        if a_kind not in ("number", "text", "bool"):
            raise self.error(a, f"holds {a_kind} values, which cannot be compared")
        if b_kind not in ("number", "text", "bool"):
            raise self.error(b, f"holds {b_kind} values, which cannot be compared")
        if a_kind != b_kind:
            raise self.error(b, f"is a {b_kind}, compared with a {a_kind}")

    def error(self, node: ast.AST, what: str) -> ConfigError:
        return _error(self.text, node, what)

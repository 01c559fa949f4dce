"""Pages and tables of the documentation site, generated from the code (no mkdocs here).

`mkdocs_hooks.py` calls these while `mkdocs build` runs; `tests/test_docs.py` calls
`undocumented` without mkdocs. A page asks for a generated block with a marker on a line of
its own:

    <!-- assay:step KIND -->           the settings of a recipe step / command-line verb
    <!-- assay:scorer NAME -->         a registered scorer's parameters (`--params key=value`)
    <!-- assay:settings MODULE:CLASS --> any settings model's fields
    <!-- assay:readme TITLE [| FROM [| UNTIL]] -->
                                       a README section by its heading's text, optionally from
                                       the line starting with FROM to the one before UNTIL
                                       (an empty FROM: from the start)
    <!-- assay:recipe FILE -->          a recipe's header comment (recipes/FILE)

Every step kind and every built-in scorer must have its marker on some page (`undocumented`);
the command-line reference and the list of recipes are whole pages made here.
"""

from __future__ import annotations

import importlib
import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!-- assay:(\w[\w-]*) (.+?) -->$", re.MULTILINE)


# -- settings tables ------------------------------------------------------------------------------
def prose(text: Any) -> str:
    """Text from the code made safe for markdown: `<` and `>` outside code spans escaped (a
    help text's `<shard>:<line>` is not an HTML tag)."""
    parts = str(text).split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _cell(text: Any) -> str:
    """Text for a cell of a markdown table: one line, pipes and tags escaped."""
    return prose(" ".join(str(text).split()).replace("|", "\\|"))


def type_name(annotation: Any) -> str:
    """A readable name of a field's type: `float | None`, `one of 'a', 'b'`, `list[str]`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if annotation is type(None):
        return "None"
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def default_text(field: Any) -> str:
    """A field's default as a recipe would write it, or *required*."""
    if field.is_required():
        return "*required*"
    value = field.default_factory() if field.default_factory is not None else field.default
    if hasattr(value, "model_dump"):
        return ""  # a nested model: its own fields carry the defaults
    if isinstance(value, tuple):
        value = list(value)
    return f"`{value!r}`" if value is not None else "`None`"


def _model_in(annotation: Any) -> Any:
    from pydantic import BaseModel

    args = typing.get_args(annotation) or (annotation,)
    for a in args:
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def model_rows(model: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(dotted path, field) of every setting, nested models flattened (a corpus stays one)."""
    from assay.recipe.spec import CorpusSpec

    rows = []
    for name, field in model.model_fields.items():
        if name in ("kind", "name") and not prefix:
            continue
        nested = _model_in(field.annotation)
        if nested is not None and not issubclass(nested, CorpusSpec):
            rows += model_rows(nested, (*prefix, name))
        else:
            rows.append(((*prefix, name), field))
    return rows


def settings_table(model: Any) -> str:
    """A markdown table of a settings model's fields: setting, type, default, description."""
    lines = ["| setting | type | default | description |", "|---|---|---|---|"]
    for path, field in model_rows(model):
        lines.append(
            f"| `{'.'.join(path)}` | {_cell(type_name(field.annotation))} | "
            f"{_cell(default_text(field))} | {_cell(field.description or '')} |"
        )
    return "\n".join(lines)


def step_table(kind: str) -> str:
    """The settings of a step: its recipe key, its verb's flag, type, default, description."""
    from assay.cli.steps import step_flags
    from assay.recipe import STEPS

    if kind not in STEPS:
        raise KeyError(f"no step kind {kind!r} (known: {', '.join(STEPS)})")
    cls = STEPS[kind]
    flags = {f.path: f.option.opts[0] for f in step_flags(cls)} if cls.verb else {}
    if cls.verb and cls.reads_corpus:
        flags[("corpus",)] = "PATHS"
    positional = getattr(cls, "positional", None)
    if positional:
        flags[(positional,)] = positional.upper()
    doc = prose(inspect.cleandoc(cls.__doc__ or ""))
    verb = f"`assay {cls.verb}`" if cls.verb else "recipes only (no verb)"
    head = [
        f"**Step `{kind}`** ({verb}). {doc}",
        "",
        f"Outputs: {', '.join(f'`{o}`' for o in cls.outputs) or 'none'}."
        + (
            f" A later step reads `{cls.corpus_output}` as its corpus." if cls.corpus_output else ""
        ),
        "",
        "| recipe key, flag | type | default | description |",
        "|---|---|---|---|",
    ]
    for path, field in model_rows(cls):
        flag = f"<br>`{flags[path]}`" if path in flags else ""
        head.append(
            f"| `{'.'.join(path)}`{flag} | {_cell(type_name(field.annotation))} | "
            f"{_cell(default_text(field))} | {_cell(field.description or '')} |"
        )
    return "\n".join(head)


def scorer_table(name: str) -> str:
    """A built-in scorer's docstring and constructor parameters (`--params key=value`)."""
    from assay.selection.base import _BUILTIN_MODULES, init_params, scorer_class

    if name not in _BUILTIN_MODULES:
        raise KeyError(f"no built-in scorer {name!r} (known: {', '.join(_BUILTIN_MODULES)})")
    cls = scorer_class(name)
    signature = inspect.signature(cls.__init__)
    doc = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0]
    lines = [
        f"**Scorer `{name}`** (`{cls.__module__}.{cls.__name__}`). {prose(' '.join(doc.split()))}",
        "",
        f"`assay score --scorer {name} --params KEY=VALUE`, or `scorer: {name}` and `params:` "
        "in a recipe's `score` step:",
        "",
        "| parameter | type | default |",
        "|---|---|---|",
    ]
    for param in init_params(cls):
        p = signature.parameters[param]
        default = "*required*" if p.default is p.empty else f"`{p.default!r}`"
        annotation = p.annotation if p.annotation is not p.empty else ""
        lines.append(f"| `{param}` | {_cell(annotation)} | {_cell(default)} |")
    return "\n".join(lines)


def model_by_name(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


# -- README sections ------------------------------------------------------------------------------
HEADING = re.compile(r"^(#{1,6}) (.+)$")


def _sections(text: str) -> list[tuple[int, str, int]]:
    """(level, title, line index) of every heading outside code blocks."""
    out, fenced = [], False
    for i, line in enumerate(text.splitlines()):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := HEADING.match(line)):
            out.append((len(m.group(1)), m.group(2).strip(), i))
    return out


def readme_section(title: str, start: str | None = None, until: str | None = None) -> str:
    """The body of the README section headed `title` (its sub-headings raised to `##`),
    optionally from the paragraph that starts with `start` to the one before `until`."""
    lines = (ROOT / "README.md").read_text().splitlines()
    heads = _sections("\n".join(lines))
    found = [h for h in heads if h[1] == title]
    if not found:
        raise KeyError(f"README.md has no heading {title!r}")
    level, _, at = found[0]
    end = next((i for lv, _, i in heads if i > at and lv <= max(level, 2)), len(lines))
    body = lines[at + 1 : end]
    if start is not None:
        body = body[_paragraph(body, start, title) :]
    if until is not None:
        body = body[: _paragraph(body, until, title)]
    shift = min((len(m.group(1)) for ln in body if (m := HEADING.match(ln))), default=2) - 2
    out, fenced = [], False
    for line in body:
        fenced ^= line.startswith("```")
        if not fenced:
            # a list nested by two spaces (GitHub's markdown) needs four in Python-Markdown
            line = re.sub(r"^  (?=[-*] )", "    ", _raise_heading(line, shift))
        out.append(line)
    return "\n".join(out).strip()


def _paragraph(body: list[str], prefix: str, title: str) -> int:
    for i, line in enumerate(body):
        if line.startswith(prefix):
            return i
    raise KeyError(f"README section {title!r} has no paragraph starting {prefix!r}")


def _raise_heading(line: str, shift: int) -> str:
    m = HEADING.match(line)
    return line if not m or shift <= 0 else "#" * (len(m.group(1)) - shift) + " " + m.group(2)


#: where the README's own anchors are in the site (the page's path from the docs folder)
README_ANCHORS = {
    "guarantees": "guarantees.md",
    "gpus": "guarantees.md#gpus",
    "ray": "guarantees.md#ray",
    "decontamination": "methods/decontamination.md",
}
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")
IMAGE = re.compile(r"!\[([^\]]*)\]\(docs/([^)\s]+)\)")


def relink(text: str, page: str) -> str:
    """README links made to work on `page`: docs pages and README anchors become site links,
    links to other files of the repository become their names in code, images under docs/ are
    linked from the page's folder."""
    depth = page.count("/")
    text = IMAGE.sub(lambda m: f"![{m.group(1)}]({'../' * depth}{m.group(2)})", text)

    def one(m: re.Match[str]) -> str:
        label, target = m.group(1), m.group(2)
        if target.startswith(("http://", "https://")):
            return m.group(0)
        if target.startswith("#"):
            where = README_ANCHORS.get(target[1:])
            return f"[{label}]({'../' * depth}{where})" if where else label
        if target.startswith("docs/") and target.endswith(".md"):
            return f"[{label}]({'../' * depth}{target.removeprefix('docs/')})"
        return label if label.startswith("`") else f"`{label}`"

    return LINK.sub(one, text)


# -- recipes --------------------------------------------------------------------------------------
def recipe_header(path: Path) -> list[str]:
    """The comment lines at the top of a recipe, without their `# `."""
    out = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        out.append(line[2:] if line.startswith("# ") else line[1:])
    return out


def recipe_block(name: str) -> str:
    """A recipe's header comment, as it is written, in a text block."""
    path = ROOT / "recipes" / name
    if not path.is_file():
        raise KeyError(f"no recipe recipes/{name}")
    return "```text\n" + "\n".join(recipe_header(path)).strip() + "\n```"


def recipes_page(step_pages: dict[str, str] | None = None) -> str:
    """Every recipe of recipes/ and recipes/paper/: its summary, steps and header comment;
    each step kind links to its page in `step_pages` (kind -> page path)."""
    from assay.recipe import load_recipe

    step_pages = step_pages or {}
    parts = [
        "# Recipes",
        "",
        "A recipe is a YAML list of steps run by `assay run RECIPE [key=value ...]` in a run "
        "directory (see [Getting started](getting-started.md)). This page is generated from "
        "the files: the top comment of each says what it does.",
    ]
    for folder, title in (("recipes", "CPU-scale recipes"), ("recipes/paper", "Paper scale")):
        parts += ["", f"## {title}", ""]
        if folder == "recipes/paper":
            section = readme_section("Paper-scale recipes and dry runs")
            parts += [relink(section, "recipes.md"), ""]
        for path in sorted((ROOT / folder).glob("*.yaml")):
            rel = path.relative_to(ROOT).as_posix()
            header = recipe_header(path)
            first = header[: header.index("")] if "" in header else header
            steps = []
            for step in load_recipe(path).steps:
                kind = (
                    f"[{step.kind}]({step_pages[step.kind]})"
                    if step.kind in step_pages
                    else step.kind
                )
                steps.append(f"`{step.name}`" + ("" if step.name == step.kind else f" ({kind})"))
                if step.name == step.kind and step.kind in step_pages:
                    steps[-1] = f"[`{step.name}`]({step_pages[step.kind]})"
            parts += [f"### `{rel}`", "", " ".join(" ".join(first).split()), ""]
            parts += [f"Steps: {', '.join(steps)}.", ""]
            parts += ['??? note "The recipe\'s notes"', ""]
            block = recipe_block(rel.removeprefix("recipes/")).splitlines()
            parts += ["    " + ln if ln else "" for ln in block]
            parts.append("")
    return "\n".join(parts)


# -- the command line -----------------------------------------------------------------------------
def _commands(group: Any, ctx: Any, prefix: str) -> list[tuple[str, Any, Any]]:
    import click

    out = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        sub = click.Context(cmd, info_name=name, parent=ctx)
        out.append((f"{prefix} {name}", cmd, sub))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, sub, f"{prefix} {name}")
    return out


def _params_table(cmd: Any, ctx: Any) -> list[str]:
    import click

    rows = []
    for p in cmd.get_params(ctx):
        if isinstance(p, click.Argument):
            many = "one or more" if p.nargs == -1 else f"{p.nargs}" if p.nargs > 1 else "one"
            rows.append(f"| `{p.make_metavar(ctx)}` | positional: {many} |")
            continue
        record = p.get_help_record(ctx)
        if record is not None:
            rows.append(f"| `{_cell(record[0])}` | {_cell(record[1])} |")
    return ["| option | description |", "|---|---|", *rows] if rows else []


def cli_page() -> str:
    """The reference of every command of `assay`, from click's command tree."""
    import click

    from assay.cli.main import app

    root = click.Context(app, info_name="assay")
    parts = [
        "# Command-line reference",
        "",
        "Generated from the command tree of `assay` (the text of `assay VERB --help`). A verb "
        "that runs a recipe step takes the step's settings as flags; the method pages list "
        "them with their recipe keys.",
        "",
        "## assay",
        "",
        "```text",
        app.get_usage(root),
        "```",
        "",
        prose(inspect.cleandoc(app.help or "")),
        "",
        *_params_table(app, root),
    ]
    for path, cmd, ctx in _commands(app, root, "assay"):
        parts += ["", f"## {path}", "", "```text", cmd.get_usage(ctx), "```", ""]
        parts += [prose(inspect.cleandoc(cmd.help or cmd.short_help or "")), ""]
        parts += _params_table(cmd, ctx)
    return "\n".join(parts) + "\n"


# -- markers and coverage -------------------------------------------------------------------------
def expand(markdown: str, page: str) -> str:
    """A page's markdown with every marker replaced by what it asks for."""

    def one(m: re.Match[str]) -> str:
        what, arg = m.group(1), m.group(2).strip()
        if what == "step":
            return step_table(arg)
        if what == "scorer":
            return scorer_table(arg)
        if what == "settings":
            return settings_table(model_by_name(arg))
        if what == "readme":
            title, *bounds = (a.strip() or None for a in arg.split("|"))
            return relink(readme_section(title, *bounds), page)
        if what == "recipe":
            return recipe_block(arg)
        raise KeyError(f"{page}: unknown marker assay:{what}")

    return MARKER.sub(one, markdown)


def markers(docs: Path) -> dict[str, set[str]]:
    """What the pages under `docs` ask for, by kind of marker."""
    found: dict[str, set[str]] = {}
    for md in docs.rglob("*.md"):
        for m in MARKER.finditer(md.read_text()):
            found.setdefault(m.group(1), set()).add(m.group(2).strip())
    return found


def step_pages(docs: Path) -> dict[str, str]:
    """The page (path under `docs`) that documents each step kind: the first with its marker."""
    out: dict[str, str] = {}
    for md in sorted(docs.rglob("*.md")):
        for m in MARKER.finditer(md.read_text()):
            if m.group(1) == "step":
                out.setdefault(m.group(2).strip(), md.relative_to(docs).as_posix())
    return out


def undocumented(docs: Path = ROOT / "docs") -> list[str]:
    """The step kinds, scorers and verbs with no entry in the documentation."""
    import click

    from assay.cli.main import app
    from assay.recipe import STEPS
    from assay.selection.base import _BUILTIN_MODULES

    found = markers(docs)
    missing = [f"step {k}" for k in STEPS if k not in found.get("step", set())]
    missing += [f"scorer {s}" for s in _BUILTIN_MODULES if s not in found.get("scorer", set())]
    root = click.Context(app, info_name="assay")
    for path, cmd, _ in _commands(app, root, "assay"):
        if not (cmd.help or cmd.short_help):
            missing.append(f"verb '{path}' (no help text)")
    return missing

"""Command-line verbs generated from the step models: one verb per step, one flag per field.

A verb runs its step exactly as a recipe would (`assay.recipe.run_step`), in the folder given by
`--out`, laid out as the step's folder in a run directory. Flags come from the step model's
fields, help text from their `Field(description=...)`:

* the corpus of a step that reads one is the positional PATHS, with the read options of
  `ReadOptions` as flags (`--text-field`, `--max-chars`, ...);
* a nested model's fields become `--<field>-<sub>` (`--fit-n`, `--train-lr`); the model's primary
  field is `--<field>` itself (`--targets` for `targets.source`, `--heldout` for its paths);
* lists repeat (`--tasks a --tasks b`), mappings are `key=value` and repeat (`--params lr=0.3`),
  booleans are `--x/--no-x`; values are read as YAML (`--keep 0.3`, `--max-chars null`), except
  for text fields, which are taken as they are.
"""

from __future__ import annotations

import tempfile
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import click
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from assay.io.shards import ReadOptions
from assay.recipe.spec import CorpusSpec, RunnerSpec
from assay.recipe.step import STEPS, Step

#: flags every verb has that are not fields of its step: where, and how, it runs
RUN_FLAGS = ("out", "overwrite", "no_progress", "runner", "workers", "address")
#: steps whose outputs are reports: without --out they run in a temporary folder
REPORT_STEPS = ("stats", "eval")


def _args(annotation: Any) -> tuple[Any, ...]:
    return typing.get_args(annotation)


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in _args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (possibly optional, or beside a literal), if any."""
    ann = _strip_optional(annotation)
    candidates = _args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType) else (ann,)
    for a in candidates:
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _kind(annotation: Any) -> str:
    """'bool', 'list', 'dict', 'tuple' or 'scalar' for the flag a field gets."""
    ann = _strip_optional(annotation)
    origin = typing.get_origin(ann)
    if ann is bool:
        return "bool"
    if origin is list:
        return "list"
    if origin is dict:
        return "dict"
    if origin is tuple:
        return "tuple"
    if origin in (typing.Union, types.UnionType) and any(
        typing.get_origin(a) is dict for a in _args(ann)
    ):
        return "scalar"  # e.g. a mixture: domain=weight pairs or a name
    return "scalar"


def _text(annotation: Any) -> bool:
    """Whether a field holds text, which the command line takes as it is (not as YAML)."""
    ann = _strip_optional(annotation)
    if ann is str:
        return True
    return typing.get_origin(ann) is Literal and all(isinstance(a, str) for a in _args(ann))


def _help(field: FieldInfo, annotation: Any) -> str:
    text = field.description or ""
    ann = _strip_optional(annotation)
    if typing.get_origin(ann) is Literal:
        text += f" One of: {', '.join(str(a) for a in _args(ann))}."
    shown = field.default is not None and not isinstance(field.default, BaseModel)
    if not field.is_required() and field.default_factory is None and shown:
        text += f" [default: {field.default}]"
    return text.strip()


def _value(raw: str, annotation: Any) -> Any:
    if raw.lower() in ("null", "none", "~") and annotation is not str:
        return None
    if _text(annotation):
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


@dataclass
class Flag:
    """One generated option: where its value goes in the step's settings, how it is parsed."""

    dest: str  # the click parameter name
    path: tuple[str, ...]  # where the value goes in the settings mapping
    option: click.Option
    convert: Callable[[Any], Any]
    corpus: bool = False  # a corpus' paths: it is read with the verb's read options


def _flags_for(path: tuple[str, ...], field: FieldInfo, flags: list[Flag]) -> None:
    annotation = field.annotation
    model = model_in(annotation)
    name = "-".join(path).replace("_", "-")
    dest = "__".join(path)
    if model is not None and issubclass(model, CorpusSpec):
        _corpus_flag(path, field, flags)
        return
    if model is not None:
        primary = getattr(model, "primary", None)
        for sub, subfield in model.model_fields.items():
            if sub == primary:
                sub_path = (*path, sub)
                flags.append(_scalar_flag(name, "__".join(sub_path), sub_path, subfield))
            else:
                _flags_for((*path, sub), subfield, flags)
        return
    flags.append(_scalar_flag(name, dest, path, field))


def _scalar_flag(name: str, dest: str, path: tuple[str, ...], field: FieldInfo) -> Flag:
    annotation = field.annotation
    kind, help_ = _kind(annotation), _help(field, annotation)
    if kind == "bool":
        option = click.Option([f"--{name}/--no-{name}", dest], default=None, help=help_)
        return Flag(dest, path, option, lambda v: v)
    if kind in ("list", "dict"):
        inner = _args(_strip_optional(annotation))[-1] if kind == "list" else Any
        metavar = "KEY=VALUE" if kind == "dict" else "VALUE"
        option = click.Option(
            [f"--{name}", dest], multiple=True, default=None, metavar=metavar, help=help_
        )

        def many(values: Any, kind: str = kind, inner: Any = inner) -> Any:
            if kind == "list":
                return [_value(v, inner) for v in values]
            out = {}
            for item in values:
                if "=" not in item:
                    raise click.BadParameter(f"{item!r} must look like key=value", param_hint=name)
                k, v = item.split("=", 1)
                out[k.strip()] = _value(v, Any)
            return out

        return Flag(dest, path, option, many)

    def one(value: Any, annotation: Any = annotation, kind: str = kind) -> Any:
        parsed = _value(value, annotation)
        if kind == "tuple" and isinstance(parsed, str):
            return [_value(p.strip(), Any) for p in parsed.split(",")]
        return parsed

    option = click.Option([f"--{name}", dest], default=None, help=help_)
    return Flag(dest, path, option, one)


def _corpus_flag(path: tuple[str, ...], field: FieldInfo, flags: list[Flag]) -> None:
    """A nested corpus (heldout, fit.positive): its paths, read like the main corpus."""
    name, dest = "-".join(path).replace("_", "-"), "__".join(path)
    may_name_corpus = "corpus" in str(field.annotation)  # fit.negative: 'corpus' or paths
    help_ = (field.description or "") + (
        " Repeatable; 'corpus' for the corpus itself." if may_name_corpus else " Repeatable."
    )
    option = click.Option([f"--{name}", dest], multiple=True, default=None, help=help_.strip())

    def paths(values: Any) -> Any:
        if may_name_corpus and list(values) == ["corpus"]:
            return "corpus"
        return {"paths": list(values)}

    flags.append(Flag(dest, path, option, paths, corpus=True))


def step_flags(cls: type[Step]) -> list[Flag]:
    """Every flag of a step's verb, generated from its fields (the corpus' read options too)."""
    flags: list[Flag] = []
    positional = getattr(cls, "positional", None)
    for name, field in cls.model_fields.items():
        if name in ("kind", "name", positional):
            continue
        if name == "corpus":
            for opt, f in ReadOptions.model_fields.items():
                flags.append(_scalar_flag(opt.replace("_", "-"), f"read__{opt}", ("read", opt), f))
            continue
        _flags_for((name,), field, flags)
    return flags


def _set(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def _flag_of(loc: tuple[Any, ...], flags: list[Flag]) -> str:
    path = tuple(str(x) for x in loc)
    for flag in flags:
        if flag.path == path[: len(flag.path)]:
            return flag.option.opts[0]
    return ".".join(path)


def build_step(cls: type[Step], given: dict[str, Any], flags: list[Flag]) -> tuple[Step, dict]:
    """The step model from the values of its flags (validated like a recipe step), and the read
    options of its corpus."""
    values: dict[str, Any] = {}
    for flag in flags:
        raw = given.get(flag.dest)
        if raw is None or (isinstance(raw, tuple) and not raw):
            continue
        _set(values, flag.path, flag.convert(raw))
    read = values.pop("read", {})
    for flag in flags:  # a nested corpus is read like the main one
        node: Any = values
        for key in flag.path[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if flag.corpus and isinstance(node, dict) and isinstance(node.get(flag.path[-1]), dict):
            node[flag.path[-1]] = {**read, **node[flag.path[-1]]}
    try:
        return cls.model_validate(values), read
    except ValidationError as e:
        problems = "; ".join(f"{_flag_of(err['loc'], flags)}: {err['msg']}" for err in e.errors())
        raise click.UsageError(problems) from None


def step_command(cls: type[Step], show: Callable[[Any, Any], None]) -> click.Command:
    """The verb of a step: its flags, then run_step in --out, then the step's summary."""
    flags = step_flags(cls)
    positional = getattr(cls, "positional", None)
    params: list[click.Parameter] = []
    if cls.reads_corpus:
        params.append(click.Argument(["paths"], nargs=-1, required=True))
    elif positional:
        params.append(click.Argument(["positional"], metavar=positional.upper(), required=True))
    params += [f.option for f in flags]
    # a step that writes only a report, or writes where one of its fields says, needs no folder
    folder = (
        "none"
        if positional == "out"
        else "optional"
        if cls.kind_name() in REPORT_STEPS
        else "required"
    )
    params += _run_options(folder)

    def callback(**given: Any) -> None:
        from assay.exec.runner import make_runner
        from assay.recipe.pipeline import run_step
        from assay.util.progress import progress_hidden

        out = given.pop("out", None)
        if positional:
            given[positional] = given.pop("positional")
        all_flags = [*flags, _positional_flag(positional)] if positional else flags
        step, read = build_step(cls, given, all_flags)
        corpus = CorpusSpec(paths=list(given["paths"]), **read) if cls.reads_corpus else None
        progress = not given["no_progress"]
        runner = make_runner(
            given.get("runner") or "local",
            _int(given.get("workers")),
            given.get("address"),
            progress=progress,
        )
        with tempfile.TemporaryDirectory(prefix="assay-") as tmp, progress_hidden(not progress):
            outcome = run_step(
                step,
                out or f"{tmp}/{cls.kind_name()}",
                corpus=corpus,
                runner=runner,
                overwrite=given["overwrite"],
                progress=progress,
            )
            show(cls, outcome)

    return click.Command(
        cls.verb,
        params=params,
        callback=callback,
        help=(cls.__doc__ or "").strip(),
        short_help=(cls.__doc__ or "").strip().split(".")[0][:80],
    )


def _int(v: Any) -> int | None:
    return None if v in (None, "") else int(v)


def _positional_flag(name: str) -> Flag:
    return Flag(name, (name,), click.Option([f"--{name}"]), lambda v: v)


def _run_options(folder: str) -> list[click.Parameter]:
    """--out (`folder`: required, optional or none), and where and how the step runs (the
    runner's settings, --overwrite, progress)."""
    runner = RunnerSpec.model_fields
    out_help = "The step's folder: its outputs, laid out as in a run directory (resumes)."
    if folder == "optional":
        out_help += " Default: a temporary folder; the summary is printed."
    options = [
        click.Option(
            ["--runner"], default=None, help=_help(runner["kind"], runner["kind"].annotation)
        ),
        click.Option(["--workers", "-j"], default=None, help=_help(runner["workers"], int)),
        click.Option(["--address"], default=None, help=_help(runner["address"], str)),
        click.Option(["--overwrite"], is_flag=True, help="Redo the step (default: resume)."),
        click.Option(["--no-progress"], is_flag=True, help="Hide progress bars."),
    ]
    if folder != "none":
        options.insert(
            0, click.Option(["--out", "-o"], required=folder == "required", help=out_help)
        )
    return options


def step_verbs() -> dict[str, type[Step]]:
    """The step kinds that have a command-line verb, by verb."""
    return {cls.verb: cls for cls in STEPS.values() if cls.verb}

"""A step: the one declaration of its options, what it reads and writes, how it runs and reports.

Every kind of step is one file in `assay/recipe/steps/`: a pydantic model registered with
`@register_step`. From the registry come the recipe schema (a discriminated union of the step
models), the checks of names that refer to earlier steps, the executors of `run_recipe`, the
printers of `assay run`, and the verbs of the command line with their flags. A new step is one
file.

A step model declares:

    kind           Literal["<kind>"]: its name in recipes
    outputs        the names of what it writes (`{name: path}` in its step.json)
    corpus_output  the output a later step reads as its corpus (select: selected), if any
    references     {field path: output}: fields that may name an earlier step (or a folder),
                   and which of that step's outputs they mean
    reads_corpus   whether it needs a corpus (the recipe's, its own, or a verb's paths)
    verb           its command-line verb, or None for recipes only

and implements `plan(ctx) -> (identity, run)`: `identity` is what its result depends on besides
its settings (fingerprints of inputs, hashes of upstream steps); `run(redo)` does the work,
resumably, and returns `(outputs, summary)`. `show(outcome, console)` prints a summary.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import field_validator

from assay.recipe.spec import check_name
from assay.util.config import Strict

Run = Callable[[bool], tuple[dict[str, str], dict[str, Any]]]

STEPS: dict[str, type[Step]] = {}


def register_step(cls: type[Step]) -> type[Step]:
    """Class decorator: make a step kind available to recipes and the command line."""
    kind = cls.kind_name()
    if kind in STEPS and STEPS[kind] is not cls:
        raise ValueError(f"step kind {kind!r} is already registered by {STEPS[kind]}")
    STEPS[kind] = cls
    return cls


class Step(Strict):
    """Base of every step model."""

    outputs: ClassVar[tuple[str, ...]] = ()
    corpus_output: ClassVar[str | None] = None
    references: ClassVar[dict[str, str]] = {}
    reads_corpus: ClassVar[bool] = True
    verb: ClassVar[str | None] = None

    name: str = ""

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return check_name(v, "step name")

    @classmethod
    def kind_name(cls) -> str:
        return cls.model_fields["kind"].default

    def check_recipe(self, earlier: dict[str, type[Step]]) -> None:
        """Checks against the earlier steps of a recipe beyond `references` (none by default)."""

    def plan(self, ctx: Any) -> tuple[dict[str, Any], Run]:
        raise NotImplementedError

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        """Print what the step did (`outcome`: its name, summary and outputs); the command line
        and `assay run` call this."""


def kinds_with(output: str) -> list[str]:
    """The step kinds that write `output` (what a field naming an earlier step may name)."""
    return [k for k, cls in STEPS.items() if output in cls.outputs]


def folder_id(path: str | None) -> str | None:
    """A model folder's content fingerprint, so that retraining into it redoes the step."""
    from assay.util.files import folder_fingerprint

    return folder_fingerprint(path, (".json", ".safetensors", ".bin", ".gguf")) if path else None


def embedder_id(embedder: str | dict[str, Any] | None) -> str | None:
    """What an embedder setting depends on: its model folder's content fingerprint."""
    model = embedder.get("model") if isinstance(embedder, dict) else embedder
    return folder_id(model)


def targets_identity(spec: Any) -> dict[str, Any]:
    """What target examples depend on: a file's fingerprint, a folder's (the files it is read
    from), or the benchmark's name."""
    from assay.common.targets import record_files
    from assay.util.files import fingerprint

    source = spec.source
    if Path(source).is_file():
        fp: Any = fingerprint(source)
    elif Path(source).is_dir():
        fp = [fingerprint(f) for f in record_files(Path(source))]
    else:
        fp = source
    split = getattr(spec, "continuation_fields", None)
    return {
        "source": fp,
        "fields": spec.fields,
        "max_items": spec.max_items,
        **({"split": [spec.context_fields, split]} if split is not None else {}),
    }

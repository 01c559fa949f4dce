"""The pieces several steps share: a corpus, target examples, the runner, names.

These are parts of step models (a step's `corpus`, `heldout`, `targets`), declared once here;
the command line turns each into flags of the verbs whose step has it.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from assay.io.corpus import Corpus
from assay.io.shards import ReadOptions
from assay.util.config import Strict

#: A recipe or step name: it becomes a folder name, and a dotted override's first part.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$"


def check_name(name: str, what: str) -> str:
    if not re.match(NAME_PATTERN, name):
        raise ValueError(
            f"{what} {name!r} must be a plain name (letters, digits, '_' and '-', starting with "
            "a letter or digit): it names a folder of the run directory"
        )
    return name


class CorpusSpec(ReadOptions):
    """Where a corpus is (files, folders, globs, or the output of an earlier step) and how to
    read it (the read options of `ReadOptions`)."""

    #: on the command line: the positional paths (the corpus) or `--<field>` paths (heldout...)
    primary: ClassVar[str] = "paths"

    paths: list[str] = Field(
        default_factory=list,
        description="Corpus files, folders (searched recursively) or globs: .jsonl, .jsonl.gz, "
        ".jsonl.zst, .parquet.",
    )
    step: str | None = Field(
        None, description="An earlier step whose corpus to read (demo_corpus, select, cluster)."
    )
    output: str | None = Field(
        None, description="Which of that step's outputs (e.g. heldout); default: its corpus."
    )

    @field_validator("paths", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _paths_or_step(self) -> CorpusSpec:
        if bool(self.paths) == bool(self.step):
            raise ValueError("a corpus gives either paths or step (the name of an earlier step)")
        return self

    def options(self) -> ReadOptions:
        return ReadOptions(**{k: getattr(self, k) for k in ReadOptions.model_fields})

    def open(self, paths: list[str] | None = None) -> Corpus:
        options = self.options()
        return Corpus(paths or self.paths, **options.model_dump())


class TargetSpec(Strict):
    """Target (or reference) examples: a built-in benchmark or a file of records."""

    primary: ClassVar[str] = "source"

    source: str = Field(
        description="A built-in benchmark (assay_champ, assay_mmlu_dev), a .jsonl, .json or "
        ".parquet file of records, or a folder of such files."
    )
    fields: list[str] | None = Field(
        None,
        description="Record fields joined into one example, in order (default: text if the "
        "records have it, else question and answer).",
    )
    max_items: int | None = Field(
        None, ge=1, description="Use a seeded sample of at most this many examples."
    )


class SplitTargetSpec(TargetSpec):
    """Target examples split into context (the prompt, which conditions the model) and
    continuation (what is scored), for a reference loss such as MATES'."""

    context_fields: list[str] | None = Field(
        None,
        description="Fields that are an example's context (prompt), with continuation_fields: "
        "the reference loss scores only the continuation (default: a built-in benchmark's "
        "question, then answer; a file: no split).",
        exclude_if=lambda v: v is None,
    )
    continuation_fields: list[str] | None = Field(
        None,
        description="Fields that are an example's continuation (what is scored), with "
        "context_fields.",
        exclude_if=lambda v: v is None,
    )

    @model_validator(mode="after")
    def _both_or_neither(self) -> SplitTargetSpec:
        if (self.context_fields is None) != (self.continuation_fields is None):
            raise ValueError("give both context_fields and continuation_fields, or neither")
        return self


class RunnerSpec(Strict):
    """Where per-shard tasks and proxy runs execute."""

    kind: Literal["local", "ray"] = Field(
        "local", description="'local' (this machine; a process pool with workers > 1) or 'ray'."
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="Parallel workers (local: processes, 1 = in this process; ray: CPUs of a "
        "local instance).",
    )
    address: str | None = Field(
        None,
        description="Ray cluster address (e.g. 'auto' or 'ray://host:10001'); default starts a "
        "local Ray instance bound to 127.0.0.1.",
    )


class Scale(Strict):
    """How large a recipe's inputs are, for `assay run --dry-run`'s compute estimate (nothing is
    read to find out): the corpus' size, and the parameters of models named by path."""

    corpus_docs: int | None = Field(
        None, ge=1, description="Documents in the recipe's corpus (for the estimate only)."
    )
    corpus_tokens: int | None = Field(
        None, ge=1, description="Tokens in the recipe's corpus (for the estimate only)."
    )
    params: dict[str, int] = Field(
        default_factory=dict,
        description="Parameters of the models a recipe names by path (scorers, embedders, a "
        "PreSelect family), by that path: the models are not read.",
    )

    @property
    def tokens_per_doc(self) -> float | None:
        if self.corpus_docs and self.corpus_tokens:
            return self.corpus_tokens / self.corpus_docs
        return None

"""Sharded corpora: discover shards, stream validated batches, write shards.

A `Corpus` is a list of shards (files, or slices of a Hugging Face dataset) plus the options for
reading them. Shards that fit comfortably in memory are parsed whole by polars (as fast as polars
alone); larger ones are streamed in blocks of whole lines or parquet row groups, so memory stays
bounded whatever the size of a shard (see `assay._read`). Every batch is a polars DataFrame whose
first two columns are `id` and `text`, followed by the other fields of the records.

Bad records are never silently dropped: under `on_error="fail"` (the default) the first one raises
a `CorpusError` naming the file and line; under `on_error="skip"` it is counted, by reason, in the
shard's `ShardStats`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from assay.errors import ConfigError
from assay.io.discover import discover_inputs
from assay.io.hub import is_hf_dataset
from assay.io.sample import sample_shards
from assay.io.shards import (
    DEFAULT_MAX_CHARS,
    FileShard,
    HFIterableShard,
    HFShard,
    OnError,
    ReadOptions,
    Shard,
    ShardStats,
)
from assay.io.split import split_shards, whole_files
from assay.io.write import ShardWriter, finish_outputs, output_name
from assay.util.guard import check_output, folder_lock, mark_output
from assay.util.remote import is_remote, local_path

# ---------------------------------------------------------------------------------------------
# Shards


# ---------------------------------------------------------------------------------------------
# Validation and normalisation of raw batches (the readers live in assay._read)


# ---------------------------------------------------------------------------------------------
# Discovery


# ---------------------------------------------------------------------------------------------
# Corpus


class Corpus:
    """A set of shards plus the options to read them.

    >>> corpus = Corpus("data/demo/train", on_error="skip")
    >>> for batch in corpus.iter_batches():  # polars DataFrames: id, text, other fields
    ...     ...
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        text_field: str = "text",
        id_field: str | None = "id",
        on_error: OnError = "fail",
        max_chars: int | None = DEFAULT_MAX_CHARS,
        **read_options: Any,
    ):
        self.options = ReadOptions(
            text_field=text_field,
            id_field=id_field,
            on_error=on_error,
            max_chars=max_chars,
            **read_options,
        )
        #: the paths as given (what reopens this corpus; `corpus_record`)
        self.given = [
            os.fspath(p) for p in ([paths] if isinstance(paths, str | os.PathLike) else paths)
        ]
        shards, self.inputs = discover_inputs(paths)
        #: the units of work: a file each, or the parts of a large one (`assay.io.split`)
        self.shards: list[Shard] = split_shards(shards, self.options)

    @classmethod
    def from_shards(
        cls,
        shards: Sequence[Shard],
        options: ReadOptions | None = None,
        inputs: Sequence[str] | None = None,
    ) -> Corpus:
        corpus = cls.__new__(cls)
        corpus.options = options or ReadOptions()
        corpus.shards = split_shards(shards, corpus.options)
        corpus.inputs = list(inputs) if inputs is not None else []
        corpus.given = []
        return corpus

    def input_paths(self) -> list[str]:
        """Every local place this corpus reads: the folders, files and glob matches it was
        given, and each shard's file. No output may equal, contain or lie inside one."""
        return [*self.inputs, *(s.path for s in self.shards if isinstance(s, FileShard))]

    def record(self) -> dict[str, Any] | None:
        """Where this corpus is and how it is read, as JSON (None for one made of shards): the
        paths as given (local ones absolute) and the read options that differ from the
        defaults. `Corpus.from_record` opens it again."""
        if not self.given:
            return None
        paths = [p if is_remote(p) or is_hf_dataset(p) else os.path.abspath(p) for p in self.given]
        defaults = ReadOptions().model_dump()
        options = {k: v for k, v in self.options.model_dump().items() if v != defaults[k]}
        return {"paths": paths, "options": options}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Corpus:
        """The corpus a `record()` describes."""
        return cls(record["paths"], **record.get("options", {}))

    def check_output(self, out: str | os.PathLike, what: str = "output") -> None:
        """Refuse `out` if it equals, contains or lies inside any input of this corpus."""
        check_output(out, self.input_paths(), what)

    @classmethod
    def from_hf(
        cls,
        dataset: Any,
        *,
        num_shards: int | None = None,
        split: str | None = None,
        **options: Any,
    ) -> Corpus:
        """Wrap a `datasets.Dataset`/`IterableDataset` (or a name/path for `load_dataset`)."""
        import datasets

        if isinstance(dataset, str):
            dataset = datasets.load_dataset(dataset, split=split or "train")
        if isinstance(dataset, datasets.DatasetDict):
            if split is None:
                raise ConfigError(f"pass split= (one of {list(dataset)}) for a DatasetDict")
            dataset = dataset[split]
        opts = ReadOptions(**options)
        if isinstance(dataset, datasets.IterableDataset):
            return cls.from_shards([HFIterableShard(name="hf-00000", dataset=dataset)], opts)
        n = len(dataset)
        k = num_shards or max(1, min(64, n // 50_000 + 1))
        bounds = np.linspace(0, n, k + 1).astype(int)
        shards = [
            HFShard(name=f"hf-{i:05d}", dataset=dataset, start=int(a), stop=int(b))
            for i, (a, b) in enumerate(itertools.pairwise(bounds))
        ]
        return cls.from_shards(shards, opts)

    def with_options(self, **changes: Any) -> Corpus:
        options = ReadOptions.model_validate({**self.options.model_dump(), **changes})
        corpus = Corpus.from_shards(self.shards, options, self.inputs)
        corpus.given = self.given
        return corpus

    def __repr__(self) -> str:
        return f"Corpus({len(self.shards)} shards, text_field={self.options.text_field!r})"

    def iter_batches(self, stats: ShardStats | None = None) -> Iterator[pl.DataFrame]:
        for shard in whole_files(self.shards):  # one pass over a split file, not one per part
            yield from shard.read(self.options, stats)

    def iter_texts(self) -> Iterator[str]:
        for batch in self.iter_batches():
            yield from batch.get_column("text").to_list()

    def fingerprint(self) -> list[dict[str, Any]]:
        return [s.fingerprint() for s in self.shards]

    def sample(self, n: int, seed: int = 0, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """A uniform sample of `n` documents without replacement, in O(N) time.

        Keeps the `n` documents with the smallest seeded hash of their id ("bottom-k"), so the
        sample does not depend on shard order or batch size, and growing `n` only adds documents.
        Rows come in hash order (a repeated id: its first occurrence). Memory holds a few dozen
        bytes per candidate, then the sample itself (see `assay.io.sample`).
        """
        return sample_shards(self.shards, self.options, n, seed, columns)

    def write(self, out_dir: str | os.PathLike, fmt: str | None = None) -> list[Path]:
        """Copy (and convert) the corpus into `out_dir`, one output per file, atomically."""
        self.check_output(out_dir)
        out_dir = local_path(out_dir)  # a remote folder: its mirror, published file by file
        outs = []
        with folder_lock(out_dir):
            mark_output(out_dir, "corpus")
            for shard in whole_files(self.shards):
                final = Path(out_dir) / output_name(shard, fmt)
                with ShardWriter.atomic(final, self.options) as w:
                    for batch in shard.read(self.options):
                        w.write(batch)
                outs.append(final)
            finish_outputs(out_dir, [o.relative_to(out_dir).as_posix() for o in outs])
        return outs

    def to_hf(self, cache_dir: str | os.PathLike | None = None) -> Any:
        """A memory-mapped `datasets.Dataset`, built by streaming shards to parquet files."""
        import tempfile

        import datasets

        target = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="assay-hf-"))
        files = [str(p) for p in self.write(target, fmt="parquet")]
        return datasets.load_dataset(
            "parquet", data_files=files, split="train", cache_dir=str(target / "_cache")
        )


# ---------------------------------------------------------------------------------------------
# Writing


# ---------------------------------------------------------------------------------------------
# Corpus statistics (`assay stats`)

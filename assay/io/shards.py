"""Shards of a corpus: one file or dataset slice each, read as validated batches."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import ConfigDict, Field, field_validator

from assay.errors import InputError
from assay.io.arrow import read_arrow
from assay.io.read import (
    REASONS,
    FileLevelError,
    RawBatch,
    bad_rows,
    read_hf,
    read_hf_iterable,
    read_jsonl,
    read_parquet,
    suspicious_rows,
    verify_rows,
)
from assay.util.config import Strict
from assay.util.files import content_id, fingerprint

OnError = Literal["fail", "skip"]


#: Documents longer than this many characters are bad input by default: they are almost always
#: concatenation accidents, and they stall tokenizers and embedders. Raise or disable (None) it.
DEFAULT_MAX_CHARS = 10_000_000

#: Files holding more than this are read as several parts (tasks); see `assay.io.split`.
DEFAULT_SPLIT_BYTES = 512 << 20


_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


_COMPRESSION_SUFFIXES = ("", ".gz", ".zst")


SUPPORTED_SUFFIXES = (
    *(s + c for s in _JSONL_SUFFIXES for c in _COMPRESSION_SUFFIXES),
    ".parquet",
    ".arrow",
)


#: Searching a folder skips plain `.json` files: there they are nearly always metadata (a
#: manifest, a saved model's settings). Name such a file, or match it with a glob, to read it.
#: `.arrow` files are read where a Hugging Face dataset's `state.json` lists them (a folder
#: written by `save_to_disk`), or when named: elsewhere they are often caches (`cache-*.arrow`).
FOLDER_SUFFIXES = tuple(s for s in SUPPORTED_SUFFIXES if s not in (".json", ".arrow"))


#: Column names with a meaning of their own in assay's tables; no score may take them.
RESERVED_COLUMNS = ("id", "text", "domain", "shard")


class CorpusError(InputError):
    """Bad input in a corpus file; the message names the file and, where known, the line."""

    def __init__(self, path: str, reason: str, line: int | None = None, where: str = "line"):
        self.path, self.reason, self.line, self.where = path, reason, line, where
        location = f"{path}, {where} {line}" if line is not None else path
        super().__init__(f"{location}: {reason}")

    def __reduce__(self):  # keep the fields when the error crosses a process boundary
        return (CorpusError, (self.path, self.reason, self.line, self.where))


def format_of(name: str) -> str:
    """'jsonl', 'parquet' or 'arrow' from a file name (compression suffixes allowed for JSONL)."""
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix[1:] if suffix in (".parquet", ".arrow") else "jsonl"
    raise CorpusError(
        name, f"unsupported file type; expected one of {', '.join(SUPPORTED_SUFFIXES)}"
    )


def strip_format_suffix(name: str) -> str:
    """'news/part-0.jsonl.gz' -> 'news/part-0'; names without a known suffix are kept."""
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass
class ShardStats:
    """What happened to one shard in one task: counts in and out, and skips by reason."""

    shard: str
    docs_in: int = 0
    docs_out: int = 0
    chars_in: int = 0
    chars_out: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    #: what the shard's output was made from (set by the runner; compared on resume)
    source: dict[str, Any] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def note(self, key: str, n: int = 1) -> None:
        self.extra[key] = self.extra.get(key, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardStats:
        return cls(**d)


class ReadOptions(Strict):
    """How to read records. Field names are mapped to the canonical `id` and `text` columns."""

    model_config = ConfigDict(frozen=True)

    text_field: str = Field("text", description="Record field holding the document text.")
    id_field: str | None = Field(
        "id",
        description="Record field holding a unique document id; null (or '') to generate "
        "'<shard>:<line>' ids.",
    )
    on_error: OnError = Field(
        "fail",
        description="Bad records (malformed JSON, a missing, empty or non-string text, bad "
        "UTF-8, too long): 'fail' stops with file and line; 'skip' counts them in the stats.",
    )
    max_chars: int | None = Field(
        DEFAULT_MAX_CHARS,
        ge=0,
        description="Documents longer than this many characters are bad input; null or 0 "
        "disables the limit.",
    )
    whole_file_bytes: int = Field(
        256 << 20,
        ge=0,
        description="Parquet files, and JSONL files where assay's C parser is not built, whose "
        "in-memory size (5x a compressed file's) is at most this are parsed whole; larger ones "
        "are streamed in blocks (bounded memory). With the C parser JSONL always streams (it "
        "is faster).",
    )
    block_bytes: int = Field(
        16 << 20,
        ge=1 << 10,
        description="Largest block of a streamed file (blocks are parsed several at once, so "
        "a file is cut into smaller ones when that gives every thread one).",
    )
    batch_rows: int = Field(8192, ge=1, description="Rows per batch handed to a task.")
    split_bytes: int | None = Field(
        DEFAULT_SPLIT_BYTES,
        ge=0,
        description="Files holding more than this many bytes (JSONL: decompressed, estimated for "
        "gzip and zstd; parquet: uncompressed, from its footer) are read as several tasks "
        "('<stem>.part-00001-of-00004<suffix>' outputs) so that one large file uses every "
        "worker; null or 0: one task per file.",
    )
    compressed_parts: int = Field(
        16,
        ge=1,
        description="Most parts a gzip or zstd file is split into: a part decompresses the file "
        "from its start, so n parts cost (n+1)/2 decompressions in all.",
    )

    @field_validator("id_field")
    @classmethod
    def _empty_id_field(cls, v: str | None) -> str | None:
        return v or None

    @field_validator("max_chars", "split_bytes")
    @classmethod
    def _zero_is_no_limit(cls, v: int | None) -> int | None:
        return v or None

    @field_validator("split_bytes")
    @classmethod
    def _whole_lines_at_least(cls, v: int | None) -> int | None:
        if v is not None and v < 1 << 10:
            raise ValueError("split_bytes must be 0 (no split) or at least 1024")
        return v


@dataclass(frozen=True)
class Shard:
    """One unit of parallel work. `name` is relative to the corpus root and keeps subfolders."""

    name: str

    @property
    def stem(self) -> str:
        return strip_format_suffix(self.name)

    @property
    def format(self) -> str | None:
        return None

    @property
    def file_name(self) -> str:
        """The name of the whole file (or dataset slice) this shard reads; a part of a large
        file (`assay.io.split.FilePart`) has a name of its own."""
        return self.name

    def read(self, options: ReadOptions, stats: ShardStats | None = None) -> Iterator[pl.DataFrame]:
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name}

    def identity(self) -> dict[str, Any]:
        """What an output made from this shard records, to tell on resume whether the shard
        changed since (its name and content, not where it is)."""
        return self.fingerprint()


@dataclass(frozen=True)
class FileShard(Shard):
    path: str = ""

    @property
    def format(self) -> str:
        return format_of(self.path)

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name, **fingerprint(self.path)}

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, **content_id(self.path)}

    def read(self, options: ReadOptions, stats: ShardStats | None = None) -> Iterator[pl.DataFrame]:
        stats = stats if stats is not None else ShardStats(self.name)
        if not os.path.exists(self.path):
            raise CorpusError(self.path, "file not found")
        if os.path.getsize(self.path) == 0:
            stats.note("empty_shard")
            return
        yield from _validated(self._raw(options), self, options, stats)

    def _raw(self, options: ReadOptions) -> Iterator[RawBatch]:
        if self.format == "parquet":
            return read_parquet(self.path, options.whole_file_bytes)
        if self.format == "arrow":
            return read_arrow(self.path, options.batch_rows)
        return read_jsonl(
            self.path, options.whole_file_bytes, options.block_bytes, options.max_chars
        )


@dataclass(frozen=True, eq=False)
class HFShard(Shard):
    """A contiguous slice of a Hugging Face `datasets.Dataset` (memory-mapped, not copied)."""

    dataset: Any = None
    start: int = 0
    stop: int = 0

    def fingerprint(self) -> dict[str, Any]:
        fp = getattr(self.dataset, "_fingerprint", None)
        return {"name": self.name, "dataset_fingerprint": fp, "rows": [self.start, self.stop]}

    def read(self, options: ReadOptions, stats: ShardStats | None = None) -> Iterator[pl.DataFrame]:
        stats = stats if stats is not None else ShardStats(self.name)
        raw = read_hf(self.dataset, self.start, self.stop, options.batch_rows)
        yield from _validated(raw, self, options, stats)


@dataclass(frozen=True, eq=False)
class HFIterableShard(Shard):
    """A streaming `datasets.IterableDataset`: one shard, read in order. `label` says which
    dataset it is (name, config, split, revision) for resume, as its content is not known
    before it is read."""

    dataset: Any = None
    label: Any = None

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name, "dataset": self.label}

    def read(self, options: ReadOptions, stats: ShardStats | None = None) -> Iterator[pl.DataFrame]:
        stats = stats if stats is not None else ShardStats(self.name)
        yield from _validated(
            read_hf_iterable(self.dataset, options.batch_rows), self, options, stats
        )


def _validated(
    raw: Iterator[RawBatch], shard: Shard, options: ReadOptions, stats: ShardStats
) -> Iterator[pl.DataFrame]:
    path = getattr(shard, "path", shard.name)
    where = "line" if shard.format == "jsonl" else "row"
    try:
        for batch in raw:
            if batch.bad:
                if options.on_error == "fail":
                    line, _, message = batch.bad[0]
                    raise CorpusError(path, message, line, where)
                for _, reason, _ in batch.bad:
                    stats.skip(reason)
                stats.docs_in += len(batch.bad)
            if batch.df.height == 0:
                continue
            out = _check_batch(batch, shard, options, stats, path, where)
            for start in range(0, out.height, options.batch_rows):
                yield out.slice(start, options.batch_rows)
    except FileLevelError as e:
        if options.on_error == "fail":
            raise CorpusError(e.path, e.message) from None
        stats.skip("unreadable_file")


def _check_batch(
    batch: RawBatch, shard: Shard, options: ReadOptions, stats: ShardStats, path: str, where: str
) -> pl.DataFrame:
    df, keep = batch.df, None
    tf, idf = options.text_field, options.id_field
    stats.docs_in += df.height
    if tf != "text" and "text" in df.columns and tf in df.columns:
        raise CorpusError(path, f"records have both 'text' and the text field '{tf}'; rename one")
    if idf and idf != "id" and "id" in df.columns and idf in df.columns:
        raise CorpusError(path, f"records have both 'id' and the id field '{idf}'; rename one")

    if tf in df.columns and isinstance(df.schema[tf], pl.Categorical | pl.Enum):
        df = df.with_columns(pl.col(tf).cast(pl.String))  # dictionary-encoded parquet text
    reason = bad_rows(df, tf, options.max_chars)
    if batch.raw is not None and tf in df.columns and df.schema[tf] == pl.String:
        suspects = suspicious_rows(df, tf)
        found = verify_rows(batch.raw(), suspects, tf) if len(suspects) else {}
        if found:
            if reason is None:
                reason = pl.Series("reason", [None] * df.height, dtype=pl.String)
            rows = sorted(found)
            reason = reason.scatter(rows, [found[i] for i in rows])
    if reason is not None:
        bad = reason.is_not_null()
        if options.on_error == "fail":
            i = int(bad.arg_true()[0])
            msg = REASONS[reason[i]].format(field=tf, max_chars=options.max_chars)
            raise CorpusError(path, msg, int(batch.lines()[i]), where)
        for r, n in reason.filter(bad).value_counts().iter_rows():
            stats.skip(r, n)
        df = df.filter(~bad)
        keep = (~bad).to_numpy()
        if df.height == 0:
            return df

    def generated() -> pl.Series:
        records = batch.ordinals()
        return _generated_ids(shard, records if keep is None else records[keep])

    if idf and idf in df.columns:
        ids = df.get_column(idf).cast(pl.String, strict=False)
        if ids.null_count():
            ids = ids.fill_null(generated())
    else:
        ids = generated()
    rest = [df.get_column(c) for c in df.columns if c not in (tf, idf, "id", "text")]
    return pl.DataFrame([ids.alias("id"), df.get_column(tf).alias("text"), *rest])


def _generated_ids(shard: Shard, records: np.ndarray) -> pl.Series:
    """'<file's shard name>:<n>' for the n-th record (non-blank line or row) of the file (a part
    of a large file numbers its records as the whole file does)."""
    nums = pl.Series("n", records, dtype=pl.Int64).cast(pl.String)
    return pl.select((pl.lit(f"{shard.file_name}:") + nums).alias("id")).to_series()

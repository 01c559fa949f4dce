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

import glob as globlib
import io
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from assay._files import (
    compression_of,
    content_id,
    fingerprint,
    open_write,
    stable_hash64,
)
from assay._guard import check_output, folder_lock, is_assay_output, mark_output
from assay._read import (
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

OnError = Literal["fail", "skip"]

#: Documents longer than this many characters are bad input by default: they are almost always
#: concatenation accidents, and they stall tokenizers and embedders. Raise or disable (None) it.
DEFAULT_MAX_CHARS = 10_000_000

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_COMPRESSION_SUFFIXES = ("", ".gz", ".zst")
SUPPORTED_SUFFIXES = (*(s + c for s in _JSONL_SUFFIXES for c in _COMPRESSION_SUFFIXES), ".parquet")
#: Searching a folder skips plain `.json` files: there they are nearly always metadata (a
#: manifest, a saved model's settings). Name such a file, or match it with a glob, to read it.
FOLDER_SUFFIXES = tuple(s for s in SUPPORTED_SUFFIXES if s != ".json")
#: Column names with a meaning of their own in assay's tables; no score may take them.
RESERVED_COLUMNS = ("id", "text", "domain", "shard")


class CorpusError(ValueError):
    """Bad input in a corpus file; the message names the file and, where known, the line."""

    def __init__(self, path: str, reason: str, line: int | None = None, where: str = "line"):
        self.path, self.reason, self.line, self.where = path, reason, line, where
        location = f"{path}, {where} {line}" if line is not None else path
        super().__init__(f"{location}: {reason}")

    def __reduce__(self):  # keep the fields when the error crosses a process boundary
        return (CorpusError, (self.path, self.reason, self.line, self.where))


def format_of(name: str) -> str:
    """'jsonl' or 'parquet' from a file name (compression suffixes allowed for JSONL)."""
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return "parquet" if suffix == ".parquet" else "jsonl"
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


@dataclass(frozen=True)
class ReadOptions:
    """How to read records. Field names are mapped to the canonical `id` and `text` columns."""

    text_field: str = "text"
    id_field: str | None = "id"
    on_error: OnError = "fail"
    max_chars: int | None = DEFAULT_MAX_CHARS
    #: files whose estimated in-memory size is at most this are parsed whole by polars (fast);
    #: larger ones are streamed in blocks of `block_bytes` (bounded memory)
    whole_file_bytes: int = 256 << 20
    block_bytes: int = 16 << 20
    batch_rows: int = 8192

    def __post_init__(self) -> None:
        if self.on_error not in ("fail", "skip"):
            raise ValueError(f"on_error must be 'fail' or 'skip', not {self.on_error!r}")
        if self.max_chars is not None and self.max_chars <= 0:
            raise ValueError("max_chars must be positive (or None for no limit)")


# ---------------------------------------------------------------------------------------------
# Shards


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
        if self.format == "parquet":
            raw = read_parquet(self.path, options.whole_file_bytes)
        else:
            raw = read_jsonl(
                self.path, options.whole_file_bytes, options.block_bytes, options.max_chars
            )
        yield from _validated(raw, self, options, stats)


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
    """A streaming `datasets.IterableDataset`: one shard, read in order."""

    dataset: Any = None

    def read(self, options: ReadOptions, stats: ShardStats | None = None) -> Iterator[pl.DataFrame]:
        stats = stats if stats is not None else ShardStats(self.name)
        yield from _validated(
            read_hf_iterable(self.dataset, options.batch_rows), self, options, stats
        )


# ---------------------------------------------------------------------------------------------
# Validation and normalisation of raw batches (the readers live in assay._read)


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
    df, records = batch.df, batch.records
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
        records = records[(~bad).to_numpy()]
        if df.height == 0:
            return df

    if idf and idf in df.columns:
        ids = df.get_column(idf).cast(pl.String, strict=False)
        if ids.null_count():
            ids = ids.fill_null(_generated_ids(shard, records))
    else:
        ids = _generated_ids(shard, records)
    rest = [c for c in df.columns if c not in (tf, idf, "id", "text")]
    return df.select(ids.alias("id"), pl.col(tf).alias("text"), *rest)


def _generated_ids(shard: Shard, records: np.ndarray) -> pl.Series:
    """'<shard name>:<n>' for the n-th record (non-blank line or row) of the shard."""
    nums = pl.Series("n", records, dtype=pl.Int64).cast(pl.String)
    return pl.select((pl.lit(f"{shard.name}:") + nums).alias("id")).to_series()


# ---------------------------------------------------------------------------------------------
# Discovery


def _has_magic(p: str) -> bool:
    return any(ch in p for ch in "*?[")


def _hidden(rel: Path) -> bool:
    return any(part.startswith((".", "_")) for part in rel.parts)


def _folder_files(root: Path) -> list[Path]:
    """Data files under `root`, in name order, skipping hidden and '_' names and the output
    folders assay wrote inside it (a selection written under its own input is not input)."""
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith((".", "_")) and not is_assay_output(here / d)
        )
        files += [
            here / n for n in names if not n.startswith((".", "_")) and n.endswith(FOLDER_SUFFIXES)
        ]
    return sorted(files, key=lambda f: f.relative_to(root).as_posix())


def _glob_files(pattern: str, root: Path) -> list[Path]:
    """Files matching a glob, without hidden or '_' names below its fixed prefix, nor files
    inside assay's output folders below it."""
    out = []
    for m in sorted(Path(m) for m in globlib.glob(pattern, recursive=True)):
        if not m.is_file():
            continue
        rel = m.relative_to(root) if m.is_relative_to(root) else Path(m.name)
        if _hidden(rel):
            continue
        folders = [root.joinpath(*rel.parts[:i]) for i in range(1, len(rel.parts))]
        if any(is_assay_output(f) for f in folders):
            continue
        out.append(m)
    return out


def discover_inputs(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
) -> tuple[list[FileShard], list[str]]:
    """Shards and the input locations they came from (folders, files, glob matches)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found: list[tuple[Path, Path]] = []  # (file, root)
    inputs: list[str] = []
    for raw in paths:
        p = os.fspath(raw)
        if os.path.isdir(p):
            files = _folder_files(Path(p))
            if not files:
                raise FileNotFoundError(
                    f"no corpus files ({', '.join(FOLDER_SUFFIXES)}) under folder {p!r}"
                )
            found += [(f, Path(p)) for f in files]
            inputs.append(p)
        elif os.path.exists(p):  # a file, even one whose name has glob characters
            found.append((Path(p), Path(p).parent))
            inputs.append(p)
        elif _has_magic(p):
            prefix = p[: min(p.index(ch) for ch in "*?[" if ch in p)]
            root = Path(prefix) if prefix.endswith(os.sep) else Path(prefix).parent
            files = _glob_files(p, root)
            if not files:
                raise FileNotFoundError(f"no corpus files match {p!r}")
            found += [(f, root) for f in files]
            inputs += [str(f) for f in files]
            if "**" in p:  # a recursive pattern reads anything that appears under its root
                inputs.append(str(root))
        else:
            raise FileNotFoundError(f"corpus file not found: {p!r}")
    shards: list[FileShard] = []
    seen: dict[str, str] = {}
    for f, root in found:
        format_of(f.name)  # raises for unsupported types, naming the file
        name = f.relative_to(root).as_posix() if root != Path("") else f.as_posix()
        if name in seen and seen[name] != str(f.resolve()):
            raise ValueError(
                f"two input files map to the same shard name {name!r} ({seen[name]} and {f}); "
                "pass their common parent folder instead"
            )
        if name not in seen:
            seen[name] = str(f.resolve())
            shards.append(FileShard(name=name, path=str(f.resolve())))
    stems: dict[str, str] = {}
    for s in shards:
        if s.stem in stems:
            raise ValueError(
                f"shards {stems[s.stem]!r} and {s.name!r} differ only by format; their outputs "
                "would collide"
            )
        stems[s.stem] = s.name
    return shards, inputs


def discover_shards(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[FileShard]:
    """Resolve files, folders (searched recursively) and globs into named shards.

    A shard's name is its path relative to the folder given (or the fixed prefix of a glob), so
    outputs mirror the input layout. Hidden files and names starting with '_' are ignored in
    folders: that is where assay keeps its own bookkeeping; so are folders assay wrote (they
    hold `_assay.json`) below the folder given. A path that exists is taken as it is, even with
    '[' or '*' in its name; only a path that does not exist is tried as a glob.
    """
    return discover_inputs(paths)[0]


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
        shards, self.inputs = discover_inputs(paths)
        self.shards: list[Shard] = list(shards)

    @classmethod
    def from_shards(
        cls,
        shards: Sequence[Shard],
        options: ReadOptions | None = None,
        inputs: Sequence[str] | None = None,
    ) -> Corpus:
        corpus = cls.__new__(cls)
        corpus.options = options or ReadOptions()
        corpus.shards = list(shards)
        corpus.inputs = list(inputs) if inputs is not None else []
        return corpus

    def input_paths(self) -> list[str]:
        """Every local place this corpus reads: the folders, files and glob matches it was
        given, and each shard's file. No output may equal, contain or lie inside one."""
        return [*self.inputs, *(s.path for s in self.shards if isinstance(s, FileShard))]

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
                raise ValueError(f"pass split= (one of {list(dataset)}) for a DatasetDict")
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
        return Corpus.from_shards(self.shards, replace(self.options, **changes), self.inputs)

    def __repr__(self) -> str:
        return f"Corpus({len(self.shards)} shards, text_field={self.options.text_field!r})"

    def iter_batches(self, stats: ShardStats | None = None) -> Iterator[pl.DataFrame]:
        for shard in self.shards:
            yield from shard.read(self.options, stats)

    def iter_texts(self) -> Iterator[str]:
        for batch in self.iter_batches():
            yield from batch.get_column("text").to_list()

    def fingerprint(self) -> list[dict[str, Any]]:
        return [s.fingerprint() for s in self.shards]

    def sample(self, n: int, seed: int = 0, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """A uniform sample of `n` documents without replacement, in one streaming pass.

        Keeps the `n` documents with the smallest seeded hash of their id ("bottom-k"), so the
        sample does not depend on shard order or batch size, and growing `n` only adds documents.
        """
        if n <= 0:
            raise ValueError("sample size must be positive")
        best: pl.DataFrame | None = None
        for batch in self.iter_batches():
            if columns is not None:
                batch = batch.select(
                    ["id", "text", *[c for c in columns if c not in ("id", "text")]]
                )
            keys = stable_hash64(batch.get_column("id").to_list(), seed)
            batch = batch.with_columns(pl.Series("_key", keys, dtype=pl.UInt64))
            merged = batch if best is None else pl.concat([best, batch], how="diagonal_relaxed")
            best = merged.sort("_key").head(n)
        if best is None:
            raise ValueError("cannot sample from an empty corpus")
        return best.drop("_key")

    def write(self, out_dir: str | os.PathLike, fmt: str | None = None) -> list[Path]:
        """Copy (and convert) the corpus into `out_dir`, one output per shard, atomically."""
        self.check_output(out_dir)
        outs = []
        with folder_lock(out_dir):
            mark_output(out_dir, "corpus")
            for shard in self.shards:
                final = Path(out_dir) / output_name(shard, fmt)
                with ShardWriter.atomic(final, self.options) as w:
                    for batch in shard.read(self.options):
                        w.write(batch)
                outs.append(final)
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


def output_name(shard: Shard, fmt: str | None = None, default: str = "parquet") -> str:
    """The output file name for a shard: same name, optionally another format.

    `fmt` is a suffix such as 'parquet', 'jsonl', 'jsonl.gz' or 'jsonl.zst'; None keeps the
    input's format (or `default` for shards that are not files).
    """
    if fmt is None:
        if isinstance(shard, FileShard):
            return shard.name
        fmt = default
    fmt = fmt.lstrip(".")
    if "." + fmt not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"unknown output format {fmt!r}; use parquet, jsonl, jsonl.gz or jsonl.zst"
        )
    return f"{shard.stem}.{fmt}"


# ---------------------------------------------------------------------------------------------
# Writing


class ShardWriter:
    """Streams batches into one shard file (JSONL, optionally compressed, or parquet).

    Write to a path that is not yet the final name (the runner hands tasks a temporary path, or
    use `ShardWriter.atomic`); the canonical `id`/`text` columns are renamed back to the corpus'
    field names so that an output shard reads like its input.
    """

    def __init__(
        self, path: str | os.PathLike, options: ReadOptions | None = None, fmt: str | None = None
    ):
        self.path = Path(path)
        self.format = fmt or format_of(self.path.name)
        self.rename: dict[str, str] = {}
        if options is not None:
            if options.text_field != "text":
                self.rename["text"] = options.text_field
            if options.id_field and options.id_field != "id":
                self.rename["id"] = options.id_field
        self._fh = None
        self._ctx = None
        self._pq = None
        self._schema = None
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def atomic(
        cls, final: str | os.PathLike, options: ReadOptions | None = None
    ) -> _AtomicShardWriter:
        return _AtomicShardWriter(Path(final), options)

    def write(self, df: pl.DataFrame) -> None:
        if self.rename:
            df = df.rename({k: v for k, v in self.rename.items() if k in df.columns})
        if self.format == "parquet":
            self._write_parquet(df)
        else:
            if self._fh is None:
                self._ctx = open_write(self.path, compression_of(self.path.name))
                self._fh = self._ctx.__enter__()
            buf = io.BytesIO()
            df.write_ndjson(buf)
            self._fh.write(buf.getvalue())
        self.rows += df.height

    def _write_parquet(self, df: pl.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = df.to_arrow()
        if self._pq is None:
            self._schema = table.schema
            self._pq = pq.ParquetWriter(self.path, self._schema, compression="zstd")
        elif table.schema != self._schema:
            # A column first seen in a later batch (a field some records have) can only be
            # dropped when it holds nothing; otherwise the file cannot have one schema.
            new = [n for n in table.schema.names if n not in self._schema.names]
            if new and all(table.column(n).null_count == table.num_rows for n in new):
                table = table.drop_columns(new)
            extra = set(table.schema.names) - set(self._schema.names)
            if extra:
                raise CorpusError(
                    str(self.path),
                    f"columns {sorted(extra)} appear after the first batch; parquet needs one "
                    "schema per file (write JSONL instead, or give every record these fields)",
                )
            cols = [
                table.column(f.name).cast(f.type)
                if f.name in table.schema.names
                else pa.nulls(table.num_rows, f.type)
                for f in self._schema
            ]
            table = pa.Table.from_arrays(cols, schema=self._schema)
        self._pq.write_table(table)

    def close(self, schema_if_empty: dict[str, pl.DataType] | None = None) -> None:
        if self.format == "parquet":
            if self._pq is None:
                empty = pl.DataFrame(schema=schema_if_empty or {"id": pl.String, "text": pl.String})
                empty.write_parquet(self.path)
            else:
                self._pq.close()
        else:
            if self._fh is None:
                with open_write(self.path, compression_of(self.path.name)):
                    pass
            else:
                self._ctx.__exit__(None, None, None)
        self._fh = self._pq = None


class _AtomicShardWriter:
    def __init__(self, final: Path, options: ReadOptions | None):
        from assay._files import temp_path_for

        self.final = final
        self.tmp = temp_path_for(final)
        self.writer = ShardWriter(self.tmp, options, fmt=format_of(final.name))

    def __enter__(self) -> ShardWriter:
        return self.writer

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.writer.close()
                os.replace(self.tmp, self.final)
        finally:
            if self.tmp.exists():
                self.tmp.unlink()


def write_shard(
    final: str | os.PathLike, batches: Iterable[pl.DataFrame], options: ReadOptions | None = None
) -> int:
    """Write batches to one shard atomically; returns the number of rows."""
    with ShardWriter.atomic(final, options) as w:
        for b in batches:
            w.write(b)
    return w.rows


# ---------------------------------------------------------------------------------------------
# Corpus statistics (`assay stats`)


@dataclass
class StatsTask:
    """Per-shard document counts and lengths, optionally grouped by a column such as `domain`."""

    options: ReadOptions
    group_by: str | None = "domain"

    def output_name(self, shard: Shard) -> str | None:
        return None

    def __call__(self, shard: Shard, out: Path | None) -> ShardStats:
        from assay.runner import report_progress

        stats = ShardStats(shard.name)
        groups: dict[str, list[int]] = {}
        lengths: list[np.ndarray] = []
        for batch in shard.read(self.options, stats):
            n = batch.get_column("text").str.len_chars()
            stats.docs_out += batch.height
            stats.chars_out += int(n.sum())
            lengths.append(n.to_numpy())
            if self.group_by and self.group_by in batch.columns:
                g = (
                    batch.select(
                        pl.col(self.group_by).cast(pl.String).fill_null("(none)"), n.alias("n")
                    )
                    .group_by(self.group_by)
                    .agg(pl.len().alias("docs"), pl.col("n").sum().alias("chars"))
                )
                for key, docs, chars in g.iter_rows():
                    acc = groups.setdefault(key, [0, 0])
                    acc[0] += docs
                    acc[1] += chars
            report_progress(batch.height)
        stats.extra["groups"] = groups
        all_len = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
        stats.extra["length_hist"] = _length_histogram(all_len)
        return stats


_HIST_EDGES = [0, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 1_000_000, float("inf")]


def _length_histogram(lengths: np.ndarray) -> list[int]:
    return np.histogram(lengths, bins=np.asarray(_HIST_EDGES))[0].tolist()


def corpus_stats(
    corpus: Corpus, group_by: str | None = "domain", runner: Any = None
) -> dict[str, Any]:
    """Documents, characters, length histogram and per-group counts of a corpus."""
    from assay.runner import LocalRunner

    runner = runner or LocalRunner(workers=1)
    result = runner.run(
        StatsTask(corpus.options, group_by), corpus.shards, out_dir=None, label="stats"
    )
    groups: dict[str, dict[str, int]] = {}
    hist = np.zeros(len(_HIST_EDGES) - 1, dtype=np.int64)
    for s in result.shards:
        for key, (docs, chars) in s.extra.get("groups", {}).items():
            g = groups.setdefault(key, {"docs": 0, "chars": 0})
            g["docs"] += docs
            g["chars"] += chars
        hist += np.asarray(s.extra.get("length_hist", hist * 0))
    docs = result.docs_out
    edges = [
        f"{int(a)}-{'' if b == float('inf') else int(b)}"
        for a, b in itertools.pairwise(_HIST_EDGES)
    ]
    return {
        "shards": len(corpus.shards),
        "docs": docs,
        "chars": result.chars_out,
        "mean_chars": (result.chars_out / docs) if docs else 0.0,
        "skipped": result.skipped,
        "length_histogram": dict(zip(edges, hist.tolist(), strict=True)),
        "groups": dict(sorted(groups.items())),
        "group_by": group_by if groups else None,
    }

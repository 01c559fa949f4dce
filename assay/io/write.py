"""Writing shards: JSONL (optionally compressed) or parquet, atomically."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl

from assay.errors import ConfigError
from assay.io.arrow import HF_INFO, HF_STATE, write_hf_dataset_files
from assay.io.shards import (
    SUPPORTED_SUFFIXES,
    CorpusError,
    FileShard,
    ReadOptions,
    Shard,
    format_of,
)
from assay.util.files import compression_of, open_write
from assay.util.remote import publish


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
        raise ConfigError(
            f"unknown output format {fmt!r}; use parquet, jsonl, jsonl.gz, jsonl.zst or arrow "
            "(a Hugging Face dataset)"
        )
    return f"{shard.stem}.{fmt}"


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
        if self.format in ("parquet", "arrow"):
            self._write_table(df)
        else:
            if self._fh is None:
                self._ctx = open_write(self.path, compression_of(self.path.name))
                self._fh = self._ctx.__enter__()
            buf = io.BytesIO()
            df.write_ndjson(buf)
            self._fh.write(buf.getvalue())
        self.rows += df.height

    def _write_table(self, df: pl.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = df.to_arrow()
        if self._pq is None:
            self._schema = table.schema
            if self.format == "parquet":
                self._pq = pq.ParquetWriter(self.path, self._schema, compression="zstd")
            else:  # an Arrow IPC stream, as `datasets.save_to_disk` writes
                self._pq = pa.ipc.new_stream(str(self.path), self._schema)
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
                    f"columns {sorted(extra)} appear after the first batch; {self.format} "
                    "needs one schema per file (write JSONL instead, or give every record these "
                    "fields)",
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
        if self.format in ("parquet", "arrow"):
            if self._pq is None:
                empty = pl.DataFrame(schema=schema_if_empty or {"id": pl.String, "text": pl.String})
                if self.format == "parquet":
                    empty.write_parquet(self.path)
                else:
                    import pyarrow as pa

                    pa.ipc.new_stream(str(self.path), empty.to_arrow().schema).close()
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
        from assay.util.files import temp_path_for

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
                publish(self.final)
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


def finish_outputs(out: str | os.PathLike, names: Sequence[str]) -> None:
    """Once every shard of an output folder is written: a folder of `.arrow` shards is made a
    Hugging Face dataset (`datasets.load_from_disk(out)` opens it; `assay.io.arrow`)."""
    arrow = [Path(out) / n for n in dict.fromkeys(names) if n.endswith(".arrow")]
    if arrow:
        write_hf_dataset_files(out, arrow)


def clear_outputs_metadata(out: str | os.PathLike) -> None:
    """Remove what `finish_outputs` wrote (before an output folder is written again)."""
    for name in (HF_STATE, HF_INFO):
        (Path(out) / name).unlink(missing_ok=True)

"""Raw shard readers and record validation, used by `assay.corpus` shards.

Two paths, chosen per file by its estimated in-memory size (`ReadOptions.whole_file_bytes`):

* **whole file**: polars parses the file in one call (multi-threaded, decompressing gzip and
  zstd itself). Reading is then as fast as polars alone; the file is held in memory once.
* **streaming**: the file is read in blocks of whole lines (JSONL; gzip through ISA-L when
  installed) or row groups (parquet), so memory stays bounded whatever the size of a shard.

Either way the result is the same rows, ids and errors. Line numbers are only needed for error
messages, so on the fast path they are computed lazily, from the file, when a record is bad.
A file that polars cannot parse whole is re-read on the streaming path, which finds each bad line.
"""

from __future__ import annotations

import json
import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from assay._files import compression_of, open_read

Lines = Callable[[], np.ndarray]

#: Expansion assumed for compressed files when estimating their in-memory size.
COMPRESSION_RATIO = 5


@dataclass
class RawBatch:
    """Parsed rows before validation.

    `records` are 1-based ordinals among the non-blank lines (or rows) of the file: generated ids
    come from them. `lines()` gives each row's 1-based line (or row) number, for messages.
    `bad` lists records that did not parse: (line, reason, message).
    """

    df: pl.DataFrame
    records: np.ndarray
    lines: Lines
    bad: list[tuple[int, str, str]] = field(default_factory=list)


class FileLevelError(Exception):
    """A whole file cannot be read (corrupt archive, not parquet); carries the message."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path, self.message = path, message


def _const(values: np.ndarray) -> Lines:
    return lambda: values


def _arange(first: int, n: int) -> np.ndarray:
    return np.arange(first, first + n, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# JSONL


def estimated_bytes(path: str) -> int:
    size = os.path.getsize(path)
    return (
        size
        if compression_of(path) is None and not path.endswith(".parquet")
        else size * COMPRESSION_RATIO
    )


def read_jsonl(path: str, whole_file_bytes: int, block_bytes: int) -> Iterator[RawBatch]:
    if estimated_bytes(path) <= whole_file_bytes:
        try:
            df = pl.read_ndjson(path)
        except Exception:  # malformed JSON, bad UTF-8, mixed types: find them line by line
            df = None
        if df is not None:
            yield RawBatch(df, _arange(1, df.height), lambda: _nonblank_line_numbers(path))
            return
    yield from _read_jsonl_blocks(path, block_bytes)


def _nonblank_line_numbers(path: str) -> np.ndarray:
    with open_read(path) as f:
        data = f.read()
    return np.asarray(
        [i + 1 for i, ln in enumerate(data.split(b"\n")) if ln.strip()], dtype=np.int64
    )


def _decompressed_chunks(path: str, size: int) -> Iterator[bytes]:
    """The decompressed bytes of a .gz or .zst file, in chunks of about `size`."""
    kind = compression_of(path)
    if kind is None:
        with open(path, "rb") as f:
            while chunk := f.read(size):
                yield chunk
        return
    if kind == "zstd":
        import zstandard

        with open(path, "rb") as fh:
            reader = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
            while chunk := reader.read(size):
                yield chunk
        return
    with open_read(path) as f:
        while chunk := f.read(size):
            yield chunk


def _line_blocks(path: str, block_bytes: int) -> Iterator[tuple[int, bytes]]:
    """Blocks of whole lines, each with its offset in the decompressed stream. Giant lines stay whole."""
    offset = 0
    rest = b""
    try:
        for chunk in _decompressed_chunks(path, block_bytes):
            buf = rest + chunk if rest else chunk
            cut = buf.rfind(b"\n")
            if cut < 0:
                rest = buf
                continue
            block, rest = buf[: cut + 1], buf[cut + 1 :]
            yield offset, block
            offset += len(block)
        if rest:
            yield offset, rest
    except Exception as e:  # truncated gzip, corrupt zstd frame, I/O error
        kind = compression_of(path) or "file"
        raise FileLevelError(path, f"cannot read {kind} stream ({e})") from e


_END = object()


def prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run an iterator in a background thread, `depth` items ahead.

    Decompression (zlib, ISA-L, zstd) and polars parsing release the GIL, so reading the next
    block while the current one is parsed (or scored) uses a second core instead of waiting.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as e:  # handed to the consumer, raised there
            put((_END, e))

    thread = threading.Thread(target=produce, name="assay-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, tuple) and len(item) == 2 and item[0] is _END:
                raise item[1]
            yield item
    finally:
        stop.set()


def _read_jsonl_blocks(path: str, block_bytes: int) -> Iterator[RawBatch]:
    if compression_of(path) is None:
        yield from _mapped_blocks(path, block_bytes)
        return
    records_before = 0
    for offset, block in prefetched(_line_blocks(path, block_bytes)):
        lines_before = lambda a=offset: _count_lines(path, a)  # noqa: E731
        raw, n_records = _parse_block(block, lines_before, records_before)
        records_before += n_records
        yield raw


def _mapped_blocks(path: str, block_bytes: int) -> Iterator[RawBatch]:
    """Uncompressed files: slice whole-line blocks straight out of a memory map.

    No line counting on the way: ids come from record ordinals, and the line numbers that error
    messages need are counted from the file only when a record is bad.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        size, start, records_before = len(mm), 0, 0
        while start < size:
            end = min(start + block_bytes, size)
            if end < size:
                cut = mm.rfind(b"\n", start, end)
                if cut < 0:  # one line longer than the block: keep it whole
                    cut = mm.find(b"\n", end)
                end = size if cut < 0 else cut + 1
            lines_before = lambda a=start: _count_lines(path, a)  # noqa: E731
            raw, n_records = _parse_block(mm[start:end], lines_before, records_before)
            records_before += n_records
            start = end
            yield raw


def _count_lines(path: str, upto: int) -> int:
    """Newlines in the first `upto` (decompressed) bytes of a file; only for error messages."""
    n, left = 0, upto
    for chunk in _decompressed_chunks(path, 16 << 20):
        if left <= 0:
            break
        n += chunk.count(b"\n", 0, left)
        left -= len(chunk)
    return n


def _parse_block(
    block: bytes, lines_before: Callable[[], int], records_before: int
) -> tuple[RawBatch, int]:
    try:
        df = pl.read_ndjson(block)
    except Exception:
        return _parse_lines_slowly(block, lines_before(), records_before)

    def lines() -> np.ndarray:  # rows are the block's non-blank lines, in order
        first = lines_before() + 1
        numbers = [first + i for i, ln in enumerate(block.split(b"\n")) if ln.strip()]
        return np.asarray(numbers, dtype=np.int64)

    return RawBatch(df, _arange(records_before + 1, df.height), lines), df.height


def _parse_lines_slowly(
    block: bytes, lines_before: int, records_before: int
) -> tuple[RawBatch, int]:
    """Parse line by line to find the records that are broken, with reasons."""
    rows: list[dict[str, Any]] = []
    records: list[int] = []
    lines: list[int] = []
    bad: list[tuple[int, str, str]] = []
    record = records_before
    for i, line in enumerate(block.split(b"\n")):
        if not line.strip():
            continue
        record += 1
        number = lines_before + 1 + i
        try:
            obj = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            bad.append((number, "invalid_utf8", f"invalid UTF-8 at byte {e.start} of the line"))
            continue
        except json.JSONDecodeError as e:
            bad.append((number, "malformed_json", f"malformed JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(obj, dict):
            bad.append(
                (number, "not_an_object", f"expected a JSON object, got {type(obj).__name__}")
            )
            continue
        rows.append(obj)
        records.append(record)
        lines.append(number)
    df = pl.from_dicts(rows, infer_schema_length=None, strict=False) if rows else pl.DataFrame()
    return (
        RawBatch(
            df, np.asarray(records, dtype=np.int64), _const(np.asarray(lines, dtype=np.int64)), bad
        ),
        record - records_before,
    )


# ---------------------------------------------------------------------------------------------
# Parquet and Hugging Face datasets


def read_parquet(path: str, whole_file_bytes: int) -> Iterator[RawBatch]:
    try:
        if os.path.getsize(path) * COMPRESSION_RATIO <= whole_file_bytes:
            frames: Iterator[pl.DataFrame] = iter([pl.read_parquet(path)])
        else:  # polars' streaming engine: bounded memory, same speed
            frames = pl.scan_parquet(path).collect_batches()
        row = 0
        for df in frames:
            yield RawBatch(df, _arange(row + 1, df.height), _const(_arange(row + 1, df.height)))
            row += df.height
    except FileLevelError:
        raise
    except Exception as e:  # pyarrow and polars raise many types for corrupt files
        raise FileLevelError(path, f"not a readable parquet file ({e})") from e


def read_hf(dataset: Any, start: int, stop: int, batch_rows: int) -> Iterator[RawBatch]:
    ds = dataset.with_format("arrow")
    for a in range(start, stop, batch_rows):
        b = min(a + batch_rows, stop)
        df = pl.from_arrow(ds[a:b])
        assert isinstance(df, pl.DataFrame)
        yield RawBatch(df, _arange(a + 1, b - a), _const(_arange(a + 1, b - a)))


def read_hf_iterable(dataset: Any, batch_rows: int) -> Iterator[RawBatch]:
    row = 0
    for batch in dataset.iter(batch_size=batch_rows):
        df = pl.from_dict(batch, strict=False)
        yield RawBatch(df, _arange(row + 1, df.height), _const(_arange(row + 1, df.height)))
        row += df.height


# ---------------------------------------------------------------------------------------------
# Validation: one vectorised pass per batch; reasons are only worked out for bad rows.

REASONS = {
    "missing_text": "record has no '{field}' field (or it is null)",
    "text_not_string": "'{field}' is not a string",
    "empty_text": "'{field}' is empty",
    "too_long": "'{field}' is longer than max_chars={max_chars} characters",
}


def bad_rows(df: pl.DataFrame, text_field: str, max_chars: int | None) -> pl.Series | None:
    """A reason per row (null where the row is fine), or None when every row is fine."""
    if text_field not in df.columns:
        return pl.repeat("missing_text", df.height, eager=True)
    text = df.get_column(text_field)
    if text.dtype != pl.String:
        return pl.select(
            pl.when(text.is_null())
            .then(pl.lit("missing_text"))
            .otherwise(pl.lit("text_not_string"))
        ).to_series()
    empty = ~text.str.contains(r"\S")  # null for null texts
    bad = text.is_null() | empty.fill_null(False)
    if max_chars is not None:
        # Characters never outnumber UTF-8 bytes: count characters only where bytes exceed the cap.
        over = (text.str.len_bytes() > max_chars).fill_null(False)
        if over.any():
            over = over & (text.str.len_chars() > max_chars).fill_null(False)
            bad = bad | over
    if not bad.any():
        return None
    return pl.select(
        pl.when(text.is_null())
        .then(pl.lit("missing_text"))
        .when(empty)
        .then(pl.lit("empty_text"))
        .when(bad)
        .then(pl.lit("too_long"))
        .otherwise(pl.lit(None, dtype=pl.String))
    ).to_series()

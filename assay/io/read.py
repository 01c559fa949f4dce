"""Raw shard readers and record validation, used by `assay.corpus` shards.

JSON lines are read in blocks of whole lines (`assay.io.blocks`: plain files through a memory
map, gzip through ISA-L when installed, zstd in 2 MiB steps), so memory stays bounded
whatever the size of a shard: decompressed in one thread, parsed several blocks at once (one
thread each), validated in order by the caller. Each block is parsed by assay's C parser of flat
records (`assay.io.flat`), and when that does not read it (nested values, or a block it refuses)
strictly by pyarrow; when pyarrow refuses it too, line by line, which names each bad record. A
part of a large file (`assay.io.split`) is the lines of a byte range.

Where the C parser was not built, a file whose estimated in-memory size is within
`ReadOptions.whole_file_bytes` is parsed whole by pyarrow on all cores instead (faster than its
blocks), and larger ones stream. Parquet files are read whole or by row groups.

Either way the result is the same rows, ids and errors. Line numbers are only needed for error
messages, so they are computed lazily, from the file, when a record is bad.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.json as pj

from assay.io.blocks import (
    FileLevelError,
    count_lines,
    mapped_blocks,
    mapped_records_before,
    object_blocks,
    stream_blocks,
)
from assay.io.flat import AVAILABLE as FLAT_PARSER
from assay.io.flat import parse_flat
from assay.util.files import BOM, open_read, open_stream, sniff_compression
from assay.util.files import read_parquet as read_parquet_file

Lines = Callable[[], np.ndarray]
RawLines = Callable[[], list[bytes]]

#: Expansion assumed for compressed files when estimating their in-memory size.
COMPRESSION_RATIO = 5
#: Bytes a record may take beyond 6 per character of text (the longest JSON escape of one
#: character is 6 bytes, `\uXXXX`): room for ids and metadata.
LINE_SLACK_BYTES = 1 << 20


def max_line_bytes(max_chars: int | None) -> int | None:
    """The longest line that can hold a text of `max_chars` characters; longer lines are refused
    unread, so one giant line never costs more memory than this."""
    return None if max_chars is None else 6 * max_chars + LINE_SLACK_BYTES


@dataclass
class RawBatch:
    """Parsed rows before validation.

    `records` are 1-based ordinals among the non-blank lines (or rows) of the file (of the part,
    plus `record_base()` when that is set): generated ids come from them. `lines()` gives each row's 1-based line (or row) number, for messages.
    `raw()` gives each row's raw JSON line, for batches read leniently line by line, so that the
    few rows whose parsed values are suspicious are checked (a strict parse needs none). `bad`
    lists records that did not parse: (line, reason, message).
    """

    df: pl.DataFrame
    records: np.ndarray
    lines: Lines
    bad: list[tuple[int, str, str]] = field(default_factory=list)
    raw: RawLines | None = None
    record_base: Callable[[], int] | None = None

    def ordinals(self) -> np.ndarray:
        """`records` counted from the start of the file."""
        return self.records if self.record_base is None else self.records + self.record_base()


def _const(values: np.ndarray) -> Lines:
    return lambda: values


def _arange(first: int, n: int) -> np.ndarray:
    return np.arange(first, first + n, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# JSONL


def estimated_bytes(path: str, kind: str | None) -> int:
    size = os.path.getsize(path)
    return size if kind is None and not path.endswith(".parquet") else size * COMPRESSION_RATIO


_PARSE = pj.ParseOptions(unexpected_field_behavior="infer")


def parse_jsonl(data: Any, use_threads: bool = True) -> pl.DataFrame:
    """Parse JSON lines strictly, with every field of every record.

    `data` is a buffer, or a function that opens the source (a memory-mapped file, a
    decompressing stream that pyarrow reads while it parses). pyarrow's reader infers the schema
    of each block and adds a field whenever it first appears, however deep in the data (polars
    guesses from the first 100 records and drops later fields). It refuses what polars silently
    changes: a value whose type differs from the rest of its column (a text `42` among strings,
    which polars turns into "42") and a lone UTF-16 surrogate escape (which polars turns into
    U+0000); invalid UTF-8 is caught by validating the result. Any error sends the caller to
    the line-by-line reader, which names the bad records. Without `use_threads` the buffer is
    parsed as one block in this thread (the block reader parses several blocks at once).
    """
    if callable(data):
        source = data
    else:
        buffer = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
        source = lambda: buffer  # noqa: E731
    block = 1 << 20
    if not use_threads and not callable(data):
        block = max(block, len(buffer))
    while True:
        try:
            options = pj.ReadOptions(use_threads=use_threads, block_size=block)
            table = pj.read_json(source(), read_options=options, parse_options=_PARSE)
            break
        except pa.ArrowInvalid as e:
            if "straddl" in str(e) and block < (1 << 30):  # a line longer than a block
                block *= 8
                continue
            if "Empty JSON" in str(e):
                return pl.DataFrame()
            raise
    table.validate(
        full=True
    )  # pyarrow does not check UTF-8 while parsing: invalid bytes raise here
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    return df


def _read_whole(path: str, kind: str | None) -> pl.DataFrame:
    """A whole file's records; the path is taken literally (no glob). A compressed file is
    decompressed (ISA-L or zstd, outside the GIL) while pyarrow parses what came before."""
    if kind is None:
        return parse_jsonl(lambda: pa.memory_map(path))
    return parse_jsonl(lambda: pa.PythonFile(open_stream(path, kind), mode="r"))


def read_jsonl(
    path: str,
    whole_file_bytes: int,
    block_bytes: int,
    max_chars: int | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[RawBatch]:
    """The records of a JSONL file, or of its part `[start, stop)` (see `assay.io.blocks`)."""
    kind = sniff_compression(path)
    whole = start <= 0 and stop is None and not FLAT_PARSER  # the block reader is faster then
    if (
        whole
        and estimated_bytes(path, kind) <= whole_file_bytes
        and not _starts_with_bom(path, kind)
    ):
        try:
            df = _read_whole(path, kind)
        except Exception:  # malformed JSON, bad UTF-8, mixed types: find them line by line
            df = None
        if df is not None:
            # parsed strictly: no row needs its raw line checked (RawBatch.raw stays None)
            yield RawBatch(df, _arange(1, df.height), lambda: _nonblank_line_numbers(path))
            return
    yield from _read_jsonl_blocks(path, kind, block_bytes, max_line_bytes(max_chars), start, stop)


def _starts_with_bom(path: str, kind: str | None) -> bool:
    if kind is not None:
        return False  # inside a compressed stream: polars fails and the block reader strips it
    with open(path, "rb") as f:
        return f.read(3) == BOM


def _nonblank_line_numbers(path: str) -> np.ndarray:
    with open_read(path) as f:
        data = f.read()
    return np.asarray(
        [i + 1 for i, ln in enumerate(data.split(b"\n")) if ln.strip()], dtype=np.int64
    )


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


def _read_jsonl_blocks(
    path: str,
    kind: str | None,
    block_bytes: int,
    max_line: int | None,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[RawBatch]:
    """Parse whole-line blocks; the records of a part are numbered from the file's start.

    A pipeline: gzip and zstd are decompressed in one thread; blocks are parsed by a few
    threads at once (pyarrow releases the GIL), each block whole in one thread, so that no
    thread waits for another within a block; the caller validates them, in order, meanwhile.
    """
    threads = parse_threads()
    base: Callable[[], int] | None = None
    if kind is None:
        blocks = mapped_blocks(path, block_bytes, max_line, start, stop, threads)
        if start > 0:
            base = functools.cache(lambda: mapped_records_before(path, start, max_line))
    else:
        skipped: list[int] = []
        blocks = prefetched(
            stream_blocks(path, kind, block_bytes, max_line, start, stop, skipped.append)
        )
        if start > 0:
            base = lambda: skipped[0]  # noqa: E731 (known before the first block)
    records_before = 0
    parse = functools.partial(_parse_one, path, max_line, start <= 0)
    for raw, n_records in in_order(parse, blocks, threads):
        raw.records += records_before
        raw.record_base = base
        records_before += n_records
        yield raw


def read_jsonl_stream(
    label: str, stream: Any, block_bytes: int, max_chars: int | None
) -> Iterator[RawBatch]:
    """The records of an open stream of JSONL bytes (a remote object, decompressed), parsed
    block by block as they arrive; line numbers are counted on the way, for messages."""
    max_line = max_line_bytes(max_chars)
    lines_before = 0
    records_before = 0
    try:
        for offset, block in object_blocks(stream, block_bytes, max_line):
            if block is None:  # a line too long to hold a record: refused unread
                empty = np.zeros(0, dtype=np.int64)
                message = f"line longer than {max_line:,} bytes; not read"
                yield RawBatch(
                    pl.DataFrame(), empty, _const(empty), [(lines_before + 1, "too_long", message)]
                )
                lines_before += 1
                records_before += 1
                continue
            raw, n = _parse_block(block, functools.partial(int, lines_before), offset <= len(BOM))
            raw.records += records_before
            records_before += n
            lines_before += _as_bytes(block).count(b"\n")
            yield raw
    except FileLevelError:
        raise
    except Exception as e:  # a truncated or corrupt stream, a network error
        raise FileLevelError(label, f"cannot read the stream ({e})") from e


def parse_threads() -> int:
    """Blocks parsed at once: the threads this process may use (the runner limits a worker's
    through OMP_NUM_THREADS), at most 8."""
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(8, int(limit) if limit.isdigit() else pa.cpu_count()))


def in_order(fn: Callable[[Any], Any], items: Iterator[Any], threads: int) -> Iterator[Any]:
    """`fn` of each item, computed by `threads` threads (at most `threads` + 1 items ahead of
    the caller), handed out in order."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="assay-parse")
    pending: collections.deque[Future] = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=False)


def _parse_one(
    path: str, max_line: int | None, from_start: bool, item: tuple[int, Any]
) -> tuple[RawBatch, int]:
    """One block parsed, its records numbered from 1 (the caller adds those before it)."""
    offset, block = item
    if block is None:
        return _too_long(path, offset, max_line), 1
    lines_before = lambda: count_lines(path, offset)  # noqa: E731
    return _parse_block(block, lines_before, from_start and offset <= len(BOM))


def _too_long(path: str, offset: int, max_line: int | None) -> RawBatch:
    """A batch holding one refused record: a line too long to hold a valid one."""
    line = count_lines(path, offset) + 1
    message = (
        f"line longer than {max_line:,} bytes, more than any record whose text is within "
        "max_chars can take; not read"
    )
    empty = np.zeros(0, dtype=np.int64)
    return RawBatch(pl.DataFrame(), empty, _const(empty), [(line, "too_long", message)])


def _as_bytes(block: Any) -> bytes:
    return block if isinstance(block, bytes) else bytes(block)


def _parse_block(
    block: Any, lines_before: Callable[[], int], file_start: bool
) -> tuple[RawBatch, int]:
    df = parse_flat(block)
    if df is None:
        try:
            df = parse_jsonl(block, use_threads=False)
        except Exception:
            return _parse_lines_slowly(_as_bytes(block), lines_before(), file_start)

    def lines() -> np.ndarray:  # rows are the block's non-blank lines, in order
        first = lines_before() + 1
        data = _as_bytes(block)
        numbers = [first + i for i, ln in enumerate(data.split(b"\n")) if ln.strip()]
        return np.asarray(numbers, dtype=np.int64)

    return RawBatch(df, _arange(1, df.height), lines), df.height


def _parse_lines_slowly(block: bytes, lines_before: int, file_start: bool) -> tuple[RawBatch, int]:
    """Parse line by line to find the records that are broken, with reasons."""
    rows: list[dict[str, Any]] = []
    raws: list[bytes] = []
    records: list[int] = []
    lines: list[int] = []
    bad: list[tuple[int, str, str]] = []
    record = 0
    for i, line in enumerate(block.split(b"\n")):
        if not line.strip():
            continue
        record += 1
        number = lines_before + 1 + i
        if file_start and record == 1 and line.startswith(BOM):
            line = line[3:]
        problem = _check_line(line)
        if isinstance(problem, tuple):
            bad.append((number, *problem))
            continue
        rows.append(problem)
        raws.append(line)
        records.append(record)
        lines.append(number)
    df = _frame(rows) if rows else pl.DataFrame()
    return (
        RawBatch(
            df,
            np.asarray(records, dtype=np.int64),
            _const(np.asarray(lines, dtype=np.int64)),
            bad,
            raw=lambda: raws,
        ),
        record,
    )


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Records as a frame. A field whose JSON type varies between records (a string here, a
    list there) becomes JSON text, which validation then checks against the raw lines (a text
    field that held a list is a bad record); numbers that are ints and floats stay numbers."""
    kinds: dict[str, set[type]] = {}
    for r in rows:
        for k, v in r.items():
            if v is not None:
                kinds.setdefault(k, set()).add(float if type(v) is int else type(v))
    mixed = [k for k, t in kinds.items() if len(t) > 1]
    for k in mixed:
        for r in rows:
            v = r.get(k)
            if v is not None and not isinstance(v, str):
                r[k] = json.dumps(v, ensure_ascii=False)
    return pl.from_dicts(rows, infer_schema_length=None, strict=False)


def _check_line(line: bytes) -> dict[str, Any] | tuple[str, str]:
    """A line's record, or (reason, message) when it is not a valid one."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as e:
        return "invalid_utf8", f"invalid UTF-8 at byte {e.start} of the line"
    except json.JSONDecodeError as e:
        return "malformed_json", f"malformed JSON ({e.msg} at column {e.colno})"
    if not isinstance(obj, dict):
        return "not_an_object", f"expected a JSON object, got {type(obj).__name__}"
    if (b"\\ud" in line or b"\\uD" in line) and _has_lone_surrogate(obj):
        return "invalid_unicode", REASONS["invalid_unicode"]
    return obj


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value holds an unpaired UTF-16 surrogate (escaped as \\udXXX),
    which is not a Unicode character and cannot be written as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


# ---------------------------------------------------------------------------------------------
# Parquet and Hugging Face datasets


def read_parquet(
    path: str, whole_file_bytes: int, start: int = 0, stop: int | None = None
) -> Iterator[RawBatch]:
    """The rows of a parquet file, or its rows `[start, stop)` (a part: whole row groups)."""
    try:
        if (
            start <= 0
            and stop is None
            and os.path.getsize(path) * COMPRESSION_RATIO <= (whole_file_bytes)
        ):
            frames: Iterator[pl.DataFrame] = iter([read_parquet_file(path)])
        else:  # polars' streaming engine: bounded memory, same speed
            scan = pl.scan_parquet(path, glob=False)
            if start > 0 or stop is not None:
                scan = scan.slice(start, None if stop is None else stop - start)
            frames = scan.collect_batches()
        row = start
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
    "text_not_string": "'{field}' is not a string (a JSON number, boolean, list or object)",
    "empty_text": "'{field}' is empty",
    "too_long": "'{field}' is longer than max_chars={max_chars} characters",
    "invalid_unicode": "a lone UTF-16 surrogate escape (\\ud800-\\udfff) is not a Unicode "
    "character",
}

#: What polars makes of a JSON number, boolean, list or object in a string column. A text that
#: looks like this is checked against its raw line (rare: real documents seldom are "42").
_STRINGIFIED = r"(?s)^(?:-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|\[.*\]|\{.*\})$"


def suspicious_rows(df: pl.DataFrame, text_field: str) -> np.ndarray:
    """Rows whose parsed values may hide a bad record: a text that may have been a JSON
    non-string, or a NUL in any string (polars turns a lone `\\ud800` escape into U+0000)."""
    cond = df.get_column(text_field).str.contains(_STRINGIFIED)
    for name, dtype in df.schema.items():
        if dtype == pl.String:
            cond = cond | df.get_column(name).str.contains("\x00", literal=True)
    return np.flatnonzero(cond.fill_null(False).to_numpy())


def verify_rows(raw: list[bytes], rows: np.ndarray, text_field: str) -> dict[int, str]:
    """Reasons for the suspicious rows that really are bad, from their raw lines."""
    found: dict[int, str] = {}
    for i in rows.tolist():
        try:
            obj = json.loads(raw[i].decode("utf-8", errors="surrogatepass"))
        except ValueError:
            continue  # polars parsed it; leave it as polars read it
        if not isinstance(obj, dict):
            continue
        if _has_lone_surrogate(obj):
            found[i] = "invalid_unicode"
        elif obj.get(text_field) is not None and not isinstance(obj[text_field], str):
            found[i] = "text_not_string"
    return found


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
    col = pl.col(text_field)  # first one query for "is anything wrong?" (usually not)
    checks = [(col.is_null() | ~col.str.contains(r"\S")).any().alias("blank")]
    if max_chars is not None:
        checks.append((col.str.len_bytes() > max_chars).any().alias("long"))
    if not any(df.select(checks).row(0)):
        return None
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

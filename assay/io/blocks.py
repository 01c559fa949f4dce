"""Blocks of whole JSONL lines, for the streaming readers: a whole file or one part of it.

A block is `(offset, data)`: `data` holds whole lines (the last line of a file may lack its
newline) and `offset` is where it starts in the file's (decompressed) bytes; `(offset, None)`
says that a line longer than `max_line` starts there, which is skipped unread so that memory
stays bounded. Plain files are sliced out of a memory map without a copy (pyarrow buffers);
gzip and zstd files are decompressed in small steps, which stay in the CPU cache, and the steps
are joined into blocks of about `block_bytes`.

**Parts.** A large file is read as several parts (`assay.io.split`), each given a nominal byte
range `[start, stop)` of the (decompressed) file. A line belongs to the part whose range holds
the newline just before it; the first line of the file, which has none, belongs to the part
that starts at 0. So every line is read by exactly one part, whatever the line lengths, and a
part knows its lines from its own range and the bytes around it. A plain file is entered at
`start` directly; a compressed stream cannot be entered in the middle, so a part of a gzip or
zstd file decompresses what comes before its range and skips it, counting the records it skips
(generated ids number records from the start of the file).
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from assay.util.files import BOM, open_stream, sniff_compression

#: Decompressed bytes asked of gzip or zstd at a time.
CHUNK_BYTES = 1 << 20

Block = tuple[int, Any]


class FileLevelError(Exception):
    """A whole file cannot be read (corrupt archive, not parquet); carries the message."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path, self.message = path, message


# ---------------------------------------------------------------------------------------------
# Counting


#: The bytes that `bytes.strip()` removes: a line of only these is blank, not a record.
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[list(b" \t\n\r\x0b\x0c")] = True


def count_records(data: Any) -> int:
    """Non-blank lines in a buffer of whole lines (the last may lack its newline).

    Vectorised: a line whose first byte is not whitespace is a record; the rare line that starts
    with whitespace (or is empty) is checked on its own.
    """
    a = np.frombuffer(data, dtype=np.uint8)
    if len(a) == 0:
        return 0
    newlines = np.flatnonzero(a == 10)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(a)]))
    lines = np.flatnonzero(ends > starts)
    blank_start = _WHITESPACE[a[starts[lines]]]
    records = int(len(lines) - blank_start.sum())
    for i in lines[blank_start].tolist():
        if a[starts[i] : ends[i]].tobytes().strip():
            records += 1
    return records


def count_lines(path: str, upto: int) -> int:
    """Newlines in the first `upto` (decompressed) bytes of a file; only for error messages."""
    n, left = 0, upto
    for chunk in decompressed_chunks(path, CHUNK_BYTES):
        if left <= 0:
            break
        n += chunk.count(b"\n", 0, left)
        left -= len(chunk)
    return n


# ---------------------------------------------------------------------------------------------
# Plain files


def _line_after(mm: mmap.mmap, nominal: int, size: int) -> int:
    """Where the first line whose preceding newline is at or after `nominal` starts (0 for 0)."""
    if nominal <= 0:
        return 0
    nl = mm.find(b"\n", nominal) if nominal < size else -1
    return size if nl < 0 else nl + 1


def mapped_blocks(
    path: str, block_bytes: int, max_line: int | None, start: int = 0, stop: int | None = None
) -> Iterator[Block]:
    """Whole-line blocks of an uncompressed file, or of its part `[start, stop)`, as pyarrow
    buffers over a memory map (no copy). A line longer than `max_line` is skipped uncopied."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            pos = _line_after(mm, start, size)
            end = size if stop is None else _line_after(mm, stop, size)
            if pos == 0 and mm[:3] == BOM:
                pos = 3
            arrow = pa.memory_map(path)  # its buffers keep the mapping alive after close()
            try:
                yield from _mapped(mm, arrow, pos, end, block_bytes, max_line)
            finally:
                arrow.close()


def _mapped(
    mm: mmap.mmap,
    arrow: pa.MemoryMappedFile,
    pos: int,
    end: int,
    block_bytes: int,
    max_line: int | None,
) -> Iterator[Block]:
    while pos < end:
        cut = min(pos + block_bytes, end)
        if cut < end:
            nl = mm.rfind(b"\n", pos, cut)
            if nl < 0:  # one line longer than the block
                limit = end if max_line is None else min(end, pos + max_line)
                nl = mm.find(b"\n", cut, limit) if limit > cut else -1
                if nl < 0 and limit < end:  # longer than any valid record
                    yield pos, None
                    after = mm.find(b"\n", limit, end)
                    pos = end if after < 0 else after + 1
                    continue
            cut = end if nl < 0 else nl + 1
        yield pos, arrow.read_at(cut - pos, pos)
        pos = cut


def mapped_records_before(path: str, nominal: int, max_line: int | None) -> int:
    """Records of an uncompressed file before the part that starts at `nominal`."""
    if nominal <= 0:
        return 0
    n = 0
    for _, data in mapped_blocks(path, 16 << 20, max_line, 0, nominal):
        n += 1 if data is None else count_records(data)
    return n


# ---------------------------------------------------------------------------------------------
# Compressed files


def decompressed_chunks(path: str, size: int, kind: str | None = None) -> Iterator[bytes]:
    """The decompressed bytes of a file (gzip or zstd told by its bytes), in steps of `size`."""
    with contextlib.closing(open_stream(path, kind or sniff_compression(path))) as f:
        while chunk := f.read(size):
            yield chunk


def stream_blocks(
    path: str,
    kind: str,
    block_bytes: int,
    max_line: int | None,
    start: int = 0,
    stop: int | None = None,
    skipped: Callable[[int], None] | None = None,
) -> Iterator[Block]:
    """Whole-line blocks of a gzip or zstd file's decompressed bytes, or of its part
    `[start, stop)`; `skipped(n)` is told the records before the part (read, not kept)."""
    blocks = _joined(path, kind, block_bytes, max_line)
    if start <= 0 and stop is None:
        yield from blocks
        return
    yield from _in_range(blocks, start, stop, skipped or (lambda n: None))


def _joined(path: str, kind: str, block_bytes: int, max_line: int | None) -> Iterator[Block]:
    """Decompress in small steps; join them into whole-line blocks of about `block_bytes`."""
    pending: list[Any] = []  # decompressed bytes not yet handed out, from `offset`
    have = 0  # their length
    tail = 0  # bytes since their last newline (the line still open)
    offset = 0
    skipping = False  # inside a line too long to keep, until its newline
    try:
        for chunk in decompressed_chunks(path, CHUNK_BYTES, kind):
            if offset == 0 and have == 0 and not skipping and chunk.startswith(BOM):
                chunk, offset = chunk[3:], 3
            if skipping:
                nl = chunk.find(b"\n")
                if nl < 0:
                    offset += len(chunk)
                    continue
                offset, chunk, skipping = offset + nl + 1, chunk[nl + 1 :], False
            nl = chunk.rfind(b"\n")
            tail = tail + len(chunk) if nl < 0 else len(chunk) - nl - 1
            pending.append(chunk)
            have += len(chunk)
            if max_line is not None and tail > max_line:  # lines before it, then the line
                if have > tail:
                    yield offset, _take(pending, have - tail)
                offset += have - tail
                yield offset, None
                offset += tail
                pending, have, tail, skipping = [], 0, 0, True
            elif have - tail >= block_bytes:
                block = _take(pending, have - tail)
                yield offset, block
                offset += len(block)
                have = tail
        if pending and have:
            yield offset, b"".join(pending)
    except FileLevelError:
        raise
    except Exception as e:  # truncated gzip, corrupt zstd frame, I/O error
        raise FileLevelError(path, f"cannot read {kind} stream ({e})") from e


def _take(pending: list[Any], n: int) -> bytes:
    """The first `n` bytes of `pending` as one block; `pending` keeps the rest (in place)."""
    total, i = 0, 0
    while total + len(pending[i]) < n:
        total += len(pending[i])
        i += 1
    last = pending[i]
    keep = n - total
    block = b"".join([*pending[:i], memoryview(last)[:keep]])
    pending[: i + 1] = [last[keep:]] if keep < len(last) else []
    return block


def _in_range(
    blocks: Iterator[Block], start: int, stop: int | None, skipped: Callable[[int], None]
) -> Iterator[Block]:
    """The lines of the part `[start, stop)`: those whose preceding newline lies in it."""
    begun, first = start <= 0, True
    records = 0  # before the part
    for offset, data in blocks:
        # the newline before the block's first line; the file's first line has none
        before, first = (-1 if first else offset - 1), False
        if stop is not None and before >= stop:
            return
        if not begun and before >= start:
            skipped(records)
            begun = True
        if data is None:  # a line too long to read starts at offset
            if begun:
                yield offset, None
            else:
                records += 1
            continue
        if not begun:
            nl = data.find(b"\n", max(0, start - offset))
            if nl < 0:
                records += count_records(data)
                continue
            records += count_records(memoryview(data)[: nl + 1])
            skipped(records)
            begun = True
            offset, data = offset + nl + 1, data[nl + 1 :]
            if not data:
                continue
        if stop is not None:
            nl = data.find(b"\n", max(0, stop - offset))
            if nl >= 0:
                yield offset, data[: nl + 1]
                return
        yield offset, data
    if not begun:
        skipped(records)

"""Blocks of whole JSONL lines, for the streaming readers: a whole file or one part of it.

A block is `(offset, data)`: `data` holds whole lines (the last line of a file may lack its
newline) and `offset` is where it starts in the file's (decompressed) bytes; `(offset, None)`
says that a line longer than `max_line` starts there, which is skipped unread so that memory
stays bounded. Plain files are cut at newlines found in a memory map into blocks of about
equal size, as many as a multiple of the parsing threads; gzip and zstd files are decompressed in
steps of `CHUNK_BYTES` straight into the block being filled, and blocks grow
from `FIRST_BLOCK_BYTES` to `block_bytes`, so that parsing starts early and overlaps the
decompression of what follows.

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

from assay.util import zstd
from assay.util.files import BOM, open_stream, sniff_compression

#: Decompressed bytes asked of gzip or zstd at a time (at most a block). Each step takes the
#: GIL in the decompressing thread, and a thread that asks for the GIL may wait for the others
#: to let go of it; 2 MiB steps (not 256 KiB) keep those waits rare while the other threads
#: parse and validate (measured: 8 zstd files 0.74 -> 0.86x polars, gzip 0.94 -> 0.98x).
CHUNK_BYTES = 2 << 20
#: Bytes read at a time when counting lines for a message (little memory, whatever the file).
COUNT_BYTES = 256 << 10
#: The first block of a gzip or zstd file; each next one is twice as large, up to block_bytes.
FIRST_BLOCK_BYTES = 2 << 20
#: How far past its nominal end a block of a plain file may go to end with the line there.
CUT_SLACK_BYTES = 1 << 20

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
    for chunk in decompressed_chunks(path, COUNT_BYTES):
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
    path: str,
    block_bytes: int,
    max_line: int | None,
    start: int = 0,
    stop: int | None = None,
    threads: int = 1,
) -> Iterator[Block]:
    """Whole-line blocks of an uncompressed file, or of its part `[start, stop)`. Lines are
    found in a memory map, blocks read into buffers of their own (so that memory holds a few
    blocks, not the file's mapped pages). A line longer than `max_line` is skipped unread.
    Blocks are at most `block_bytes`, and small enough to give `threads` threads one each."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            pos = _line_after(mm, start, size)
            end = size if stop is None else _line_after(mm, stop, size)
            if pos == 0 and mm[:3] == BOM:
                pos = 3
            count = block_count(end - pos, block_bytes, threads)
            released = 0
            for at, n in _mapped(mm, pos, end, block_bytes, max_line, count):
                yield at, None if n is None else _pread(f.fileno(), at, n)
                released = _release(mm, released, at + (n or 0))


def block_count(size: int, block_bytes: int, threads: int) -> int:
    """How many blocks `size` bytes are cut into: blocks of at most `block_bytes`, their number
    a multiple of `threads` so that the last round of parsing keeps every thread busy (7 blocks
    on 2 threads leave one idle), but none smaller than `FIRST_BLOCK_BYTES` (unless the whole
    is)."""
    n = max(1, -(-size // block_bytes))
    n = -(-n // threads) * threads
    return max(1, min(n, size // FIRST_BLOCK_BYTES))


def _mapped(
    mm: mmap.mmap, pos: int, end: int, block_bytes: int, max_line: int | None, count: int = 1
) -> Iterator[tuple[int, int | None]]:
    """(start, length) of each block; (start, None) for a line too long to read. Each block is
    nominally an equal share of what is left for the `count` blocks (at most `block_bytes`),
    and ends with the line that holds its nominal end when that line ends within
    `CUT_SLACK_BYTES` (and `block_bytes`) and is not too long to read, else before it: so a
    file cut for n threads gives n blocks of about equal size, not n and a sliver."""
    while pos < end:
        cut = min(pos + min(block_bytes, -(-(end - pos) // count)), end)
        count = max(1, count - 1)
        if cut < end:
            prev = mm.rfind(b"\n", pos, cut)
            reach = min(end, cut + CUT_SLACK_BYTES, pos + block_bytes)  # never past block_bytes
            nl = mm.find(b"\n", cut - 1, reach) if prev >= 0 else -1
            if nl < 0 or (max_line is not None and nl - prev > max_line):
                nl = prev  # the line at the cut starts the next block
            if nl < 0:  # one line longer than the block
                limit = end if max_line is None else min(end, pos + max_line)
                nl = mm.find(b"\n", cut, limit) if limit > cut else -1
                if nl < 0 and limit < end:  # longer than any valid record
                    yield pos, None
                    after = mm.find(b"\n", limit, end)
                    pos = end if after < 0 else after + 1
                    continue
            cut = end if nl < 0 else nl + 1
        yield pos, cut - pos
        pos = cut


def _pread(fd: int, offset: int, n: int) -> memoryview:
    """`n` bytes of a file from `offset`, in a buffer of their own."""
    buf = memoryview(np.empty(n, dtype=np.uint8))
    done = 0
    while done < n:
        got = os.preadv(fd, [buf[done:]], offset + done)
        if got <= 0:
            raise OSError(f"file shrank while being read (at byte {offset + done})")
        done += got
    return buf


def _release(mm: mmap.mmap, start: int, upto: int) -> int:
    """Drop the map's pages in `[start, upto)` from this process (the page cache keeps them),
    so that searching a huge file for newlines does not hold it in memory; the new start."""
    upto -= upto % mmap.PAGESIZE
    if upto > start and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED, start, upto - start)
        return upto
    return start


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
    kind = kind or sniff_compression(path)
    with open(path, "rb") as raw:
        stream = raw if kind is None else _decompressing(raw, kind)
        with contextlib.closing(stream) as f:
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
    """Decompress in steps straight into a block buffer (no copy); hand out its whole
    lines when it holds `block_bytes`, and carry the open line into the next buffer."""
    try:
        with open(path, "rb") as raw, contextlib.closing(_decompressing(raw, kind)) as stream:
            yield from _fill(stream, block_bytes, max_line)
    except FileLevelError:
        raise
    except Exception as e:  # truncated gzip, corrupt zstd frame, I/O error
        raise FileLevelError(path, f"cannot read {kind} stream ({e})") from e


def _fill(stream: Any, block_bytes: int, max_line: int | None) -> Iterator[Block]:
    """Whole-line blocks of a stream of decompressed bytes. The first blocks are small and
    each is twice the last, up to block_bytes: parsing starts after 2 MiB are decompressed, and
    goes on while the next block is decompressed."""
    step = max(4096, min(CHUNK_BYTES, block_bytes))
    size = min(block_bytes, FIRST_BLOCK_BYTES) + step  # a block's bytes, and room for a step
    buf = _Buffer(size, step)
    offset = 0  # of buf[lo] in the decompressed file
    skipping = False  # inside a line too long to keep, until its newline
    while True:
        if buf.n + step >= buf.size:  # holds a block
            if buf.last >= buf.lo:  # hand out its whole lines
                yield offset, buf.view(buf.lo, buf.last + 1)
                offset += buf.last + 1 - buf.lo
                size = min(2 * (size - step), block_bytes) + step
                buf = buf.carry(size, buf.last + 1)
            else:  # one open line fills it: a longer buffer (up to about 2 * max_line)
                buf = buf.carry(2 * buf.size, buf.lo)
        got = buf.read(stream)
        if not got:
            break
        if offset == 0 and buf.n == got and buf.startswith(BOM):
            buf.lo, offset = 3, 3
        if skipping:
            nl = buf.find_newline(buf.n - got)
            if nl < 0:
                offset += got
                buf.clear()
                continue
            offset += nl + 1
            buf, skipping = buf.carry(size, nl + 1), False
        open_line = buf.n - max(buf.last + 1, buf.lo)
        if max_line is not None and open_line > max_line:
            if buf.last >= buf.lo:  # the whole lines before the long one
                yield offset, buf.view(buf.lo, buf.last + 1)
                offset += buf.last + 1 - buf.lo
            yield offset, None
            offset += open_line
            buf = _Buffer(size, step)  # never refill a buffer whose lines were handed out
            skipping = True
    if buf.n > buf.lo:
        yield offset, buf.view(buf.lo, buf.n)


class _Buffer:
    """A block being filled: bytes `[lo, n)` of a buffer that blocks are views of (no copy out);
    `last` is where its last newline is (-1: none)."""

    def __init__(self, size: int, step: int):
        self.size, self.step = size, step
        self.data = np.empty(size, dtype=np.uint8)  # not zero-filled; freed memory is reused
        self.lo = self.n = 0
        self.last = -1

    def read(self, stream: Any) -> int:
        got = stream.readinto(memoryview(self.data)[self.n : self.n + self.step]) or 0
        if got:
            nl = _rfind_newline(self.data, self.n, self.n + got)
            if nl >= 0:
                self.last = nl
            self.n += got
        return got

    def startswith(self, prefix: bytes) -> bool:
        return self.data[: len(prefix)].tobytes() == prefix

    def find_newline(self, start: int) -> int:
        hits = np.flatnonzero(self.data[start : self.n] == 10)
        return int(hits[0]) + start if len(hits) else -1

    def view(self, a: int, b: int) -> memoryview:
        return memoryview(self.data)[a:b]

    def clear(self) -> None:
        self.lo = self.n = 0
        self.last = -1

    def carry(self, size: int, start: int) -> _Buffer:
        """A new buffer holding this one's bytes from `start` on."""
        new = _Buffer(size, self.step)
        new.n = self.n - start
        new.data[: new.n] = self.data[start : self.n]
        new.last = self.last - start if self.last >= start else -1
        return new


def _rfind_newline(a: np.ndarray, lo: int, hi: int) -> int:
    """The last newline in `a[lo:hi]` (-1: none), looking back from `hi` in small steps."""
    while hi > lo:
        start = max(lo, hi - (16 << 10))
        hits = np.flatnonzero(a[start:hi] == 10)
        if len(hits):
            return int(hits[-1]) + start
        hi = start
    return -1


def _decompressing(raw: Any, kind: str) -> Any:
    """A gzip or zstd stream of an open file, to `readinto`: zstd unbuffered, so that it
    decompresses straight into the block. The caller closes both."""
    if kind == "zstd":
        return zstd.reader(raw)
    return open_stream(raw, kind)


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
            nl = _find_newline(data, start - offset)
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
            nl = _find_newline(data, stop - offset)
            if nl >= 0:
                yield offset, data[: nl + 1]
                return
        yield offset, data
    if not begun:
        skipped(records)


def _find_newline(data: Any, start: int) -> int:
    """The first newline at or after `start` in a buffer (-1: none)."""
    a = np.frombuffer(data, dtype=np.uint8)[max(0, start) :]
    hits = np.flatnonzero(a == 10)
    return int(hits[0]) + max(0, start) if len(hits) else -1


def object_blocks(stream: Any, block_bytes: int, max_line: int | None) -> Iterator[Block]:
    """Whole-line blocks of an open stream of decompressed bytes (a remote object's)."""
    return _fill(stream, block_bytes, max_line)

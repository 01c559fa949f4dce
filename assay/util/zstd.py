"""zstd streams that say when they are cut short.

python-zstandard's stream reader reads a frame that ends early (a truncated download, a copy
interrupted) as a shorter stream, without an error: a shard would lose its last records
silently. A local file is therefore walked first, frame header by block header (RFC 8878; no
decompression, a few reads per megabyte), and refused unless it ends exactly where its last
frame does.
"""

from __future__ import annotations

import os
import stat
from typing import Any, BinaryIO

FRAME_MAGIC = 0xFD2FB528
SKIPPABLE = range(0x184D2A50, 0x184D2A60)


def frames_problem(f: BinaryIO) -> str | None:
    """What is wrong with the zstd frames of an open local file from its position on (None:
    whole frames, up to its end). Reads headers with `pread`: the position does not move."""
    fd = f.fileno()
    size = os.fstat(fd).st_size
    pos = f.tell()
    while pos < size:
        head = os.pread(fd, 18, pos)
        if len(head) < 8:
            return f"truncated zstd frame header at byte {pos}"
        magic = int.from_bytes(head[:4], "little")
        if magic in SKIPPABLE:
            pos += 8 + int.from_bytes(head[4:8], "little")
            continue
        if magic != FRAME_MAGIC:
            return f"not a zstd frame at byte {pos}"
        descriptor = head[4]
        single = (descriptor >> 5) & 1
        content_size = (single, 2, 4, 8)[descriptor >> 6]
        dictionary = (0, 1, 2, 4)[descriptor & 3]
        pos += 5 + (1 - single) + dictionary + content_size
        last = 0
        while not last:
            block = os.pread(fd, 3, pos)
            if len(block) < 3:
                return f"zstd stream cut short at byte {size} (a block header expected)"
            header = int.from_bytes(block, "little")
            last, kind, length = header & 1, (header >> 1) & 3, header >> 3
            if kind == 3:
                return f"invalid zstd block at byte {pos}"
            pos += 3 + (1 if kind == 1 else length)  # an RLE block holds one byte
        pos += 4 * ((descriptor >> 2) & 1)  # the checksum
    if pos > size:
        return f"zstd stream cut short: its last frame ends at byte {pos}, the file at {size}"
    return None


def reader(raw: BinaryIO, closefd: bool = False) -> Any:
    """A decompressing reader (`readinto`, `read`) of an open zstd file, across frames; a
    local file whose frames are cut short raises ValueError before anything is read."""
    import zstandard

    if hasattr(raw, "fileno") and _is_regular(raw):
        problem = frames_problem(raw)
        if problem is not None:
            raise ValueError(problem)
    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=closefd)


def _is_regular(raw: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(raw.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):  # no real descriptor (an in-memory stream)
        return False

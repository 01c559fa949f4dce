"""Large files as several tasks, so that one huge file uses every worker.

A file holding more than `ReadOptions.split_bytes` is read as parts, each a shard of its own:

* **JSONL** (plain, gzip or zstd) is cut into nominal byte ranges of its (decompressed) bytes;
  a line belongs to the part whose range holds the newline before it (`assay.io.blocks`), so
  parts are whole lines and every line is read once. A plain file is entered at its range; a
  gzip or zstd stream cannot be entered in the middle, so a part decompresses the bytes before
  its range and skips them (`ReadOptions.compressed_parts` caps the parts of such a file:
  n parts cost (n+1)/2 decompressions, and decompressing is several times faster than parsing
  and scoring). Its decompressed size is estimated from its first 256 KiB.
* **parquet** is cut between row groups, by their uncompressed size (from the footer).

Part `i` of `n` of `news/big.jsonl.zst` is named `news/big.part-0000i-of-0000n.jsonl.zst` (from
0; five digits at least), so each task's output (scores, selection keys, selected documents)
takes that name and resumes on its own. A part's generated ids number the records of the whole
file (`news/big.jsonl.zst:<n>`), as an unsplit read does. The split depends only on the file and
the settings, never on the runner, so one, eight or a Ray cluster of workers write the same
outputs.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from assay.io.read import COMPRESSION_RATIO, RawBatch, read_jsonl, read_parquet
from assay.io.shards import FileShard, ReadOptions, Shard, strip_format_suffix
from assay.util.files import sniff_compression

#: `<stem>.part-00001-of-00004`: the stem of a part's name.
PART_STEM = re.compile(r"^(?P<stem>.+)\.part-(?P<index>\d{5,})-of-(?P<count>\d{5,})$")

#: Compressed bytes decompressed to estimate a gzip or zstd file's size.
SAMPLE_BYTES = 256 << 10

#: Text seldom compresses better than this: a file smaller than `split_bytes / _MAX_RATIO` is
#: not split (nor sampled: a corpus of many small files is planned from their sizes alone).
_MAX_RATIO = 32


def part_name(name: str, index: int, count: int) -> str:
    """'news/big.jsonl.zst', 1, 4 -> 'news/big.part-00001-of-00004.jsonl.zst'."""
    stem = strip_format_suffix(name)
    return f"{stem}.part-{index:05d}-of-{count:05d}{name[len(stem) :]}"


def parse_part_name(name: str) -> tuple[str, int, int] | None:
    """'news/big.part-00001-of-00004.jsonl.zst' -> ('news/big.jsonl.zst', 1, 4); None for a
    name that is not a part's."""
    stem = strip_format_suffix(name)
    m = PART_STEM.match(stem)
    if m is None:
        return None
    return m["stem"] + name[len(stem) :], int(m["index"]), int(m["count"])


def shard_named(name: str, path: str) -> FileShard:
    """The shard (a whole file, or a part of it) that a name says, for naming its outputs."""
    parsed = parse_part_name(name)
    if parsed is None:
        return FileShard(name=name, path=path)
    file, index, count = parsed
    return FilePart(name=name, path=path, file=file, index=index, count=count)


@dataclass(frozen=True)
class FilePart(FileShard):
    """Part `index` of `count` of a large file: the lines of the byte range `[start, stop)` of
    a JSONL file, or the rows `[start, stop)` of a parquet file (`stop` None: to the end)."""

    file: str = ""
    index: int = 0
    count: int = 1
    start: int = 0
    stop: int | None = None

    @property
    def file_name(self) -> str:
        return self.file

    def _part(self) -> dict[str, Any]:
        return {"index": self.index, "count": self.count, "start": self.start, "stop": self.stop}

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "part": self._part()}

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "part": self._part()}

    def whole(self) -> FileShard:
        return FileShard(name=self.file, path=self.path)

    def _raw(self, options: ReadOptions) -> Iterator[RawBatch]:
        if self.format == "parquet":
            return read_parquet(self.path, options.whole_file_bytes, self.start, self.stop)
        return read_jsonl(
            self.path,
            options.whole_file_bytes,
            options.block_bytes,
            options.max_chars,
            self.start,
            self.stop,
        )


def whole_files(shards: Sequence[Shard]) -> list[Shard]:
    """The shards with each split file in one piece again (once, where its first part was)."""
    out: list[Shard] = []
    seen: set[str] = set()
    for s in shards:
        if isinstance(s, FilePart):
            if s.file in seen:
                continue
            seen.add(s.file)
            s = s.whole()
        out.append(s)
    return out


def split_shards(shards: Sequence[Shard], options: ReadOptions) -> list[Shard]:
    """Every file larger than `options.split_bytes` replaced by its parts, in order."""
    files = whole_files(shards)
    if not options.split_bytes:
        return files
    out: list[Shard] = []
    for s in files:
        out += file_parts(s, options) if type(s) is FileShard else [s]
    return out


def file_parts(shard: FileShard, options: ReadOptions) -> list[Shard]:
    """A file's parts, or the file alone when it is small (or unreadable: reading says why)."""
    assert options.split_bytes is not None
    try:
        st = os.stat(shard.path)
        if st.st_size * _MAX_RATIO <= options.split_bytes or shard.format == "arrow":
            return [shard]  # Arrow files: `datasets` already cuts them at 500 MB
        if shard.format == "parquet":
            bounds = _parquet_bounds(shard.path, options.split_bytes)
        else:
            bounds = _jsonl_bounds(shard.path, st, options)
    except Exception:  # a missing or corrupt file is reported when it is read
        return [shard]
    if len(bounds) < 2:
        return [shard]
    n = len(bounds)
    return [
        FilePart(
            name=part_name(shard.name, i, n),
            path=shard.path,
            file=shard.name,
            index=i,
            count=n,
            start=bounds[i],
            stop=bounds[i + 1] if i + 1 < n else None,
        )
        for i in range(n)
    ]


def _jsonl_bounds(path: str, st: os.stat_result, options: ReadOptions) -> list[int]:
    """Nominal first bytes of the parts of a JSONL file (one entry: do not split)."""
    assert options.split_bytes is not None
    kind = sniff_compression(path)
    if kind is None:
        size, most = st.st_size, st.st_size
    else:
        size = _decompressed_size(path, kind, st.st_size, st.st_mtime_ns)
        most = options.compressed_parts
    n = max(1, min(math.ceil(size / options.split_bytes), most))
    return [i * size // n for i in range(n)]


@functools.lru_cache(maxsize=4096)
def _decompressed_size(path: str, kind: str, size: int, mtime_ns: int) -> int:
    """A gzip or zstd file's decompressed size: exact for a file of one stream within
    `SAMPLE_BYTES`, otherwise estimated from how its first `SAMPLE_BYTES` decompress."""
    with open(path, "rb") as f:
        head = f.read(SAMPLE_BYTES)
    if kind == "zstd":
        import zstandard

        d: Any = zstandard.ZstdDecompressor().decompressobj()
    else:
        import zlib

        d = zlib.decompressobj(wbits=31)
    out = len(d.decompress(head))
    used = len(head) - len(d.unused_data)
    if out == 0 or used <= 0:
        return size * COMPRESSION_RATIO
    return out if used == size else math.ceil(size * out / used)


def _parquet_bounds(path: str, split_bytes: int) -> list[int]:
    """First rows of the parts of a parquet file: runs of row groups of about `split_bytes`
    (uncompressed) each (one entry: do not split)."""
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    total = sum(g.total_byte_size for g in groups)
    n = min(math.ceil(total / split_bytes), len(groups)) if total else 1
    bounds: list[int] = []
    row = done = 0
    for g in groups:
        part = min(n - 1, done * n // total) if total else 0
        if len(bounds) <= part:
            bounds.append(row)
        row += g.num_rows
        done += g.total_byte_size
    return bounds or [0]

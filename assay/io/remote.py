"""Corpora in remote storage (`s3://`, `gs://`, `hf://`, `memory://`...), read streaming.

A remote corpus path is listed with fsspec (a folder recursively, a glob, or one object; the
same names are skipped as in a local folder: hidden and `_` names, plain `.json`, folders that
assay wrote, and `.arrow` files outside a saved dataset). Each object is one shard, read as a
stream (JSONL in whole-line blocks, decompressed on the fly; parquet by row groups; Arrow IPC by
record batches): nothing is downloaded first and memory stays bounded. A shard's identity is
its name, size and the store's ETag (or checksum), so resume compares content as for local
files. Remote files are not cut into parts: one object is one task.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import polars as pl

from assay.errors import InputError, MissingError
from assay.io.arrow import HF_DICT, HF_INFO, HF_STATE, read_arrow_source
from assay.io.blocks import FileLevelError
from assay.io.read import RawBatch, read_jsonl_stream
from assay.io.shards import (
    FOLDER_SUFFIXES,
    CorpusError,
    ReadOptions,
    Shard,
    ShardStats,
    _validated,
    format_of,
)
from assay.util.files import MAGIC, open_stream
from assay.util.guard import LEGACY_MARKERS, MARKER
from assay.util.remote import filesystem

_BLOCK = 8 << 20  # bytes fetched per request


@dataclass(frozen=True, eq=False)
class RemoteShard(Shard):
    """One object of a remote store."""

    path: str = ""  # the URL
    size: int = 0
    tag: str = ""  # ETag or checksum: the object's content

    @property
    def format(self) -> str:
        return format_of(self.path)

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "size": self.size, "etag": self.tag}

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "etag": self.tag}

    def read(self, options: ReadOptions, stats: ShardStats | None = None) -> Iterator[pl.DataFrame]:
        stats = stats if stats is not None else ShardStats(self.name)
        if self.size == 0:
            stats.note("empty_shard")
            return
        yield from _validated(self._raw(options), self, options, stats)

    def _raw(self, options: ReadOptions) -> Iterator[RawBatch]:
        fs, path = filesystem(self.path)
        try:
            f = fs.open(path, "rb", block_size=_BLOCK)
        except FileNotFoundError as e:
            raise CorpusError(self.path, "file not found") from e
        with contextlib.closing(f):
            if self.format == "parquet":
                yield from _parquet(self.path, f, options.batch_rows)
            elif self.format == "arrow":
                yield from read_arrow_source(self.path, f, options.batch_rows)
            else:
                kind = _sniff(f)
                stream = f if kind is None else open_stream(f, kind)
                with contextlib.closing(stream):
                    yield from read_jsonl_stream(
                        self.path, stream, options.block_bytes, options.max_chars
                    )


def _sniff(f: Any) -> str | None:
    head = f.read(4)
    f.seek(0)
    return next((kind for magic, kind in MAGIC.items() if head.startswith(magic)), None)


def _parquet(url: str, f: Any, batch_rows: int) -> Iterator[RawBatch]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        row = 0
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows):
            df = pl.from_arrow(pa.Table.from_batches([batch]))
            assert isinstance(df, pl.DataFrame)
            numbers = np.arange(row + 1, row + 1 + df.height, dtype=np.int64)
            yield RawBatch(df, numbers, lambda v=numbers: v)
            row += df.height
    except (pa.ArrowException, OSError) as e:
        raise FileLevelError(url, f"not a readable parquet file ({e})") from e


def remote_inputs(url: str) -> tuple[list[Shard], list[str]]:
    """The shards of a remote corpus path (folder, glob or object) and the input it names."""
    fs, path = filesystem(url)
    fs.invalidate_cache()  # list what is there now, not what an earlier listing saw
    protocol = url.split("://", 1)[0]
    if fs.isdir(path):
        root = path.rstrip("/")
        found = _saved_dataset(fs, root) or _listed(fs, root, fs.find(root, detail=True))
        if not found:
            suffixes = ", ".join(FOLDER_SUFFIXES)
            raise MissingError(f"no corpus files ({suffixes}) under {url!r}")
    elif fs.exists(path):  # an object that exists is taken as it is, even with '[' in its name
        root = path.rsplit("/", 1)[0]
        found = [(path, fs.info(path))]
    elif any(ch in path for ch in "*?["):  # only a path that does not exist is a glob
        infos = fs.glob(path, detail=True)
        root = path[: min(path.index(ch) for ch in "*?[" if ch in path)].rsplit("/", 1)[0]
        found = _listed(fs, root, infos)
        if not found:
            raise MissingError(f"no corpus files match {url!r}")
    else:
        raise MissingError(f"corpus file not found: {url!r}")
    shards: list[Shard] = []
    for name, info in found:
        format_of(name)  # refuses unsupported types, naming the file
        shards.append(
            RemoteShard(
                name=name[len(root) + 1 :] if name.startswith(root + "/") else name,
                path=f"{protocol}://{name}",
                size=int(info.get("size") or 0),
                tag=str(info.get("ETag") or info.get("etag") or info.get("checksum") or ""),
            )
        )
    return shards, [url]


def _listed(fs: Any, root: str, infos: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Data files among listed objects, in name order, without hidden, `_` and assay's output
    folders below `root`."""
    outputs = {
        str(PurePosixPath(n).parent)
        for n in infos
        if PurePosixPath(n).name in (MARKER, *LEGACY_MARKERS)
    }
    out = []
    for name in sorted(infos):
        info = infos[name]
        if info.get("type", "file") != "file" or not name.endswith(FOLDER_SUFFIXES):
            continue
        rel = PurePosixPath(name[len(root) + 1 :] if name.startswith(root + "/") else name)
        if any(part.startswith((".", "_")) for part in rel.parts):
            continue
        parents = [f"{root}/{PurePosixPath(*rel.parts[:i])}" for i in range(1, len(rel.parts))]
        if any(p in outputs for p in parents):
            continue
        out.append((name, info))
    return out


def _saved_dataset(fs: Any, root: str) -> list[tuple[str, dict[str, Any]]] | None:
    """The Arrow files of a `save_to_disk` folder in the store (see `assay.io.arrow`)."""
    if fs.exists(f"{root}/{HF_DICT}"):
        raise InputError(f"{root} is a Hugging Face DatasetDict: pass one split's folder")
    if not (fs.exists(f"{root}/{HF_STATE}") and fs.exists(f"{root}/{HF_INFO}")):
        return None
    try:
        state = json.loads(fs.cat_file(f"{root}/{HF_STATE}"))
        names = [f"{root}/{f['filename']}" for f in state["_data_files"]]
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{root}/{HF_STATE}: not a datasets save_to_disk state file ({e})") from e
    return [(n, fs.info(n)) for n in names]

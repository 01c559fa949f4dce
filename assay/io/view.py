"""Views: a corpus' own files, read with one column taken from side-car tables.

Clustering gives every document a `domain` without copying the corpus. It writes the labels as
side-cars (`<folder>/<shard stem>.parquet`: `id` and the column, in the shard's row order, like
score side-cars) and a view: a folder holding `_view.json`, which names the source files, the
side-car folder and the read options the labels were made with. Given as a corpus path, a view
folder reads the source files as they were read when labelled and sets the column from the
side-car, batch by batch and in step (the memory of one batch, no join). A field of that name in
the source is kept as `source_<column>`.

A view is written beside its side-cars, never into the corpus it views; its inputs (the
sources, their folders and the side-cars) are inputs of whatever reads it, so no output may
land in them. A source that changed since it was labelled (its size, modification time or edges)
or whose ids no longer line up with its side-car is refused: label it again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from assay.errors import ConfigError, InputError, MissingError, StateError
from assay.io.shards import FileShard, ReadOptions, Shard, ShardStats
from assay.util.files import content_id, fingerprint, read_json, write_json
from assay.util.guard import check_output, mark_output

VIEW_FILE = "_view.json"
VIEW_VERSION = 1

#: read options that only say how fast or in what pieces to read: the reader's own apply
_PACING = ("whole_file_bytes", "block_bytes", "batch_rows")


@dataclass(frozen=True)
class LabelledShard(FileShard):
    """A file shard read as it was when labelled, with `column` from its side-car file."""

    sidecar: str = ""
    #: the view folder this shard is part of: what reopens it in another process
    view: str = ""
    column: str = "domain"
    labelled_with: ReadOptions = field(default_factory=ReadOptions)
    #: the source's content identity when it was labelled (JSON), checked before reading
    source_id: str = ""

    def fingerprint(self) -> dict[str, Any]:
        labels = fingerprint(self.sidecar) if os.path.exists(self.sidecar) else None
        return {**super().fingerprint(), "labels": labels}

    def identity(self) -> dict[str, Any]:
        labels = content_id(self.sidecar) if os.path.exists(self.sidecar) else None
        return {**super().identity(), "labels": labels}

    def read(self, options: ReadOptions, stats: ShardStats | None = None) -> Iterator[pl.DataFrame]:
        stats = stats if stats is not None else ShardStats(self.name)
        if not os.path.exists(self.sidecar):
            raise MissingError(f"the labels of shard {self.name!r} are missing: {self.sidecar}")
        if os.path.exists(self.path) and _identity(self.path) != self.source_id:
            raise StateError(
                f"{self.path} changed since it was labelled ({self.sidecar}); label it again "
                "(cluster again: unchanged shards are reused)"
            )
        own = self.labelled_with.model_copy(update={k: getattr(options, k) for k in _PACING})
        labels = _RowStream(self.sidecar, ["id", self.column])
        try:
            for batch in super().read(own, stats):
                side = labels.take(batch.height)
                if side.height != batch.height or not side["id"].equals(batch["id"]):
                    raise StateError(
                        f"the labels in {self.sidecar} do not line up with the documents of "
                        f"{self.path} (in the {batch.height} rows from row "
                        f"{labels.taken - side.height}): label it again"
                    )
                if self.column in batch.columns:
                    batch = batch.rename({self.column: f"source_{self.column}"})
                yield batch.with_columns(side.get_column(self.column))
            if labels.take(1).height:
                raise StateError(f"{self.sidecar} labels more documents than {self.path} holds")
        finally:
            labels.close()


def _identity(path: str) -> str:
    return json.dumps(content_id(path), sort_keys=True)


class _RowStream:
    """The rows of a parquet file, taken n at a time (one row group in memory)."""

    def __init__(self, path: str, columns: list[str]):
        import pyarrow.parquet as pq

        self._file = pq.ParquetFile(path)
        self._batches = self._file.iter_batches(columns=columns, batch_size=65_536)
        self._buffer: pl.DataFrame | None = None
        self.taken = 0

    def close(self) -> None:
        self._file.close()

    def take(self, n: int) -> pl.DataFrame:
        parts = [] if self._buffer is None else [self._buffer]
        have = sum(p.height for p in parts)
        while have < n:
            nxt = next(self._batches, None)
            if nxt is None:
                break
            part = pl.from_arrow(nxt)
            assert isinstance(part, pl.DataFrame)
            parts.append(part)
            have += part.height
        if not parts:
            return pl.DataFrame()
        rows = pl.concat(parts) if len(parts) > 1 else parts[0]
        self._buffer = rows.slice(n) if rows.height > n else None
        out = rows.head(n)
        self.taken += out.height
        return out


def sidecar_file(folder: str | os.PathLike, shard: Shard) -> Path:
    """Where a shard's side-car lies in a side-car folder (as score side-cars do)."""
    return Path(folder) / f"{shard.stem}.parquet"


def write_view(
    folder: str | os.PathLike,
    shards: list[Shard],
    options: ReadOptions,
    sidecars: str | os.PathLike,
    *,
    column: str = "domain",
    inputs: list[str] | None = None,
) -> Path:
    """Write the view of `shards` (read with `options`) labelled by the side-cars in
    `sidecars`; `inputs` are the places the shards came from (the corpus' folders). Returns
    the view folder."""
    out = Path(folder)
    files = [s for s in shards if isinstance(s, FileShard)]
    if len(files) < len(shards):
        other = next(s for s in shards if not isinstance(s, FileShard))
        raise ConfigError(
            f"a view reads files, and shard {other.name!r} is not one: write the corpus to "
            "files first (Corpus.write)"
        )
    # a view of a view reads the same files, as the first view read them
    read_as = {s.labelled_with if isinstance(s, LabelledShard) else options for s in files}
    if len(read_as) > 1:
        raise ConfigError("the shards of a view must all be read with the same options")
    options = read_as.pop() if read_as else options
    check_output(out, [*(inputs or []), *(s.path for s in files)], "view folder")
    mark_output(out, "view")
    side = Path(os.path.relpath(sidecars, out))
    manifest = {
        "made_by": "assay",
        "version": VIEW_VERSION,
        "column": column,
        "sidecars": side.as_posix(),
        "options": options.model_dump(),
        "inputs": [os.path.abspath(p) for p in inputs or []],
        "shards": [{"name": s.name, "path": s.path, "source": content_id(s.path)} for s in files],
    }
    write_json(out / VIEW_FILE, manifest)
    return out


def is_view(folder: str | os.PathLike) -> bool:
    return (Path(folder) / VIEW_FILE).is_file()


def read_view(folder: str | os.PathLike) -> tuple[list[LabelledShard], list[str]]:
    """A view's shards, and every place it reads: the view, its side-cars, the sources'
    folders and files."""
    root = Path(folder)
    manifest = read_json(root / VIEW_FILE)
    if not isinstance(manifest, dict) or manifest.get("version") != VIEW_VERSION:
        raise InputError(f"{root / VIEW_FILE} is not a view this version of assay reads")
    try:
        sidecars = (root / manifest["sidecars"]).resolve()
        options = ReadOptions.model_validate(manifest["options"])
        column = str(manifest["column"])
        shards = [
            LabelledShard(
                name=s["name"],
                path=s["path"],
                sidecar=str(sidecar_file(sidecars, Shard(s["name"]))),
                view=str(root.resolve()),
                column=column,
                labelled_with=options,
                source_id=json.dumps(s["source"], sort_keys=True),
            )
            for s in manifest["shards"]
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{root / VIEW_FILE} is not a valid view ({e})") from None
    inputs = [str(root), str(sidecars), *manifest["inputs"]]
    return shards, inputs

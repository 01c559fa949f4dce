"""A uniform sample of a sharded corpus: bottom-k of a seeded hash of the id, in O(N).

Two streaming passes. The first hashes every id and keeps only the hash and the position (shard,
row) of the best candidates: a buffer of at most about 2n of them, cut back to n with a partition
whenever it fills (amortised O(1) per document, about 20 bytes per candidate). The second pass
reads back just the chosen rows, shard by shard, and stops reading a shard after its last one.

The order is by hash, then by position: a repeated id (the only way two hashes tie, short of a
64-bit collision) goes to its first occurrence in shard order. The result depends neither on
the batch size nor on how the buffer was cut, and growing `n` only adds documents.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from assay.errors import ConfigError, InputError, StateError
from assay.io.shards import ReadOptions, Shard
from assay.util.hashing import stable_hash64


class BottomK:
    """The `n` smallest keys of a stream, ties to the earliest, with their positions."""

    def __init__(self, n: int):
        self.n = n
        self._keys: list[np.ndarray] = []
        self._shards: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._size = 0
        #: once n candidates are held, a later key must be strictly below this one to matter
        self._bound: np.uint64 | None = None

    def add(self, keys: np.ndarray, shard: int, first_row: int) -> None:
        """Offer the keys of rows `first_row, first_row + 1, ...` of `shard` (in stream order)."""
        rows = np.arange(first_row, first_row + len(keys), dtype=np.int64)
        if self._bound is not None:
            below = keys < self._bound
            keys, rows = keys[below], rows[below]
        if not len(keys):
            return
        self._keys.append(keys)
        self._rows.append(rows)
        self._shards.append(np.full(len(keys), shard, dtype=np.int32))
        self._size += len(keys)
        if self._size >= 2 * self.n:
            self._cut()

    def _cut(self) -> None:
        keys, shards, rows = self._joined()
        if len(keys) > self.n:
            kth = np.partition(keys, self.n - 1)[self.n - 1]
            keep = keys < kth
            # equal keys: the earliest (the buffer is in stream order) fill the last places
            tied = np.flatnonzero(keys == kth)[: self.n - int(keep.sum())]
            keep[tied] = True
            keys, shards, rows = keys[keep], shards[keep], rows[keep]
            self._bound = kth
        self._keys, self._shards, self._rows = [keys], [shards], [rows]
        self._size = len(keys)

    def _joined(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self._keys:
            return (np.zeros(0, np.uint64), np.zeros(0, np.int32), np.zeros(0, np.int64))
        return (
            np.concatenate(self._keys),
            np.concatenate(self._shards),
            np.concatenate(self._rows),
        )

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, shards, rows) of the best `n`, in stream order."""
        self._cut()
        return self._joined()


def _wanted(columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    return ["id", "text", *[c for c in columns if c not in ("id", "text")]]


def sample_shards(
    shards: Sequence[Shard],
    options: ReadOptions,
    n: int,
    seed: int = 0,
    columns: Sequence[str] | None = None,
) -> pl.DataFrame:
    """The `n` documents of `shards` with the smallest seeded hash of their id, in that order
    (see the module's docstring); `columns` limits the fields returned besides id and text."""
    if n <= 0:
        raise ConfigError("sample size must be positive")
    wanted = _wanted(columns)
    best = BottomK(n)
    frames: list[pl.DataFrame] = []  # one empty frame per distinct schema met, in order
    for s, shard in enumerate(shards):
        row = 0
        for batch in shard.read(options):
            if wanted is not None:
                batch = batch.select(wanted)
            if not frames or batch.schema != frames[-1].schema:
                frames.append(batch.head(0))
            best.add(stable_hash64(batch.get_column("id").to_list(), seed), s, row)
            row += batch.height
    if not frames:
        raise InputError("cannot sample from an empty corpus")
    keys, where, rows = best.result()
    parts = [*frames]
    bounds = np.searchsorted(where, np.arange(len(shards) + 1))  # candidates: in stream order
    for s in np.flatnonzero(np.diff(bounds)).tolist():
        parts.extend(_read_rows(shards[s], options, rows[bounds[s] : bounds[s + 1]], wanted))
    # every schema met takes part, as when the sample was a running concatenation of batches
    chosen = pl.concat(parts, how="diagonal_relaxed")
    if chosen.height != len(keys):
        raise StateError("a shard changed while it was being sampled; sample again")
    return chosen[np.argsort(keys, kind="stable")]


def _read_rows(
    shard: Shard, options: ReadOptions, rows: np.ndarray, wanted: list[str] | None
) -> list[pl.DataFrame]:
    """The rows at positions `rows` (increasing) of one shard, reading no further than the last."""
    out = []
    start = 0
    for batch in shard.read(options):
        end = start + batch.height
        lo, hi = np.searchsorted(rows, [start, end])
        if hi > lo:
            picked = batch[rows[lo:hi] - start]
            out.append(picked.select(wanted) if wanted is not None else picked)
        start = end
        if hi == len(rows):
            break
    if not out:
        return []
    # Rows gathered from polars' string views keep the whole batch's text buffers alive: copy
    # them out through arrow, or a sample would hold every shard it was drawn from.
    return [pl.from_arrow(pl.concat(out).to_arrow())]  # type: ignore[list-item]

"""Corpus.sample: bottom-k of a seeded id hash in O(N), equal to a full sort of every hash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import write_jsonl, write_parquet
from polars.testing import assert_frame_equal

from assay.io.corpus import Corpus
from assay.io.sample import BottomK
from assay.util.hashing import stable_hash64


def _reference(corpus: Corpus, n: int, seed: int, columns: list[str] | None = None):
    """The plain way: every row in memory, hashed, sorted stably (ties: first occurrence)."""
    wanted = None if columns is None else ["id", "text", *columns]
    rows = pl.concat(
        [b if wanted is None else b.select(wanted) for b in corpus.iter_batches()],
        how="diagonal_relaxed",
    )
    keys = stable_hash64(rows.get_column("id").to_list(), seed)
    return rows[np.argsort(keys, kind="stable")[:n]]


@pytest.mark.parametrize(("n", "seed"), [(1, 0), (37, 3), (200, 1), (359, 2), (360, 0), (999, 5)])
def test_sample_equals_a_full_sort_of_every_hash(demo_dir: Path, n: int, seed: int) -> None:
    corpus = Corpus(demo_dir / "train", batch_rows=7)  # many batches: the buffer is cut often
    assert_frame_equal(corpus.sample(n, seed=seed), _reference(corpus, n, seed))
    assert_frame_equal(
        corpus.sample(n, seed=seed, columns=["domain"]),
        _reference(corpus, n, seed, ["domain"]),
    )


def test_repeated_ids_go_to_their_first_occurrence(tmp_path: Path) -> None:
    # 7 ids, each 18 times over three shards with other texts; a field only some shards have,
    # an integer in one and a float in another (the sample's column is their supertype)
    for k in range(3):
        records = [
            {"id": f"x{i % 7}", "text": f"shard {k} row {i}"} for i in range(6 * k, 6 * k + 6)
        ]
        records += [{"id": f"x{i % 7}", "text": f"shard {k} row {i}"} for i in range(40, 48)]
        if k == 1:
            records = [{**r, "n": i} for i, r in enumerate(records)]
        if k == 2:
            records = [{**r, "n": i + 0.5} for i, r in enumerate(records)]
        (write_parquet if k == 1 else write_jsonl)(
            tmp_path / f"s{k}.{'parquet' if k == 1 else 'jsonl'}", records
        )
    corpus = Corpus(tmp_path, batch_rows=3, id_field="id")
    for n in (1, 2, 5, 7, 8, 20, 42, 100):
        for seed in (0, 1):
            got = corpus.sample(n, seed=seed)
            assert_frame_equal(got, _reference(corpus, n, seed))
    assert corpus.sample(100).columns == ["id", "text", "n"]


@pytest.mark.parametrize("n", [1, 3, 50, 400, 5000])
def test_bottom_k_keeps_the_smallest_keys_whatever_the_chunks(n: int) -> None:
    rng = np.random.default_rng(n)
    keys = rng.integers(0, 300, 4000).astype(np.uint64)  # many exact ties
    best = BottomK(n)
    shard_of = np.zeros(len(keys), dtype=np.int64)
    bounds = np.cumsum(rng.integers(0, 90, 200))
    for shard, (a, b) in enumerate(zip([0, *bounds], [*bounds, len(keys)], strict=True)):
        a, b = min(a, len(keys)), min(b, len(keys))
        best.add(keys[a:b], shard=shard, first_row=a)  # rows: the stream's positions
        shard_of[a:b] = shard
    got_keys, shards, rows = best.result()
    expected = np.sort(np.argsort(keys, kind="stable")[:n])  # positions, in stream order
    assert rows.tolist() == expected.tolist()
    assert got_keys.tolist() == keys[expected].tolist()
    assert shards.tolist() == shard_of[expected].tolist()


def test_the_sample_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        Corpus(write_jsonl(tmp_path / "a.jsonl", [{"id": "a", "text": "t"}])).sample(0)

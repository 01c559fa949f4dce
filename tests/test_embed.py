"""Embeddings: both kinds of model, the on-disk cache, long documents and blocked top-k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assay.common.embed import Embedder, EmbeddingCache, cosine_topk, is_static_model

PAIRS = ["eating food", "eating bread", "the stock market fell sharply today"]


def test_static_model_is_a_model2vec_folder_with_meaningful_similarities(
    static_model: Path, tmp_path: Path
) -> None:
    assert is_static_model(static_model)
    emb = Embedder(str(static_model), cache=str(tmp_path))
    assert emb.kind == "static"
    v = emb.embed(PAIRS)
    assert v.shape == (3, 256) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert v[0] @ v[1] > 0.5 > v[0] @ v[2]


def test_minilm_embeddings_and_long_documents(real_texts: list[str], tmp_path: Path) -> None:
    long_doc = max(real_texts, key=len)
    short_doc = min((t for t in real_texts if len(t) > 50), key=len)
    trunc = Embedder(None, cache=False, long_docs="truncate")
    mean = Embedder(None, cache=False, long_docs="mean", max_chunks=4)
    assert trunc.kind == "sentence-transformers"
    a, b = trunc.embed([long_doc, short_doc]), mean.embed([long_doc, short_doc])
    assert a.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)  # fits one window: the same vector
    assert float(a[0] @ b[0]) < 0.999  # the other chunks moved the long document's vector
    v = trunc.embed(PAIRS)
    assert v[0] @ v[1] > 0.5 > v[0] @ v[2]


def test_cache_returns_the_same_vectors_without_encoding(
    static_model: Path, tmp_path: Path
) -> None:
    texts = [*PAIRS, PAIRS[0], ""]  # a duplicate and an empty text
    first = Embedder(str(static_model), cache=str(tmp_path)).embed(texts)
    np.testing.assert_array_equal(first[0], first[3])
    assert not first[4].any()  # nothing to embed: a zero vector

    again = Embedder(str(static_model), cache=str(tmp_path))
    again._load().encode = lambda *a, **k: pytest.fail("a cached text was embedded again")
    np.testing.assert_array_equal(again.embed(texts), first)
    # a new text next to cached ones: only it is encoded
    fresh = Embedder(str(static_model), cache=str(tmp_path))
    calls: list[int] = []
    enc = fresh._load()
    real = enc.encode
    enc.encode = lambda t, b: calls.append(len(t)) or real(t, b)
    out = fresh.embed([PAIRS[1], "a brand new sentence"])
    assert calls == [1]
    np.testing.assert_array_equal(out[0], first[1])


def test_cache_lookup_reads_only_the_batch_it_is_asked_for(tmp_path: Path) -> None:
    """An `Embedder` called once per batch must not load the whole cache for each batch."""
    import tracemalloc

    rng = np.random.default_rng(0)
    writer = EmbeddingCache(tmp_path)
    keys = rng.integers(0, 2**63, size=(20, 1000), dtype=np.uint64)
    for part in keys:  # 20 puts: 20 MB of vectors in all
        writer.put(part, _vectors_of(part))
    other = EmbeddingCache(tmp_path / "other")  # first calls import modules: not measured
    other.put(keys[0, :2], _vectors_of(keys[0, :2]))
    other.get(keys[0, :3])
    reader = EmbeddingCache(tmp_path)
    ask = np.array([keys[3, 7], 12345, keys[17, 999], keys[3, 7]], dtype=np.uint64)
    tracemalloc.start()
    found, vecs = reader.get(ask)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(vecs, _vectors_of(ask[found]))
    assert peak < 4 << 20  # the whole cache is 20 MB


def _vectors_of(keys: np.ndarray) -> np.ndarray:
    """A vector that each key determines (256 dims)."""
    return ((keys[:, None] % np.uint64(9973)) * np.arange(1, 257)[None, :] % 101).astype(np.float32)


WRITER = """
import sys, numpy as np
from assay.common.embed_cache import EmbeddingCache
cache, worker = EmbeddingCache(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(worker)
for _ in range(15):
    keys = rng.integers(0, 3000, size=200).astype(np.uint64)  # overlaps the other workers'
    found, vecs = cache.get(keys)
    if vecs is not None:
        assert np.array_equal(vecs, (keys[found, None] * np.arange(1, 9)[None] % 997).astype("f4"))
    new = np.unique(keys[~found])
    cache.put(new, (new[:, None] * np.arange(1, 9)[None] % 997).astype("f4"))
"""


def test_cache_is_shared_by_concurrent_writers(tmp_path: Path) -> None:
    """Processes writing one cache folder at once (from its creation on) lose and spoil nothing."""
    import subprocess
    import sys

    folder = tmp_path / "cache"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(w)]) for w in range(3)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    written = set()
    for w in range(3):
        rng = np.random.default_rng(w)
        for _ in range(15):
            written |= set(rng.integers(0, 3000, size=200).tolist())
    keys = np.arange(3000, dtype=np.uint64)
    found, vecs = EmbeddingCache(folder).get(keys)
    assert set(np.flatnonzero(found).tolist()) == written
    np.testing.assert_array_equal(
        vecs, (keys[found, None] * np.arange(1, 9)[None] % 997).astype(np.float32)
    )


def test_cache_of_an_earlier_version_is_moved_into_the_table(tmp_path: Path) -> None:
    keys = np.array([5, 1, 9], dtype=np.uint64)
    with open(tmp_path / "chunk-0123456789abcdef.npz", "wb") as f:  # the former format
        np.savez(f, keys=keys, vectors=np.eye(3, dtype=np.float32))
    found, vecs = EmbeddingCache(tmp_path).get(np.array([9, 2, 1], dtype=np.uint64))
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(vecs, np.eye(3, dtype=np.float32)[[2, 1]])
    assert not list(tmp_path.glob("chunk-*")) and not list(tmp_path.glob("*.tmp*"))
    found, _ = EmbeddingCache(tmp_path).get(keys)  # read from the table from now on
    assert found.all()


def test_cosine_topk_matches_brute_force_in_blocks() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(7, 16)).astype(np.float32)
    d = rng.normal(size=(1000, 16)).astype(np.float32)
    d[500] = d[10]  # an exact tie: the lower index comes first
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    idx, sim = cosine_topk(q, d, 12, block=64)
    full = q @ d.T
    for i in range(len(q)):
        expect = np.lexsort((np.arange(len(d)), -full[i]))[:12]
        assert idx[i].tolist() == expect.tolist()
        np.testing.assert_allclose(sim[i], full[i, expect], rtol=1e-6)


def test_missing_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloads"):
        Embedder(str(tmp_path / "nope")).embed(["x"])
    with pytest.raises(ValueError, match="long_docs"):
        Embedder(long_docs="split")


def test_device_and_dtype_reach_the_model_and_key_the_cache(
    real_texts: list[str], static_model: Path, tmp_path: Path
) -> None:
    import pickle

    import torch

    from assay.errors import ConfigError

    texts = [t for t in real_texts if len(t) > 200][:6]
    full = Embedder(None, cache=str(tmp_path), device="cpu")
    half = Embedder(None, cache=str(tmp_path), device="cpu", dtype="bfloat16")
    assert Embedder(None).placement() == (
        ("cuda", "bfloat16") if torch.cuda.is_available() else ("cpu", "float32")
    )
    assert full.placement() == ("cpu", "float32") and half.placement() == ("cpu", "bfloat16")
    a, b = full.embed(texts), half.embed(texts)
    assert next(half._load().model.parameters()).dtype == torch.bfloat16
    assert next(full._load().model.parameters()).dtype == torch.float32
    assert b.dtype == np.float32 and not np.array_equal(a, b)
    assert float(np.min(np.sum(a * b, axis=1))) > 0.99  # the same directions, coarser
    # each precision has its own cache: a bfloat16 vector is never served for float32
    assert half._cache_for().folder != full._cache_for().folder
    np.testing.assert_array_equal(Embedder(None, cache=str(tmp_path), device="cpu").embed(texts), a)

    # the settings travel: config and pickle (what a pool or Ray worker gets)
    assert Embedder(**half.get_config()).get_config() == half.get_config()
    assert pickle.loads(pickle.dumps(half)).placement() == ("cpu", "bfloat16")
    assert "dtype" not in full.get_config() and full.get_config()["device"] == "cpu"
    # a static model is numpy on the CPU whatever is asked
    assert Embedder(str(static_model), dtype="bfloat16").placement() == ("cpu", "float32")
    with pytest.raises(ConfigError, match="unknown device"):
        Embedder(None, device="gpu")
    with pytest.raises(ConfigError, match="unknown dtype"):
        Embedder(None, dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA GPU"):
            Embedder(None, device="cuda:0", cache=False).embed(texts)

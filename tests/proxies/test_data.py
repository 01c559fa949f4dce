"""Tokenizer, token cache and mixture packing."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from assay.common.mixture import Mixture
from assay.common.tokenizer import load_tokenizer
from assay.common.tokens import TokenCache, _NpyAppender, _write_domains
from assay.io.corpus import Corpus
from assay.proxies.data import pack_mixture


def test_tokenizer_is_byte_level_and_round_trips(
    proxy_tokenizer, real_texts: list[str], tmp_path: Path
) -> None:
    assert len(proxy_tokenizer) == 1024
    assert proxy_tokenizer.eos_token_id is not None and proxy_tokenizer.pad_token_id is not None
    for text in [*real_texts[:20], "naïve café ☕ — 数学"]:
        ids = proxy_tokenizer.encode(text, add_special_tokens=False)
        assert proxy_tokenizer.decode(ids) == text
    proxy_tokenizer.save_pretrained(tmp_path / "t")
    again = load_tokenizer(tmp_path / "t")
    assert again.encode(real_texts[0]) == proxy_tokenizer.encode(real_texts[0])
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_tokenizer(tmp_path / "missing")


def test_token_cache_holds_every_document(
    token_cache: TokenCache, demo_dir: Path, proxy_tokenizer
) -> None:
    assert sorted(token_cache.domains) == ["code", "math", "news", "reference"]
    news = token_cache.domains["news"]
    assert news.n_docs == 90
    texts = [
        t
        for b in Corpus(demo_dir / "train" / "news-00000.jsonl.gz").iter_batches()
        for t in b.get_column("text").to_list()
    ]
    first = [
        *proxy_tokenizer.encode(texts[0], add_special_tokens=False),
        proxy_tokenizer.eos_token_id,
    ]
    assert news.tokens[news.offsets[0] : news.offsets[1]].tolist() == first
    assert news.n_bytes == sum(len(t.encode()) for t in texts)
    # opening again reuses it; another tokenizer does not
    again = TokenCache.build(Corpus(demo_dir / "train"), proxy_tokenizer, token_cache.root)
    assert again.summary() == token_cache.summary()


def _saved(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _reference_files(shard_files: list[Path], dtype: type) -> dict[str, bytes]:
    """The cache's files as first built: every shard's tokens in memory, then np.save."""
    table = pl.concat([pl.read_parquet(f) for f in shard_files])
    files = {}
    for i, domain in enumerate(table.get_column("domain").unique(maintain_order=True)):
        rows = table.filter(pl.col("domain") == domain).get_column("tokens")
        files[f"d{i:03d}.tokens.npy"] = _saved(rows.explode().to_numpy().astype(dtype))
        offsets = np.concatenate([[0], np.cumsum(rows.list.len().to_numpy())]).astype(np.int64)
        files[f"d{i:03d}.offsets.npy"] = _saved(offsets)
    return files


def test_token_cache_files_are_those_of_one_np_save_per_domain(token_cache: TokenCache) -> None:
    root = token_cache.root
    reference = _reference_files(sorted((root / "_shards").glob("*.parquet")), np.uint16)
    assert {f.name for f in root.glob("d*.npy")} == set(reference)
    for name, data in reference.items():
        assert (root / name).read_bytes() == data


def test_npy_appender_writes_what_np_save_writes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for dtype in (np.uint16, np.uint32, np.int64):
        whole = rng.integers(0, 60_000, 10_000).astype(dtype)
        out = _NpyAppender(tmp_path / "a.npy", dtype)
        for a, b in [(0, 0), (0, 3), (3, 4000), (4000, 4000), (4000, 10_000)]:
            out.append(whole[a:b])
        out.close()
        assert (tmp_path / "a.npy").read_bytes() == _saved(whole)
    empty = _NpyAppender(tmp_path / "e.npy", np.uint16)
    empty.close()
    assert (tmp_path / "e.npy").read_bytes() == _saved(np.zeros(0, np.uint16))
    empty.length = 10**15  # the header has room for any length
    assert len(empty._header()) == len(empty.header)


def test_the_cache_is_written_a_batch_at_a_time(tmp_path: Path) -> None:
    """Domains interleaved over 12 tokenized shards; memory holds a batch, not a domain."""
    rng = np.random.default_rng(1)
    shards = []
    for k in range(12):
        n = 5_000
        lengths = rng.integers(1, 60, n)
        shards.append(tmp_path / "_shards" / f"s{k}.parquet")
        shards[-1].parent.mkdir(exist_ok=True)
        flat = rng.integers(0, 1024, int(lengths.sum())).astype(np.uint32)
        tokens = np.split(flat, np.cumsum(lengths)[:-1])
        pl.DataFrame(
            {
                "domain": rng.choice(["b", "a", f"only-{k % 5}"], n),
                "n_bytes": rng.integers(1, 500, n).astype(np.uint32),
                "tokens": pl.Series([t.tolist() for t in tokens], dtype=pl.List(pl.UInt32)),
            }
        ).write_parquet(shards[-1])
    total = sum(pl.read_parquet(f).get_column("tokens").list.len().sum() for f in shards)
    tracemalloc.start()
    try:
        meta = _write_domains(tmp_path, shards, np.uint16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < total  # bytes: under half of the 2-byte tokens written (all: 2 x total)
    reference = _reference_files(shards, np.uint16)
    for info in meta.values():
        for kind in ("tokens", "offsets"):
            name = f"{info['file']}.{kind}.npy"
            assert (tmp_path / name).read_bytes() == reference[name]
    assert sum(info["tokens"] for info in meta.values()) == total


def test_packing_hits_budget_and_proportions(token_cache: TokenCache) -> None:
    mixture = Mixture({"news": 0.4, "code": 0.3, "math": 0.2, "reference": 0.1})
    packed = pack_mixture(token_cache, mixture, 200_000, 128, seed=1)
    assert packed.input_ids.shape == (200_000 // 128, 128)
    assert abs(packed.n_tokens - 200_000) / 200_000 < 0.01
    share = np.bincount(packed.domain_index, minlength=4) / len(packed.domain_index)
    for i, d in enumerate(packed.domains):
        assert abs(share[i] - mixture[d]) < 0.01, d
    # each sequence really comes from its domain: every token id appears in that domain
    for i, d in enumerate(packed.domains):
        vocab = set(np.unique(token_cache.domains[d].tokens).tolist())
        rows = packed.input_ids[packed.domain_index == i][:5]
        assert set(np.unique(rows).tolist()) <= vocab
    again = pack_mixture(token_cache, mixture, 200_000, 128, seed=1)
    assert (again.input_ids == packed.input_ids).all()
    assert not (
        pack_mixture(token_cache, mixture, 200_000, 128, seed=2).input_ids == packed.input_ids
    ).all()


def test_epoch_caps_bind_redistribute_or_fail(token_cache: TokenCache) -> None:
    math_tokens = token_cache.domains["math"].n_tokens
    mixture = Mixture({"math": 0.5, "news": 0.5})
    budget = int(math_tokens * 1.2 / 0.5)  # math would need 1.2 epochs
    packed = pack_mixture(token_cache, mixture, budget, 128, max_epochs=1.0)
    report = packed.report
    assert report["capped_domains"] == ["math"]
    assert "the epoch cap (1.0) bound for math" in report["cap_note"]
    assert report["epochs_per_domain"]["math"] <= 1.0
    assert report["effective_mixture"]["news"] > 0.5
    assert sum(report["effective_mixture"].values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"the epoch cap binds for \['math'\]"):
        pack_mixture(token_cache, mixture, budget, 128, max_epochs=1.0, on_cap="error")
    # a small domain repeats (reshuffled) up to the cap
    repeated = pack_mixture(
        token_cache, Mixture({"math": 1.0}), int(math_tokens * 2.5), 128, max_epochs=3
    )
    assert 2.4 < repeated.report["epochs_per_domain"]["math"] <= 2.5


def test_bad_mixtures_and_budgets_are_clear_errors(token_cache: TokenCache) -> None:
    with pytest.raises(ValueError, match=r"unknown domains \['poetry'\]"):
        pack_mixture(token_cache, Mixture({"poetry": 0.5, "news": 0.5}), 10_000, 128)
    total = sum(d.n_tokens for d in token_cache.domains.values())
    with pytest.raises(ValueError, match=r"can give at most .* within their epoch caps"):
        pack_mixture(
            token_cache, Mixture.uniform(token_cache.domains), total * 5, 128, max_epochs=4
        )
    with pytest.raises(ValueError, match="less than one sequence"):
        pack_mixture(token_cache, Mixture({"news": 1.0}), 100, 128)

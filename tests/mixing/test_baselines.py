"""Training-free mixtures: natural, uniform, temperature, UniMax and BiMix's entropy mixes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from assay.mixing.baselines import (
    bigram_entropies,
    entropy_mixture,
    natural,
    temperature,
    uniform,
    unimax,
)

COUNTS = {"a": 100, "b": 1000, "c": 10000}


def test_proportional_baselines() -> None:
    assert natural(COUNTS).to_dict() == pytest.approx({"a": 100 / 11100, "b": 1000 / 11100, "c": 10000 / 11100})  # fmt: skip
    assert uniform({**COUNTS, "empty": 0}).to_dict() == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3, "empty": 0})  # fmt: skip
    assert temperature(COUNTS, 1.0).to_dict() == pytest.approx(natural(COUNTS).to_dict())
    t2 = temperature(COUNTS, 2.0)  # square roots: 10, 31.6, 100
    assert t2["c"] / t2["a"] == pytest.approx(10.0)
    assert temperature(COUNTS, 1e6).to_dict() == pytest.approx(uniform(COUNTS).to_dict(), rel=1e-4)
    with pytest.raises(ValueError, match="temperature must be positive"):
        temperature(COUNTS, 0)


def test_unimax_caps_small_domains_and_shares_the_rest() -> None:
    mix = unimax(COUNTS, budget=3000, max_epochs=1)
    assert mix.to_dict() == pytest.approx({"a": 100 / 3000, "b": 1000 / 3000, "c": 1900 / 3000})
    assert unimax(COUNTS, budget=300, max_epochs=4).to_dict() == pytest.approx(uniform(COUNTS).to_dict())  # fmt: skip
    with pytest.raises(ValueError, match="exceeds every domain's cap"):
        unimax(COUNTS, budget=20_000, max_epochs=1)


def _python_entropies(tokens: list[int], chunk: int) -> dict[str, float]:
    pairs = [(tokens[i - 1], tokens[i]) for i in range(1, len(tokens)) if i % chunk]
    joint, firsts, uni = Counter(pairs), Counter(p[0] for p in pairs), Counter(tokens)

    def h(c: Counter) -> float:
        p = np.array(list(c.values()), dtype=float)
        p /= p.sum()
        return float(-(p * np.log(p)).sum())

    return {"unigram": h(uni), "joint": h(joint), "conditional": h(joint) - h(firsts)}


def test_bigram_entropies_match_plain_python() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.zipf(1.5, size=5000) % 300
    got = bigram_entropies(tokens, 300, chunk=64)
    assert got == pytest.approx(_python_entropies(tokens.tolist(), 64), rel=1e-9)
    periodic = bigram_entropies(np.tile([0, 1, 2], 1000), 3)
    assert periodic["unigram"] == pytest.approx(np.log(3))
    assert periodic["conditional"] == pytest.approx(0.0, abs=1e-12)


def test_entropy_mixture_is_a_softmax_of_domain_entropies(token_cache) -> None:
    mix, ent = entropy_mixture(token_cache, "conditional")
    assert set(mix) == set(ent) == set(token_cache.domains)
    h = np.array([ent[d]["conditional"] for d in sorted(ent)])
    np.testing.assert_allclose(mix.vector(sorted(ent)), np.exp(h) / np.exp(h).sum(), rtol=1e-9)
    capped, _ = entropy_mixture(token_cache, "unigram", max_tokens=4096)
    assert sum(capped.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="kind must be"):
        entropy_mixture(token_cache, "von-neumann")


def test_von_neumann_entropy_by_hand() -> None:
    from assay.mixing.baselines import von_neumann_entropy

    # rows (1,0), (0,1), (1,0): K = [[1,0,1],[0,1,0],[1,0,1]], rho = K / 3 has eigenvalues
    # 2/3, 1/3, 0, so S = -(2/3 ln 2/3 + 1/3 ln 1/3)
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    expected = -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))
    assert von_neumann_entropy(x) == pytest.approx(expected, rel=1e-12)
    assert von_neumann_entropy(5 * x) == pytest.approx(expected, rel=1e-12)  # rows made unit
    assert von_neumann_entropy(np.tile([[0.6, 0.8]], (7, 1))) == pytest.approx(0.0, abs=1e-12)
    assert von_neumann_entropy(np.eye(4)) == pytest.approx(np.log(4))  # orthogonal: maximal
    # the d x d route equals the n x n kernel's eigenvalues
    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 6))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    lam = np.linalg.eigvalsh(y @ y.T / 40)
    lam = lam[lam > 1e-12]
    assert von_neumann_entropy(y) == pytest.approx(float(-(lam * np.log(lam)).sum()), rel=1e-9)


class _WordEmbedder:
    """A deterministic bag-of-words embedder (hashed words), so the test needs no model."""

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 64))
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, sum(map(ord, w)) % 64] += 1.0
        return out


def test_von_neumann_entropy_mixture_embeds_each_domains_documents(demo_dir, token_cache) -> None:
    import polars as pl

    from assay.io.corpus import Corpus
    from assay.mixing.baselines import embedding_entropies, von_neumann_entropy

    corpus = Corpus(demo_dir / "train")
    vne = embedding_entropies(corpus, _WordEmbedder(), max_docs=50)
    assert set(vne) == set(token_cache.domains)
    rows = pl.concat(list(corpus.iter_batches()))
    d = rows["domain"][0]  # by hand: the domain's first 50 documents in corpus order
    texts = rows.filter(pl.col("domain") == d)["text"].to_list()
    assert vne[d] == pytest.approx(von_neumann_entropy(_WordEmbedder().embed(texts[:50])))
    mix, ent = entropy_mixture(
        token_cache, "von_neumann", corpus=corpus, embedder=_WordEmbedder(), max_docs=50
    )
    h = np.array([ent[x]["von_neumann"] for x in sorted(ent)])
    np.testing.assert_allclose(mix.vector(sorted(ent)), np.exp(h) / np.exp(h).sum(), rtol=1e-9)
    with pytest.raises(ValueError, match="give corpus and embedder"):
        entropy_mixture(token_cache, "von_neumann")

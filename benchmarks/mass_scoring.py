"""MASS scoring throughput: `MassScorer.score` against the raw libraries it wraps, same run.

MASS scores a document by embedding it and aggregating its similarities to the skills through
the skill graph. The raw baseline does the same with sentence-transformers (`encode`,
normalised) and a dense numpy quadratic form `s^T (diag(w) + E) s` over each document's top-10
skills, on the same documents; the two must give the same scores. The ratio shows what
assay's blocked, sparse scoring costs or saves over embedding alone.
The static embedder (distilled from the same MiniLM) has no raw library to compare with here
(model2vec's distillation extra cannot be installed beside transformers 5); its docs/s are
reported beside MiniLM's.

Skill graph: the CHAMP concept tags of `assay_champ` (the MASS recipe's reference).

    python benchmarks/mass_scoring.py [--docs 300] [--static-docs 3000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import demo_texts, emit

from assay.common.embed import default_model_path
from assay.selection.mass import fit_mass


def dense_scores(vecs: np.ndarray, graph: object, top_k: int) -> np.ndarray:
    """The quadratic form, written the obvious way: a dense K x K matrix and a full sort."""
    sims = vecs @ graph.embeddings.T
    cut = -np.sort(-sims, axis=1)[:, top_k - 1 : top_k]
    s = np.where(sims >= cut, np.maximum(sims, 0.0), 0.0)
    a = np.diag(graph.weights) + graph.edges.toarray()
    return np.einsum("nk,kl,nl->n", s, a, s)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--static-docs", type=int, default=3000)
    args = ap.parse_args()
    texts = demo_texts().sample(n=args.docs, seed=0).get_column("text").to_list()
    many = demo_texts().sample(n=args.static_docs, seed=1).get_column("text").to_list()

    static = fit_mass("assay_champ", skills="tags", embedder={"model": "static", "cache": False})
    static.score(many[:8])
    t0 = time.perf_counter()
    static.score(many)
    t_static = time.perf_counter() - t0

    from sentence_transformers import SentenceTransformer

    mass = fit_mass("assay_champ", skills="tags", embedder={"model": None, "cache": False})
    raw = SentenceTransformer(default_model_path(), device="cpu")
    raw.max_seq_length = 256
    mass.score(texts[:8])  # load both models before timing
    raw.encode(texts[:8])
    t_ours, t_raw = [], []
    for _ in range(2):  # interleaved, to cancel drift in the machine's speed
        t0 = time.perf_counter()
        ours = mass.score(texts)
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        vecs = raw.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
        ref = dense_scores(vecs.astype(np.float64), mass.graph, mass.top_k)
        t_raw.append(time.perf_counter() - t0)
    emit(
        {
            "benchmark": "mass_scoring",
            "skills": len(mass.graph.names),
            "edges": mass.graph.n_edges,
            "minilm_docs": len(texts),
            "assay_docs_per_second": round(len(texts) / min(t_ours), 1),
            "raw_docs_per_second": round(len(texts) / min(t_raw), 1),
            "ratio_assay_to_raw": round(min(t_raw) / min(t_ours), 3),
            "max_abs_score_difference": float(np.max(np.abs(ours - ref))),
            "static_docs": len(many),
            "static_skills": len(static.graph.names),
            "static_docs_per_second": round(len(many) / t_static, 1),
        }
    )


if __name__ == "__main__":
    main()

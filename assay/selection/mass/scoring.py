"""A document's MASS score: its cosines to the skills, sparsified to the top k, aggregated
through the skill graph (`quadratic`) or its node weights alone (`linear`)."""

from __future__ import annotations

import typing
from typing import Literal

import numpy as np
import scipy.sparse as sp

from assay.errors import ConfigError, InputError

Aggregation = Literal["quadratic", "linear"]
AGGREGATIONS: tuple[str, ...] = typing.get_args(Aggregation)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def check_finite(x: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(x).all(axis=1) if x.ndim == 2 else ~np.isfinite(x)
    if bad.any():
        raise InputError(
            f"the embedder returned non-finite values (NaN or inf) for {int(bad.sum())} of "
            f"{len(x)} {what} (first at row {int(np.flatnonzero(bad)[0])}); check the model"
        )


def skill_similarities(
    doc_vecs: np.ndarray, skill_vecs: np.ndarray, top_k: int | None = 10
) -> sp.csr_matrix:
    """Documents x skills cosine similarities keeping each row's `top_k` largest, negatives
    clipped to 0 (`top_k=None`: every skill). Blocked so a block of similarities stays small."""
    check_finite(doc_vecs, "documents")
    n, k_all = len(doc_vecs), len(skill_vecs)
    k = k_all if top_k is None else min(int(top_k), k_all)
    block = max(1, (1 << 22) // max(k_all, 1))
    parts = []
    for a in range(0, n, block):
        sims = doc_vecs[a : a + block] @ skill_vecs.T
        if k < k_all:
            idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            idx = np.broadcast_to(np.arange(k_all), sims.shape)
        vals = np.maximum(np.take_along_axis(sims, idx, axis=1), 0.0)
        rows = np.repeat(np.arange(len(sims)), idx.shape[1])
        part = sp.csr_matrix(
            (vals.ravel().astype(np.float64), (rows, idx.ravel())), shape=(len(sims), k_all)
        )
        part.eliminate_zeros()
        parts.append(part)
    if not parts:
        return sp.csr_matrix((0, k_all), dtype=np.float64)
    return sp.vstack(parts).tocsr()


def graph_scores(
    sims: sp.csr_matrix,
    weights: np.ndarray,
    edges: sp.spmatrix | None = None,
    *,
    aggregation: str = "quadratic",
    edge_weight: float = 1.0,
) -> np.ndarray:
    """Per document: `s^T (diag(w) + edge_weight E) s` (quadratic) or `w^T s` (linear)."""
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"aggregation must be one of {AGGREGATIONS}, not {aggregation!r}")
    sims = sp.csr_matrix(sims)
    if aggregation == "linear":
        return np.asarray(sims @ weights, dtype=np.float64).ravel()
    nodes = np.asarray(sims.multiply(sims) @ weights, dtype=np.float64).ravel()
    if edges is None or edges.nnz == 0 or edge_weight == 0:
        return nodes
    pairs = np.asarray((sims @ edges).multiply(sims).sum(axis=1), dtype=np.float64).ravel()
    return nodes + edge_weight * pairs

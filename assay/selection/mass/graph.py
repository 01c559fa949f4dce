"""Merging near-duplicate skills, and the skill graph: node weights by frequency, edges by
co-occurrence (Eq. 1 and 2 of the paper)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from assay.selection.mass.scoring import unit_rows
from assay.selection.mass.skills import RawSkills


def similar_pairs(vecs: np.ndarray, threshold: float, block: int = 2048) -> np.ndarray:
    """(i, j) pairs with i < j and cosine(vecs[i], vecs[j]) > threshold, in blocks of rows
    (memory O(block x n), never n x n)."""
    pairs = [np.zeros((0, 2), dtype=np.int64)]
    for a in range(0, len(vecs), block):
        sims = vecs[a : a + block] @ vecs.T
        i, j = np.nonzero(sims > threshold)
        i = i + a
        keep = i < j
        pairs.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(pairs)


def merge_skills(
    names: Sequence[str],
    embeddings: np.ndarray,
    frequency: np.ndarray,
    threshold: float = 0.9,
) -> tuple[np.ndarray, list[str]]:
    """Merge skills whose cosine similarity exceeds `threshold` (connected components).

    Returns a merged-skill index per input skill and the merged names. Components are
    numbered by their name (the most frequent member, ties by the smaller name), so the result
    is the same whatever order the skills come in."""
    n = len(names)
    if n == 0:
        return np.zeros(0, dtype=np.int64), []
    pairs = similar_pairs(embeddings, threshold)
    graph = sp.csr_matrix(
        (np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])) if len(pairs) else ([], ([], [])),
        shape=(n, n),
    )
    from scipy.sparse.csgraph import connected_components

    _, comp = connected_components(graph, directed=False)
    names_arr = np.asarray(names, dtype=object)
    # representative: highest frequency, then the smallest name
    order = np.lexsort((names_arr.astype(str), -np.asarray(frequency)))
    rep: dict[int, str] = {}
    for i in order:
        rep.setdefault(int(comp[i]), str(names_arr[i]))
    merged_names = sorted(set(rep.values()))
    index = {name: k for k, name in enumerate(merged_names)}
    labels = np.array([index[rep[int(c)]] for c in comp], dtype=np.int64)
    return labels, merged_names


@dataclass
class SkillGraph:
    """Merged skills, their embeddings and the weighted co-occurrence graph over them.

    Skills are ordered by frequency (then name). `edges` is symmetric with a zero diagonal and
    sums to 1 over the whole matrix (or is all zeros when no pair reaches `min_cooccurrence`);
    `cooccurrence` holds the kept counts."""

    names: list[str]
    members: list[list[str]]
    embeddings: np.ndarray  # K x dim, unit rows
    frequency: np.ndarray  # K, examples having the skill
    weights: np.ndarray  # K, sums to 1
    cooccurrence: sp.csr_matrix  # K x K, int64
    edges: sp.csr_matrix  # K x K, float64
    incidence: sp.csr_matrix  # examples x K, binary

    @property
    def n_edges(self) -> int:
        """Undirected edges."""
        return int(self.edges.nnz // 2)

    def adjacency(self, edge_weight: float = 1.0) -> sp.csr_matrix:
        """`diag(w) + edge_weight * E`, the matrix of the quadratic form."""
        return (sp.diags(self.weights) + edge_weight * self.edges).tocsr()


def graph_edges(
    incidence: sp.csr_matrix, min_cooccurrence: int = 1
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Co-occurrence counts of skill pairs within one example (kept at >= min_cooccurrence),
    and the normalised edge matrix (symmetric, zero diagonal, summing to 1)."""
    binary = (incidence > 0).astype(np.int64)
    counts = (binary.T @ binary).tocsr()
    counts.setdiag(0)
    counts.data[counts.data < min_cooccurrence] = 0
    counts.eliminate_zeros()
    counts.sort_indices()
    total = counts.sum()
    edges = counts.astype(np.float64)
    if total > 0:
        edges = edges / float(total)
    return counts, edges.tocsr()


def build_skill_graph(
    raw: RawSkills, *, merge_threshold: float = 0.9, min_cooccurrence: int = 1
) -> SkillGraph:
    """Merge near-duplicate skills, then weight nodes by frequency and edges by co-occurrence."""
    by = raw.embeddings if raw.name_embeddings is None else raw.name_embeddings
    labels, names = merge_skills(raw.names, by, raw.frequency, merge_threshold)
    k = len(names)
    member_of = sp.csr_matrix(
        (np.ones(len(labels), dtype=np.int64), (np.arange(len(labels)), labels)),
        shape=(len(labels), k),
    )
    incidence = ((raw.incidence @ member_of) > 0).astype(np.int64).tocsr()
    frequency = np.asarray(incidence.sum(axis=0)).ravel().astype(np.int64)
    raw_freq = raw.frequency.astype(np.float64)
    vecs = unit_rows(member_of.T @ (raw.embeddings * raw_freq[:, None]))
    members = [[] for _ in range(k)]
    for i in np.lexsort((np.asarray(raw.names, dtype=str), -raw_freq)):
        members[labels[i]].append(raw.names[i])
    # skills by frequency, then name: the order every output uses
    order = np.lexsort((np.asarray(names, dtype=str), -frequency))
    incidence = incidence[:, order].tocsr()
    frequency = frequency[order]
    counts, edges = graph_edges(incidence, min_cooccurrence)
    total = frequency.sum()
    return SkillGraph(
        names=[names[i] for i in order],
        members=[members[i] for i in order],
        embeddings=vecs[order],
        frequency=frequency,
        weights=frequency / total if total else frequency.astype(np.float64),
        cooccurrence=counts,
        edges=edges,
        incidence=incidence,
    )


def skill_rows(graph: SkillGraph) -> list[dict[str, Any]]:
    """One row per skill, heaviest first: name, weight, frequency, degree and members."""
    degree = np.diff(graph.edges.indptr)
    return [
        {
            "name": name,
            "weight": float(graph.weights[i]),
            "frequency": int(graph.frequency[i]),
            "degree": int(degree[i]),
            "members": graph.members[i],
        }
        for i, name in enumerate(graph.names)
    ]


def top_edges(graph: SkillGraph, n: int = 10) -> list[dict[str, Any]]:
    """The `n` most frequent skill pairs with their count and weight e_kl (= E_kl + E_lk)."""
    upper = sp.triu(graph.cooccurrence, k=1).tocoo()
    best = np.lexsort((upper.col, upper.row, -upper.data))[:n]
    return [
        {
            "skills": [graph.names[upper.row[i]], graph.names[upper.col[i]]],
            "count": int(upper.data[i]),
            "weight": float(2 * graph.edges[upper.row[i], upper.col[i]]),
        }
        for i in best
    ]

"""MASS: mathematical data selection via a skill graph (Li et al., ICML 2025, arXiv 2503.14917).

1. **Skills of a reference set.** The paper asks an LLM for 1-10 abstract skills per reference
   problem. Offline, assay takes them from one of three places:
   - `tags`: skill tags that come with the examples (for `assay_champ`, the CHAMP concepts each
     problem is annotated with; see `champ_skill_tags`);
   - `keyphrase`: per example, its highest TF-IDF 1-3-word phrases that look like noun phrases
     (no stop word at either end, no sentence punctuation inside), at most 10;
   - `cluster`: the examples are cut into sentences, the sentences embedded and k-means
     clustered; a skill is a cluster (named by its class-TF-IDF top terms), and an example has
     the skills its sentences fall in.
2. **Merge near-duplicates.** Skills whose embeddings have cosine > 0.9 are one skill. Pairs
   above the threshold are edges and the merged skills are their connected components, so the
   result does not depend on the order skills were met; a merged skill is named by its most
   frequent member.
3. **Skill graph.** Node weight `w_k = f_k / sum f` with `f_k` the number of reference examples
   having skill k (Eq. 1). Edges join skills that co-occur in at least `min_cooccurrence`
   examples, weighted by the normalised count (Eq. 2). `E` is stored symmetric (scipy.sparse,
   zero diagonal) with its whole matrix summing to 1, so `E_kl + E_lk` is the paper's
   `e_kl = c_kl / sum_{edges} c`: node and edge mass both total 1 in the quadratic form.
4. **Score of a document.** Its unit embedding's cosine to every skill embedding gives
   `s in R^K`; `s` keeps its `top_k` largest entries (negatives clipped to 0), which is what
   makes scoring against tens of thousands of skills tractable. Then
   - `quadratic` (default): `q = s^T (diag(w) + lambda * E) s`
     = `sum_k w_k s_k^2 + lambda * sum_{k != l} E_kl s_k s_l`;
   - `linear`: `q = w^T s`.
   The paper says a document scores high when it covers important skills *or skill pairs that
   often co-occur*, with similarities "aggregated through the adjacency matrix". Only the
   quadratic form uses the edges: it rewards a document for covering both ends of a frequent
   pair, which the linear form (a weighted sum over nodes) cannot see. The exact formula is
   not published (no code was released), hence both forms; the quadratic is the default.

**Skill embedding.** A skill's embedding is the frequency-weighted mean of its members'
embeddings, renormalised: the embedding of the skill's name when nothing merged into it, the
k-means centroid for a cluster skill. The mean (rather than the representative name alone)
keeps a merged skill at the centre of its group, which single-linkage merging can stretch.

**The 0.9 merge threshold** is the paper's, for a sentence encoder. The static embedder's
cosines run higher on formula-heavy text: on CHAMP's 93 concept names, 4 pairs exceed 0.9 with
all-MiniLM-L6-v2 but 118 with the static model (93 skills merge to 89 vs 58). Raise
`merge_threshold` (~0.97) with a static model if the merged groups in the report look too
coarse; on short keyphrases both models agree (18 vs 21 pairs above 0.9).

Scoring embeds every document (no distilled classifier), so it runs at the embedder's speed:
the static embedder about 2,000 documents a second on two CPU cores, all-MiniLM-L6-v2 a few
dozen; the similarity and graph products add a few per cent for a hundred skills (at the
paper's 46K skills they cost about as much as static embedding). Document embeddings are not
written to the embedding cache unless `cache_documents=True`, so scoring a corpus does not
leave a copy of it on disk.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from assay.common.embed import Embedder, describe, model_fingerprint
from assay.selection.base import Scorer, register_scorer
from assay.util.files import atomic_path, read_json, write_json

SKILL_SOURCES = ("auto", "tags", "keyphrase", "cluster")
AGGREGATIONS = ("quadratic", "linear")
STATE_FILE = "mass_graph.npz"
SKILLS_FILE = "mass_skills.json"
REPORT_FILE = "fit_report.json"

#: words of problem statements and reporting that are never part of a skill's name
TASK_WORDS = frozenset(
    """let find prove show compute determine given suppose assume answer solution problem
    question following use using write calculate evaluate step thus hence therefore note
    consider obtain get make say said says also just like need want used true false yes does
    example respectively exactly possible written satisfy satisfies satisfying select""".split()  # noqa: SIM905 (a word list reads better)
)
#: adjectives and verbs that cannot end a noun phrase ("positive integers", not "positive")
NOT_HEADS = frozenset(
    """equal different greater exist exists define defined consisting positive negative
    non-negative odd even distinct smallest largest real same new many various certain least
    greatest ends""".split()  # noqa: SIM905
)
#: nouns too generic to be a skill alone ("minimum value" is one, "value" is not)
GENERIC_NOUNS = frozenset(
    """value values number numbers expression expressions result results case cases form term
    terms time times part parts thing things side sides order type kind fact total set sets
    way ways minimum maximum""".split()  # noqa: SIM905
)
#: words allowed inside a keyphrase but not at its ends ("sum of squares")
CONNECTORS = frozenset({"of", "and"})
_CHUNK = re.compile(r"[^A-Za-z\s'-]+")  # digits, formulas and punctuation end a phrase
_WORD = re.compile(r"[a-z][a-z'-]*[a-z]|[a-z]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


# -- skills -----------------------------------------------------------------------------------


@dataclass
class RawSkills:
    """Skills before merging: names (unique), which examples have them, and their embeddings."""

    names: list[str]
    incidence: sp.csr_matrix  # examples x skills, 1 where the example has the skill
    embeddings: np.ndarray  # skills x dim, unit rows

    @property
    def frequency(self) -> np.ndarray:
        return np.asarray((self.incidence > 0).sum(axis=0)).ravel().astype(np.int64)


def normalize_tags(tags: Sequence[Any], n_examples: int | None = None) -> list[list[str]]:
    """One list of clean skill names per example (whitespace collapsed, duplicates dropped).

    A string is one tag; None or an empty list is no tag."""
    if isinstance(tags, (str, bytes)):
        raise ValueError("tags must be one list of skill names per example, not a single string")
    tags = list(tags)
    if n_examples is not None and len(tags) != n_examples:
        raise ValueError(f"{len(tags)} tag lists for {n_examples} reference examples")
    out = []
    for i, row in enumerate(tags):
        if row is None:
            row = []
        elif isinstance(row, str):
            row = [row]
        elif not isinstance(row, (list, tuple)):
            raise ValueError(
                f"example {i}: tags must be a list of strings, not {type(row).__name__}"
            )
        clean = [" ".join(str(t).split()) for t in row if t is not None]
        out.append(list(dict.fromkeys(t for t in clean if t)))
    return out


def phrase_candidates(text: str, max_words: int = 3) -> list[str]:
    """Noun-phrase-like 1..max_words-grams of a text (lowercased), with repeats.

    Without a tagger, "noun-ish" means: the phrase sits inside one run of words (formulas,
    digits and punctuation break runs), starts and ends with a content word of 3+ letters that
    is neither a stop word nor task wording, ends in a word that can head a noun phrase (not an
    adverb in "-ly" nor a listed adjective or verb), and has only "of"/"and" inside. A lone word
    must not be a participle ("-ed") or a generic noun ("value").
    """
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    def content(w: str) -> bool:
        letters = len(w) - w.count("-") - w.count("'")
        return letters >= 3 and w not in ENGLISH_STOP_WORDS and w not in TASK_WORDS

    out = []
    for chunk in _CHUNK.split(text.lower()):
        words = _WORD.findall(chunk)
        ok = [content(w) for w in words]
        for a in range(len(words)):
            if not ok[a]:
                continue
            for b in range(a, min(a + max_words, len(words))):
                inner = words[a + 1 : b]
                if any(not ok[a + 1 + j] and w not in CONNECTORS for j, w in enumerate(inner)):
                    break
                if not ok[b] or words[b].endswith("ly") or words[b] in NOT_HEADS:
                    continue
                if a == b and (words[a].endswith("ed") or words[a] in GENERIC_NOUNS):
                    continue
                out.append(" ".join(words[a : b + 1]))
    return out


def keyphrase_skills(
    texts: Sequence[str],
    *,
    max_skills: int = 10,
    max_words: int = 3,
    min_df: int | float = 2,
    max_df: int | float = 0.5,
) -> list[list[str]]:
    """Per example, its `max_skills` best keyphrases by TF-IDF over the reference set.

    `min_df=2` keeps phrases shared by at least two examples (a skill is something problems
    have in common); `max_df` drops phrases in most examples (boilerplate, not skills). Among
    equal scores the longer phrase goes first, and a phrase inside an already chosen one
    ("equation" after "quadratic equation") is redundant and skipped.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(
        analyzer=lambda t: phrase_candidates(t, max_words),
        min_df=min_df,
        max_df=max_df,
        sublinear_tf=True,
    )
    try:
        tfidf = vec.fit_transform(list(texts)).tocsr()
    except ValueError:  # sklearn: "empty vocabulary" or "no terms remain"
        return [[] for _ in texts]
    vocab = vec.get_feature_names_out()
    out = []
    for i in range(tfidf.shape[0]):
        cols = tfidf.indices[tfidf.indptr[i] : tfidf.indptr[i + 1]]
        vals = tfidf.data[tfidf.indptr[i] : tfidf.indptr[i + 1]]
        names = vocab[cols]
        chosen: list[str] = []
        words = np.char.count(names.astype(str), " ")
        for j in np.lexsort((names, -words, -vals)):  # best first; ties: the longer, then name
            name = str(names[j])
            if any(f" {name} " in f" {c} " for c in chosen):
                continue
            chosen.append(name)
            if len(chosen) == max_skills:
                break
        out.append(chosen)
    return out


def split_sentences(texts: Sequence[str], min_chars: int = 20) -> tuple[list[str], np.ndarray]:
    """Sentences (or lines) of every text with at least `min_chars` characters, and the index
    of the text each came from; a text with no long sentence contributes itself whole."""
    sentences: list[str] = []
    owner: list[int] = []
    for i, text in enumerate(texts):
        parts = [" ".join(p.split()) for p in _SENTENCE.split(text)]
        parts = [p for p in parts if len(p) >= min_chars]
        if not parts and text.strip():
            parts = [" ".join(text.split())]
        sentences.extend(parts)
        owner.extend([i] * len(parts))
    return sentences, np.asarray(owner, dtype=np.int64)


def incidence_from_lists(skills: list[list[str]]) -> tuple[list[str], sp.csr_matrix]:
    """Sorted skill names and the binary examples x skills matrix of per-example skill lists."""
    names = sorted({s for row in skills for s in row})
    index = {s: j for j, s in enumerate(names)}
    rows = np.repeat(np.arange(len(skills)), [len(set(r)) for r in skills])
    cols = np.fromiter((index[s] for r in skills for s in dict.fromkeys(r)), dtype=np.int64)
    data = np.ones(len(cols), dtype=np.int64)
    return names, sp.csr_matrix((data, (rows, cols)), shape=(len(skills), len(names)))


def named_skills(
    skills: list[list[str]], embedder: Embedder, *, progress: bool = False
) -> RawSkills:
    """Skills given by name (tags or keyphrases): each skill is embedded from its name."""
    names, incidence = incidence_from_lists(skills)
    vecs = embedder.embed(names, progress=progress) if names else np.zeros((0, 1), np.float32)
    check_finite(vecs, "skill-name embeddings")
    return RawSkills(names, incidence, vecs)


def cluster_skills(
    texts: Sequence[str],
    embedder: Embedder,
    *,
    n_clusters: int | None = None,
    max_skills: int = 10,
    min_chars: int = 20,
    seed: int = 0,
    progress: bool = False,
) -> RawSkills:
    """Skills as k-means clusters of reference sentences (default k ~ sqrt(sentences / 2)).

    An example has the clusters its sentences fall in, at most `max_skills` (those holding
    most of its sentences). A cluster is named by its top class-TF-IDF terms and embedded as
    its (renormalised) centroid."""
    from assay.common.numerics import default_k, kmeans, nearest
    from assay.common.text import top_terms

    sentences, owner = split_sentences(texts, min_chars)
    if len(sentences) < 2:
        return RawSkills([], sp.csr_matrix((len(texts), 0), dtype=np.int64), np.zeros((0, 1)))
    vecs = embedder.embed(sentences, progress=progress)
    check_finite(vecs, "sentence embeddings")
    k = n_clusters if n_clusters is not None else default_k(len(sentences))
    if k > len(sentences):
        raise ValueError(f"n_clusters={k} is more than the {len(sentences)} reference sentences")
    centroids = kmeans(vecs, k, seed=seed)
    label = nearest(vecs, centroids)
    counts = sp.csr_matrix(
        (np.ones(len(label), dtype=np.int64), (owner, label)), shape=(len(texts), k)
    )
    counts.sum_duplicates()
    incidence = _keep_top_per_row(counts, max_skills)
    terms = top_terms(sentences, label, n=3)
    names = _unique_names([", ".join(terms.get(c, [])) or f"cluster {c}" for c in range(k)])
    used = np.flatnonzero(np.asarray(incidence.sum(axis=0)).ravel() > 0)
    return RawSkills(
        [names[c] for c in used], incidence[:, used].tocsr(), unit_rows(centroids[used])
    )


def _keep_top_per_row(counts: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Binary matrix keeping each row's k largest entries (ties: lower column first)."""
    rows, cols = [], []
    for i in range(counts.shape[0]):
        c = counts.indices[counts.indptr[i] : counts.indptr[i + 1]]
        v = counts.data[counts.indptr[i] : counts.indptr[i + 1]]
        keep = c[np.lexsort((c, -v))[:k]]
        rows.append(np.full(len(keep), i))
        cols.append(keep)
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(len(c), dtype=np.int64), (r, c)), shape=counts.shape)


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} #{seen[n]}")
    return out


# -- merging ----------------------------------------------------------------------------------


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


# -- the graph --------------------------------------------------------------------------------


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
    labels, names = merge_skills(raw.names, raw.embeddings, raw.frequency, merge_threshold)
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


# -- scoring ----------------------------------------------------------------------------------


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def check_finite(x: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(x).all(axis=1) if x.ndim == 2 else ~np.isfinite(x)
    if bad.any():
        raise ValueError(
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
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, not {aggregation!r}")
    sims = sp.csr_matrix(sims)
    if aggregation == "linear":
        return np.asarray(sims @ weights, dtype=np.float64).ravel()
    nodes = np.asarray(sims.multiply(sims) @ weights, dtype=np.float64).ravel()
    if edges is None or edges.nnz == 0 or edge_weight == 0:
        return nodes
    pairs = np.asarray((sims @ edges).multiply(sims).sum(axis=1), dtype=np.float64).ravel()
    return nodes + edge_weight * pairs


# -- the scorer -------------------------------------------------------------------------------


@register_scorer("mass")
class MassScorer(Scorer):
    """Skill-graph scores: how much a document covers a reference set's important skills and
    skill pairs. Higher = keep.

    >>> scorer = MassScorer(embedder="static").fit(texts, tags=skill_lists)
    >>> scorer.score(["Use Vieta's formulas on the quadratic ...", "The match ended 2-1 ..."])

    embedder: `Embedder` settings (a dict, or a model name/folder); None = all-MiniLM-L6-v2.
    skills: "tags", "keyphrase", "cluster", or "auto" (tags when `fit` gets them).
    max_skills: skills kept per reference example (keyphrases, clusters), as the paper's 1-10.
    merge_threshold: cosine above which two skills are one.
    min_cooccurrence: examples a pair must share to become an edge.
    top_k: skills a document keeps (None = all); aggregation: "quadratic" or "linear";
    edge_weight: lambda in `diag(w) + lambda E`.
    keyphrase: options of `keyphrase_skills` (max_words, min_df, max_df).
    n_clusters: k of the cluster skills (default ~sqrt(sentences / 2)).
    """

    def __init__(
        self,
        column: str = "mass",
        embedder: dict[str, Any] | str | None = None,
        skills: str = "auto",
        max_skills: int = 10,
        merge_threshold: float = 0.9,
        min_cooccurrence: int = 1,
        top_k: int | None = 10,
        aggregation: str = "quadratic",
        edge_weight: float = 1.0,
        keyphrase: dict[str, Any] | None = None,
        n_clusters: int | None = None,
        cache_documents: bool = False,
    ):
        super().__init__(column)
        if skills not in SKILL_SOURCES:
            raise ValueError(f"skills must be one of {SKILL_SOURCES}, not {skills!r}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, not {aggregation!r}")
        if not -1.0 <= merge_threshold <= 1.0:
            raise ValueError(f"merge_threshold is a cosine in [-1, 1], not {merge_threshold}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be at least 1 (or None for every skill), not {top_k}")
        if max_skills < 1 or min_cooccurrence < 1:
            raise ValueError("max_skills and min_cooccurrence must be at least 1")
        self.embedder_config = (
            {"model": embedder} if isinstance(embedder, str) or embedder is None else dict(embedder)
        )
        self.skills = skills
        self.max_skills = max_skills
        self.merge_threshold = merge_threshold
        self.min_cooccurrence = min_cooccurrence
        self.top_k = top_k
        self.aggregation = aggregation
        self.edge_weight = edge_weight
        self.keyphrase = dict(keyphrase or {})
        self.n_clusters = n_clusters
        self.cache_documents = cache_documents
        self.graph: SkillGraph | None = None
        self.report: dict[str, Any] = {}
        self._doc_embedder: Embedder | None = None
        self._fingerprint: str | None = None

    def get_config(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "embedder": self.embedder_config,
            "skills": self.skills,
            "max_skills": self.max_skills,
            "merge_threshold": self.merge_threshold,
            "min_cooccurrence": self.min_cooccurrence,
            "top_k": self.top_k,
            "aggregation": self.aggregation,
            "edge_weight": self.edge_weight,
            "keyphrase": self.keyphrase,
            "n_clusters": self.n_clusters,
            "cache_documents": self.cache_documents,
        }

    @property
    def is_fitted(self) -> bool:
        return self.graph is not None

    @property
    def portable(self) -> bool:
        return True  # numpy/scipy state and embedder settings; the model loads lazily

    def embedder(self) -> Embedder:
        return Embedder(**self.embedder_config)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_doc_embedder": None}

    # -- fitting -------------------------------------------------------------------------------
    def fit(
        self,
        reference_texts: Sequence[str],
        tags: Sequence[Sequence[str]] | None = None,
        *,
        seed: int = 0,
        progress: bool = False,
    ) -> MassScorer:
        """Build the skill graph of a reference set (`tags`: one list of skill names per
        example, required for skills="tags" and used by "auto" when given)."""
        texts = [str(t) for t in reference_texts]
        if not texts:
            raise ValueError("MASS needs a reference set: it is empty")
        source = self.skills
        if source == "auto":
            source = "tags" if tags is not None else "keyphrase"
        if source == "tags" and tags is None:
            raise ValueError("skills='tags' needs tags: one list of skill names per example")
        if source != "tags" and tags is not None:
            raise ValueError(f"tags were given but skills={self.skills!r}; use skills='tags'")
        embedder = self.embedder()
        raw = self._raw_skills(source, texts, tags, embedder, seed, progress)
        if not raw.names:
            raise ValueError(_no_skills_message(source, len(texts)))
        graph = build_skill_graph(
            raw, merge_threshold=self.merge_threshold, min_cooccurrence=self.min_cooccurrence
        )
        self._set_graph(graph, model_fingerprint(embedder.model_path))
        self.report = self._fit_report(source, raw, graph, len(texts), describe(embedder))
        return self

    def _raw_skills(
        self,
        source: str,
        texts: list[str],
        tags: Sequence[Sequence[str]] | None,
        embedder: Embedder,
        seed: int,
        progress: bool,
    ) -> RawSkills:
        if source == "tags":
            lists = normalize_tags(tags, len(texts))
            return named_skills(lists, embedder, progress=progress)
        if source == "keyphrase":
            lists = keyphrase_skills(texts, max_skills=self.max_skills, **self.keyphrase)
            return named_skills(lists, embedder, progress=progress)
        return cluster_skills(
            texts, embedder, n_clusters=self.n_clusters, max_skills=self.max_skills,
            seed=seed, progress=progress,
        )  # fmt: skip

    def _set_graph(self, graph: SkillGraph, fingerprint: str | None) -> None:
        self.graph = graph
        self._fingerprint = fingerprint

    def _fit_report(
        self, source: str, raw: RawSkills, graph: SkillGraph, n: int, embedder: dict[str, Any]
    ) -> dict[str, Any]:
        per_example = np.asarray(graph.incidence.sum(axis=1)).ravel()
        all_pairs = sp.triu(
            ((raw.incidence > 0).astype(np.int64).T @ (raw.incidence > 0).astype(np.int64)), 1
        )
        return {
            "skills_source": source,
            "reference_examples": n,
            "examples_with_skills": int((per_example > 0).sum()),
            "skills_per_example_mean": float(per_example.mean()),
            "skills_per_example_max": int(per_example.max(initial=0)),
            "raw_skills": len(raw.names),
            "merged_skills": len(graph.names),
            "merge_threshold": self.merge_threshold,
            "merged_groups": int(sum(len(m) > 1 for m in graph.members)),
            "largest_merged_group": max(len(m) for m in graph.members),
            "edges": graph.n_edges,
            "raw_skill_pairs": int(all_pairs.nnz),
            "min_cooccurrence": self.min_cooccurrence,
            "top_k": self.top_k,
            "aggregation": self.aggregation,
            "edge_weight": self.edge_weight,
            "top_skills": [
                {**row, "members": row["members"][:10]} for row in skill_rows(graph)[:20]
            ],
            "top_edges": top_edges(graph, 10),
            "embedder": embedder,
        }

    def skill_table(self) -> list[dict[str, Any]]:
        """Every skill: name, weight, frequency, degree (edges) and merged members."""
        return skill_rows(self._graph())

    # -- scoring -------------------------------------------------------------------------------
    def _graph(self) -> SkillGraph:
        if self.graph is None:
            raise RuntimeError("MassScorer is not fitted: call fit() or load a saved one")
        return self.graph

    def _embedder_for_documents(self) -> Embedder:
        """The fitted embedder (documents not cached unless asked); checks it is the model the
        skills were embedded with, since cosines across two models mean nothing."""
        if self._doc_embedder is None:
            config = dict(self.embedder_config)
            if not self.cache_documents:
                config["cache"] = False
            emb = Embedder(**config)
            found = model_fingerprint(emb.model_path)
            if self._fingerprint is not None and found != self._fingerprint:
                raise ValueError(
                    f"the embedding model {emb.model_path} (fingerprint {found}) is not the one "
                    f"the skills were embedded with (fingerprint {self._fingerprint}); refit"
                )
            self._doc_embedder = emb
        return self._doc_embedder

    def similarities(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Documents x skills cosines after top-k sparsification (what `score` aggregates)."""
        graph = self._graph()
        vecs = self._embedder_for_documents().embed(list(texts))
        if len(texts) and vecs.shape[1] != graph.embeddings.shape[1]:
            raise ValueError(
                f"documents embed in {vecs.shape[1]} dimensions, skills in "
                f"{graph.embeddings.shape[1]}: the embedder is not the one the scorer was fit with"
            )
        return skill_similarities(vecs, graph.embeddings, self.top_k)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        graph = self._graph()
        sims = self.similarities(texts)
        out = graph_scores(
            sims, graph.weights, graph.edges,
            aggregation=self.aggregation, edge_weight=self.edge_weight,
        )  # fmt: skip
        return out.astype(np.float32)

    # -- persistence ---------------------------------------------------------------------------
    def _save_state(self, folder: Path) -> None:
        g = self._graph()
        upper = sp.triu(g.cooccurrence, k=1).tocoo()
        arrays = {
            "embeddings": g.embeddings.astype(np.float32),
            "frequency": g.frequency.astype(np.int64),
            "weights": g.weights.astype(np.float64),
            "edge_row": upper.row.astype(np.int64),
            "edge_col": upper.col.astype(np.int64),
            "edge_count": upper.data.astype(np.int64),
            "edge_weight": np.asarray(g.edges[upper.row, upper.col], dtype=np.float64).ravel(),
            "incidence_indptr": g.incidence.indptr.astype(np.int64),
            "incidence_indices": g.incidence.indices.astype(np.int64),
        }
        with atomic_path(folder / STATE_FILE) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        write_json(
            folder / SKILLS_FILE,
            {"names": g.names, "members": g.members, "embedder_fingerprint": self._fingerprint},
        )
        write_json(folder / REPORT_FILE, self.report)

    def _load_state(self, folder: Path) -> None:
        meta = read_json(folder / SKILLS_FILE)
        with np.load(folder / STATE_FILE, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        k = len(meta["names"])
        row, col = a["edge_row"], a["edge_col"]
        sym = lambda v: sp.csr_matrix(  # noqa: E731
            (np.concatenate([v, v]), (np.concatenate([row, col]), np.concatenate([col, row]))),
            shape=(k, k),
        )
        n_examples = len(a["incidence_indptr"]) - 1
        incidence = sp.csr_matrix(
            (np.ones(len(a["incidence_indices"]), dtype=np.int64), a["incidence_indices"],
             a["incidence_indptr"]),
            shape=(n_examples, k),
        )  # fmt: skip
        graph = SkillGraph(
            names=list(meta["names"]),
            members=[list(m) for m in meta["members"]],
            embeddings=a["embeddings"],
            frequency=a["frequency"],
            weights=a["weights"],
            cooccurrence=sym(a["edge_count"]),
            edges=sym(a["edge_weight"]),
            incidence=incidence,
        )
        graph.cooccurrence.sort_indices()
        graph.edges.sort_indices()
        self._set_graph(graph, meta.get("embedder_fingerprint"))
        if (folder / REPORT_FILE).exists():
            self.report = read_json(folder / REPORT_FILE)


def _no_skills_message(source: str, n: int) -> str:
    hint = {
        "tags": "every example's tag list is empty",
        "keyphrase": "no keyphrase is shared by enough examples (lower keyphrase={'min_df': 1}, "
        "or give tags)",
        "cluster": "the examples have fewer than two sentences to cluster",
    }[source]
    return f"no skills found in the {n} reference examples: {hint}"


# -- reference sets ---------------------------------------------------------------------------


def champ_skill_tags(*, parents: bool = True, category: bool = True) -> dict[str, list[str]]:
    """CHAMP's annotated concepts of every problem, by problem id, as skill names.

    A concept is named by its name ("Vieta's formula for quadratic equation"), or by its
    statement when it has none ("For integer x, x^2 mod 8 can take values of 0, 1 and 4.").
    `parents` adds the concepts a concept specialises (AM-GM for 2 variables -> for n);
    `category` adds the problem's category ("number theory"), so every problem has a skill."""
    return {pid: list(tags) for pid, tags in _champ_tags(parents, category)}


@functools.lru_cache(maxsize=4)
def _champ_tags(parents: bool, category: bool) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Cached: the dataset file is 72 MB of JSON, about a second to parse."""
    from assay.common.tasks import _package_file

    data = json.loads(_package_file("champ_dataset", "dataset_files", "v0.json").read_text())
    concepts: dict[str, dict[str, Any]] = data["concepts"]

    def label(c: dict[str, Any]) -> str:
        return " ".join((c.get("name") or c.get("_text") or c["identifier"]).split())

    out = []
    for pid, p in sorted(data["problems"].items()):
        tags: list[str] = []
        for cid in p.get("ch_list", []):
            c = concepts.get(cid) if cid.startswith("C_") else None
            while c is not None:
                tags.append(label(c))
                parent = c.get("parent") if parents else None
                c = concepts.get(parent["identifier"], parent) if parent else None
        if category and p.get("category"):
            tags.append(p["category"].replace("-", " ").lower())
        out.append((pid, tuple(dict.fromkeys(tags))))
    return tuple(out)


@functools.lru_cache(maxsize=2)
def _builtin_records(name: str) -> tuple[dict[str, Any], ...]:
    """The built-in benchmark's records, parsed once per process (CHAMP's file is large)."""
    from assay.common.targets import _builtin_records as records

    return tuple(records(name))


def _builtin_reference(name: str, fields: Sequence[str] | None, want_tags: bool):
    from assay.common.targets import example_text

    records = _builtin_records(name)
    texts = [example_text(r, fields or ("question", "answer"), f"{name}[{i}]") for i, r in enumerate(records, 1)]  # fmt: skip
    if not want_tags:
        return texts, None
    if name == "assay_champ":
        by_id = champ_skill_tags()
        return texts, [by_id.get(r["id"], []) for r in records]
    return texts, [[r["subject"].replace("_", " ")] for r in records]  # MMLU: its subject


def _file_reference(path: Path, fields: Sequence[str] | None, tags_field: str | None):
    from assay.common.targets import _file_records, example_text

    records = _file_records(path)
    if fields is None and records:
        fields = ("text",) if "text" in records[0][1] else ("question", "answer")
    texts = [example_text(r, fields or (), f"{path}: line {n}") for n, r in records]
    if tags_field is None:
        return texts, None
    tags = []
    for n, r in records:
        value = r.get(tags_field)
        if value is not None and not isinstance(value, (str, list)):
            raise ValueError(f"{path}: line {n}: {tags_field!r} must be a list of skill names")
        tags.append(value)
    return texts, tags


def load_reference(
    reference: Any,
    *,
    fields: Sequence[str] | None = None,
    tags_field: str | None = None,
    tags: Sequence[Sequence[str]] | None = None,
    want_tags: bool = True,
    max_items: int | None = None,
    seed: int = 0,
) -> tuple[list[str], list[list[str]] | None]:
    """Reference texts and, where there are any, their skill tags (aligned).

    `reference` is what `load_targets` accepts: a built-in benchmark ("assay_champ" carries
    CHAMP's concept annotations as tags, "assay_mmlu_dev" its subject), a JSONL/JSON/parquet
    file (tags from the field `tags_field`), or a list of texts (tags from `tags`). Examples
    with no text are dropped together with their tags; `max_items` keeps a seeded subset."""
    import os

    from assay.common.targets import BUILTIN

    if isinstance(reference, (str, os.PathLike)) and str(reference) in BUILTIN:
        texts, found = _builtin_reference(str(reference), fields, want_tags and tags_field is None)
        where = str(reference)
    elif isinstance(reference, (str, os.PathLike)):
        texts, found = _file_reference(Path(reference), fields, tags_field)
        where = str(reference)
    else:
        texts, found, where = [str(t) for t in reference], None, "reference examples"
    if tags is not None:
        found = list(tags)
    if found is not None:
        found = normalize_tags(found, len(texts))
    keep = [i for i, t in enumerate(texts) if t.strip()]
    if not keep:
        raise ValueError(f"{where}: no reference examples (the reference set is empty)")
    if max_items is not None and len(keep) > max_items:
        keep = sorted(np.random.default_rng(seed).choice(keep, max_items, replace=False).tolist())
    return [texts[i] for i in keep], (None if found is None else [found[i] for i in keep])


def fit_mass(
    reference: Any,
    *,
    fields: Sequence[str] | None = None,
    tags_field: str | None = None,
    tags: Sequence[Sequence[str]] | None = None,
    skills: str = "auto",
    max_items: int | None = None,
    seed: int = 0,
    progress: bool = False,
    **params: Any,
) -> MassScorer:
    """Fit a MASS scorer on a reference set (see `load_reference`); skills="auto" uses tags
    where the reference has them (CHAMP concepts for "assay_champ") and keyphrases otherwise.
    `params` go to `MassScorer` (embedder, top_k, aggregation, merge_threshold, ...)."""
    if skills not in SKILL_SOURCES:
        raise ValueError(f"skills must be one of {SKILL_SOURCES}, not {skills!r}")
    want = skills in ("auto", "tags")
    texts, found = load_reference(
        reference, fields=fields, tags_field=tags_field, tags=tags, want_tags=want,
        max_items=max_items, seed=seed,
    )  # fmt: skip
    if skills == "tags" and found is None:
        raise ValueError(
            f"skills='tags' but {reference if isinstance(reference, str) else 'the reference'} "
            "has no tags: name the field with tags_field= or pass tags="
        )
    scorer = MassScorer(skills=skills, **params)
    return scorer.fit(texts, found if want else None, seed=seed, progress=progress)


__all__ = [
    "MassScorer",
    "RawSkills",
    "SkillGraph",
    "build_skill_graph",
    "champ_skill_tags",
    "cluster_skills",
    "fit_mass",
    "graph_edges",
    "graph_scores",
    "incidence_from_lists",
    "keyphrase_skills",
    "load_reference",
    "merge_skills",
    "named_skills",
    "normalize_tags",
    "phrase_candidates",
    "skill_rows",
    "skill_similarities",
    "split_sentences",
    "top_edges",
]

"""A reference set's skills before merging: from tags, from keyphrases, or from clusters of
its sentences (see the package's description)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from assay.common.embed import Embedder
from assay.errors import ConfigError, InputError
from assay.selection.mass.scoring import check_finite, unit_rows

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


@dataclass
class RawSkills:
    """Skills before merging: names (unique), which examples have them, and their embeddings
    (what documents are scored against); `name_embeddings`, when the embeddings are not of
    the names (keyphrases in context), are what near-duplicate names are merged by."""

    names: list[str]
    incidence: sp.csr_matrix  # examples x skills, 1 where the example has the skill
    embeddings: np.ndarray  # skills x dim, unit rows
    name_embeddings: np.ndarray | None = None  # skills x dim; None: `embeddings`

    @property
    def frequency(self) -> np.ndarray:
        return np.asarray((self.incidence > 0).sum(axis=0)).ravel().astype(np.int64)


def normalize_tags(tags: Sequence[Any], n_examples: int | None = None) -> list[list[str]]:
    """One list of clean skill names per example (whitespace collapsed, duplicates dropped).

    A string is one tag; None or an empty list is no tag."""
    if isinstance(tags, (str, bytes)):
        raise InputError("tags must be one list of skill names per example, not a single string")
    tags = list(tags)
    if n_examples is not None and len(tags) != n_examples:
        raise InputError(f"{len(tags)} tag lists for {n_examples} reference examples")
    out = []
    for i, row in enumerate(tags):
        if row is None:
            row = []
        elif isinstance(row, str):
            row = [row]
        elif not isinstance(row, (list, tuple)):
            raise InputError(
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
    background: Sequence[str] | None = None,
    min_lift: float = 2.0,
) -> list[list[str]]:
    """Per example, its `max_skills` best keyphrases.

    `min_df=2` keeps phrases shared by at least two examples (a skill is something problems
    have in common); `max_df` drops phrases in most examples (boilerplate, not skills). Among
    equal scores the longer phrase goes first, and a phrase inside an already chosen one
    ("equation" after "quadratic equation") is redundant and skipped.

    Without `background` a phrase's weight is its TF-IDF over the reference set alone, so a
    word common to every text of the target's kind ("game", "names", "data") ranks as high as
    a real skill. With `background` (texts of the pool the scorer will rank: a sample of it)
    the weight is the phrase's lift, `log(df_ref / df_background)` with add-one smoothing of
    the background's document frequency: a skill is what the target has *more often than the
    pool*. Phrases below `min_lift` (twice as frequent) are dropped, and an example's phrases
    rank by `(1 + log tf) * lift`.
    """
    background = None if background is None else [str(t) for t in background]
    if background:  # an empty background is none
        return _distinct_keyphrases(
            texts, background, max_skills, max_words, min_df, max_df, min_lift
        )
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
    return _best_per_row(tfidf, vec.get_feature_names_out(), max_skills)


def phrase_lift(
    texts: Sequence[str],
    background: Sequence[str],
    *,
    max_words: int = 3,
    min_df: int | float = 2,
    max_df: int | float = 0.5,
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Phrase counts of the reference (examples x phrases), the phrases, and each phrase's
    lift `log((df_ref / n_ref) / ((df_bg + 1) / (n_bg + 1)))` over the background texts.

    The background is streamed once, keeping only the reference's phrases (memory: the
    reference vocabulary)."""
    from sklearn.feature_extraction.text import CountVectorizer

    vec = CountVectorizer(
        analyzer=lambda t: phrase_candidates(t, max_words), min_df=min_df, max_df=max_df
    )
    try:
        counts = vec.fit_transform(list(texts)).tocsr()
    except ValueError:  # sklearn: "empty vocabulary" or "no terms remain"
        return sp.csr_matrix((len(texts), 0)), np.zeros(0, dtype=object), np.zeros(0)
    vocab = vec.get_feature_names_out()
    index = {str(p): j for j, p in enumerate(vocab)}
    bg_df = np.zeros(len(vocab))
    n_bg = 0
    for text in background:
        n_bg += 1
        hits = [index[p] for p in set(phrase_candidates(str(text), max_words)) if p in index]
        bg_df[hits] += 1
    ref_df = np.asarray((counts > 0).sum(axis=0), dtype=np.float64).ravel()
    lift = np.log((ref_df / counts.shape[0]) / ((bg_df + 1) / (n_bg + 1)))
    return counts, vocab, lift


def _distinct_keyphrases(
    texts: Sequence[str],
    background: Sequence[str],
    max_skills: int,
    max_words: int,
    min_df: int | float,
    max_df: int | float,
    min_lift: float,
) -> list[list[str]]:
    counts, vocab, lift = phrase_lift(
        texts, background, max_words=max_words, min_df=min_df, max_df=max_df
    )
    weight = np.where(lift >= np.log(min_lift), lift, 0.0)
    scores = counts.astype(np.float64).tocsr()
    scores.data = (1.0 + np.log(scores.data)) * weight[scores.indices]
    scores.eliminate_zeros()
    return _best_per_row(scores, vocab, max_skills)


def _best_per_row(scores: sp.csr_matrix, vocab: np.ndarray, max_skills: int) -> list[list[str]]:
    """Per row, the `max_skills` best-scoring phrases, skipping one inside a chosen one."""
    out = []
    for i in range(scores.shape[0]):
        cols = scores.indices[scores.indptr[i] : scores.indptr[i + 1]]
        vals = scores.data[scores.indptr[i] : scores.indptr[i + 1]]
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


def context_skills(
    skills: list[list[str]],
    texts: Sequence[str],
    embedder: Embedder,
    *,
    max_words: int = 3,
    min_chars: int = 20,
    progress: bool = False,
) -> RawSkills:
    """Keyphrase skills embedded in context: a skill's embedding is the mean embedding of the
    reference sentences it occurs in (sentences of the examples that have it), renormalised;
    a skill found in no sentence of `min_chars` is embedded from its name.

    A bare phrase ("users", "mobile phones") embeds far from any document, and the documents
    nearest to it need not be the target's: with a static embedder, code chunks are closer to
    "e-mail" or "security" than news about them. Its sentences place it where text about it
    lies, as a cluster centroid is. Near-duplicates still merge by their names' embeddings
    (`name_embeddings`): sentences of one target are all alike, their names are not."""
    names, incidence = incidence_from_lists(skills)
    if not names:
        return named_skills(skills, embedder, progress=progress)
    index = {n: j for j, n in enumerate(names)}
    sentences, owner = split_sentences(texts, min_chars)
    rows, cols = [], []
    for i, sentence in enumerate(sentences):
        have = set(skills[owner[i]])
        for p in set(phrase_candidates(sentence, max_words)) & have:
            rows.append(i)
            cols.append(index[p])
    used = np.unique(np.asarray(rows, dtype=np.int64))
    vecs = np.zeros((len(names), 1), dtype=np.float32)
    if len(used):
        sent_vecs = embedder.embed([sentences[i] for i in used], progress=progress)
        check_finite(sent_vecs, "sentence embeddings")
        where = {int(s): k for k, s in enumerate(used)}
        member = sp.csr_matrix(
            (np.ones(len(rows)), ([where[r] for r in rows], cols)), shape=(len(used), len(names))
        )
        vecs = np.asarray(member.T @ sent_vecs.astype(np.float64))
    by_name = named_skills(skills, embedder).embeddings
    found = np.abs(vecs).sum(axis=1) > 0
    if not found.all():
        if not len(used):
            vecs = np.zeros_like(by_name)
        vecs[~found] = by_name[~found]
    return RawSkills(names, incidence, unit_rows(vecs), by_name)


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
        raise ConfigError(f"n_clusters={k} is more than the {len(sentences)} reference sentences")
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

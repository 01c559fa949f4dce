"""`MassScorer`, the skill-graph scorer; `MassSettings`, MASS's options; and `fit_mass`, which
fits the scorer on a set of target examples."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from assay.common.embed import EMBEDDER_HELP, Embedder, describe, model_fingerprint
from assay.errors import ConfigError, InputError, StateError
from assay.selection.base import (
    NotFittedError,
    Scorer,
    embedder_runs_on,
    embedder_settings,
    register_scorer,
    sample_texts,
)
from assay.selection.mass.graph import SkillGraph, build_skill_graph, skill_rows, top_edges
from assay.selection.mass.reference import load_reference
from assay.selection.mass.scoring import (
    AGGREGATIONS,
    Aggregation,
    graph_scores,
    skill_similarities,
)
from assay.selection.mass.skills import (
    RawSkills,
    cluster_skills,
    context_skills,
    keyphrase_skills,
    named_skills,
    normalize_tags,
)
from assay.util.config import Strict
from assay.util.files import atomic_path, read_json, write_json

SkillSource = Literal["auto", "tags", "keyphrase", "cluster"]
SKILL_SOURCES: tuple[str, ...] = typing.get_args(SkillSource)
STATE_FILE = "mass_graph.npz"
SKILLS_FILE = "mass_skills.json"
REPORT_FILE = "fit_report.json"


class MassSettings(Strict):
    """MASS's options: what `fit_mass` takes, and (with its targets and corpus) the `mass` step.

    From Python, `embedder` may also be a dict of `Embedder` settings (`{"model": ...,
    "cache": False}`).
    """

    skills: SkillSource = Field(
        "auto",
        description="Where skills come from: 'auto' (tags when the targets have them, e.g. the "
        "CHAMP concepts, else keyphrases), 'tags', 'keyphrase' or 'cluster'.",
    )
    background_docs: int = Field(
        2000,
        ge=0,
        description="Corpus documents sampled as the keyphrases' background: a keyphrase skill "
        "is at least twice as frequent in the targets as there (0: none, TF-IDF over the "
        "targets alone).",
    )
    tags_field: str | None = Field(None, description="Record field holding each example's tags.")
    embedder: str | dict[str, Any] | None = Field(None, description=EMBEDDER_HELP)
    merge_threshold: float = Field(
        0.9, gt=0, le=1, description="Skills more similar than this merge."
    )
    min_cooccurrence: int = Field(
        1, ge=1, description="Fewest examples two skills share for an edge between them."
    )
    top_k: int | None = Field(10, ge=1, description="Skills kept per document.")
    aggregation: Aggregation = Field(
        "quadratic", description="'quadratic' s^T(diag(w)+E)s or 'linear' w^T s."
    )
    column: str = Field("mass", description="Name of the score column.")
    seed: int | None = Field(None, description="Seed of keyphrase and cluster skills.")


#: the defaults MassScorer shares with the settings (declared once, in MassSettings)
_DEFAULT = MassSettings()


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
    keyphrase: options of `keyphrase_skills` (max_words, min_df, max_df, min_lift).
    n_clusters: k of the cluster skills (default ~sqrt(sentences / 2)).
    """

    def __init__(
        self,
        column: str = _DEFAULT.column,
        embedder: dict[str, Any] | str | None = _DEFAULT.embedder,
        skills: str = _DEFAULT.skills,
        max_skills: int = 10,
        merge_threshold: float = _DEFAULT.merge_threshold,
        min_cooccurrence: int = _DEFAULT.min_cooccurrence,
        top_k: int | None = _DEFAULT.top_k,
        aggregation: str = _DEFAULT.aggregation,
        edge_weight: float = 1.0,
        keyphrase: dict[str, Any] | None = None,
        n_clusters: int | None = None,
        cache_documents: bool = False,
    ):
        super().__init__(column)
        if skills not in SKILL_SOURCES:
            raise ConfigError(f"skills must be one of {SKILL_SOURCES}, not {skills!r}")
        if aggregation not in AGGREGATIONS:
            raise ConfigError(f"aggregation must be one of {AGGREGATIONS}, not {aggregation!r}")
        if not -1.0 <= merge_threshold <= 1.0:
            raise ConfigError(f"merge_threshold is a cosine in [-1, 1], not {merge_threshold}")
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be at least 1 (or None for every skill), not {top_k}")
        if max_skills < 1 or min_cooccurrence < 1:
            raise ConfigError("max_skills and min_cooccurrence must be at least 1")
        self.embedder = embedder_settings(embedder)
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

    @property
    def is_fitted(self) -> bool:
        return self.graph is not None

    @property
    def portable(self) -> bool:
        return True  # numpy/scipy state and embedder settings; the model loads lazily

    @property
    def runs_on(self) -> str:
        """Where its embedder runs (what a Ray task asks a GPU for)."""
        return embedder_runs_on(self.embedder)

    def make_embedder(self) -> Embedder:
        return Embedder(**self.embedder)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_doc_embedder": None}

    # -- fitting -------------------------------------------------------------------------------
    def fit(
        self,
        reference_texts: Sequence[str],
        tags: Sequence[Sequence[str]] | None = None,
        *,
        background: Sequence[str] | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> MassScorer:
        """Build the skill graph of a reference set (`tags`: one list of skill names per
        example, required for skills="tags" and used by "auto" when given).

        `background`: texts of the pool to rank (a sample); keyphrase skills are then the
        phrases more frequent in the reference than in it (see `keyphrase_skills`)."""
        texts = [str(t) for t in reference_texts]
        if not texts:
            raise InputError("MASS needs a reference set: it is empty")
        source = self.skills
        if source == "auto":
            source = "tags" if tags is not None else "keyphrase"
        if source == "tags" and tags is None:
            raise ConfigError("skills='tags' needs tags: one list of skill names per example")
        if source != "tags" and tags is not None:
            raise ConfigError(f"tags were given but skills={self.skills!r}; use skills='tags'")
        embedder = self.make_embedder()
        bg = None if background is None or source != "keyphrase" else [str(t) for t in background]
        raw = self._raw_skills(source, texts, tags, bg, embedder, seed, progress)
        if not raw.names:
            raise InputError(_no_skills_message(source, len(texts)))
        graph = build_skill_graph(
            raw, merge_threshold=self.merge_threshold, min_cooccurrence=self.min_cooccurrence
        )
        self._set_graph(graph, model_fingerprint(embedder.model_path))
        self.report = self._fit_report(source, raw, graph, len(texts), describe(embedder))
        self.report["background_docs"] = len(bg) if bg else 0
        return self

    def _raw_skills(
        self,
        source: str,
        texts: list[str],
        tags: Sequence[Sequence[str]] | None,
        background: list[str] | None,
        embedder: Embedder,
        seed: int,
        progress: bool,
    ) -> RawSkills:
        if source == "tags":
            lists = normalize_tags(tags, len(texts))
            return named_skills(lists, embedder, progress=progress)
        if source == "keyphrase":
            lists = keyphrase_skills(
                texts, max_skills=self.max_skills, background=background, **self.keyphrase
            )
            max_words = self.keyphrase.get("max_words", 3)
            return context_skills(lists, texts, embedder, max_words=max_words, progress=progress)
        return cluster_skills(
            texts,
            embedder,
            n_clusters=self.n_clusters,
            max_skills=self.max_skills,
            seed=seed,
            progress=progress,
        )

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
            raise NotFittedError("MassScorer is not fitted: call fit() or load a saved one")
        return self.graph

    def _embedder_for_documents(self) -> Embedder:
        """The fitted embedder (documents not cached unless asked); checks it is the model the
        skills were embedded with, since cosines across two models mean nothing."""
        if self._doc_embedder is None:
            config = dict(self.embedder)
            if not self.cache_documents:
                config["cache"] = False
            emb = Embedder(**config)
            found = model_fingerprint(emb.model_path)
            if self._fingerprint is not None and found != self._fingerprint:
                raise StateError(
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
            raise StateError(
                f"documents embed in {vecs.shape[1]} dimensions, skills in "
                f"{graph.embeddings.shape[1]}: the embedder is not the one the scorer was fit with"
            )
        return skill_similarities(vecs, graph.embeddings, self.top_k)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        graph = self._graph()
        sims = self.similarities(texts)
        out = graph_scores(
            sims,
            graph.weights,
            graph.edges,
            aggregation=self.aggregation,
            edge_weight=self.edge_weight,
        )
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
        ones = np.ones(len(a["incidence_indices"]), dtype=np.int64)
        incidence = sp.csr_matrix(
            (ones, a["incidence_indices"], a["incidence_indptr"]), shape=(n_examples, k)
        )
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
        "keyphrase": "no keyphrase is shared by enough examples and more frequent there than "
        "in the background (lower keyphrase={'min_df': 1} or {'min_lift': 1.2}, or give tags)",
        "cluster": "the examples have fewer than two sentences to cluster",
    }[source]
    return f"no skills found in the {n} reference examples: {hint}"


def fit_mass(
    targets: Any,
    settings: MassSettings | None = None,
    *,
    fields: Sequence[str] | None = None,
    max_items: int | None = None,
    tags: Sequence[Sequence[str]] | None = None,
    background: Any = None,
    progress: bool = False,
    **options: Any,
) -> MassScorer:
    """Fit a MASS scorer on target examples (a file, a built-in benchmark name or texts; see
    `load_reference`); skills="auto" uses tags where the targets have them (CHAMP concepts for
    "assay_champ") and keyphrases otherwise. `tags` gives one list of skill names per example.
    `background` (a Corpus or texts: the pool to rank) gives keyphrases a baseline: a seeded
    sample of `background_docs` of it (unused with tags).

    `settings` (or keyword arguments such as skills=, embedder=, top_k=, aggregation=; they
    override `settings`) are `MassSettings`; a seed of None is 0.
    """
    base = settings.model_dump(exclude_unset=True) if settings is not None else {}
    cfg = MassSettings.model_validate({**base, **options})
    seed = 0 if cfg.seed is None else cfg.seed
    want = cfg.skills in ("auto", "tags")
    texts, found = load_reference(
        targets,
        fields=fields,
        tags_field=cfg.tags_field,
        tags=tags,
        want_tags=want,
        max_items=max_items,
        seed=seed,
    )
    if cfg.skills == "tags" and found is None:
        what = f"{targets} has" if isinstance(targets, str) else "the targets have"
        raise ConfigError(
            f"skills='tags' but {what} no tags: name the field with tags_field= or pass tags="
        )
    scorer = MassScorer(
        column=cfg.column,
        embedder=cfg.embedder,
        skills=cfg.skills,
        merge_threshold=cfg.merge_threshold,
        min_cooccurrence=cfg.min_cooccurrence,
        top_k=cfg.top_k,
        aggregation=cfg.aggregation,
    )
    tags_found = found if want else None
    bg = None  # only keyphrases use a background: tags and clusters do not sample one
    if (
        background is not None
        and cfg.background_docs
        and cfg.skills != "cluster"
        and not tags_found
    ):
        bg = [str(t) for t in sample_texts(background, cfg.background_docs, seed)]
    return scorer.fit(texts, tags_found, background=bg, seed=seed, progress=progress)

"""From an unlabeled corpus to domains: CLIMB's stage A (Diao et al. 2025).

1. Embed a uniform sample of the corpus (`assay.embed`: MiniLM, or a static model for speed).
2. k-means with K_init clusters on the sample (faiss when installed, else scikit-learn).
3. Optionally prune clusters whose mean quality (any side-car score column) is below a
   threshold: CLIMB drops clusters scored under 3.0 of 5 by its quality classifiers.
4. Clusters holding less than `min_cluster_share` of the sample (outliers such as data
   tables) join their nearest larger cluster instead of becoming domains of their own.
5. Merge clusters whose centroids are close into the final domains: single-linkage under a
   distance (CLIMB merges centroids closer than 1.5) or, with `n_domains`, Ward agglomeration
   down to that many (average and single linkage leave outlier clusters as their own domains
   and lump the rest together).
   Then no domain may hold less than `min_domain_share` of the sample (default 1%, so at
   most 100 domains): the smallest domain under it is folded, cluster by cluster, into the
   domain of the nearest centroid outside it, until none is under it (or one domain is
   left). Domains are numbered again in order of their first cluster. So `n_domains` is an
   upper bound, and k-means clusters of a few documents never become domains of their own.
6. Assign every document of the corpus to its nearest centroid (through the runner).

Outputs, under `out_dir`:
- `domains/<shard>.parquet`: the side-car, `id`, `cluster` (k-means cluster), `domain`
  (its final domain, or `pruned`), `chars` and `tokens` (a GPT-2 pre-token estimate), in the
  shard's row order;
- `corpus/`: a view of the corpus (`assay.io.view`), nothing copied: read as a corpus, it gives
  the original shards with `domain` set to the cluster domain (the original, if any, kept as
  `source_domain`), because every mixing tool keys on the `domain` field;
- `_clusters.json`: per domain its documents, characters and estimated tokens, its member
  clusters and its top terms (class-based TF-IDF), so a user can name it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field, field_validator

from assay.common.embed import EMBEDDER_HELP, Embedder, describe
from assay.common.numerics import default_k, kmeans, nearest
from assay.common.text import count_tokens, top_terms
from assay.errors import ConfigError, InputError, MissingError
from assay.exec.runner import LocalRunner, Runner, report_progress
from assay.io.corpus import Corpus
from assay.io.shards import ReadOptions, Shard, ShardStats
from assay.io.view import sidecar_file, write_view
from assay.io.write import ShardWriter
from assay.util.config import Strict
from assay.util.files import atomic_path, read_json, read_parquet, write_json
from assay.util.guard import check_output, folder_lock, mark_output

PRUNED = "pruned"
CENTROIDS_FILE = "_centroids.npz"


def merge_centroids(
    centroids: np.ndarray, *, distance: float | None = None, n_domains: int | None = None
) -> np.ndarray:
    """A domain index per centroid: connected components under `distance` (single linkage),
    or Ward agglomeration to `n_domains`."""
    if len(centroids) == 1:
        return np.zeros(1, dtype=np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage

    if n_domains is not None:
        if n_domains > len(centroids):
            raise ConfigError(f"n_domains={n_domains} is more than the {len(centroids)} clusters")
        tree = linkage(centroids, method="ward")
        labels = fcluster(tree, t=n_domains, criterion="maxclust")
    elif distance is not None:
        tree = linkage(centroids, method="single")
        labels = fcluster(tree, t=distance, criterion="distance")
    else:
        return np.arange(len(centroids))
    # number domains by their first centroid, so that labels do not depend on scipy's order
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    return rank[inverse].astype(np.int64)


#: the side-car of a clustering: per document, its k-means cluster, its domain and its size
SIDECAR_SCHEMA = {
    "id": pl.String,
    "cluster": pl.Int32,
    "domain": pl.String,
    "chars": pl.UInt32,
    "tokens": pl.Int64,
}


@dataclass
class AssignTask:
    """Per shard: embed, assign to the nearest centroid, write the side-car (in the shard's row
    order, so that a view reads it in step with the shard)."""

    embedder: Embedder
    centroids: np.ndarray
    domain_of: list[str]  # per centroid: its final domain (or PRUNED)
    options: ReadOptions

    def output_name(self, shard: Shard) -> str:
        return sidecar_file("", shard).as_posix()

    def source(self, shard: Shard) -> dict[str, Any]:
        """What the labels depend on besides the shard: the centroids and their domains."""
        digest = hashlib.sha256(np.ascontiguousarray(self.centroids).tobytes()).hexdigest()
        return {"centroids": digest, "domains": self.domain_of, "embedder": describe(self.embedder)}

    def __call__(self, shard: Shard, out: Path | None) -> ShardStats:
        assert out is not None
        stats = ShardStats(shard.name)
        writer = ShardWriter(out, fmt="parquet")
        names = np.asarray(self.domain_of, dtype=object)
        for batch in shard.read(self.options, stats):
            vecs = self.embedder.embed(batch.get_column("text").to_list())
            cluster = nearest(vecs, self.centroids)
            text = batch.get_column("text")
            side = {
                "id": batch.get_column("id"),
                "cluster": cluster.astype(np.int32),
                "domain": pl.Series("domain", names[cluster].tolist(), dtype=pl.String),
                "chars": text.str.len_chars(),
                "tokens": count_tokens(text, None).astype(np.int64),
            }
            writer.write(pl.DataFrame(side, schema=SIDECAR_SCHEMA))
            stats.docs_out += batch.height
            report_progress(batch.height)
        writer.close(schema_if_empty=SIDECAR_SCHEMA)
        return stats


def _assign(
    corpus: Corpus, task: AssignTask, out: Path, runner: Runner | None, overwrite: bool, label: str
) -> Path:
    """Label every document of `corpus` into `out/domains` (side-cars) and write `out/corpus`,
    the view of the corpus with those domains. Returns the view folder."""
    side = out / "domains"
    runner = runner or LocalRunner(workers=1)
    runner.run(task, corpus.shards, side, overwrite=overwrite, label=label)
    return write_view(out / "corpus", corpus.shards, corpus.options, side, inputs=corpus.inputs)


@dataclass
class ClusterResult:
    out_dir: str
    k_init: int
    domains: dict[str, dict[str, Any]] = field(default_factory=dict)
    pruned: list[int] = field(default_factory=list)
    sample: int = 0

    @property
    def corpus(self) -> str:
        return str(Path(self.out_dir) / "corpus")


class PruneSettings(Strict):
    """Drop clusters whose mean score is below a threshold (CLIMB drops quality < 3 of 5)."""

    scores: str = Field(description="A score step or a scores folder.")
    column: str = Field(description="The score column.")
    below: float = Field(description="Drop clusters whose mean score is below this.")

    @field_validator("scores", mode="before")
    @classmethod
    def _folder(cls, v: Any) -> Any:
        return os.fspath(v) if isinstance(v, os.PathLike) else v


class ClusterSettings(Strict):
    """How `cluster_corpus` finds domains: the embedder, k-means, pruning and merging.

    From Python, `embedder` may also be a dict of `Embedder` settings (`{"model": ...,
    "cache": False}`); its own `long_docs`, if any, wins over `long_docs`.
    """

    embedder: str | dict[str, Any] | None = Field(None, description=EMBEDDER_HELP)
    long_docs: Literal["truncate", "mean"] = Field(
        "truncate", description="Documents longer than the embedder's context: truncate or mean."
    )
    k_init: int | None = Field(
        None, ge=2, description="k-means clusters (default about sqrt(sample / 2))."
    )
    sample: int = Field(20_000, ge=2, description="Documents the centroids are fitted on.")
    merge_distance: float | None = Field(
        None, ge=0, description="Merge clusters whose centroids are this close."
    )
    n_domains: int | None = Field(
        None, ge=1, description="Merge clusters (Ward) down to this many domains."
    )
    min_cluster_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Clusters with less than this share of the sample join their nearest "
        "larger one.",
    )
    min_domain_share: float = Field(
        0.01,
        ge=0,
        lt=1,
        description="After merging, a domain with less than this share of the sample is folded "
        "into the domains of its clusters' nearest centroids (0: never).",
    )
    prune: PruneSettings | None = Field(None, description="Drop clusters by a score.")
    seed: int | None = Field(
        None, description="Seed of the sample and k-means (default: the recipe's seed; 0)."
    )

    def make_embedder(self) -> Embedder:
        """The `Embedder`: a model name or folder with `long_docs`, or a dict of its settings
        (whose own `long_docs`, if any, wins)."""
        if isinstance(self.embedder, dict):
            return Embedder(**{"long_docs": self.long_docs, **self.embedder})
        return Embedder(self.embedder, long_docs=self.long_docs)


def cluster_corpus(
    corpus: Corpus,
    out_dir: str | os.PathLike,
    settings: ClusterSettings | None = None,
    *,
    runner: Runner | None = None,
    overwrite: bool = False,
    **options: Any,
) -> ClusterResult:
    """Discover domains in `corpus` and write the side-car, the view of the corpus with those
    domains (`ClusterResult.corpus`) and a report.

    `settings` (or keyword arguments such as embedder=, k_init=, n_domains=, prune=; those given
    apply over `settings`) say how: see `ClusterSettings`.
    """
    base = settings.model_dump(include=set(ClusterSettings.model_fields)) if settings else {}
    cfg = ClusterSettings.model_validate({**base, **options})
    seed = cfg.seed or 0
    prune = cfg.prune
    out = Path(out_dir)
    corpus.check_output(out, "clusters folder")
    if prune is not None:
        check_output(out, [prune.scores], "clusters folder")
    with folder_lock(out):
        mark_output(out, "clusters")
        emb = cfg.make_embedder()
        frame = corpus.sample(cfg.sample, seed=seed)
        if frame.height < 2:
            raise InputError(f"the corpus has {frame.height} documents: too few to cluster")
        k = cfg.k_init or default_k(frame.height)
        vecs = emb.embed(frame.get_column("text").to_list())
        centroids = kmeans(vecs, k, seed=seed)
        labels = nearest(vecs, centroids)
        keep = _kept_clusters(corpus, frame, labels, k, prune)
        kept = np.flatnonzero(keep)
        domain_of, small = _cluster_domains(
            centroids, labels, keep, cfg.min_cluster_share, cfg.merge_distance, cfg.n_domains
        )
        domain_of, folded = fold_small_domains(domain_of, centroids, labels, cfg.min_domain_share)

        # the fitted state first, so that held-out or new shards can be assigned the same way
        with atomic_path(out / CENTROIDS_FILE) as tmp, open(tmp, "wb") as f:
            np.savez(f, centroids=centroids, domain_of=np.asarray(domain_of, dtype=str))
        write_json(out / "_embedder.json", emb.get_config())
        task = AssignTask(emb, centroids, domain_of, corpus.options)
        _assign(corpus, task, out, runner, overwrite, "cluster")

        sidecars = [sidecar_file(out / "domains", s) for s in corpus.shards]
        report = _report(out, sidecars, frame, labels, domain_of, k, kept, seed)
        report["absorbed_clusters"] = [int(c) for c in np.flatnonzero(small)]
        report["folded_clusters"] = folded
        write_json(out / "_clusters.json", report)
        return ClusterResult(
            str(out), k, report["domains"], [int(c) for c in np.flatnonzero(~keep)], frame.height
        )


def _kept_clusters(
    corpus: Corpus,
    frame: pl.DataFrame,
    labels: np.ndarray,
    k: int,
    prune: PruneSettings | None,
) -> np.ndarray:
    """Per cluster, whether it is kept: all, or (with `prune`) those whose sampled documents'
    mean score in `prune.column` is at least `prune.below`."""
    keep = np.ones(k, dtype=bool)
    if prune is None:
        return keep
    from assay.io.scores import read_scores

    prune_scores, prune_column, prune_below = prune.scores, prune.column, prune.below
    scores = read_scores(prune_scores, corpus, [prune_column]).select("id", prune_column)
    joined = (
        frame.select("id").with_columns(pl.Series("c", labels)).join(scores, on="id", how="left")
    )
    if joined.get_column(prune_column).null_count():
        raise InputError(f"{prune_scores} has no {prune_column!r} score for some sampled documents")
    means = joined.group_by("c").agg(pl.col(prune_column).mean())
    for c, m in means.iter_rows():
        keep[c] = m >= prune_below
    if not keep.any():
        raise ConfigError(f"every cluster's mean {prune_column} is below {prune_below}")
    return keep


def _cluster_domains(
    centroids: np.ndarray,
    labels: np.ndarray,
    keep: np.ndarray,
    min_cluster_share: float,
    merge_distance: float | None,
    n_domains: int | None,
) -> tuple[list[str], np.ndarray]:
    """Each cluster's domain (or PRUNED), and which kept clusters were too small to be one."""
    k = len(keep)
    # clusters too small to be a domain (outliers: tables, boilerplate) join their nearest
    # large cluster rather than becoming a domain of a few documents with no held-out data
    sizes = np.bincount(labels, minlength=k)
    small = keep & (sizes < min_cluster_share * len(labels))
    big = np.flatnonzero(keep & ~small)
    if not len(big):
        raise ConfigError(f"every cluster holds less than {min_cluster_share:.1%} of the sample")
    merged = merge_centroids(centroids[big], distance=merge_distance, n_domains=n_domains)
    domain_of = [PRUNED] * k
    for c, d in zip(big, merged, strict=True):
        domain_of[c] = f"cluster_{d:02d}"
    for c in np.flatnonzero(small):
        domain_of[c] = domain_of[big[np.argmin(((centroids[big] - centroids[c]) ** 2).sum(1))]]
    return domain_of, small


def fold_small_domains(
    domain_of: list[str], centroids: np.ndarray, labels: np.ndarray, min_share: float
) -> tuple[list[str], list[int]]:
    """Fold every domain holding less than `min_share` of the sample (`labels`: the sampled
    documents' clusters) into others, smallest first: each of its clusters joins the domain of
    the nearest centroid outside it. Returns the domains, numbered again in order of their
    first cluster, and the clusters that moved."""
    names = np.asarray(domain_of, dtype=object)
    kept = names != PRUNED
    sizes = np.bincount(labels, minlength=len(names))
    floor = min_share * len(labels)
    moved: list[int] = []
    while True:
        live = sorted(set(names[kept]))
        docs = {d: int(sizes[names == d].sum()) for d in live}
        small = [d for d in live if docs[d] < floor]
        if not small or len(live) < 2:
            break
        d = min(small, key=lambda x: (docs[x], x))
        inside = np.flatnonzero(names == d)
        outside = np.flatnonzero(kept & (names != d))
        for c in inside:
            near = outside[np.argmin(((centroids[outside] - centroids[c]) ** 2).sum(1))]
            names[c] = names[near]
            moved.append(int(c))
    if not moved:
        return list(domain_of), []
    order = {d: i for i, d in enumerate(dict.fromkeys(n for n in names if n != PRUNED))}
    renamed = [n if n == PRUNED else f"cluster_{order[n]:02d}" for n in names]
    return renamed, sorted(moved)


def _report(
    out: Path,
    sidecars: list[Path],
    frame: pl.DataFrame,
    labels: np.ndarray,
    domain_of: list[str],
    k: int,
    kept: np.ndarray,
    seed: int,
) -> dict[str, Any]:
    # the side-cars carry each document's size, so the report never reads the texts again
    table = pl.concat([read_parquet(p, columns=["domain", "chars", "tokens"]) for p in sidecars])
    names = np.asarray(domain_of, dtype=object)
    sample_domains = names[labels]
    codes, inverse = np.unique(sample_domains, return_inverse=True)
    terms = top_terms(frame.get_column("text").to_list(), inverse)
    domains: dict[str, dict[str, Any]] = {}
    for name, g in table.group_by("domain"):
        name = name[0]
        domains[name] = {
            "docs": g.height,
            "chars": int(g.get_column("chars").sum()),
            "tokens_estimate": int(g.get_column("tokens").sum()),
            "clusters": sorted(int(c) for c in np.flatnonzero(names == name)),
            "top_terms": terms.get(int(np.flatnonzero(codes == name)[0]), [])
            if name in codes
            else [],
        }
    report = {
        "k_init": k,
        "kept_clusters": len(kept),
        "seed": seed,
        "domains": dict(sorted(domains.items())),
    }
    write_json(out / "_clusters.json", report)
    return report


def read_clusters(out_dir: str | os.PathLike) -> dict[str, Any]:
    return read_json(Path(out_dir) / "_clusters.json")


def assign_domains(
    corpus: Corpus,
    cluster_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    runner: Runner | None = None,
    overwrite: bool = False,
) -> str:
    """Label another corpus (a held-out split, new shards) with the domains of a clustering.

    Writes `out_dir/domains` (side-cars) and `out_dir/corpus` (the view of `corpus` with those
    domains) exactly as `cluster_corpus` does for the corpus it was fitted on; returns the view
    folder. Per-domain held-out losses on cluster domains (what BiMix fits, and what a mixture
    search can target) need held-out documents labelled this way.
    """
    src = Path(cluster_dir)
    if not (src / CENTROIDS_FILE).exists():
        raise MissingError(f"{src} holds no clustering ({CENTROIDS_FILE} is missing)")
    with np.load(src / CENTROIDS_FILE, allow_pickle=False) as z:
        centroids, domain_of = z["centroids"], [str(d) for d in z["domain_of"]]
    emb = Embedder(**read_json(src / "_embedder.json"))
    out = Path(out_dir)
    corpus.check_output(out, "output folder")
    # the clustering it reads (a held-out labelling may live in a subfolder of it)
    check_output(out, [src / CENTROIDS_FILE, src / "corpus", src / "domains"], "output folder")
    task = AssignTask(emb, centroids, domain_of, corpus.options)
    return str(_assign(corpus, task, out, runner, overwrite, "assign domains"))

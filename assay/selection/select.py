"""Selection policies: keep the best documents by top-k, threshold or Gumbel top-k.

Two layers:

* **Array functions** (`topk_mask`, `gumbel_topk_mask`, `threshold_mask`): plain numpy in, a
  boolean mask out, for users who hold scores in memory.
* **`select(corpus, scores, out_dir, ...)`**: the same policies over a sharded corpus with side-car
  scores, in three resumable steps:
    1. *keys* (per shard, through the runner): join each document's score, its weight (1, its
       characters or its tokens) and a stable hash of its id; write them to `_select/keys/`.
    2. *decide* (global, in memory: a few numbers per document): apply the policy to all keys,
       write the kept ids per shard to `_select/keep/` and the summary to `_selection.json`.
    3. *filter* (per shard, through the runner): re-read each shard and write the kept
       documents under the same shard name.

The fraction kept can be measured in documents, characters or tokens (`by=`). PreSelect cuts
its top 10% by characters, BETR by tokens, MATES by documents.

Ties are broken by a seeded hash of the id, and the Gumbel noise is a function of (seed, id), so
the same inputs and seed select the same documents whatever the shard order or worker count.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field, field_validator, model_validator

from assay.common.text import count_tokens
from assay.errors import ConfigError, InputError, StateError
from assay.exec.runner import STATS_DIR, STATS_FILE, LocalRunner, Runner, report_progress
from assay.io.corpus import Corpus
from assay.io.scores import ScoreSet, check_score_columns, check_unique_ids, join_scores
from assay.io.shards import ReadOptions, Shard, ShardStats
from assay.io.write import ShardWriter, output_name
from assay.util.config import Strict
from assay.util.files import (
    atomic_path,
    content_id,
    file_sha256,
    read_json,
    read_parquet,
    write_json,
)
from assay.util.guard import check_output, folder_lock, mark_output
from assay.util.hashing import config_hash, mix64, stable_hash64, uniform_from_hash

Policy = Literal["topk", "gumbel", "threshold"]
Measure = Literal["docs", "chars", "tokens"]
Mode = Literal["top", "bottom", "middle"]

#: Perplexity-pruning names (Ankner et al., 2024) for the same modes.
MODE_ALIASES = {"high": "top", "low": "bottom", "medium": "middle"}

SELECT_DIR = "_select"
SELECTION_FILE = "_selection.json"
#: written after the decision: which keys (by content) it was made from
DECIDED_FILE = "decided.json"


# ---------------------------------------------------------------------------------------------
# Array-level policies


def _cut(key: np.ndarray, tiebreak: np.ndarray, weights: np.ndarray, keep: float) -> np.ndarray:
    """Keep the highest keys until their weight is closest to `keep` of the total."""
    n = len(key)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    order = np.lexsort((-tiebreak.astype(np.float64), -key))  # by key desc, then tiebreak desc
    cum = np.cumsum(weights[order], dtype=np.float64)
    total = cum[-1]
    if total <= 0:
        return mask
    target = keep * total
    k = int(np.searchsorted(cum, target, side="left")) + 1
    k = min(k, n)
    if k > 1 and abs(cum[k - 2] - target) <= abs(cum[k - 1] - target):
        k -= 1
    mask[order[:k]] = True
    return mask


def _check_keep(keep: float) -> None:
    if isinstance(keep, bool) or not isinstance(keep, int | float) or not (0 < keep <= 1):
        raise ConfigError(f"keep must be a fraction in (0, 1], not {keep!r}")


def _policy_key(
    scores: np.ndarray, weights: np.ndarray, tiebreak: np.ndarray, mode: Mode
) -> np.ndarray:
    s = scores.astype(np.float64)
    if mode == "top":
        return s
    if mode == "bottom":
        return -s
    if mode == "middle":
        # Weighted percentile of each document; keep the band nearest the median
        # ("medium perplexity" in Ankner et al., 2024).
        order = np.lexsort((tiebreak.astype(np.float64), s))
        cum = np.cumsum(weights[order], dtype=np.float64)
        mid = (cum - weights[order] / 2.0) / max(cum[-1], 1e-300)
        pct = np.empty_like(mid)
        pct[order] = mid
        return -np.abs(pct - 0.5)
    raise ConfigError(f"mode must be top, bottom or middle, not {mode!r}")


def topk_mask(
    scores: np.ndarray,
    keep: float,
    *,
    weights: np.ndarray | None = None,
    mode: Mode = "top",
    tiebreak: np.ndarray | None = None,
) -> np.ndarray:
    """Keep the best `keep` fraction (of the total weight) by score.

    mode='top' keeps the highest scores, 'bottom' the lowest, 'middle' the band around the
    weighted median. Ties are broken by `tiebreak` (default: the later index wins, deterministic).
    """
    _check_keep(keep)
    scores = np.asarray(scores)
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=np.float64)
    tb = np.arange(len(scores)) if tiebreak is None else np.asarray(tiebreak)
    return _cut(_policy_key(scores, w, tb, mode), tb, w, keep)


def gumbel_noise(n_or_hashes: int | np.ndarray, seed: int) -> np.ndarray:
    """Standard Gumbel noise, from a seeded generator or, given id hashes, from (seed, id)."""
    if isinstance(n_or_hashes, int | np.integer):
        return np.random.default_rng(seed).gumbel(size=int(n_or_hashes))
    u = uniform_from_hash(mix64(np.asarray(n_or_hashes, dtype=np.uint64), seed))
    return -np.log(-np.log(u))


def gumbel_topk_mask(
    scores: np.ndarray,
    keep: float,
    *,
    tau: float = 1.0,
    weights: np.ndarray | None = None,
    mode: Literal["top", "bottom"] = "top",
    seed: int = 0,
    id_hashes: np.ndarray | None = None,
) -> np.ndarray:
    """Gumbel top-k: keep the top of score/tau + Gumbel noise (mode='bottom' uses -score/tau).

    With document weights of 1 this samples `k` documents without replacement with probability
    proportional to softmax(score/tau) (the Gumbel-top-k trick, Kool et al. 2019). MATES' official
    code instead keeps the *smallest* noisy values of pred/tau + G, which is not that
    distribution; assay implements the correct form: argtopk(-pred/tau + G) for "lower is better".
    """
    _check_keep(keep)
    if tau <= 0:
        raise ConfigError("tau must be positive")
    if mode not in ("top", "bottom"):
        raise ConfigError("Gumbel selection supports mode 'top' or 'bottom'")
    s = np.asarray(scores, dtype=np.float64)
    sign = 1.0 if mode == "top" else -1.0
    noise = gumbel_noise(len(s) if id_hashes is None else id_hashes, seed)
    key = sign * s / tau + noise
    w = np.ones(len(s)) if weights is None else np.asarray(weights, dtype=np.float64)
    tb = np.arange(len(s)) if id_hashes is None else id_hashes
    return _cut(key, tb, w, keep)


def threshold_mask(
    scores: np.ndarray, threshold: float, *, mode: Literal["top", "bottom"] = "top"
) -> np.ndarray:
    """Keep scores >= threshold (mode='top') or <= threshold (mode='bottom')."""
    s = np.asarray(scores)
    if mode == "top":
        return s >= threshold
    if mode == "bottom":
        return s <= threshold
    raise ConfigError("threshold selection supports mode 'top' or 'bottom'")


# ---------------------------------------------------------------------------------------------
# Corpus-level selection


class SelectConfig(Strict):
    """What to keep. Validated on construction so that a bad recipe fails before any work."""

    column: str = Field(description="Score column to select by.")
    policy: Policy = Field(
        "topk",
        description="'topk' (exact, global), 'gumbel' (top-k of score/tau + Gumbel noise: "
        "sampling without replacement) or 'threshold' (score >= threshold).",
    )
    keep: float | None = Field(
        None, gt=0, le=1, description="Fraction to keep (topk, gumbel), measured by `by`."
    )
    by: Measure = Field("docs", description="Measure of the kept fraction: docs, chars or tokens.")
    mode: Mode | Literal["high", "low", "medium"] = Field(
        "top",
        description="'top' (or 'high') keeps high scores, 'bottom' ('low') low ones, 'middle' "
        "('medium') the band around the median (topk only).",
    )
    threshold: float | None = Field(None, description="Score threshold of the threshold policy.")
    tau: float = Field(1.0, gt=0, description="Gumbel temperature: lower is closer to top-k.")
    seed: int | None = Field(
        None,
        description="Seed of the Gumbel noise and tie-breaks (default: the recipe's seed; 0).",
    )
    tokenizer: str | None = Field(
        None,
        description="Local tokenizer (folder or tokenizer.json) for exact `by: tokens`; default "
        "estimates tokens.",
    )
    group_by: str | None = Field(
        "domain", description="Column to report kept fractions by (null for none)."
    )
    with_scores: bool = Field(False, description="Add every score column to the kept documents.")
    format: str | None = Field(
        None,
        description="Output format (parquet, jsonl, jsonl.gz, jsonl.zst); default: the input's.",
    )

    @field_validator("mode")
    @classmethod
    def _canonical_mode(cls, v: str) -> str:
        return MODE_ALIASES.get(v, v)

    @field_validator("column")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        check_score_columns([v], "select")
        return v

    @model_validator(mode="after")
    def _policy_needs(self) -> SelectConfig:
        if self.policy == "threshold":
            if self.threshold is None:
                raise ValueError("the threshold policy needs threshold=<score>")
        elif self.keep is None:
            raise ValueError(f"the {self.policy} policy needs keep=<fraction>")
        if self.mode == "middle" and self.policy != "topk":
            raise ValueError("mode 'middle' needs the topk policy")
        return self

    def keys_config(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "by": self.by,
            "tokenizer": self.tokenizer,
            "group_by": self.group_by,
        }


@dataclass
class SelectResult:
    out_dir: str
    config: dict[str, Any]
    docs: int
    kept_docs: int
    weight: float
    kept_weight: float
    score_cutoff: float | None
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def kept_fraction(self) -> float:
        return self.kept_weight / self.weight if self.weight else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kept_fraction": self.kept_fraction}


@dataclass
class KeysTask:
    """Step 1: per document, its score, weight, id hash and group."""

    score_dirs: list[str]
    config: SelectConfig
    options: ReadOptions

    def output_name(self, shard: Shard) -> str:
        return f"{shard.stem}.parquet"

    def source(self, shard: Shard) -> dict[str, Any]:
        files = ScoreSet(self.score_dirs).files_for(shard, [self.config.column])
        return {
            "config": self.config.keys_config(),
            "scores": [content_id(f) if f.exists() else None for f in files],
        }

    def __call__(self, shard: Shard, out: Path | None) -> ShardStats:
        assert out is not None
        cfg = self.config
        stats = ShardStats(shard.name)
        scores = ScoreSet(self.score_dirs).for_shard(shard, [cfg.column])
        writer = ShardWriter(out, fmt="parquet")
        seen: list[pl.Series] = []
        for batch in shard.read(self.options, stats):
            seen.append(batch.get_column("id"))
            joined = join_scores(batch, scores)
            missing = joined.get_column(cfg.column).is_null()
            if missing.any():
                if self.options.on_error == "fail":
                    doc = joined.filter(missing).get_column("id")[0]
                    raise StateError(
                        f"document {doc!r} of shard {shard.name} has no {cfg.column!r} score; "
                        "score the corpus again (the scores are stale) or use on_error='skip'"
                    )
                stats.skip("no_score", int(missing.sum()))
                joined = joined.filter(~missing)
            text = joined.get_column("text")
            n_chars = text.str.len_chars()
            if cfg.by == "docs":
                weight = np.ones(joined.height)
            elif cfg.by == "chars":
                weight = n_chars.to_numpy().astype(np.float64)
            else:
                weight = count_tokens(text, cfg.tokenizer)
            ids = joined.get_column("id")
            group = (
                joined.get_column(cfg.group_by).cast(pl.String).fill_null("(none)")
                if cfg.group_by and cfg.group_by in joined.columns
                else pl.repeat("(all)", joined.height, dtype=pl.String, eager=True)
            )
            writer.write(
                pl.DataFrame(
                    {
                        "id": ids,
                        "score": joined.get_column(cfg.column).cast(pl.Float64),
                        "weight": weight,
                        "hash": stable_hash64(ids.to_list()),
                        "group": group,
                    }
                )
            )
            stats.docs_out += joined.height
            stats.chars_out += int(n_chars.sum())
            report_progress(batch.height)
        check_unique_ids(seen, shard)
        writer.close(
            schema_if_empty={
                "id": pl.String,
                "score": pl.Float64,
                "weight": pl.Float64,
                "hash": pl.UInt64,
                "group": pl.String,
            }
        )
        return stats


@dataclass
class FilterTask:
    """Step 3: write a shard's kept documents, optionally with their scores."""

    keep_dir: str
    score_dirs: list[str]
    config: SelectConfig
    options: ReadOptions

    def output_name(self, shard: Shard) -> str:
        return output_name(shard, self.config.format)

    def source(self, shard: Shard) -> dict[str, Any]:
        scores = ScoreSet(self.score_dirs) if self.config.with_scores else None
        return {
            "keep": file_sha256(Path(self.keep_dir) / f"{shard.stem}.parquet"),
            "format": self.config.format,
            "scores": [content_id(f) for f in scores.files_for(shard, scores.columns)]
            if scores
            else None,
        }

    def __call__(self, shard: Shard, out: Path | None) -> ShardStats:
        assert out is not None
        stats = ShardStats(shard.name)
        kept = read_parquet(Path(self.keep_dir) / f"{shard.stem}.parquet").get_column("id")
        scores = ScoreSet(self.score_dirs).for_shard(shard) if self.config.with_scores else None
        writer = ShardWriter(out, self.options)  # the temporary name keeps the output's suffix
        for batch in shard.read(self.options, stats):
            chosen = batch.filter(pl.col("id").is_in(kept.implode()))
            if scores is not None:
                chosen = join_scores(chosen, scores)
            if chosen.height:
                writer.write(chosen)
            stats.docs_out += chosen.height
            stats.chars_in += int(batch.get_column("text").str.len_chars().sum())
            stats.chars_out += int(chosen.get_column("text").str.len_chars().sum())
            report_progress(batch.height)
        writer.close()
        return stats


def _decide(keys: pl.DataFrame, cfg: SelectConfig) -> np.ndarray:
    score = keys.get_column("score").to_numpy()
    weight = keys.get_column("weight").to_numpy()
    h = keys.get_column("hash").to_numpy()
    if cfg.policy == "threshold":
        assert cfg.threshold is not None
        return threshold_mask(score, cfg.threshold, mode=cfg.mode)  # type: ignore[arg-type]
    assert cfg.keep is not None
    if cfg.policy == "gumbel":
        return gumbel_topk_mask(
            score,
            cfg.keep,
            tau=cfg.tau,
            weights=weight,
            mode=cfg.mode,
            seed=cfg.seed or 0,
            id_hashes=h,
        )  # type: ignore[arg-type]
    # Seeded tie-break, so that a different seed also reshuffles exact ties.
    return _cut(
        _policy_key(score, weight, mix64(h, cfg.seed or 0), cfg.mode),
        mix64(h, cfg.seed or 0),
        weight,
        cfg.keep,
    )


def select(
    corpus: Corpus,
    scores: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: SelectConfig | None = None,
    *,
    runner: Runner | None = None,
    overwrite: bool = False,
    **config_kwargs: Any,
) -> SelectResult:
    """Select documents of `corpus` by a score column and write them to `out_dir`.

    `config` (or keyword arguments such as column=, policy=, keep=, by=) says what to keep.
    Output shards keep their input names. Re-running resumes by content: a shard or score file
    that changed since is read again and the decision is made again; a different configuration
    in the same folder raises unless `overwrite=True`. An `out_dir` that is, holds or lies inside
    the corpus or a scores folder is refused before anything is written.
    """
    cfg = config or SelectConfig(**config_kwargs)
    runner = runner or LocalRunner(workers=1)
    out = Path(out_dir)
    score_dirs = [
        str(Path(d)) for d in ([scores] if isinstance(scores, str | os.PathLike) else scores)
    ]
    corpus.check_output(out, "selection folder")
    check_output(out, score_dirs, "selection folder")
    available = ScoreSet(score_dirs).columns  # also validates the folders
    if cfg.column not in available:
        raise ConfigError(
            f"no score column {cfg.column!r} in {score_dirs}; available: {', '.join(available)}"
        )
    with folder_lock(out):
        mark_output(out, "selection")
        return _select(corpus, score_dirs, out, cfg, runner, overwrite)


def _select(
    corpus: Corpus,
    score_dirs: list[str],
    out: Path,
    cfg: SelectConfig,
    runner: Runner,
    overwrite: bool,
) -> SelectResult:
    files = list(dict.fromkeys(s.file_name for s in corpus.shards))  # a split file is one
    full_cfg = {**cfg.model_dump(), "scores": score_dirs, "corpus": files}
    cfg_path = out / SELECT_DIR / "config.json"
    if cfg_path.exists():
        old = read_json(cfg_path)
        if old != full_cfg and not overwrite:
            diff = sorted(k for k in set(old) | set(full_cfg) if old.get(k) != full_cfg.get(k))
            raise StateError(
                f"{out} holds a selection made with other settings ({', '.join(diff)} differ); "
                "use overwrite=True (--overwrite) or another output folder"
            )
    if overwrite:
        _clear_selection(out, corpus, cfg)
    write_json(cfg_path, full_cfg)

    keys_dir = out / SELECT_DIR / "keys"
    keep_dir = out / SELECT_DIR / "keep"
    keys_result = runner.run(
        KeysTask(score_dirs, cfg, corpus.options), corpus.shards, keys_dir, label="select:keys"
    )

    summary_path = out / SELECTION_FILE
    decided_path = out / SELECT_DIR / DECIDED_FILE
    # the decision is made from every shard's keys: redo it if any of them changed
    keys_id = config_hash(
        [read_json(keys_dir / STATS_DIR / f"{s.name}.json")["source"] for s in corpus.shards]
    )
    decided = (
        summary_path.exists()
        and decided_path.exists()
        and read_json(decided_path).get("keys") == keys_id
        and all((keep_dir / f"{s.stem}.parquet").exists() for s in corpus.shards)
    )
    if not decided:
        decided_path.unlink(missing_ok=True)
        parts = [read_parquet(keys_dir / f"{s.stem}.parquet") for s in corpus.shards]
        keys = pl.concat(parts) if parts else pl.DataFrame()
        mask = _decide(keys, cfg) if keys.height else np.zeros(0, dtype=bool)
        offset = 0
        for s, part in zip(corpus.shards, parts, strict=True):
            m = mask[offset : offset + part.height]
            offset += part.height
            with atomic_path(keep_dir / f"{s.stem}.parquet") as tmp:
                part.filter(pl.Series(m)).select("id").write_parquet(tmp)
        result = _summarise(keys, mask, cfg, out, keys_result.skipped)
        write_json(summary_path, result.to_dict())
        write_json(decided_path, {"keys": keys_id})
    runner.run(
        FilterTask(str(keep_dir), score_dirs, cfg, corpus.options),
        corpus.shards,
        out,
        label="select:write",
    )
    saved = read_json(summary_path)
    saved.pop("kept_fraction", None)
    return SelectResult(**saved)


def _summarise(
    keys: pl.DataFrame, mask: np.ndarray, cfg: SelectConfig, out: Path, skipped: dict[str, int]
) -> SelectResult:
    if keys.height == 0:
        return SelectResult(str(out), cfg.model_dump(), 0, 0, 0.0, 0.0, None, {}, skipped)
    k = keys.with_columns(pl.Series("kept", mask))
    kept = k.filter(pl.col("kept"))
    cutoff = None
    if kept.height and cfg.policy == "topk" and cfg.mode in ("top", "bottom"):
        cutoff = float(
            kept.get_column("score").min() if cfg.mode == "top" else kept.get_column("score").max()
        )
    elif cfg.policy == "threshold":
        cutoff = cfg.threshold
    by_group = (
        k.group_by("group")
        .agg(
            pl.len().alias("docs"),
            pl.col("kept").sum().alias("kept_docs"),
            pl.col("weight").sum().alias("weight"),
            (pl.col("weight") * pl.col("kept")).sum().alias("kept_weight"),
        )
        .sort("group")
    )
    groups = {
        row["group"]: {
            kk: (float(v) if "weight" in kk else int(v)) for kk, v in row.items() if kk != "group"
        }
        for row in by_group.iter_rows(named=True)
    }
    return SelectResult(
        out_dir=str(out),
        config=cfg.model_dump(),
        docs=k.height,
        kept_docs=int(mask.sum()),
        weight=float(k.get_column("weight").sum()),
        kept_weight=float(kept.get_column("weight").sum()),
        score_cutoff=cutoff,
        groups=groups,
        skipped=skipped,
    )


def _clear_selection(out: Path, corpus: Corpus, cfg: SelectConfig) -> None:
    """Remove only what a selection writes, never anything else a user keeps in `out`."""
    for sub in (SELECT_DIR, "_stats"):
        shutil.rmtree(out / sub, ignore_errors=True)
    for f in (SELECTION_FILE, STATS_FILE):
        (out / f).unlink(missing_ok=True)
    for s in corpus.shards:
        (out / output_name(s, cfg.format)).unlink(missing_ok=True)


def gumbel_topk(
    benefit: np.ndarray,
    k: int,
    *,
    tau: float = 0.5,
    seed: int = 0,
    id_hashes: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of k items sampled without replacement with P proportional to softmax(benefit/tau).

    The Gumbel-top-k trick (Kool et al. 2019): the k largest of `benefit / tau + G`, G i.i.d.
    standard Gumbel. For MATES, benefit = -predicted influence (lower influence = lower reference
    loss = better), i.e. `argtopk(-pred / tau + G)`.

    Not the official MATES code, which keeps the k *smallest* of `pred / tau + G`: since
    min(a + G) is not distributed like max(-a + G) (the Gumbel distribution is skewed), that
    picks item i with P != softmax(-pred / tau)_i; e.g. for pred = (0, 1, 2), tau = 1, k = 1 it
    gives about (0.702, 0.245, 0.053) instead of softmax's (0.665, 0.245, 0.090): the worst
    documents are under-sampled (and the best over-sampled) relative to the intended law.

    Noise comes from a seeded generator, or from (seed, id hash) when `id_hashes` is given (then
    the draw of a document does not depend on its position). Returned best key first.
    """
    from assay.selection.select import gumbel_noise

    b = np.asarray(benefit, dtype=np.float64)
    if tau <= 0:
        raise ConfigError("tau must be positive")
    if not 0 <= k <= len(b):
        raise ConfigError(f"k must be between 0 and {len(b)}, not {k}")
    if id_hashes is not None and len(id_hashes) != len(b):
        raise InputError(f"{len(id_hashes)} id hashes for {len(b)} items")
    key = b / tau + gumbel_noise(len(b) if id_hashes is None else id_hashes, seed)
    order = np.argsort(-key, kind="stable")
    return order[:k]

"""Selection policies: keep the best documents by top-k, threshold or Gumbel top-k.

Two layers:

* **Array functions** (`topk_mask`, `gumbel_topk_mask`, `threshold_mask`): plain numpy in, a
  boolean mask out, for users who hold scores in memory.
* **`select(corpus, scores, out_dir, ...)`**: the same policies over a sharded corpus with side-car
  scores, in three resumable steps:
    1. *keys* (per shard, through the runner): join each document's score, its weight (1, its
       characters or its tokens), a stable hash of its id, its group and its row in the shard,
       and whether it passed the `where` filter (`assay.selection.where`); write them to
       `_select/keys/`.
    2. *decide* (global, in memory: three float64 or uint64 numbers per document that passed,
       no ids; 41 bytes per document at the peak, measured; `assay.selection.decide`): apply
       the policy to all keys, or within each group (`stratify`), then stream each shard's
       keys again to write its kept ids and rows to `_select/keep/` and to sum the summary,
       `_selection.json`.
    3. *filter* (per shard, through the runner): re-read each shard and write the rows kept
       (by position) under the same shard name.

The fraction kept can be measured in documents, characters or tokens (`by=`). PreSelect cuts
its top 10% by characters, BETR by tokens, MATES by documents. With a filter, `keep_of=` says
whether it is a fraction of the whole corpus (a budget) or of what passed.

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
from assay.io.write import ShardWriter, clear_outputs_metadata, finish_outputs, output_name
from assay.selection.decide import Tally, record_decision
from assay.selection.decide import decide as _decide
from assay.selection.policies import (
    Mode,
    gumbel_noise,
    gumbel_topk,
    gumbel_topk_mask,
    threshold_mask,
    topk_mask,
)
from assay.selection.where import Where, parse_where
from assay.util.config import Strict
from assay.util.files import (
    content_id,
    file_sha256,
    read_json,
    read_parquet,
    write_json,
)
from assay.util.guard import check_output, folder_lock, mark_output
from assay.util.hashing import config_hash, stable_hash64
from assay.util.remote import local_path

# the array functions live in assay.selection.policies and are part of this module's API too
__all__ = [
    "SelectConfig",
    "SelectResult",
    "gumbel_noise",
    "gumbel_topk",
    "gumbel_topk_mask",
    "select",
    "threshold_mask",
    "topk_mask",
]

Policy = Literal["topk", "gumbel", "gumbel_official", "threshold"]
Measure = Literal["docs", "chars", "tokens"]
KeepOf = Literal["corpus", "passed"]

#: Perplexity-pruning names (Ankner et al., 2024) for the same modes.
MODE_ALIASES = {"high": "top", "low": "bottom", "medium": "middle"}

SELECT_DIR = "_select"
SELECTION_FILE = "_selection.json"
#: written after the decision: which keys (by content) it was made from
DECIDED_FILE = "decided.json"
#: what step 1 writes per document (`row`: its position among the rows the shard yields)
KEYS_SCHEMA = {
    "id": pl.String,
    "row": pl.Int64,
    "score": pl.Float64,
    "weight": pl.Float64,
    "hash": pl.UInt64,
    "group": pl.String,
}
#: settings added after selection folders were first written (absent from their config.json)
_ADDED = ("where", "keep_of", "stratify")
#: the keys' column of a filtered selection: whether the document passed the `where` filter
PASSED_COLUMN = {"passed": pl.Boolean}


# ---------------------------------------------------------------------------------------------
# Corpus-level selection


class SelectConfig(Strict):
    """What to keep. Validated on construction so that a bad recipe fails before any work."""

    column: str = Field(description="Score column to select by.")
    policy: Policy = Field(
        "topk",
        description="'topk' (exact, global), 'gumbel' (top-k of score/tau + Gumbel noise: "
        "sampling without replacement), 'gumbel_official' (top-k of score/tau - Gumbel noise: "
        "MATES' official code, biased; for replication only) or 'threshold' (score >= "
        "threshold).",
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
        "domain",
        description="Column to report kept fractions by, and to stratify by: a field of the "
        "corpus or a score column (null for none).",
    )
    where: str | None = Field(
        None,
        description="Filter first: keep only documents for which this expression over score "
        "columns (and corpus fields) is true, then apply the policy to them. Comparisons "
        "(< <= > >= == !=), and/or/not, parentheses, numbers, 'strings', true/false, "
        "in ('a', 'b'), is null; e.g. \"quality > 0.6 and n_chars >= 200\".",
    )
    keep_of: KeepOf = Field(
        "corpus",
        description="What `keep` is a fraction of when `where` filters: 'corpus' (all the "
        "documents; everything that passed when that weighs less) or 'passed' (what passed "
        "the filter). Per group when stratified.",
    )
    stratify: bool = Field(
        False,
        description="Keep the same fraction of every `group_by` group (top-k or Gumbel top-k "
        "within each group) instead of one cut over all documents; documents without a group "
        "are the group '(none)'.",
    )
    with_scores: bool = Field(False, description="Add every score column to the kept documents.")
    format: str | None = Field(
        None,
        description="Output format (parquet, jsonl, jsonl.gz, jsonl.zst, or arrow: a Hugging "
        "Face dataset that datasets.load_from_disk opens); default: the input's.",
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
        if self.stratify:
            if not self.group_by:
                raise ValueError("stratify needs group_by=<column> (the groups)")
            if self.policy == "threshold":
                raise ValueError(
                    "stratify needs the topk or gumbel policy (a threshold is per document already)"
                )
            if self.mode == "middle":
                raise ValueError("stratify does not support mode 'middle'")
        return self

    @field_validator("where")
    @classmethod
    def _parse_where(cls, v: str | None) -> str | None:
        return None if v is None else parse_where(v).text

    def parsed_where(self) -> Where | None:
        return None if self.where is None else parse_where(self.where)

    def keys_config(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "by": self.by,
            "tokenizer": self.tokenizer,
            "group_by": self.group_by,
            **({"where": self.where} if self.where is not None else {}),
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
    #: what passed the `where` filter (None without one)
    passed_docs: int | None = None
    passed_weight: float | None = None

    @property
    def kept_fraction(self) -> float:
        return self.kept_weight / self.weight if self.weight else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kept_fraction": self.kept_fraction}


@dataclass
class KeysTask:
    """Step 1: per document, its score, weight, id hash, group and row in the shard (and
    whether it passed the `where` filter, when there is one)."""

    score_dirs: list[str]
    config: SelectConfig
    options: ReadOptions
    #: the score columns read: `column`, then those `where` and `group_by` name
    score_columns: list[str] = field(default_factory=list)

    def output_name(self, shard: Shard) -> str:
        return f"{shard.stem}.parquet"

    def columns(self) -> list[str]:
        return self.score_columns or [self.config.column]

    def layout(self) -> dict[str, Any]:
        return {**KEYS_SCHEMA, **(PASSED_COLUMN if self.config.where is not None else {})}

    def source(self, shard: Shard) -> dict[str, Any]:
        files = ScoreSet(self.score_dirs).files_for(shard, self.columns())
        return {
            "config": self.config.keys_config(),
            "scores": [content_id(f) if f.exists() else None for f in files],
            "columns": list(self.layout()),  # keys of another layout are made again
        }

    def __call__(self, shard: Shard, out: Path | None) -> ShardStats:
        assert out is not None
        cfg = self.config
        stats = ShardStats(shard.name)
        score_set = ScoreSet(self.score_dirs)
        scores = score_set.for_shard(shard, self.columns())
        where = cfg.parsed_where()
        # every score the selection reads must be there (a group may be null: "(none)")
        needed = [cfg.column, *(c for c in (where.columns if where else ()) if c in scores)]
        needed = list(dict.fromkeys(needed))
        writer = ShardWriter(out, fmt="parquet")
        seen: list[pl.Series] = []
        start = 0
        for batch in shard.read(self.options, stats):
            seen.append(batch.get_column("id"))
            rows = np.arange(start, start + batch.height, dtype=np.int64)
            start += batch.height
            joined = join_scores(batch, scores)
            if joined.height != batch.height:
                raise InputError(
                    f"the {cfg.column!r} scores of shard {shard.name} hold an id twice; "
                    "score the corpus again"
                )
            missing = joined.select(pl.any_horizontal(pl.col(needed).is_null())).to_series()
            if missing.any():
                if self.options.on_error == "fail":
                    row = joined.filter(missing).row(0, named=True)
                    absent = [c for c in needed if row[c] is None]
                    raise StateError(
                        f"document {row['id']!r} of shard {shard.name} has no "
                        f"{' or '.join(map(repr, absent))} score; score the corpus again (the "
                        "scores are stale) or use on_error='skip'"
                    )
                stats.skip("no_score", int(missing.sum()))
                joined = joined.filter(~missing)
                rows = rows[~missing.to_numpy()]
            n_chars = joined.get_column("text").str.len_chars()
            keys = self._keys(joined, rows, n_chars, shard)
            if where is not None:
                available = (
                    f"score columns {', '.join(score_set.columns)}; "
                    f"fields of the corpus {', '.join(batch.columns)}"
                )
                passed = joined.select(where.compile(dict(joined.schema), available=available))
                keys = keys.with_columns(passed.to_series().alias("passed"))
            writer.write(keys)
            stats.docs_out += joined.height
            stats.chars_out += int(n_chars.sum())
            report_progress(batch.height)
        check_unique_ids(seen, shard)
        writer.close(schema_if_empty=self.layout())
        return stats

    def _keys(
        self, joined: pl.DataFrame, rows: np.ndarray, n_chars: pl.Series, shard: Shard
    ) -> pl.DataFrame:
        cfg = self.config
        if cfg.by == "docs":
            weight = np.ones(joined.height)
        elif cfg.by == "chars":
            weight = n_chars.to_numpy().astype(np.float64)
        else:
            weight = count_tokens(joined.get_column("text"), cfg.tokenizer)
        ids = joined.get_column("id")
        if cfg.group_by and cfg.group_by in joined.columns:
            group = joined.get_column(cfg.group_by).cast(pl.String).fill_null("(none)")
        elif cfg.stratify:
            raise ConfigError(
                f"stratify: the group column {cfg.group_by!r} is neither a field of shard "
                f"{shard.name} nor a score column (set group_by)"
            )
        else:
            group = pl.repeat("(all)", joined.height, dtype=pl.String, eager=True)
        return pl.DataFrame(
            {
                "id": ids,
                "row": rows,
                "score": joined.get_column(cfg.column).cast(pl.Float64),
                "weight": weight,
                "hash": stable_hash64(ids.to_list()),
                "group": group,
            }
        )


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
        keep_file = Path(self.keep_dir) / f"{shard.stem}.parquet"
        rows = read_parquet(keep_file, columns=["row"]).get_column("row").to_numpy()
        scores = ScoreSet(self.score_dirs).for_shard(shard) if self.config.with_scores else None
        writer = ShardWriter(out, self.options)  # the temporary name keeps the output's suffix
        start = 0
        for batch in shard.read(self.options, stats):
            lo, hi = np.searchsorted(rows, [start, start + batch.height])
            chosen = batch[rows[lo:hi] - start]
            start += batch.height
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
    given = [os.fspath(d) for d in ([scores] if isinstance(scores, str | os.PathLike) else scores)]
    corpus.check_output(out_dir, "selection folder")
    check_output(out_dir, given, "selection folder")
    out = Path(local_path(out_dir))  # a remote folder: its mirror, published file by file
    score_dirs = [str(Path(local_path(d, must_exist=True))) for d in given]
    score_set = ScoreSet(score_dirs)  # also validates the folders
    available = score_set.columns
    if cfg.column not in available:
        raise ConfigError(
            f"no score column {cfg.column!r} in {score_dirs}; available: {', '.join(available)}"
        )
    columns = _score_columns(cfg, available)
    where = cfg.parsed_where()
    if where is not None and corpus.shards and all(c in available for c in where.columns):
        # every name is a score column: check the types now (corpus fields: when read)
        where.compile(dict(score_set.for_shard(corpus.shards[0], columns).schema))
    with folder_lock(out):
        mark_output(out, "selection")
        return _select(corpus, score_dirs, out, cfg, runner, overwrite, columns)


def _score_columns(cfg: SelectConfig, available: list[str]) -> list[str]:
    """The score columns a selection reads: `column`, those `where` names, the group's."""
    where = cfg.parsed_where()
    named = [cfg.column, *(where.columns if where else ()), cfg.group_by]
    return [c for c in dict.fromkeys(named) if c in available]


def _select(
    corpus: Corpus,
    score_dirs: list[str],
    out: Path,
    cfg: SelectConfig,
    runner: Runner,
    overwrite: bool,
    columns: list[str],
) -> SelectResult:
    files = list(dict.fromkeys(s.file_name for s in corpus.shards))  # a split file is one
    full_cfg = {**cfg.model_dump(), "scores": score_dirs, "corpus": files}
    cfg_path = out / SELECT_DIR / "config.json"
    if cfg_path.exists():
        # a setting added since the folder was written reads as its default
        defaults = {k: f.default for k, f in SelectConfig.model_fields.items() if k in _ADDED}
        old = {**defaults, **read_json(cfg_path)}
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
        KeysTask(score_dirs, cfg, corpus.options, columns),
        corpus.shards,
        keys_dir,
        label="select:keys",
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
        files = [keys_dir / f"{s.stem}.parquet" for s in corpus.shards]
        mask = _decide(files, cfg)
        tally = record_decision(corpus.shards, files, mask, cfg, keep_dir)
        result = _summarise(tally, int(mask.sum()), cfg, out, keys_result.skipped)
        del mask
        write_json(summary_path, result.to_dict())
        write_json(decided_path, {"keys": keys_id})
    runner.run(
        FilterTask(str(keep_dir), score_dirs, cfg, corpus.options),
        corpus.shards,
        out,
        label="select:write",
    )
    finish_outputs(out, [output_name(s, cfg.format) for s in corpus.shards])
    saved = read_json(summary_path)
    saved.pop("kept_fraction", None)
    return SelectResult(**saved)


def _summarise(
    tally: Tally, kept_docs: int, cfg: SelectConfig, out: Path, skipped: dict[str, int]
) -> SelectResult:
    if tally.docs == 0:
        return SelectResult(str(out), cfg.model_dump(), 0, 0, 0.0, 0.0, None, {}, skipped)
    return SelectResult(
        out_dir=str(out),
        config=cfg.model_dump(),
        docs=tally.docs,
        kept_docs=kept_docs,
        weight=tally.weight,
        kept_weight=tally.kept_weight,
        score_cutoff=tally.cutoff(cfg),
        groups={g: tally.groups[g] for g in sorted(tally.groups)},
        skipped=skipped,
        passed_docs=tally.passed_docs if cfg.where is not None else None,
        passed_weight=tally.passed_weight if cfg.where is not None else None,
    )


def _clear_selection(out: Path, corpus: Corpus, cfg: SelectConfig) -> None:
    """Remove only what a selection writes, never anything else a user keeps in `out`."""
    for sub in (SELECT_DIR, "_stats"):
        shutil.rmtree(out / sub, ignore_errors=True)
    for f in (SELECTION_FILE, STATS_FILE):
        (out / f).unlink(missing_ok=True)
    clear_outputs_metadata(out)
    for s in corpus.shards:
        (out / output_name(s, cfg.format)).unlink(missing_ok=True)

"""Scoring a corpus: any scorer over every shard, side-car parquet per shard."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from assay.errors import InputError, StateError
from assay.exec.runner import LocalRunner, Runner, RunResult, report_progress
from assay.io.corpus import Corpus
from assay.io.read import prefetched
from assay.io.scores import SCORES_META, check_score_columns, check_unique_ids
from assay.io.shards import ReadOptions, Shard, ShardStats
from assay.io.write import ShardWriter
from assay.selection.base import Scorer
from assay.util.files import folder_fingerprint, read_json, write_json
from assay.util.guard import folder_lock, mark_output
from assay.util.remote import local_path

SCORER_SUBDIR = "_scorer"


@dataclass
class ScoreTask:
    """Scores one shard and writes its side-car parquet."""

    scorer: Scorer
    options: ReadOptions

    def output_name(self, shard: Shard) -> str:
        return f"{shard.stem}.parquet"

    def source(self, shard: Shard) -> dict[str, Any]:
        return scorer_identity(self.scorer)

    @property
    def runs_on(self) -> str:
        """Where the scorer's model runs: what a Ray task asks a GPU for."""
        return self.scorer.runs_on

    def __call__(self, shard: Shard, out: Path | None) -> ShardStats:
        assert out is not None
        stats = ShardStats(shard.name)
        columns = self.scorer.columns
        writer = ShardWriter(out, fmt="parquet")
        ids: list[pl.Series] = []
        # Read the next batch while this one is scored.
        for batch in prefetched(shard.read(self.options, stats)):
            texts = batch.get_column("text").to_list()
            table = self.scorer.score_table(texts)
            cols = {"id": batch.get_column("id")}
            for name in columns:
                values = np.asarray(table[name], dtype=np.float32)
                if values.shape != (len(texts),):
                    raise ValueError(
                        f"scorer {self.scorer!r} returned shape {values.shape} for column {name!r} "
                        f"on {len(texts)} texts"
                    )
                if np.isnan(values).any():
                    i = int(np.flatnonzero(np.isnan(values))[0])
                    raise InputError(
                        f"scorer returned NaN for document {cols['id'][i]!r} in {shard.name}"
                    )
                cols[name] = pl.Series(name, values, dtype=pl.Float32)
            writer.write(pl.DataFrame(cols))
            ids.append(cols["id"])
            stats.docs_out += batch.height
            report_progress(batch.height)
        writer.close(schema_if_empty={"id": pl.String, **dict.fromkeys(columns, pl.Float32)})
        check_unique_ids(ids, shard)
        return stats


def scorer_identity(scorer: Scorer) -> dict[str, Any]:
    """What scores depend on: the scorer's kind and settings, and the content of its saved
    model files (without their modification times: saving the same model again is the same),
    and the model files it reads from elsewhere, for a scorer that has some."""
    identity = {
        "kind": scorer.kind,
        "config": scorer.get_config(),
        "model": folder_fingerprint(scorer.path, mtime=False) if scorer.path else None,
    }
    inputs = scorer.input_identity()
    if inputs is not None:
        identity["inputs"] = inputs
    return identity


def score_corpus(
    scorer: Scorer,
    corpus: Corpus,
    out_dir: str | os.PathLike,
    *,
    runner: Runner | None = None,
    overwrite: bool = False,
) -> RunResult:
    """Score every document of `corpus` with `scorer`, writing side-car parquet into `out_dir`.

    Resumable: shards whose score file exists are skipped unless `overwrite`. With a process pool
    or Ray, an unsaved scorer that cannot be pickled is first saved to `out_dir/_scorer`.
    """
    runner = runner or LocalRunner(workers=1)
    corpus.check_output(out_dir, "scores folder")
    out = Path(local_path(out_dir))  # a remote folder: its mirror, published file by file
    check_score_columns(scorer.columns, f"scorer {scorer.kind}")
    with folder_lock(out):
        mark_output(out, "scores")
        in_process = isinstance(runner, LocalRunner) and runner.workers == 1
        if not in_process and scorer.path is None and not scorer.portable:
            scorer.save(out / SCORER_SUBDIR)
        meta_path = out / SCORES_META
        meta = {
            "columns": scorer.columns,
            "scorer": {"type": scorer.kind, "config": scorer.get_config(), "path": scorer.path},
        }
        if (where := corpus.record()) is not None:  # what `assay inspect` reads texts from
            meta["corpus"] = where
        if meta_path.exists() and not overwrite:
            old = read_json(meta_path)
            if (
                old.get("columns") != meta["columns"]
                or old.get("scorer", {}).get("config") != meta["scorer"]["config"]
            ):
                raise StateError(
                    f"{out} already holds scores from another scorer ({old.get('scorer')}); "
                    "use another folder or overwrite=True"
                )
        write_json(meta_path, meta)
        return runner.run(
            ScoreTask(scorer, corpus.options),
            corpus.shards,
            out,
            overwrite=overwrite,
            label=f"score:{scorer.kind}",
        )

"""Side-car score tables: scores live beside the data, keyed by document id.

This is dolma's "attributes" idea. Scoring a corpus writes, per input shard, one parquet file
`<scores_dir>/<shard stem>.parquet` with an `id` column and one float32 column per score (a
large file read in parts writes one per part, `<stem>.part-00001-of-00004.parquet`: see
`assay.io.split`; a reader finds a shard's rows whichever way its file was split when scored). A
scores folder also holds `_scores.json` (which scorer, which columns, and the corpus scored: its paths
and read options, `Corpus.record`) and the runner's stats.
Several folders (one per scorer) combine by joining on `id`, so that selecting or mixing again
never re-scores anything.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from assay.errors import ConfigError, InputError, MissingError
from assay.io.corpus import Corpus
from assay.io.shards import RESERVED_COLUMNS, Shard, strip_format_suffix
from assay.io.split import PART_STEM
from assay.util.files import read_json, read_parquet
from assay.util.remote import local_path

SCORES_META = "_scores.json"


def score_file(scores_dir: str | os.PathLike, shard: Shard) -> Path:
    return Path(scores_dir) / f"{shard.stem}.parquet"


def score_files(scores_dir: str | os.PathLike, shard: Shard) -> list[Path]:
    """The score files holding a shard's rows: its own; or, when its file was split otherwise
    when it was scored, the whole file's (a superset of a part's rows) or all the parts of it.
    The shard's own (missing) file when there is none."""
    own = score_file(scores_dir, shard)
    if own.exists():
        return [own]
    stem = strip_format_suffix(shard.file_name)
    whole = Path(scores_dir) / f"{stem}.parquet"
    if whole.exists():
        return [whole]
    parts: dict[int, list[Path]] = {}
    for f in whole.parent.glob(f"{glob.escape(whole.name[: -len('.parquet')])}.part-*.parquet"):
        m = PART_STEM.match(f.name[: -len(".parquet")])
        if m and (whole.parent / f"{m['stem']}.parquet") == whole:
            parts.setdefault(int(m["count"]), []).append(f)
    complete = [sorted(fs) for n, fs in parts.items() if len(fs) == n]
    return complete[0] if len(complete) == 1 else [own]


def check_unique_ids(ids: list[pl.Series], shard: Shard) -> None:
    if not ids:
        return
    all_ids = pl.concat(ids)
    dup = all_ids.filter(all_ids.is_duplicated())
    if dup.len():
        raise InputError(
            f"duplicate id {dup[0]!r} in shard {shard.name}: ids must be unique within a shard "
            "(pass id_field=None to generate ids from file and line)"
        )


def check_score_columns(columns: Sequence[str], where: str) -> None:
    """Refuse score column names that assay's tables already use for something else."""
    for c in columns:
        if c in RESERVED_COLUMNS:
            raise ConfigError(
                f"{where}: a score column cannot be named {c!r}; {', '.join(RESERVED_COLUMNS)} "
                "are reserved (set the scorer's column name to something else)"
            )


# ---------------------------------------------------------------------------------------------
# Reading and joining


def score_columns(scores_dir: str | os.PathLike) -> list[str]:
    meta = Path(scores_dir) / SCORES_META
    if not meta.exists():
        raise MissingError(
            f"{scores_dir} is not a scores folder (no {SCORES_META}); run `assay score` first"
        )
    return list(read_json(meta)["columns"])


class ScoreSet:
    """One or more scores folders, joined on `id`.

    >>> scores = ScoreSet(["runs/q/quality", "runs/q/doc_stats"])
    >>> scores.for_shard(shard)           # id + every score column of that shard
    """

    def __init__(self, dirs: str | os.PathLike | Sequence[str | os.PathLike]):
        if isinstance(dirs, str | os.PathLike):
            dirs = [dirs]
        if not dirs:
            raise ConfigError("no scores folders given")
        # a remote scores folder is read through its local mirror (`assay.util.remote`)
        self.dirs = [Path(local_path(d, must_exist=True)) for d in dirs]
        self.columns_by_dir = {d: score_columns(d) for d in self.dirs}
        for d, cols in self.columns_by_dir.items():
            check_score_columns(cols, f"scores folder {d}")
        owner: dict[str, Path] = {}
        for d, cols in self.columns_by_dir.items():
            for c in cols:
                if c in owner:
                    raise InputError(
                        f"score column {c!r} is in both {owner[c]} and {d}; rename one (column=...)"
                    )
                owner[c] = d
        self.owner = owner

    @property
    def columns(self) -> list[str]:
        return list(self.owner)

    def for_shard(self, shard: Shard, columns: Sequence[str] | None = None) -> pl.DataFrame:
        wanted = list(columns) if columns is not None else self.columns
        for c in wanted:
            if c not in self.owner:
                raise ConfigError(f"no score column {c!r}; available: {', '.join(self.columns)}")
        frame: pl.DataFrame | None = None
        for d, cols in self.columns_by_dir.items():
            take = [c for c in cols if c in wanted]
            if not take:
                continue
            paths = score_files(d, shard)
            if not paths[0].exists():
                raise MissingError(
                    f"no scores for shard {shard.name!r} in {d} (expected {paths[0]})"
                )
            part = pl.concat([read_parquet(p, columns=["id", *take]) for p in paths])
            frame = part if frame is None else frame.join(part, on="id", how="full", coalesce=True)
        assert frame is not None
        return frame

    def files_for(self, shard: Shard, columns: Sequence[str]) -> list[Path]:
        """The score files a shard's `columns` are read from (to record what a result used)."""
        return [
            f
            for d, cols in self.columns_by_dir.items()
            if any(c in cols for c in columns)
            for f in score_files(d, shard)
        ]

    def read_all(
        self, shards: Sequence[Shard], columns: Sequence[str] | None = None
    ) -> pl.DataFrame:
        """Every score row of the given shards with a `shard` column; ids and floats only.
        Rows are read once even where several parts of a file share one score file."""
        parts, seen = [], set()
        for s in shards:
            files = tuple(self.files_for(s, columns if columns is not None else self.columns))
            if files in seen:
                continue
            seen.add(files)
            parts.append(self.for_shard(s, columns).with_columns(pl.lit(s.name).alias("shard")))
        return pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame()


def join_scores(batch: pl.DataFrame, scores: pl.DataFrame) -> pl.DataFrame:
    """Attach score columns to a batch of documents, keeping the batch's row order."""
    clash = [c for c in scores.columns if c != "id" and c in batch.columns]
    if clash:
        raise InputError(
            f"the corpus has fields named like score columns ({', '.join(clash)}); a score "
            "would be confused with the field: give the scorer another column name"
        )
    return batch.join(scores, on="id", how="left", maintain_order="left")


def read_scores(
    dirs: str | os.PathLike | Sequence[str | os.PathLike],
    corpus: Corpus,
    columns: Sequence[str] | None = None,
) -> pl.DataFrame:
    """All scores of a corpus as one table (id, shard, score columns)."""
    return ScoreSet(dirs).read_all(corpus.shards, columns)


def describe_scores(dirs: Any, corpus: Corpus) -> dict[str, dict[str, float]]:
    """Summary statistics per score column (count, mean, quantiles)."""
    table = read_scores(dirs, corpus)
    out: dict[str, dict[str, float]] = {}
    for c in table.columns:
        if c in ("id", "shard"):
            continue
        s = table.get_column(c).drop_nulls()
        out[c] = {
            "count": s.len(),
            "mean": float(s.mean()) if s.len() else float("nan"),
            **{
                f"p{q}": float(s.quantile(q / 100)) if s.len() else float("nan")
                for q in (1, 10, 50, 90, 99)
            },
        }
    return out

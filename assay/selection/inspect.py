"""What a scores folder or a selection holds: per score column, a histogram with the cutoff, the
kept share per group and the top, bottom and near-cutoff documents of each group.

`inspect_scores(path)` takes a scores folder (`assay score`: `_scores.json`) or a selection
folder (`assay select`: `_selection.json` and `_select/`) and returns a plain dictionary (the
structure `--json` prints; see `INSPECT_VERSION` and the README). It works in two passes:

1. *per document, a few numbers*: its score in each column (float64, NaN where missing), its
   group code (int32), its shard (int32) and its row in the shard (int64), plus whether it was
   kept (a selection). A selection reads them from its keys (`_select/keys/`, `_select/keep/`),
   never the corpus; a scores folder reads its score files and, for the group field and the
   documents' rows, streams the corpus once a batch at a time, keeping no text.
2. *the examples*: from those arrays (one sort by group then score per column), the extremes
   and the documents nearest the cutoff of each group; then only the shards that hold one are
   read again, a batch at a time, to fetch those documents' texts (truncated).

Memory: 16 bytes plus 8 per score column per document, and a batch; never the corpus' texts.
The corpus is the one the scores record (`_scores.json`'s `corpus`, written by `score_corpus`;
a selection's through its scores folders), or the one given.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from assay.errors import ConfigError, MissingError, StateError
from assay.io.corpus import Corpus
from assay.io.scores import SCORES_META, ScoreSet
from assay.selection.select import SELECT_DIR, SELECTION_FILE
from assay.util.files import iter_parquet, read_json, read_parquet
from assay.util.remote import local_path

#: the version of the structure `inspect_scores` returns (bumped when a key changes meaning)
INSPECT_VERSION = 1
NO_GROUP = "(all)"


@dataclass
class _Docs:
    """Pass 1's arrays, built a batch at a time, and per-group sums of a selection."""

    columns: list[str]
    scores: dict[str, list[np.ndarray]] = field(default_factory=dict)
    group: list[np.ndarray] = field(default_factory=list)
    shard: list[np.ndarray] = field(default_factory=list)
    row: list[np.ndarray] = field(default_factory=list)
    kept: list[np.ndarray] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)
    #: per group: docs, kept docs, weight, kept weight (a selection)
    sums: dict[str, list[float]] = field(default_factory=dict)

    def add(
        self,
        scores: dict[str, np.ndarray],
        groups: pl.Series,
        shard: int,
        rows: np.ndarray,
        kept: np.ndarray | None = None,
        weight: np.ndarray | None = None,
    ) -> None:
        for c in self.columns:
            self.scores.setdefault(c, []).append(scores[c].astype(np.float64))
        codes = groups.replace_strict(
            {
                g: self.codes.setdefault(g, len(self.codes))
                for g in groups.unique(maintain_order=True).to_list()
            },
            return_dtype=pl.Int32,
        )
        self.group.append(codes.to_numpy())
        self.shard.append(np.full(len(rows), shard, dtype=np.int32))
        self.row.append(rows.astype(np.int64))
        if kept is not None and weight is not None:
            self.kept.append(kept)
            frame = pl.DataFrame({"g": groups, "k": kept, "w": weight})
            sums = frame.group_by("g").agg(
                pl.len(),
                pl.col("k").sum(),
                pl.col("w").sum(),
                pl.col("w").filter("k").sum().alias("kw"),
            )
            for g, n, k, w, kw in sums.iter_rows():
                acc = self.sums.setdefault(g, [0.0, 0.0, 0.0, 0.0])
                for i, v in enumerate((n, k, w, kw)):
                    acc[i] += float(v or 0)

    def arrays(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, Any]:
        """The arrays whole, each joined and its batches let go before the next (the peak is
        the arrays plus one of them, not twice them)."""

        def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            whole = np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
            parts.clear()
            return whole

        scores = {c: cat(self.scores.get(c, []), np.float64) for c in self.columns}
        kept = cat(self.kept, bool) if self.kept else None
        return (
            scores,
            cat(self.group, np.int32),
            cat(self.shard, np.int32),
            cat(self.row, np.int64),
            kept,
        )


def inspect_scores(
    path: str | os.PathLike,
    *,
    columns: Sequence[str] | None = None,
    corpus: Corpus | None = None,
    group_by: str | None = "domain",
    bins: int = 20,
    examples: int = 3,
    width: int = 200,
) -> dict[str, Any]:
    """Inspect a scores folder or a selection folder (see the module's docstring).

    `columns`: the score columns (default: all; a selection has one, its own). `corpus`: where
    the texts are (default: the one recorded). `group_by`: a corpus field or score column to
    group by, for a scores folder (a selection groups as it was made). `examples`: documents
    of each kind per group; `width`: characters of text kept per example (whitespace runs
    become one space)."""
    if bins < 1 or examples < 0 or width < 1:
        raise ConfigError("inspect: bins and width must be at least 1, examples at least 0")
    folder = Path(local_path(path, must_exist=True))  # a remote folder: its local mirror
    if (folder / SELECTION_FILE).exists() and (folder / SELECT_DIR).is_dir():
        return _inspect_selection(folder, columns, corpus, bins, examples, width)
    if (folder / SCORES_META).exists():
        return _inspect_folder(folder, columns, corpus, group_by, bins, examples, width)
    raise MissingError(
        f"{path} is neither a scores folder ({SCORES_META}) nor a selection folder "
        f"({SELECTION_FILE}); give the output of `assay score` or `assay select`"
    )


def recorded_corpus(scores_dirs: Sequence[str | os.PathLike]) -> Corpus:
    """The corpus the first of these scores folders that records one was scored from."""
    for d in scores_dirs:
        meta = Path(d) / SCORES_META
        record = read_json(meta).get("corpus") if meta.exists() else None
        if record is not None:
            return Corpus.from_record(record)
    raise MissingError(
        f"the scores in {', '.join(map(str, scores_dirs))} do not record their corpus (scored "
        "before assay recorded it, or not from files): give it (--corpus)"
    )


def _inspect_selection(
    folder: Path,
    columns: Sequence[str] | None,
    corpus: Corpus | None,
    bins: int,
    examples: int,
    width: int,
) -> dict[str, Any]:
    summary = read_json(folder / SELECTION_FILE)
    config = read_json(folder / SELECT_DIR / "config.json")
    column = config["column"]
    if columns and list(columns) != [column]:
        raise ConfigError(
            f"{folder} selected by {column!r}: inspect its scores folder for other columns"
        )
    if corpus is None:
        found = [d for d in config["scores"] if Path(d).is_dir()]
        if not found:
            raise MissingError(
                f"the scores folders {folder} was selected by ({', '.join(config['scores'])}) "
                "are not found from here: give the corpus (--corpus)"
            )
        corpus = recorded_corpus(found)
    files = list(dict.fromkeys(s.file_name for s in corpus.shards))
    if sorted(files) != sorted(config["corpus"]):
        raise StateError(
            f"the corpus {corpus.given or corpus.inputs} is not the one {folder} selected from "
            f"(its files: {', '.join(config['corpus'])}); give that corpus (--corpus)"
        )
    docs = _Docs([column])
    keys, keep = folder / SELECT_DIR / "keys", folder / SELECT_DIR / "keep"
    for i, shard in enumerate(corpus.shards):
        if not (keys / f"{shard.stem}.parquet").exists():
            raise StateError(
                f"{folder} holds no keys for shard {shard.name}: the corpus was cut into other "
                "parts when selected (give it with the read options it was selected with)"
            )
        kept_rows = read_parquet(keep / f"{shard.stem}.parquet", columns=["row"])["row"]
        for part in iter_parquet(
            keys / f"{shard.stem}.parquet", ["row", "score", "weight", "group"]
        ):
            rows = part["row"].to_numpy()
            docs.add(
                {column: part["score"].to_numpy()},
                part["group"],
                i,
                rows,
                kept=np.isin(rows, kept_rows.to_numpy()),
                weight=part["weight"].to_numpy(),
            )
    groups = config["group_by"] if set(docs.codes) - {NO_GROUP} else None
    cutoffs = {column: summary["score_cutoff"]}

    def ids(s: int, rows: list[int]) -> dict[int, str]:  # what the keys say a row holds
        part = read_parquet(keys / f"{corpus.shards[s].stem}.parquet", columns=["id", "row"])
        return dict(part.filter(pl.col("row").is_in(rows)).select("row", "id").iter_rows())

    report = _report(docs, corpus, cutoffs, config, bins, examples, width, ids)
    return {
        "version": INSPECT_VERSION,
        "kind": "selection",
        "path": str(folder),
        "group_by": groups,
        **report,
    }


def _inspect_folder(
    folder: Path,
    columns: Sequence[str] | None,
    corpus: Corpus | None,
    group_by: str | None,
    bins: int,
    examples: int,
    width: int,
) -> dict[str, Any]:
    scores = ScoreSet(folder)
    wanted = list(columns) if columns else scores.columns
    for c in wanted:
        if c not in scores.columns:
            raise ConfigError(f"no score column {c!r} in {folder}; available: {scores.columns}")
    corpus = corpus or recorded_corpus([folder])
    read = list(dict.fromkeys([*wanted, *([group_by] if group_by in scores.columns else [])]))
    docs = _Docs(wanted)
    found = False  # whether the group field is anywhere
    for i, shard in enumerate(corpus.shards):
        table = scores.for_shard(shard, read)
        at = 0
        for batch in shard.read(corpus.options):
            keep = ["id", *([group_by] if group_by in batch.columns else [])]
            joined = batch.select(keep).join(table, on="id", how="left", maintain_order="left")
            del batch
            if group_by is not None and group_by in joined.columns:
                found = True
                groups = joined[group_by].cast(pl.String).fill_null("(none)")
            else:
                groups = pl.repeat(NO_GROUP, joined.height, dtype=pl.String, eager=True)
            values = {c: joined[c].cast(pl.Float64).fill_null(np.nan).to_numpy() for c in wanted}
            docs.add(values, groups, i, np.arange(at, at + joined.height))
            at += joined.height
    report = _report(docs, corpus, dict.fromkeys(wanted), None, bins, examples, width)
    grouped = group_by if found else None
    return {
        "version": INSPECT_VERSION,
        "kind": "scores",
        "path": str(folder),
        "group_by": grouped,
        **report,
    }


def _report(
    docs: _Docs,
    corpus: Corpus,
    cutoffs: dict[str, float | None],
    config: dict[str, Any] | None,
    bins: int,
    examples: int,
    width: int,
    ids: Callable[[int, list[int]], dict[int, str]] | None = None,
) -> dict[str, Any]:
    scores, group, shard, row, kept = docs.arrays()
    names = sorted(docs.codes, key=docs.codes.__getitem__)
    out: dict[str, Any] = {}
    picks: dict[str, dict[str, dict[str, list[int]]]] = {}
    for c, values in scores.items():
        order, bounds = _sort(values, group, len(names))
        out[c] = _column(values, group, order, bounds, names, cutoffs[c], kept, docs, config, bins)
        near = {  # a stratified selection has a cutoff per group
            g: e.get("cutoff") if config and config.get("stratify") else cutoffs[c]
            for g, e in out[c]["groups"].items()
        }
        picks[c] = _examples(values, order, bounds, names, near, examples)
        del order
    chosen = sorted(
        {i for p in picks.values() for g in p.values() for ix in g.values() for i in ix}
    )
    texts = _fetch(corpus, shard, row, chosen, width, ids)
    for c, by_group in picks.items():
        for g, kinds in by_group.items():
            for kind, ix in kinds.items():
                out[c]["groups"][g][kind] = [
                    {
                        **texts[i],
                        "score": float(scores[c][i]),
                        "kept": None if kept is None else bool(kept[i]),
                    }
                    for i in ix
                ]
    return {
        "corpus": corpus.given or corpus.inputs,
        "docs": len(group),
        "columns": out,
    }


def _sort(values: np.ndarray, group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """The positions of the documents with a score, by group, then score, then position (a
    stable sort), and where each group's run starts and ends in it (n_groups + 1 bounds)."""
    finite = np.isfinite(values)
    if finite.all():
        order = np.lexsort((values, group))
    else:
        present = np.flatnonzero(finite)
        order = present[np.lexsort((values[present], group[present]))]
    del finite
    bounds = np.searchsorted(group[order], np.arange(n_groups + 1))
    return order, bounds


def _column(
    values: np.ndarray,
    group: np.ndarray,
    order: np.ndarray,
    bounds: np.ndarray,
    names: list[str],
    cutoff: float | None,
    kept: np.ndarray | None,
    docs: _Docs,
    config: dict[str, Any] | None,
    bins: int,
) -> dict[str, Any]:
    n = len(order)
    present = values if n == len(values) else values[order]  # (only the scored ones)
    counts, edges = np.histogram(present, bins=bins) if n else ([], [])
    column: dict[str, Any] = {
        "count": n,
        "missing": len(values) - n,
        "min": float(present.min()) if n else None,
        "max": float(present.max()) if n else None,
        "mean": float(present.mean()) if n else None,
        "cutoff": cutoff,
        "mode": config["mode"] if config else None,
        "by": config["by"] if config else None,
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(n) for n in counts]},
        "kept": None,
        "groups": {},
    }
    if kept is not None:
        totals = np.array(list(docs.sums.values())).sum(axis=0)
        column["kept"] = _share(totals)
    del present
    per_group = np.bincount(group, minlength=len(names))
    for code, g in enumerate(names):
        mine = values[order[bounds[code] : bounds[code + 1]]]
        entry: dict[str, Any] = {
            "docs": int(per_group[code]),
            "count": int(mine.size),
            "mean": float(mine.mean()) if mine.size else None,
        }
        if kept is not None:
            entry.update(_share(docs.sums[g]))
            run = order[bounds[code] : bounds[code + 1]]
            entry["cutoff"] = _group_cutoff(values[run], kept[run], config)
        column["groups"][g] = entry
    column["groups"] = dict(sorted(column["groups"].items()))  # by name, whatever came first
    return column


def _group_cutoff(
    values: np.ndarray, kept: np.ndarray, config: dict[str, Any] | None
) -> float | None:
    """The score of a group's last kept document, from a run sorted by score: the lowest kept
    (mode top) or the highest (bottom); None for a Gumbel or middle selection, or none kept."""
    if config is None or config["policy"] == "gumbel" or config["mode"] not in ("top", "bottom"):
        return None
    at = np.flatnonzero(kept)
    if not at.size:
        return None
    return float(values[at[0]] if config["mode"] == "top" else values[at[-1]])


def _share(sums: Sequence[float]) -> dict[str, Any]:
    n, k, w, kw = sums
    return {
        "kept_docs": int(k),
        "kept_share": k / n if n else 0.0,
        "kept_weight_share": kw / w if w else 0.0,
    }


def _examples(
    values: np.ndarray,
    order: np.ndarray,
    bounds: np.ndarray,
    names: list[str],
    cutoffs: dict[str, float | None],
    n: int,
) -> dict[str, dict[str, list[int]]]:
    """Per group, the documents (positions in pass 1's arrays) with the highest scores (first
    the highest), the lowest (first the lowest) and, where the group has a cutoff, the nearest
    to it (by score, highest first). Equal scores are ordered by position in the corpus."""
    out: dict[str, dict[str, list[int]]] = {}
    for code, g in enumerate(names):
        run = order[bounds[code] : bounds[code + 1]]
        top = _top(run, values, n)
        picks = {"top": top, "bottom": [int(i) for i in run[:n]]}
        if (cutoff := cutoffs[g]) is not None:
            picks["near_cutoff"] = _near(run, values, cutoff, n)
        out[g] = picks
    return out


def _top(run: np.ndarray, values: np.ndarray, n: int) -> list[int]:
    """The n highest of a run sorted by score (ties: the earlier document first)."""
    if n == 0:
        return []
    tail = run[-n:]
    # reversed, but an equal score keeps the earlier document first
    return [int(i) for i in tail[np.lexsort((tail, -values[tail]))]]


def _near(run: np.ndarray, values: np.ndarray, cutoff: float, n: int) -> list[int]:
    at = int(np.searchsorted(values[run], cutoff))
    window = run[max(0, at - n) : at + n]
    distance = np.abs(values[window] - cutoff)
    nearest = window[np.lexsort((window, distance))][:n]
    return [int(i) for i in nearest[np.lexsort((nearest, -values[nearest]))]]


def _fetch(
    corpus: Corpus,
    shard: np.ndarray,
    row: np.ndarray,
    chosen: list[int],
    width: int,
    ids: Callable[[int, list[int]], dict[int, str]] | None,
) -> dict[int, dict[str, Any]]:
    """The id, shard and truncated text of the chosen documents: only their shards are read,
    a batch at a time. `ids`: the id each row should hold (checked)."""
    wanted: dict[int, dict[int, int]] = {}
    for i in chosen:
        wanted.setdefault(int(shard[i]), {})[int(row[i])] = i
    found: dict[int, dict[str, Any]] = {}
    for s, rows in wanted.items():
        source = corpus.shards[s]
        at = 0
        for batch in source.read(corpus.options):
            hits = [r for r in rows if at <= r < at + batch.height]
            for r in hits:
                record = batch.row(r - at, named=True)
                found[rows[r]] = {
                    "id": record["id"],
                    "shard": source.name,
                    "text": _truncate(record["text"], width),
                }
            at += batch.height
            if all(i in found for i in rows.values()):
                break
        expected = ids(s, list(rows)) if ids is not None else {}
        for r, id_ in expected.items():
            if rows[r] in found and found[rows[r]]["id"] != id_:
                raise StateError(
                    f"row {r} of shard {source.name} is {found[rows[r]]['id']!r}, not {id_!r} "
                    "as when selected: the corpus changed, or is read otherwise (--corpus)"
                )
    missing = [i for i in chosen if i not in found]
    if missing:
        raise StateError(
            f"shard {corpus.shards[int(shard[missing[0]])].name} has fewer documents than its "
            "scores: the corpus changed since; score (and select) it again"
        )
    return found


def _truncate(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"

"""What the report reads of a run directory (`assay run`'s layout, see `assay.recipe.pipeline`):
the resolved recipe, env.json, inputs.json and each step's step.json; and, bounded, what its
outputs hold: histograms streamed from score files a file at a time, the few documents nearest
a selection's cutoff, read from the shards that hold them."""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from assay.errors import InputError
from assay.util.files import read_json

STEP_FILE = "step.json"
BINS = 40
#: the corpus output of the step kinds that write one (a recipe's `{step: name}` corpus)
CORPUS_OUTPUTS = {"select": "selected", "decontaminate": "clean", "cluster": "corpus"}


@dataclass
class StepRecord:
    """One step of the run: its folder, step.json and its settings in the resolved recipe."""

    name: str
    kind: str
    folder: Path
    state: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, Any]:
        return self.state.get("summary") or {}

    def output(self, name: str) -> Path | None:
        """An output's path, found in the step's folder when the run directory was moved."""
        recorded = (self.state.get("outputs") or {}).get(name)
        if recorded is None:
            return None
        path = Path(recorded)
        if path.exists():
            return path
        moved = self.folder / path.name
        return moved if moved.exists() else None


@dataclass
class RunDir:
    root: Path
    recipe: dict[str, Any]
    env: dict[str, Any]
    inputs: dict[str, Any]
    steps: list[StepRecord]

    def step(self, name: str) -> StepRecord | None:
        return next((s for s in self.steps if s.name == name), None)


def load_run(root: str | os.PathLike) -> RunDir:
    """Read a run directory; its steps in the recipe's order (then any other step folders)."""
    import yaml

    root = Path(root)
    recipe_file = root / "recipe.yaml"
    if not recipe_file.is_file():
        raise InputError(f"{root} is not a run directory of `assay run` (no recipe.yaml)")
    recipe = yaml.safe_load(recipe_file.read_text()) or {}
    configs = {s["name"]: s for s in recipe.get("steps") or [] if isinstance(s, dict)}
    names = list(configs)
    names += sorted(
        p.name for p in root.iterdir() if (p / STEP_FILE).is_file() and p.name not in configs
    )
    steps = []
    for name in names:
        state_file = root / name / STEP_FILE
        if state_file.is_file():
            state = read_json(state_file)
            kind = str(state.get("kind") or configs.get(name, {}).get("kind", "?"))
            steps.append(StepRecord(name, kind, root / name, state, configs.get(name, {})))
    env = read_json(root / "env.json") if (root / "env.json").is_file() else {}
    inputs = read_json(root / "inputs.json") if (root / "inputs.json").is_file() else {}
    return RunDir(root, recipe, env, inputs, steps)


def data_files(folder: Path) -> list[Path]:
    """The per-shard parquet files of a scores (or keys) folder, not its bookkeeping."""
    return sorted(
        p
        for p in folder.rglob("*.parquet")
        if not any(part.startswith("_") for part in p.relative_to(folder).parts)
    )


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _edges(files: list[Path], column: str, bins: int) -> np.ndarray | None:
    lo, hi = np.inf, -np.inf
    for f in files:
        v = _finite(pl.read_parquet(f, columns=[column]).get_column(column).to_numpy())
        if v.size:
            lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
    if not np.isfinite(lo):
        return None
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, bins + 1)


def score_histograms(
    scores_dir: Path, columns: list[str], bins: int = BINS
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per column, (edges, counts) over every score file: two passes, one column of one file in
    memory at a time."""
    files = data_files(scores_dir)
    out = {}
    for column in columns:
        have = [f for f in files if column in pl.read_parquet_schema(f)]
        edges = _edges(have, column, bins)
        if edges is None:
            continue
        counts = np.zeros(bins, dtype=np.int64)
        for f in have:
            v = _finite(pl.read_parquet(f, columns=[column]).get_column(column).to_numpy())
            counts += np.histogram(v, bins=edges)[0]
        out[column] = (edges, counts)
    return out


def _keys(selected: Path) -> list[tuple[Path, Path]]:
    """(keys file, keep file) per shard of a selection (`assay.selection.select`'s layout)."""
    keys_dir, keep_dir = selected / "_select" / "keys", selected / "_select" / "keep"
    return [(f, keep_dir / f.relative_to(keys_dir)) for f in data_files(keys_dir)]


def _shard_scores(keys: Path, keep: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A shard's rows, scores and whether each was kept."""
    frame = pl.read_parquet(keys, columns=["row", "score"])
    rows, scores = frame.get_column("row").to_numpy(), frame.get_column("score").to_numpy()
    kept_rows = pl.read_parquet(keep, columns=["row"]).get_column("row").to_numpy()
    return rows, scores, np.isin(rows, kept_rows)


def selection_histogram(
    selected: Path, bins: int = BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(edges, kept counts, dropped counts) of the selection's score column."""
    pairs = [(k, p) for k, p in _keys(selected) if p.exists()]
    edges = _edges([k for k, _ in pairs], "score", bins)
    if edges is None:
        return None
    kept, dropped = np.zeros(bins, dtype=np.int64), np.zeros(bins, dtype=np.int64)
    for k, p in pairs:
        _, scores, is_kept = _shard_scores(k, p)
        ok = np.isfinite(scores)
        kept += np.histogram(scores[ok & is_kept], bins=edges)[0]
        dropped += np.histogram(scores[ok & ~is_kept], bins=edges)[0]
    return edges, kept, dropped


@dataclass
class Example:
    score: float
    kept: bool
    shard: str
    row: int
    id: str = ""
    text: str | None = None


def nearest_cutoff(selected: Path, n: int = 3) -> list[Example]:
    """The n kept documents with the lowest scores and the n dropped ones with the highest (the
    documents on either side of the cutoff); heaps of n per side, a shard's keys at a time."""
    low_kept: list[tuple[float, str, int]] = []  # max-heap by negated score
    high_dropped: list[tuple[float, str, int]] = []
    keys_dir = selected / "_select" / "keys"
    for k, p in _keys(selected):
        if not p.exists():
            continue
        rows, scores, is_kept = _shard_scores(k, p)
        name = str(k.relative_to(keys_dir))[: -len(".parquet")]
        for mask, heap, sign in ((is_kept, low_kept, -1.0), (~is_kept, high_dropped, 1.0)):
            idx = np.flatnonzero(mask & np.isfinite(scores))
            best = idx[np.argsort(sign * scores[idx], kind="stable")[::-1][:n]]
            for i in best:
                item = (sign * float(scores[i]), name, int(rows[i]))
                (heapq.heappush if len(heap) < n else heapq.heappushpop)(heap, item)
    kept = [Example(-s, True, sh, r) for s, sh, r in sorted(low_kept, reverse=True)]
    dropped = [Example(s, False, sh, r) for s, sh, r in sorted(high_dropped, reverse=True)]
    return kept + dropped


def attach_texts(examples: list[Example], corpus: Any, max_chars: int = 700) -> None:
    """Read each example's text (first `max_chars` characters) from its shard of `corpus`
    (an `assay.io.corpus.Corpus`): only the shards that hold one, each up to its last row."""
    wanted: dict[str, list[Example]] = {}
    for e in examples:
        wanted.setdefault(e.shard, []).append(e)
    options = corpus.options
    for shard in corpus.shards:
        todo = wanted.get(shard.stem)
        if not todo:
            continue
        by_row = {e.row: e for e in todo}
        last, offset = max(by_row), 0
        for batch in shard.read(options):
            for row in range(offset, offset + batch.height):
                if row in by_row:
                    record = batch.row(row - offset, named=True)
                    by_row[row].id = str(record.get("id", ""))
                    by_row[row].text = str(record.get("text") or "")[:max_chars]
            offset += batch.height
            if offset > last:
                break


def corpus_paths(run: RunDir, spec: dict[str, Any] | None) -> list[str] | None:
    """The files a step's corpus spec names: its paths, or an earlier step's corpus output."""
    spec = spec or run.recipe.get("corpus") or {}
    if spec.get("paths"):
        return [str(p) for p in spec["paths"]]
    upstream = run.step(spec.get("step") or "")
    if upstream is None:
        return None
    output = spec.get("output") or CORPUS_OUTPUTS.get(upstream.kind)
    outputs = upstream.state.get("outputs") or {}
    if output is None and len(outputs) == 1:
        output = next(iter(outputs))
    path = upstream.output(output) if output else None
    return [str(path)] if path is not None else None

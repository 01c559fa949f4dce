"""The runs table: one row per proxy run, the interchange between proxies and mixture search.

Columns (flat, so that any table tool reads them):

- `run_id`, `out_dir`, `preset`, `seed`, `tokens`, `steps`, `params`, `wall_seconds`,
  `tokens_per_second`, `train_loss`
- `w.<domain>`: the requested mixture weight; `ew.<domain>`: the effective one (after caps)
- `bpb.<domain>`, `bpb.mean` (byte-weighted) and `bpb.domain_mean` (unweighted): held-out
  bits per byte
- `loss.<domain>`: held-out loss per token (mean token cross-entropy, nats, under the proxy's
  tokenizer)
- `task.<task>.<metric>`: lm-eval task metrics
- `curve`: the evaluation curve as JSON (per-domain bpb and loss per token at each evaluated
  step, for BiMix)

The table is a parquet file (rewritten atomically on each append, with a CSV copy beside it); a
run already in it (same `run_id`) is replaced, not duplicated, so a resumed search stays clean.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl

from assay.errors import ConfigError
from assay.util.files import atomic_path, read_parquet


def run_row(run: Any) -> dict[str, Any]:
    """Flatten a ProxyRun (or its dict) into one table row."""
    r = run.to_dict() if hasattr(run, "to_dict") else dict(run)
    row: dict[str, Any] = {
        "run_id": r["run_id"],
        "out_dir": r["out_dir"],
        "preset": r["preset"],
        "seed": r["seed"],
        "tokens": r["tokens"],
        "steps": r["steps"],
        "params": r["params"]["total"] if isinstance(r["params"], dict) else r["params"],
        "wall_seconds": r["wall_seconds"],
        "tokens_per_second": r["tokens_per_second"],
        "train_loss": r["train_loss"],
    }
    for d, w in sorted(r["mixture"].items()):
        row[f"w.{d}"] = w
    for d, w in sorted(r["effective_mixture"].items()):
        row[f"ew.{d}"] = w
    for d, b in sorted(r["bpb"].items()):
        row[f"bpb.{d}"] = b
    for d, v in sorted((r.get("loss") or {}).items()):
        row[f"loss.{d}"] = v
    curve_points = [c for c in r.get("curve", []) if "bpb" in c]
    if r["bpb"] and curve_points:
        last = curve_points[-1]["bpb"]
        total_bytes = sum(v["bytes"] for v in last.values())
        row["bpb.mean"] = sum(v["bpb"] * v["bytes"] for v in last.values()) / max(total_bytes, 1)
    if r["bpb"]:
        # every domain counts once (BiMix's objective, and the usual mixture-search target)
        row["bpb.domain_mean"] = sum(r["bpb"].values()) / len(r["bpb"])
    for task, metrics in sorted(r.get("tasks", {}).items()):
        for m, v in sorted(metrics.items()):
            row[f"task.{task}.{m}"] = v
    row["curve"] = json.dumps(
        [
            {
                "step": c["step"],
                "tokens": c["tokens"],
                "bpb": {d: v["bpb"] for d, v in c["bpb"].items()},
                **(
                    {"loss": {d: v["loss"] for d, v in c["bpb"].items()}}
                    if all("loss" in v for v in c["bpb"].values())
                    else {}
                ),
            }
            for c in curve_points
        ]
    )
    return row


class RunsTable:
    """A parquet table of proxy runs at `path` (a `.parquet` file)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.suffix != ".parquet":
            raise ConfigError(f"the runs table is a .parquet file, not {self.path.name}")

    def read(self) -> pl.DataFrame:
        if not self.path.exists():
            return pl.DataFrame()
        return read_parquet(self.path)

    def run_ids(self) -> set[str]:
        df = self.read()
        return set(df.get_column("run_id").to_list()) if df.height else set()

    def append(self, run: Any) -> pl.DataFrame:
        row = pl.DataFrame([run_row(run)])
        old = self.read()
        if old.height:
            old = old.filter(pl.col("run_id") != row.get_column("run_id")[0])
            table = pl.concat([old, row], how="diagonal_relaxed")
        else:
            table = row
        with atomic_path(self.path) as tmp:
            table.write_parquet(tmp)
        with atomic_path(self.path.with_suffix(".csv")) as tmp:
            table.write_csv(tmp)
        return table

"""Shared fixtures: a small real-text demo corpus, and helpers that write shards by hand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

os.environ.setdefault("ASSAY_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small demo corpus (90 train + 10 held-out real documents per domain)."""
    from assay.demo import build_demo_corpus

    root = tmp_path_factory.mktemp("demo")
    build_demo_corpus(root, size="small")
    return root


@pytest.fixture(scope="session")
def demo_records(demo_dir: Path) -> list[dict]:
    """All training records of the small demo corpus, in shard order."""
    from assay.corpus import Corpus

    return [r for b in Corpus(demo_dir / "train").iter_batches() for r in b.to_dicts()]


@pytest.fixture(scope="session")
def real_texts(demo_records: list[dict]) -> list[str]:
    return [r["text"] for r in demo_records]


def write_jsonl(path: Path, records: list[dict], raw_lines: dict[int, bytes] | None = None) -> Path:
    """Write records as JSON lines; `raw_lines` replaces line i (0-based) by raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r).encode() for r in records]
    for i, raw in (raw_lines or {}).items():
        lines[i] = raw
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def write_parquet(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(records).write_parquet(path)
    return path


def read_all(corpus) -> pl.DataFrame:
    return pl.concat(list(corpus.iter_batches()), how="diagonal_relaxed")

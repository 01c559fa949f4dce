"""The real-text demo corpus."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from assay.demo import build_demo_corpus, champ_docs, code_docs, news_docs, reference_docs
from assay.io.corpus import Corpus


def test_layout_fields_and_counts(demo_dir: Path) -> None:
    manifest = json.loads((demo_dir / "manifest.json").read_text())
    train = pl.concat(list(Corpus(demo_dir / "train").iter_batches()))
    held = pl.concat(list(Corpus(demo_dir / "heldout").iter_batches()))
    assert train.columns == ["id", "text", "domain", "source"]
    assert sorted(p.name for p in (demo_dir / "heldout").iterdir()) == [
        f"{d}.jsonl.gz" for d in ("code", "math", "news", "reference")
    ]
    for domain, c in manifest["domains"].items():
        assert train.filter(pl.col("domain") == domain).height == c["train_docs"] == 90
        assert held.filter(pl.col("domain") == domain).height == c["heldout_docs"] == 10
    assert not set(train.get_column("id")) & set(held.get_column("id"))
    assert train.get_column("id").n_unique() == train.height
    assert (train.get_column("text").str.len_chars() > 0).all()


def test_sources_are_real_text() -> None:
    news = next(news_docs())
    assert news.domain == "news" and len(news.text) > 500 and news.source.startswith("bbc/")
    problem = next(champ_docs())
    assert "Problem." in problem.text and "Solution." in problem.text and "Answer:" in problem.text
    code = next(code_docs())
    assert code.domain == "code" and (
        "def " in code.text or "import" in code.text or '"""' in code.text
    )
    ref = next(reference_docs())
    assert ref.source == "pydoc-topics" and len(ref.text) > 100


def test_build_is_deterministic_and_idempotent(tmp_path: Path, demo_dir: Path) -> None:
    build_demo_corpus(tmp_path / "again", size="small")
    for p in sorted((demo_dir / "train").glob("*.jsonl.gz")):
        assert (tmp_path / "again" / "train" / p.name).read_bytes() == p.read_bytes()
    mtime = (tmp_path / "again" / "manifest.json").stat().st_mtime_ns
    build_demo_corpus(tmp_path / "again", size="small")
    assert (tmp_path / "again" / "manifest.json").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="other settings"):
        build_demo_corpus(tmp_path / "again", size="small", seed=1)
    with pytest.raises(ValueError, match="size must be one of"):
        build_demo_corpus(tmp_path / "x", size="huge")

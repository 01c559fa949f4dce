"""MASS without tags on a non-math target (BBC technology news): keyphrase skills are what the
target has more often than the pool, and the scorer finds held-out target articles."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from assay.selection.mass import fit_mass, keyphrase_skills, phrase_candidates


@pytest.fixture(scope="module")
def tech_news() -> list[str]:
    """BBC technology articles, in a fixed order (about 400)."""
    from assay.demo import news_docs

    return [d.text for d in sorted(news_docs(), key=lambda d: d.id) if d.source == "bbc/tech"]


@pytest.fixture(scope="module")
def background(demo_records: list[dict]) -> list[str]:
    """The small demo pool: news of all categories, math, code and reference prose."""
    return [r["text"] for r in demo_records]


def _doc_freq(texts: list[str]) -> Counter:
    return Counter(p for t in texts for p in set(phrase_candidates(t)))


def test_keyphrases_are_what_the_target_has_more_than_the_pool(
    tech_news: list[str], background: list[str]
) -> None:
    reference = tech_news[:60]
    skills = keyphrase_skills(reference, background=background)
    chosen = Counter(s for row in skills for s in row)
    assert sum(len(r) > 0 for r in skills) >= 50 and len(chosen) >= 60
    ref_df, bg_df = _doc_freq(reference), _doc_freq(background)
    for phrase in chosen:  # at least twice as frequent in the target (add-one smoothing)
        ratio = (ref_df[phrase] / len(reference)) / ((bg_df[phrase] + 1) / (len(background) + 1))
        assert ratio >= 2.0, (phrase, ref_df[phrase], bg_df[phrase])
    # the most frequent skills are not the pool's common words ("names", "data", "number")
    common = {p for p, _ in bg_df.most_common(150)}
    top = [s for s, _ in chosen.most_common(20)]
    assert not set(top) & common, set(top) & common
    assert {"mobile", "software", "users", "technology", "digital"} & set(top)


def test_mass_ranks_held_out_target_news_above_the_pool(
    tech_news: list[str], background: list[str], demo_records: list[dict], static_model: Path
) -> None:
    scorer = fit_mass(
        tech_news[:60],
        embedder={"model": str(static_model), "cache": False},
        background=background,
    )
    rep = scorer.report
    assert rep["skills_source"] == "keyphrase" and rep["background_docs"] == len(background)
    held_out = tech_news[200:260]  # articles the reference never saw
    others = [r["text"] for r in demo_records if r["source"] != "bbc/tech"]
    s_target, s_other = scorer.score(held_out), scorer.score(others)
    auc = float((s_target[:, None] > s_other[None, :]).mean())
    assert auc > 0.9, auc
    # the 10% of the pool it ranks highest is mostly target news (random: ~4%)
    pool = np.concatenate([s_target, s_other])
    top = np.argsort(-pool, kind="stable")[: len(pool) // 10]
    assert (top < len(held_out)).mean() > 0.5

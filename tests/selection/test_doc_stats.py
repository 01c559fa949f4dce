"""Document statistics, checked against values computed by hand and with plain Python."""

from __future__ import annotations

import numpy as np
import pytest

from assay.selection.base import available_scorers, load_scorer, make_scorer
from assay.selection.doc_stats import STATS, DocStatsScorer


def _python_stats(text: str) -> dict[str, float]:
    words = text.split()
    lines = [ln for ln in text.split("\n") if ln.strip()]
    return {
        "n_chars": len(text),
        "n_words": len(words),
        "mean_word_len": sum(map(len, words)) / len(words) if words else 0.0,
        "alpha_frac": sum(c.isalpha() for c in text) / len(text) if text else 0.0,
        "dup_line_frac": 1 - len(set(lines)) / len(lines) if lines else 0.0,
        "unique_word_frac": len(set(words)) / len(words) if words else 0.0,
    }


def test_matches_plain_python_on_real_text(real_texts: list[str]) -> None:
    texts = real_texts[::7]
    table = DocStatsScorer().score_table(texts)
    assert list(table) == list(STATS)
    for i, t in enumerate(texts):
        expected = _python_stats(t)
        for k, v in expected.items():
            assert table[k][i] == pytest.approx(v, rel=1e-5, abs=1e-6), (k, i)


def test_hand_computed_values() -> None:
    t = "Hello hello world\nrepeat line\nrepeat line\n\n42 42"
    s = DocStatsScorer().score_table([t, ""])
    assert s["n_words"].tolist() == [9, 0]
    assert s["dup_line_frac"][0] == pytest.approx(1 / 4)
    assert s["unique_word_frac"][0] == pytest.approx(6 / 9)
    assert s["alpha_frac"][1] == 0 and s["dup_line_frac"][1] == 0


def test_primary_stat_prefix_and_registry(tmp_path) -> None:
    sc = make_scorer("doc_stats", stat="dup_line_frac", prefix="s_")
    assert sc.column == "s_dup_line_frac" and "s_n_chars" in sc.columns
    out = sc.score(["a\na\nb"])
    assert out.dtype == np.float32 and out[0] == pytest.approx(1 / 3)
    sc.save(tmp_path / "s")
    assert load_scorer(tmp_path / "s").columns == sc.columns
    assert {"doc_stats", "fasttext"} <= set(available_scorers())
    with pytest.raises(ValueError, match="unknown statistic"):
        DocStatsScorer(stat="entropy")
    with pytest.raises(ValueError, match="unknown scorer 'nope'"):
        make_scorer("nope")
    with pytest.raises(ValueError, match="bad parameters for scorer 'doc_stats'"):
        make_scorer("doc_stats", colour="red")

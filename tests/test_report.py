"""Plots are real PNG files with the content they are asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assay.mixing.bimix import BiMix, DomainLaw
from assay.report import plot_bimix_fits, plot_mixtures, plot_predicted_vs_measured

pytest.importorskip("matplotlib")


def _is_png(path: str) -> bool:
    data = Path(path).read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2_000


def test_plots_are_png(tmp_path: Path) -> None:
    mixes = {"natural": {"a": 0.7, "b": 0.3}, "uniform": {"a": 0.5, "b": 0.5}}
    assert _is_png(plot_mixtures(mixes, tmp_path / "weights.png"))
    pred = {"climb": ([1.0, 2.0, 3.0, 4.0], [1.1, 1.9, 3.2, 3.9])}
    assert _is_png(plot_predicted_vs_measured(pred, tmp_path / "pred.png", metric="bpb"))
    law = BiMix({"a": DomainLaw(1, 0.1, 5, 0.4, 2), "b": DomainLaw(1, 0.2, 4, 0.3, 1.5)})
    rows: dict[str, list] = {"domain": [], "r": [], "s": [], "loss": [], "run": []}
    for run, mix in enumerate(mixes.values()):
        for d in ("a", "b"):
            for s in (100, 200, 400, 800):
                rows["domain"].append(d)
                rows["r"].append(mix[d])
                rows["s"].append(s)
                rows["loss"].append(float(law.laws[d].predict(mix[d], s)))
                rows["run"].append(str(run))
    assert _is_png(plot_bimix_fits(rows, law, tmp_path / "fits.png"))
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically
    np.testing.assert_equal(sorted(p.name for p in tmp_path.iterdir()), ["fits.png", "pred.png", "weights.png"])  # fmt: skip

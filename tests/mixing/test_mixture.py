"""Mixtures: validation, files, resolution of 'natural' and 'uniform'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assay.common.mixture import Mixture, resolve_mixture


def test_validation() -> None:
    m = Mixture({"news": 0.25, "code": 0.75})
    assert m.domains == ["code", "news"] and m["news"] == 0.25
    with pytest.raises(ValueError, match="must sum to 1"):
        Mixture({"news": 0.5, "code": 0.6})
    with pytest.raises(ValueError, match="finite and non-negative"):
        Mixture({"news": -0.1, "code": 1.1})
    with pytest.raises(ValueError, match="finite and non-negative"):
        Mixture({"news": float("nan"), "code": 1.0})
    with pytest.raises(ValueError, match="at least one domain"):
        Mixture({})
    assert Mixture({"a": 2, "b": 6}, normalize=True) == {"a": 0.25, "b": 0.75}
    with pytest.raises(
        ValueError, match=r"unknown domains \['poetry'\]; known domains: code, news"
    ):
        Mixture({"poetry": 1.0}).check_domains(["news", "code"])


def test_vectors_files_and_resolution(tmp_path: Path) -> None:
    m = Mixture({"news": 0.5, "code": 0.5})
    assert m.vector(["code", "math", "news"]).tolist() == [0.5, 0.0, 0.5]
    assert Mixture.from_vector(["a", "b"], np.array([1.0, 3.0])) == {"a": 0.25, "b": 0.75}
    for suffix in (".yaml", ".json"):
        m.save(tmp_path / f"m{suffix}")
        assert Mixture.load(tmp_path / f"m{suffix}") == m
    counts = {"news": 300, "code": 100, "empty": 0}
    assert resolve_mixture("natural", counts) == {"news": 0.75, "code": 0.25}
    assert resolve_mixture("uniform", counts) == {"news": 0.5, "code": 0.5}
    assert resolve_mixture("news=3,code=1", counts) == {"news": 0.75, "code": 0.25}
    assert resolve_mixture(str(tmp_path / "m.yaml"), counts) == m
    with pytest.raises(FileNotFoundError, match="mixture file not found"):
        resolve_mixture(str(tmp_path / "none.yaml"), counts)

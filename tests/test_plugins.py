"""A scorer plugin installed as a real package: its `assay.scorers` entry point makes it a
scorer of the library, of the command line and of recipes, without any change to assay."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import assay
from assay.selection import base

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "assay-shout"
version = "0.1.0"
description = "A test plugin for assay: scores documents by their share of capital letters."
requires-python = ">=3.10"

[project.entry-points."assay.scorers"]
shout = "assay_shout:ShoutScorer"

[tool.setuptools]
py-modules = ["assay_shout"]
"""

MODULE = '''\
"""How loud a document is: the share of its letters that are upper case."""

from collections.abc import Sequence

import numpy as np

from assay.selection.base import Scorer, register_scorer


@register_scorer("shout")
class ShoutScorer(Scorer):
    def score(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(texts), dtype=np.float32)
        for i, text in enumerate(texts):
            letters = [c for c in text if c.isalpha()]
            if letters:
                out[i] = sum(c.isupper() for c in letters) / len(letters)
        return out
'''

DOCS = [
    "The committee met on Tuesday to review the budget for the new library wing.",
    "WARNING: THE BRIDGE ON ROUTE 9 IS CLOSED UNTIL FURTHER NOTICE.",
    "Rain is expected over the weekend, with clearer skies by Monday afternoon.",
    "BREAKING NEWS: Local Team Wins The Championship After A Dramatic Final!",
    "She planted tomatoes and basil along the south side of the garden.",
    "Please READ the instructions CAREFULLY before you assemble the shelf.",
    "NASA and ESA announced a joint mission to study the rings of Saturn.",
    "the quiet river wound through the valley, past farms and old stone mills.",
]


def loudness(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(c.isupper() for c in letters) / len(letters)


def _env(site: Path | None = None) -> dict[str, str]:
    """The environment of a subprocess that imports this same assay (and the packages
    installed in `site`)."""
    root = str(Path(assay.__file__).resolve().parents[1])
    paths = [root, *([str(site)] if site else []), os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "ASSAY_PROGRESS": "0",
    }


@pytest.fixture(scope="module")
def shout(tmp_path_factory: pytest.TempPathFactory):
    """The plugin package, built and installed by pip into a folder of its own (never into
    this environment), which is put on the path of this process and of its subprocesses."""
    pkg = tmp_path_factory.mktemp("plugin") / "assay-shout"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "assay_shout.py").write_text(MODULE)
    site = pkg.parent / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet",
         "--no-index", "--target", str(site), str(pkg)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"pip cannot install the test plugin here: {done.stderr.strip()[-400:]}")
    assert len(list(site.glob("assay_shout-*.dist-info/entry_points.txt"))) == 1
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        importlib.invalidate_caches()
        base._REGISTRY.pop("shout", None)
        sys.modules.pop("assay_shout", None)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "news.jsonl"
    lines = [json.dumps({"id": f"doc-{i}", "text": t}) for i, t in enumerate(DOCS)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_plugin_is_listed_and_made_by_name(shout: Path) -> None:
    assert "shout" in base.available_scorers()
    scorer = base.make_scorer("shout")
    assert type(scorer).__module__ == "assay_shout" and scorer.kind == "shout"
    assert scorer.columns == ["shout"] and scorer.get_params() == {"column": "shout"}
    np.testing.assert_allclose(scorer.score(DOCS), [loudness(t) for t in DOCS], rtol=1e-6)
    listed = subprocess.run(
        [sys.executable, "-m", "assay.cli", "scorers"],
        capture_output=True,
        text=True,
        env=_env(shout),
    )
    assert listed.returncode == 0, listed.stderr
    assert "shout" in listed.stdout.split()


def test_the_command_line_scores_with_the_plugin(shout: Path, corpus: Path, tmp_path: Path):
    out = tmp_path / "scored"
    command = ["score", str(corpus), "--scorer", "shout", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "assay.cli", *command],
        capture_output=True,
        text=True,
        env=_env(shout),
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    files = sorted((out / "scores").glob("*.parquet"))
    assert [f.name for f in files] == ["news.parquet"]
    frame = pl.read_parquet(files[0])
    assert frame.columns == ["id", "shout"]
    assert frame.get_column("id").to_list() == [f"doc-{i}" for i in range(len(DOCS))]
    np.testing.assert_allclose(
        frame.get_column("shout").to_numpy(), [loudness(t) for t in DOCS], rtol=1e-6
    )


def test_a_recipe_scores_and_selects_with_the_plugin(shout: Path, corpus: Path, tmp_path: Path):
    from assay.recipe import parse_recipe, run_recipe

    recipe = parse_recipe(
        {
            "name": "loud",
            "corpus": {"paths": [str(corpus)]},
            "steps": [
                {"score": {"name": "loudness", "scorer": "shout"}},
                {"select": {"scores": ["loudness"], "column": "shout", "keep": 0.5}},
            ],
        }
    )
    outcome = run_recipe(recipe, run_dir=tmp_path / "run", progress=False)
    assert outcome.step("loudness").summary["columns"] == ["shout"]
    scores = pl.read_parquet(tmp_path / "run" / "loudness" / "scores" / "news.parquet")
    assert scores.height == len(DOCS)
    kept = pl.read_ndjson(tmp_path / "run" / "select" / "selected" / "news.jsonl")
    loudest = sorted(range(len(DOCS)), key=lambda i: -loudness(DOCS[i]))[: len(DOCS) // 2]
    assert sorted(kept.get_column("id").to_list()) == sorted(f"doc-{i}" for i in loudest)

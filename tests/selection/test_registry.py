"""The scorer registry: parameters read from `__init__`, plugins found through entry points,
and the errors a user sees (one line on the command line)."""

from __future__ import annotations

import inspect
import json
import sys
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assay.errors import AssayError, ConfigError, MissingError, StateError
from assay.selection import base
from assay.selection.base import (
    ENTRY_POINT_GROUP,
    NotFittedError,
    Scorer,
    available_scorers,
    init_params,
    load_scorer,
    make_scorer,
    register_scorer,
    scorer_class,
)

#: every built-in scorer with its defaults and with every parameter given (and normalised)
CASES: dict[str, list[dict[str, Any]]] = {
    "random": [{}, {"column": "r", "seed": 7}],
    "doc_stats": [{}, {"stat": "n_words", "prefix": "s_"}, {"column": "c", "stat": "n_chars"}],
    "perplexity": [
        {"model": "/models/smol"},
        {
            "model": Path("/models/smol"),
            "column": "ppl",
            "gguf_file": "smol.gguf",
            "output": "loss",
            "seq_len": 64,
            "batch_tokens": 1024,
            "dtype": "bfloat16",
            "device": "cpu",
        },
    ],
    "fasttext": [{}, {"column": "quality", "params": {"lr": 0.3, "epoch": 2}}],
    "betr": [
        {},
        {
            "embedder": "static",
            "aggregation": "mean",
            "positive_fraction": 0.2,
            "params": {"dim": 64},
            "adapt_to_sample": False,
        },
    ],
    "preselect": [
        {},
        {"params": {"epoch": 9}, "positive_fraction": 0.2, "min_positives": 20},
    ],
    "mass": [
        {},
        {
            "embedder": {"model": "static", "cache": False},
            "skills": "keyphrase",
            "max_skills": 5,
            "merge_threshold": 0.95,
            "min_cooccurrence": 2,
            "top_k": None,
            "aggregation": "linear",
            "edge_weight": 0.5,
            "keyphrase": {"min_df": 1},
            "n_clusters": 4,
            "cache_documents": True,
        },
    ],
    "mates": [
        {},
        {
            "embedder": "static",
            "heads": ("ridge",),
            "alphas": (1, 2),
            "holdout": 0.25,
            "refit": False,
        },
    ],
    "mates_finetune": [
        {},
        {
            "encoder": "/models/bert-base-uncased",
            "max_length": 2048,
            "chunk_length": 256,
            "lr": 1e-4,
            "epochs": 2,
            "eval_every": None,
            "holdout": 0.2,
            "device": "cpu",
            "dtype": "float32",
        },
    ],
    "dsir": [{}, {"column": "d", "num_buckets": 500, "ngrams": 1, "target_laplace_smoothing": 1}],
    "decontam": [{}, {"n": 8, "min_words": 5}],
    "ngram_lm": [{}, {"column": "ppl", "order": 5}],
    "fasttext_classifier": [
        {"model": "/models/dclm.bin", "label": "__label__hq"},
        {"model": Path("/models/edu.bin"), "label": None, "output": "expected", "column": "edu"},
    ],
    "hf_classifier": [
        {"model": "/models/edu"},
        {
            "model": Path("/models/edu"),
            "column": "edu",
            "label": "2",
            "output": "probability",
            "int_score": (0, 5),
            "max_length": 256,
            "batch_size": 8,
            "dtype": "bfloat16",
            "device": "cpu",
        },
    ],
}


def _cases() -> list[tuple[str, dict[str, Any]]]:
    return [(name, kw) for name, many in CASES.items() for kw in many]


def test_every_builtin_scorer_is_covered() -> None:
    assert set(CASES) == set(base._BUILTIN_MODULES)


@pytest.mark.parametrize(("name", "kwargs"), _cases())
def test_params_rebuild_the_scorer(name: str, kwargs: dict[str, Any]) -> None:
    scorer = make_scorer(name, **kwargs)
    params = scorer.get_params()
    cls = type(scorer)
    expected = list(inspect.signature(cls.__init__).parameters)[1:]
    assert list(params) == expected == list(init_params(cls))
    assert scorer.get_config() == params
    again = cls(**params)
    assert type(again) is cls and again.get_params() == params
    # what scorer.json stores rebuilds the same scorer
    stored = json.loads(json.dumps(params))
    assert cls(**stored).get_params() == stored
    assert stored == json.loads(json.dumps(again.get_params()))
    for key, value in kwargs.items():  # given values are kept (normalised where documented)
        if key not in ("embedder", "params", "model", "heads", "alphas", "int_score"):
            assert params[key] == value, key


def test_params_keep_the_keys_and_values_of_the_former_get_config() -> None:
    """Config hashes of existing runs depend on these dicts: they must not change."""
    from assay.selection.fasttext import DEFAULT_PARAMS

    assert make_scorer("random").get_params() == {"column": "random", "seed": 0}
    assert make_scorer("doc_stats", prefix="s_").get_params() == {
        "column": "s_alpha_frac",
        "stat": "alpha_frac",
        "prefix": "s_",
    }
    assert make_scorer("fasttext").get_params() == {"column": "fasttext", "params": DEFAULT_PARAMS}
    assert make_scorer("perplexity", model=Path("/m")).get_params() == {
        "model": "/m",
        "column": "ppl_bpb",
        "gguf_file": None,
        "output": "bpb",
        "seq_len": None,
        "batch_tokens": 8192,
        "dtype": "float32",
        "device": None,
    }
    assert make_scorer("betr", embedder="static").get_params()["embedder"] == {"model": "static"}
    assert make_scorer("mass").get_params()["embedder"] == {"model": None}
    mates = make_scorer("mates", alphas=(1,)).get_params()
    assert mates["heads"] == ["ridge", "mlp"] and mates["alphas"] == [1.0]


def test_a_scorer_that_does_not_keep_a_parameter_says_so() -> None:
    class Forgetful(Scorer):
        def __init__(self, column: str = "f", scale: float = 1.0):
            super().__init__(column)
            self.factor = scale

    with pytest.raises(AttributeError, match="takes 'scale' but the scorer has no attribute"):
        Forgetful().get_params()


def test_user_errors_are_assay_errors_and_still_the_builtins(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown scorer 'nope'; known scorers: betr"):
        make_scorer("nope")
    with pytest.raises(ConfigError, match="bad parameters for scorer 'random'"):
        make_scorer("random", colour="red")
    with pytest.raises(ConfigError, match="unknown statistic"):
        make_scorer("doc_stats", stat="entropy")
    with pytest.raises(MissingError, match="is not a saved scorer") as missing:
        load_scorer(tmp_path / "nothing")
    assert isinstance(missing.value, FileNotFoundError)
    with pytest.raises(NotFittedError, match="must be fitted before it is saved") as unfitted:
        make_scorer("fasttext").save(tmp_path / "model")
    assert isinstance(unfitted.value, StateError) and isinstance(unfitted.value, RuntimeError)
    with pytest.raises(NotFittedError, match="not fitted"):
        make_scorer("mass").score(["a document"])
    with pytest.raises(ValueError, match="aggregation must be one of"):  # code catching builtins
        make_scorer("betr", aggregation="median")


# -- plugins ----------------------------------------------------------------------------------


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Fake installed plugins: `add(name, value)` declares an entry point, and modules written
    with `module(name, source)` are importable; the registry is restored afterwards."""
    declared: dict[str, EntryPoint] = {}
    monkeypatch.setattr(base, "plugin_entry_points", lambda: dict(declared))
    registered = set(base._REGISTRY)
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    class Plugins:
        def add(self, name: str, value: str) -> None:
            declared[name] = EntryPoint(name, value, ENTRY_POINT_GROUP)

        def module(self, name: str, source: str) -> None:
            (tmp_path / f"{name}.py").write_text(source)
            written.append(name)

    yield Plugins()
    for name in set(base._REGISTRY) - registered - set(base._BUILTIN_MODULES):
        del base._REGISTRY[name]
    for name in written:
        sys.modules.pop(name, None)


QUIET = """
import numpy as np
from assay.selection.base import Scorer


class QuietScorer(Scorer):
    def score(self, texts):
        return np.array([1 - sum(c.isupper() for c in t) / max(len(t), 1) for t in texts],
                        dtype=np.float32)
"""


def test_plugins_are_listed_without_import_and_loaded_when_asked_for(plugins: Any) -> None:
    plugins.module("assay_quiet_plugin", QUIET)
    plugins.add("quiet", "assay_quiet_plugin:QuietScorer")
    assert "quiet" in available_scorers() and "assay_quiet_plugin" not in sys.modules
    cls = scorer_class("quiet")
    assert cls.kind == "quiet" and "assay_quiet_plugin" in sys.modules
    scorer = make_scorer("quiet")
    assert scorer.column == "quiet" and scorer.get_params() == {"column": "quiet"}
    np.testing.assert_allclose(scorer.score(["Quiet please.", "LOUD"]), [12 / 13, 0.0])


def test_builtins_keep_their_names(plugins: Any) -> None:
    plugins.module("assay_squatter", QUIET.replace("class QuietScorer", "class Squatter"))
    plugins.add("random", "assay_squatter:Squatter")
    assert scorer_class("random").__module__ == "assay.selection.random_scorer"
    assert "assay_squatter" not in sys.modules
    assert available_scorers().count("random") == 1

    taker = "from assay.selection.base import Scorer, register_scorer\n\n\n"
    taker += '@register_scorer("mass")\nclass Taker(Scorer):\n    pass\n'
    plugins.module("assay_taker", taker)
    plugins.add("taker", "assay_taker:Taker")
    with pytest.raises(ConfigError, match="cannot be registered as 'mass': that is the name of"):
        scorer_class("taker")
    assert scorer_class("mass").__module__ == "assay.selection.mass.scorer"


def test_bad_plugins_are_clear_errors(plugins: Any) -> None:
    plugins.add("gone", "assay_no_such_module:Scorer")
    with pytest.raises(ConfigError, match="entry point gone = 'assay_no_such_module:Scorer'"):
        make_scorer("gone")
    plugins.module("assay_odd_plugin", QUIET + "\n\nNOT_A_SCORER = 3\n")
    plugins.add("odd", "assay_odd_plugin:NOT_A_SCORER")
    with pytest.raises(ConfigError, match="is not a Scorer subclass"):
        make_scorer("odd")
    plugins.add("typo", "assay_odd_plugin:QuietScorr")
    with pytest.raises(ConfigError, match="cannot be loaded: AttributeError"):
        make_scorer("typo")
    named = QUIET.replace("class QuietScorer(Scorer):", "class Named(Scorer):\n    kind = 'other'")
    plugins.module("assay_named_plugin", named)
    plugins.add("named", "assay_named_plugin:Named")
    with pytest.raises(ConfigError, match="whose kind is 'other'"):
        make_scorer("named")
    assert all(isinstance(e, AssayError) for e in (ConfigError("x"), MissingError("x")))


def test_register_refuses_a_second_class_under_a_name(plugins: Any) -> None:
    @register_scorer("twice")
    class One(Scorer):
        pass

    with pytest.raises(ConfigError, match="already registered"):

        @register_scorer("twice")
        class Two(Scorer):
            pass

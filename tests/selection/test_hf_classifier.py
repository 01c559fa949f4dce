"""Hugging Face sequence classifiers as scorers: tiny BERT models with random weights and a
WordPiece tokenizer trained on the demo corpus, all built inside the test."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from assay.errors import ConfigError, MissingError
from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.selection.base import make_scorer
from assay.selection.score import score_corpus

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=800, special_tokens=SPECIALS)
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )


def _model(folder: Path, tokenizer, num_labels: int, seed: int, **config) -> Path:
    cfg = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        initializer_range=0.5,  # outputs of a useful spread from random weights
        max_position_embeddings=128,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
        **config,
    )
    torch.manual_seed(seed)
    transformers.BertForSequenceClassification(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(real_texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A regression head (FineWeb-Edu's shape) and a 3-class classifier with numeric names."""
    root = tmp_path_factory.mktemp("hf")
    tokenizer = _tokenizer(real_texts)
    names = {0: "0", 1: "1", 2: "2"}
    return {
        "regression": _model(root / "edu", tokenizer, 1, seed=0),
        "classes": _model(
            root / "classes",
            tokenizer,
            3,
            seed=1,
            id2label=names,
            label2id={v: k for k, v in names.items()},
        ),
    }


@pytest.fixture(scope="module")
def heldout(demo_dir: Path) -> tuple[Corpus, list[str]]:
    corpus = Corpus(demo_dir / "heldout")
    return corpus, pl.concat(list(corpus.iter_batches())).get_column("text").to_list()


def _direct(folder: Path, texts: list[str], max_length: int = 128) -> np.ndarray:
    """transformers' own forward pass, one document at a time (no padding)."""
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    out = []
    with torch.inference_mode():
        for text in texts:
            enc = tok(text, truncation=True, max_length=max_length, return_tensors="pt")
            out.append(model(**enc).logits[0].numpy())
    return np.stack(out)


def test_a_regression_head_scores_its_output(models: dict, heldout: tuple, tmp_path: Path):
    corpus, texts = heldout
    folder = models["regression"]
    scorer = make_scorer("hf_classifier", model=str(folder), column="edu", int_score=[0, 5])
    assert scorer.columns == ["edu", "edu_int"] and scorer.runs_on == "auto"
    assert scorer.get_params()["dtype"] == "float32"  # auto, without a GPU
    out = tmp_path / "scores"
    score_corpus(scorer, corpus, out, runner=LocalRunner(workers=1))
    frame = pl.concat([pl.read_parquet(f) for f in sorted(out.glob("*.parquet"))])
    assert frame.columns == ["id", "edu", "edu_int"] and frame.height == len(texts)
    edu = frame.get_column("edu").to_numpy()
    # what transformers computes, document by document (the demo documents are truncated)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert max(len(tokenizer(t)["input_ids"]) for t in texts) > 128
    np.testing.assert_allclose(edu, _direct(folder, texts)[:, 0], rtol=1e-4, atol=1e-5)
    assert np.ptp(edu) > 1e-3  # random weights, yet each document has its own score
    np.testing.assert_array_equal(
        frame.get_column("edu_int").to_numpy(), np.rint(np.clip(edu, 0, 5))
    )
    # batches of 1, 3 and 64 documents (sorted by length, padded) agree to float rounding
    for batch_size in (1, 3, 64):
        got = make_scorer("hf_classifier", model=str(folder), batch_size=batch_size).score(texts)
        np.testing.assert_allclose(got, edu, rtol=1e-4, atol=1e-5)
    # truncation
    short = make_scorer("hf_classifier", model=str(folder), max_length=16).score(texts)
    np.testing.assert_allclose(short, _direct(folder, texts, 16)[:, 0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(short, edu, atol=1e-3)
    # the scorer pickles as its settings
    clone = pickle.loads(pickle.dumps(scorer))
    assert clone._model is None
    np.testing.assert_allclose(clone.score(texts[:4]), edu[:4], rtol=1e-4, atol=1e-5)


def test_class_probabilities_and_expected_values(models: dict, heldout: tuple) -> None:
    _, texts = heldout
    folder = models["classes"]
    logits = _direct(folder, texts).astype(np.float64)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    by_name = make_scorer("hf_classifier", model=str(folder), label="2").score(texts)
    np.testing.assert_allclose(by_name, probs[:, 2], rtol=1e-4, atol=1e-6)
    by_index = make_scorer("hf_classifier", model=str(folder), label=2, batch_size=5).score(texts)
    np.testing.assert_allclose(by_index, by_name, rtol=1e-4, atol=1e-6)
    expected = make_scorer("hf_classifier", model=str(folder), output="expected").score(texts)
    np.testing.assert_allclose(expected, probs @ [0.0, 1.0, 2.0], rtol=1e-4, atol=1e-6)
    logit = make_scorer("hf_classifier", model=str(folder), label=1, output="logit").score(texts)
    np.testing.assert_allclose(logit, logits[:, 1], rtol=1e-4, atol=1e-5)


def test_settings_and_classes_are_checked(models: dict, tmp_path: Path) -> None:
    classes = str(models["classes"])
    with pytest.raises(ConfigError, match=r"has 3 classes \(0: 0, 1: 1, 2: 2\): give label"):
        make_scorer("hf_classifier", model=classes).score(["A document."])
    with pytest.raises(ConfigError, match=r"has no class 'high'; its classes: 0: 0, 1: 1, 2: 2"):
        make_scorer("hf_classifier", model=classes, label="high").score(["A document."])
    with pytest.raises(ConfigError, match="has no class 3"):
        make_scorer("hf_classifier", model=classes, label=3).score(["A document."])
    with pytest.raises(ConfigError, match="regression head"):
        make_scorer("hf_classifier", model=str(models["regression"]), output="probability").score(
            ["A document."]
        )
    named = tmp_path / "named"
    shutil.copytree(classes, named)
    config = json.loads((named / "config.json").read_text())
    config["id2label"] = {"0": "low", "1": "mid", "2": "high"}
    (named / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="classes named by numbers"):
        make_scorer("hf_classifier", model=str(named), output="expected").score(["A document."])
    high = make_scorer("hf_classifier", model=str(named), label="high").score(["A document."])
    assert high.shape == (1,) and 0 < high[0] < 1
    with pytest.raises(MissingError, match=r"no config\.json"):
        make_scorer("hf_classifier", model=str(tmp_path / "gone")).score(["A document."])
    for bad in ({"batch_size": 0}, {"max_length": True}, {"int_score": [5, 0]}, {"device": "tpu"}):
        with pytest.raises(ConfigError):
            make_scorer("hf_classifier", model=classes, **bad)


def test_bfloat16_on_the_cpu_is_close_to_float32(models: dict, heldout: tuple) -> None:
    _, texts = heldout
    folder = str(models["regression"])
    full = make_scorer("hf_classifier", model=folder, device="cpu").score(texts)
    half = make_scorer("hf_classifier", model=folder, device="cpu", dtype="bfloat16")
    got = half.score(texts)
    assert {p.dtype for p in half._model.parameters()} == {torch.bfloat16}
    assert half.get_params()["dtype"] == "bfloat16" and half.runs_on == "cpu"
    assert np.isfinite(got).all() and not np.array_equal(got, full)
    # random weights amplify rounding: the same ranking, give or take
    assert np.corrcoef(got, full)[0, 1] > 0.95
    assert np.median(np.abs(got - full)) < 0.1 * np.std(full)


def test_a_recipe_scores_and_selects_with_a_classifier(models: dict, demo_dir: Path, tmp_path):
    from assay.recipe import parse_recipe, run_recipe

    folder = models["regression"]
    recipe = parse_recipe(
        {
            "name": "edu",
            "corpus": {"paths": [str(demo_dir / "heldout")]},
            "steps": [
                {
                    "score": {
                        "name": "edu",
                        "scorer": "hf_classifier",
                        "params": {"model": str(folder), "column": "edu", "int_score": [0, 5]},
                    }
                },
                {"select": {"scores": ["edu"], "column": "edu", "keep": 0.25}},
            ],
        }
    )
    outcome = run_recipe(recipe, run_dir=tmp_path / "run", progress=False)
    assert outcome.step("edu").summary["columns"] == ["edu", "edu_int"]
    scores = pl.concat(
        [
            pl.read_parquet(f)
            for f in sorted((tmp_path / "run" / "edu" / "scores").glob("*.parquet"))
        ]
    )
    kept = pl.concat(list(Corpus(tmp_path / "run" / "select" / "selected").iter_batches()))
    best = scores.sort("edu", descending=True).head(kept.height).get_column("id").to_list()
    assert kept.height == scores.height // 4 and sorted(kept.get_column("id").to_list()) == sorted(
        best
    )

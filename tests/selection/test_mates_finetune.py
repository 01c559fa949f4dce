"""MATES' fine-tuned influence model (`mates_finetune`): chunked mean pooling equals the
official two-chunk formulation and a hand computation, the evaluation with the best held-out
Spearman is the one kept, a saved model scores identically (and batch by batch), a learnable
property of real texts is learnt, and the `mates` workflow and step select it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from assay.errors import ConfigError, StateError
from assay.io.corpus import Corpus
from assay.selection import mates_encoder
from assay.selection.base import load_scorer
from assay.selection.mates import MatesScorer
from assay.selection.mates_finetune import MatesFinetunedScorer
from assay.workflows.mates import run_mates
from assay.workflows.mates_settings import MatesSettings, mates_train_config

#: a tiny encoder's settings: short documents, 2 epochs, every evaluation after an epoch
TINY = {"max_length": 48, "chunk_length": 16, "lr": 2e-3, "batch_size": 16, "eval_every": None}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT (random weights) with all-MiniLM-L6-v2's tokenizer."""
    from transformers import BertConfig, BertModel

    from assay.common.embed import default_model_path

    folder = tmp_path_factory.mktemp("tiny_bert")
    src = Path(default_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, folder / name)
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    return folder


def _digit_share(texts: list[str]) -> np.ndarray:
    """A property of a text's first 200 characters that its tokens show: its share of digits."""
    return np.array([sum(c.isdigit() for c in t[:200]) / max(1, len(t[:200])) for t in texts])


def test_chunks_are_mean_pooled_over_every_token(tiny_bert: Path, real_texts: list[str]) -> None:
    tok, encoder = mates_encoder.load_encoder(tiny_bert, 16)
    model = mates_encoder.make_regressor(encoder, seed=0).eval()
    docs = mates_encoder.tokenize(tok, [real_texts[0], "A short one."], 40)
    assert len(docs[0]) == 40 and docs[0][0] == tok.cls_token_id and len(docs[1]) < 16
    pad = tok.pad_token_id
    with torch.no_grad():
        pooled = model.pooled(mates_encoder.collate(docs, 16, pad, "cpu")).numpy()
        for j, ids in enumerate(docs):
            # by hand: each chunk alone (positions from 0, no padding), then one mean of all
            states = [
                encoder(input_ids=torch.tensor([ids[a : a + 16]])).last_hidden_state[0]
                for a in range(0, len(ids), 16)
            ]
            assert [len(s) for s in states] == ([16, 16, 8] if j == 0 else [len(ids)])
            hand = torch.cat(states).mean(dim=0).numpy()
            np.testing.assert_allclose(pooled[j], hand, rtol=1e-4, atol=1e-5)
        # the official formulation: padded to 3 x 16, the chunks reshaped into rows, pooled
        # over the whole padded document by its mask (an all-padding chunk included)
        ids = torch.full((2, 48), pad)
        mask = torch.zeros((2, 48), dtype=torch.long)
        for j, d in enumerate(docs):
            ids[j, : len(d)], mask[j, : len(d)] = torch.tensor(d), 1
        out = encoder(input_ids=ids.reshape(6, 16), attention_mask=mask.reshape(6, 16))
        hidden = out.last_hidden_state.reshape(2, 48, -1).masked_fill(~mask[..., None].bool(), 0)
        official = (hidden.sum(dim=1) / mask.sum(dim=1)[:, None]).numpy()
    np.testing.assert_allclose(pooled, official, rtol=1e-4, atol=1e-5)


def test_the_best_heldout_spearman_is_kept(
    tmp_path: Path, tiny_bert: Path, real_texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evaluations after epochs 1-3 score Spearman 0.2, 0.9, 0.4 (scripted): the model kept,
    saved and reloaded is epoch 2's, which predicts the held-out probes as epoch 2 did."""
    scripted, preds = iter([0.2, 0.9, 0.4]), []
    evaluate = mates_encoder._evaluate

    def spy(*args, **kwargs):
        record = evaluate(*args, **kwargs)
        preds.append(record["_pred"].copy())
        return {**record, "spearman": next(scripted)}

    monkeypatch.setattr(mates_encoder, "_evaluate", spy)
    texts = real_texts[::6][:48]
    scorer = MatesFinetunedScorer(encoder=str(tiny_bert), epochs=3, holdout=0.25, **TINY)
    scorer.fit(texts, -_digit_share(texts), seed=1)
    report = scorer.report
    assert [c["epoch"] for c in report["candidates"]] == [1, 2, 3]
    assert [c["spearman"] for c in report["candidates"]] == [0.2, 0.9, 0.4]
    assert [c["step"] for c in report["candidates"]] == [3, 6, 9]  # 36 training probes / 16
    assert scorer.head == {"head": "finetune", "step": 6, "epoch": 2}
    assert report["spearman"] == 0.9
    assert not np.allclose(preds[1], preds[2], atol=1e-4)  # the epochs do differ
    scorer.save(tmp_path / "ft")
    table = pl.read_parquet(tmp_path / "ft" / "probes.parquet")
    held = table.filter(pl.col("split") == "holdout")
    held_texts = [texts[int(i)] for i in held.get_column("id")]
    np.testing.assert_allclose(held.get_column("holdout_prediction").to_numpy(), preds[1])
    loaded = load_scorer(tmp_path / "ft")
    np.testing.assert_allclose(loaded.predict(held_texts), preds[1], rtol=1e-5, atol=1e-6)


def test_saved_model_scores_identically_and_batch_by_batch(
    tmp_path: Path, tiny_bert: Path, real_texts: list[str]
) -> None:
    texts = real_texts[::8][:32]
    scorer = MatesFinetunedScorer(encoder=str(tiny_bert), epochs=1, **TINY)
    scorer.fit(texts, -_digit_share(texts), seed=0)
    assert not scorer.portable  # a trained, unsaved model does not pickle
    other = real_texts[1::8][:20]
    direct = scorer.score(other)
    scorer.save(tmp_path / "ft")
    assert (tmp_path / "ft" / "encoder" / "model.safetensors").exists()
    loaded = load_scorer(tmp_path / "ft")
    assert isinstance(loaded, MatesFinetunedScorer) and loaded.get_params() == scorer.get_params()
    assert np.array_equal(loaded.score(other), direct)
    # scored batch by batch (as score_corpus streams them) the scores are the same
    parts = np.concatenate([loaded.score(other[:7]), loaded.score(other[7:])])
    np.testing.assert_allclose(parts, direct, rtol=1e-5, atol=1e-6)
    assert loaded.score([]).shape == (0,)


def test_a_property_of_real_texts_is_learnt(tiny_bert: Path, real_texts: list[str]) -> None:
    texts = real_texts[::3]  # 120 documents of four domains
    scorer = MatesFinetunedScorer(encoder=str(tiny_bert), epochs=2, holdout=0.25, **TINY)
    scorer.fit(texts, -_digit_share(texts), seed=0)  # more digits = lower influence = better
    assert scorer.report["spearman"] > 0.3
    assert scorer.report["holdout"] == 30 and scorer.report["train"] == 90


def test_settings_are_checked(tiny_bert: Path, real_texts: list[str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="chunk_length"):
        MatesFinetunedScorer(chunk_length=1)
    with pytest.raises(ConfigError, match="longer than the 64 positions"):
        MatesFinetunedScorer(encoder=str(tiny_bert), chunk_length=128).fit(
            real_texts[:20], np.arange(20.0)
        )
    with pytest.raises(ValueError, match="Group-MATES"):
        MatesSettings(stage_tokens=1000, group=True, influence_model="finetune")
    s = MatesSettings(stage_tokens=1000, influence_model="finetune", finetune={"epochs": 2})
    assert s.finetune.epochs == 2 and s.finetune.lr == 5e-5 and s.finetune.chunk_length == 512
    # left out of dumps at their defaults: steps made before them keep their settings hash
    assert not {"influence_model", "finetune"} & set(MatesSettings(stage_tokens=1000).model_dump())
    # an influence model fine-tuned by an older assay is refused, not read as a frozen one
    old = MatesScorer(embedder="static", heads=("ridge",)).fit(
        real_texts[:20], np.arange(20.0), embeddings=np.random.default_rng(0).normal(size=(20, 4))
    )
    old.save(tmp_path / "old")
    (tmp_path / "old" / "head.json").write_text('{"head": "ridge", "finetuned": true}')
    with pytest.raises(StateError, match="no longer read"):
        load_scorer(tmp_path / "old")


def test_run_mates_with_the_finetuned_model(
    tmp_path: Path, demo_dir: Path, proxy_tokenizer, tiny_bert: Path
) -> None:
    seq = 64
    finetune = {**TINY, "encoder": str(tiny_bert), "epochs": 1, "batch_size": 8, "holdout": 0.25}
    res = run_mates(
        Corpus(demo_dir / "train"), tmp_path / "m", targets="assay_champ", max_targets=16,
        stage_tokens=16 * 8 * seq, stages=2, keep=0.3, probes=16, tokenizer=proxy_tokenizer,
        progress=False, train=mates_train_config(batch_size=8, seq_len=seq),
        influence_model="finetune", finetune=finetune, device="cpu",
    )  # fmt: skip
    s1 = res.stages[1]
    assert s1.method == "mates" and s1.kept_docs == round(0.3 * s1.pool_docs)
    assert s1.influence_model["head"]["head"] == "finetune"
    assert s1.influence_model["probes"] == 16 and s1.influence_model["holdout"] == 4
    scorer = load_scorer(tmp_path / "m" / "stage-1" / "scorer")
    assert isinstance(scorer, MatesFinetunedScorer) and scorer.chunk_length == 16
    assert scorer.device == "cpu"
    scores = pl.concat(
        [
            pl.read_parquet(f)
            for f in sorted((tmp_path / "m" / "stage-1" / "scores").glob("*.parquet"))
        ]
    )
    assert scores.height == s1.pool_docs and scores.get_column("mates").is_finite().all()
    assert res.config["finetune"]["encoder"] == str(tiny_bert)

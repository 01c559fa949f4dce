"""Per-document NLL, bits per byte, local lm-eval tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assay.common.lm import load_causal_lm
from assay.common.losses import document_nll, windows_of
from assay.common.tasks import build_tasks, champ_items, mmlu_dev_items
from assay.eval import evaluate_model
from assay.io.corpus import Corpus


def test_windows_predict_every_token_once() -> None:
    ids = list(range(10, 30))
    wins = windows_of(ids, 0, 8)
    assert wins[0].tolist() == [0, 10, 11, 12, 13, 14, 15, 16]
    assert all(len(w) <= 8 for w in wins)
    predicted = [t for w in wins for t in w[1:].tolist()]
    assert predicted == ids
    assert windows_of([5, 6], 0, 8)[0].tolist() == [0, 5, 6]


def test_document_nll_matches_a_plain_forward_and_ignores_batching(
    trained_proxy, proxy_tokenizer, real_texts: list[str]
) -> None:
    import torch
    import torch.nn.functional as F

    model = load_causal_lm(trained_proxy.model_dir)
    ids = [proxy_tokenizer.encode(t, add_special_tokens=False)[:100] for t in real_texts[:12]]
    bos = proxy_tokenizer.eos_token_id
    nll, count = document_nll(model, ids, bos_id=bos, seq_len=128, batch_tokens=4096)
    for k in (0, 5):
        x = torch.tensor([[bos, *ids[k]]])
        with torch.no_grad():
            logits = model(input_ids=x).logits
        expected = F.cross_entropy(logits[0, :-1], x[0, 1:], reduction="sum").item()
        assert nll[k] == pytest.approx(expected, rel=1e-4)
        assert count[k] == len(ids[k])
    small_batches, _ = document_nll(model, ids, bos_id=bos, seq_len=128, batch_tokens=100)
    assert np.allclose(small_batches, nll, rtol=1e-4)
    # long documents are cut into windows; the sum still counts every token once
    long_ids = [proxy_tokenizer.encode(real_texts[0], add_special_tokens=False)[:400]]
    _, n = document_nll(model, long_ids, bos_id=bos, seq_len=64)
    assert n[0] == 400


def test_task_items_are_real_and_well_formed() -> None:
    mmlu, champ = mmlu_dev_items(), champ_items()
    assert len(mmlu) >= 250 and len({i["subject"] for i in mmlu}) >= 50
    assert len(champ) >= 250
    for item in mmlu + champ:
        assert len(item["choices"]) == 4 and 0 <= item["answer"] < 4 and item["question"]
        assert len(set(item["choices"])) == 4 or item in mmlu  # MMLU has a few repeated options
    counts = np.bincount([i["answer"] for i in champ], minlength=4)
    assert counts.min() > 40  # answers are shuffled across positions


def test_evaluate_model_on_heldout_and_tasks(tmp_path: Path, trained_proxy, demo_dir: Path) -> None:
    build_tasks(tmp_path / "tasks")
    assert {p.name for p in (tmp_path / "tasks").iterdir()} >= {
        "assay_mmlu_dev.yaml",
        "assay_champ.yaml",
        "assay_task_metrics.py",
    }
    result = evaluate_model(
        trained_proxy.model_dir,
        heldout=Corpus(demo_dir / "heldout"),
        tasks=["assay_mmlu_dev", "assay_champ"],
        limit=24,
    )
    assert set(result["bpb"]) == {"code", "math", "news", "reference"}
    assert result["bpb"] == pytest.approx(trained_proxy.bpb, rel=1e-5)
    for task in ("assay_mmlu_dev", "assay_champ"):
        m = result["tasks"][task]
        assert m["n"] == 24
        assert 0 <= m["acc"] <= 1 and 0 <= m["acc_norm"] <= 1 and 0 < m["prob_norm"] < 1
        assert m["logprob"] < 0
    with pytest.raises(ValueError, match="unknown tasks"):
        evaluate_model(trained_proxy.model_dir, tasks=["hellaswag"])


def test_evaluation_runs_in_the_dtype_asked_for(
    tmp_path: Path, proxy_tokenizer, demo_dir: Path
) -> None:
    from assay.proxies.model import build_model, save_model

    folder = save_model(
        build_model("tiny", proxy_tokenizer.vocab_size, 64), tmp_path / "lm", proxy_tokenizer
    )
    heldout = Corpus(demo_dir / "heldout")
    kw = {"heldout": heldout, "eval_docs": 3, "seq_len": 64}
    full = evaluate_model(folder, **kw)
    half = evaluate_model(folder, device="cpu", dtype="bfloat16", **kw)
    assert full["bpb"].keys() == half["bpb"].keys() and full["bpb"] != half["bpb"]
    assert half["bpb"] == pytest.approx(full["bpb"], rel=1e-2)

"""Oracle-probe throughput: `assay.selection.mates.Prober` against raw torch + transformers, same run.

An oracle probe takes one AdamW step on one candidate from a checkpoint (optimizer state
included, gradients clipped) and measures the loss on reference examples. The official MATES
code reloads the checkpoint for every probe; the raw baseline here does the same with
transformers (`from_pretrained`), `torch.optim.AdamW.load_state_dict` and a plain loop over the
reference examples. `Prober` loads once and restores parameters and optimizer state in memory
after each probe. Both probe the same candidates from the same checkpoint, so their influence
values must agree (to float rounding: the reference loss is batched on one side, not the other).

Checkpoint: a tiny proxy (1.1M parameters, vocabulary 2,048) trained on 100k tokens of the demo
corpus with `keep_optimizer=True`. Reference: `--reference` assay_champ examples.

    python benchmarks/influence_probing.py [--probes 40] [--reference 32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import CACHE, demo_texts, emit

from assay.common.numerics import spearman
from assay.common.targets import load_targets
from assay.demo import build_demo_corpus
from assay.io.corpus import Corpus
from assay.workflows.mates_probing import Prober, ReferenceSet, encode_documents


def checkpoint(work: Path) -> tuple[Path, str]:
    from assay.common.tokenizer import train_tokenizer
    from assay.proxies.train import TrainConfig, train_proxy

    manifest = build_demo_corpus(CACHE / "demo", size="full")
    pool = Corpus(manifest["train"])
    tok = work / "tokenizer"
    if not (tok / "tokenizer.json").exists():
        train_tokenizer(pool, 2048, tok, seed=0)
    run = train_proxy(
        pool, "natural", 100_000, "tiny", 0, out_dir=work / "proxy", tokenizer=str(tok),
        config=TrainConfig(batch_size=8), keep_optimizer=True, progress=False,
    )  # fmt: skip
    return Path(run.out_dir), str(tok)


def raw_probe(run_dir: Path, seq: np.ndarray, ref: list[np.ndarray], lr: float) -> float:
    """The reload-per-probe oracle with the raw libraries: load, step once, measure."""
    import torch

    from assay.util.files import read_json

    cfg = read_json(run_dir / "run.json")["config"]
    model = raw_model(run_dir)
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": rest, "weight_decay": 0.0}],
        lr=lr, betas=(cfg["beta1"], cfg["beta2"]),
    )  # fmt: skip
    opt.load_state_dict(torch.load(run_dir / "state" / "optimizer.pt", weights_only=True))
    for g in opt.param_groups:
        g["lr"] = lr
    x = torch.as_tensor(seq[None, :].astype(np.int64))
    model(input_ids=x, labels=x).loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
    opt.step()
    return raw_reference_loss(model, ref)


def raw_reference_loss(model: object, ref: list[np.ndarray]) -> float:
    """Mean NLL per predicted token over the reference examples, one example at a time."""
    import torch
    import torch.nn.functional as F

    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for r in ref:
            y = torch.as_tensor(r[None, :].astype(np.int64))
            logits = model(input_ids=y).logits[0, :-1].float()
            total += float(F.cross_entropy(logits, y[0, 1:], reduction="sum"))
            count += len(r) - 1
    return total / count


def raw_model(run_dir: Path) -> object:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(run_dir / "model"), local_files_only=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--probes", type=int, default=40)
    ap.add_argument("--reference", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    args = ap.parse_args()
    import torch

    from assay.common.tokenizer import load_tokenizer

    work = CACHE / "influence-probing"
    run_dir, tok_dir = checkpoint(work)
    tok = load_tokenizer(tok_dir)
    ref_texts = load_targets("assay_champ", max_items=args.reference, seed=0)
    ref = ReferenceSet.from_texts(ref_texts, tok, args.seq_len)
    texts = demo_texts().sample(n=args.probes, seed=0).get_column("text").to_list()
    seqs = encode_documents(texts, tok, args.seq_len)

    t0 = time.perf_counter()
    prober = Prober.from_run(run_dir, ref)
    ours = prober.probe(seqs)
    t_ours = time.perf_counter() - t0  # the one load included

    ref_seqs = encode_documents(ref_texts, tok, args.seq_len)
    t0 = time.perf_counter()
    base = raw_reference_loss(raw_model(run_dir), ref_seqs)  # before any step, measured once
    raw = np.array([raw_probe(run_dir, s, ref_seqs, prober.lr) - base for s in seqs])
    t_raw = time.perf_counter() - t0
    emit(
        {
            "benchmark": "influence_probing",
            "probes": len(seqs),
            "reference_examples": len(ref),
            "reference_tokens": ref.n_tokens,
            "torch_threads": torch.get_num_threads(),
            "assay_probes_per_second": round(len(seqs) / t_ours, 2),
            "raw_reload_probes_per_second": round(len(seqs) / t_raw, 2),
            "speedup": round(t_raw / t_ours, 2),
            "max_abs_influence_difference": float(np.max(np.abs(raw - ours.influence))),
            "influence_spearman_assay_vs_raw": spearman(ours.influence, raw),
        }
    )


if __name__ == "__main__":
    main()

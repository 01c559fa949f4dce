"""Proxy training throughput: `train_proxy` vs a minimal hand-written PyTorch loop.

Both train the same model (same preset, initialisation, batch and sequence length) with AdamW on
the same packed sequences. The hand-written loop is the floor of overhead: forward with labels,
backward, clip, step, zero_grad. `train_proxy`'s loop adds accelerate, the LR schedule, loss
bookkeeping and the progress bar; its figure is its own in-loop tokens/s (set-up, evaluation and
saving are reported apart, as `end_to_end_seconds`). The two are interleaved to cancel drift in
this machine's speed. Target: >= 0.9x for the tiny and xs presets.

    python benchmarks/proxy_training.py [--steps 60] [--presets tiny,xs]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _common import emit

from assay.common.lm import count_parameters
from assay.common.mixture import Mixture
from assay.common.tokenizer import train_tokenizer
from assay.common.tokens import TokenCache
from assay.demo import build_demo_corpus
from assay.io.corpus import Corpus
from assay.proxies.data import pack_mixture
from assay.proxies.model import build_model, get_preset
from assay.proxies.train import train_proxy


def hand_loop(preset: str, vocab: int, data, steps: int, batch: int, seq_len: int) -> float:
    import torch

    model = build_model(preset, vocab, seq_len, seed=0)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    x_all = torch.from_numpy(data.astype("int64"))
    t0 = time.perf_counter()
    for step in range(steps):
        x = x_all[step * batch : (step + 1) * batch]
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * batch * seq_len / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--presets", default="tiny,xs")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="assay-bench-train-"))
    demo = Path("/tmp/assay-bench/demo")
    build_demo_corpus(demo, size="full")
    corpus = Corpus(demo / "train")
    results = {}
    for preset in args.presets.split(","):
        vocab = get_preset(preset).vocab_size
        tok = train_tokenizer(corpus, vocab, work / f"tok-{preset}")
        cache = TokenCache.build(corpus, tok, work / f"cache-{preset}")
        tokens = args.steps * args.batch * args.seq_len
        packed = pack_mixture(cache, Mixture.uniform(cache.domains), tokens, args.seq_len, seed=0)
        hand, ours, wall = [], [], []
        for r in range(args.repeats):
            hand.append(
                hand_loop(
                    preset, cache.vocab_size, packed.input_ids, args.steps, args.batch, args.seq_len
                )
            )
            out = work / f"run-{preset}-{r}"
            t0 = time.perf_counter()
            run = train_proxy(
                cache, Mixture.uniform(cache.domains), tokens, preset, 0, out_dir=out, tokenizer=tok,
                progress=False, batch_size=args.batch, seq_len=args.seq_len, warmup=0.0,
            )  # fmt: skip
            wall.append(time.perf_counter() - t0)
            ours.append(run.tokens_per_second)
            shutil.rmtree(out)
        params = count_parameters(build_model(preset, cache.vocab_size, args.seq_len))
        results[preset] = {
            "params": params["total"],
            "steps": args.steps,
            "batch": args.batch,
            "seq_len": args.seq_len,
            "hand_loop_tokens_per_s": round(max(hand)),
            "train_proxy_tokens_per_s": round(max(ours)),
            "ratio": round(max(ours) / max(hand), 3),
            "end_to_end_seconds": round(min(wall), 2),
        }
    emit({"benchmark": "proxy_training", "device": "cpu", "target_ratio": 0.9, "presets": results})
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

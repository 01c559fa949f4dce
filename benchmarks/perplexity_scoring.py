"""Perplexity scoring throughput: the scorer vs raw batched forward passes of the same model.

Raw = forward passes with the loss (`model(input_ids=x, labels=x)`, the library's own way to get
a perplexity) on pre-tokenized input packed into full windows of `seq_len`: no padding, no
per-document bookkeeping. Scorer = `PerplexityScorer.score_details(texts)` on real documents of
the demo corpus: tokenize, cut each document into windows, sort by length, batch under the same
token budget, forward, per-token loss, sum per document. Both count real (non-padding) tokens.
Also reported: raw forward passes that stop at the logits, which skip the normalising
logsumexp over the vocabulary (for a 5M model with an 8k vocabulary that is ~20% of the work, and
no perplexity can skip it). Runs are interleaved to cancel drift. Target: >= 0.9x raw.

    python benchmarks/perplexity_scoring.py [--preset xs] [--docs 400] [--smollm2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import demo_texts, emit

from assay.common.lm import smollm2_path
from assay.common.tokenizer import train_tokenizer
from assay.demo import build_demo_corpus
from assay.io.corpus import Corpus
from assay.proxies.model import build_model, save_model
from assay.selection.perplexity import PerplexityScorer


def raw_forward(model, ids: np.ndarray, seq_len: int, batch_tokens: int, with_loss: bool) -> float:
    import torch

    per_batch = max(1, batch_tokens // seq_len)
    windows = ids[: (len(ids) // seq_len) * seq_len].reshape(-1, seq_len)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for a in range(0, len(windows), per_batch):
            x = torch.from_numpy(windows[a : a + per_batch].astype(np.int64))
            if with_loss:
                model(input_ids=x, labels=x).loss.item()
            else:
                model(input_ids=x).logits.float()
    return windows.size / (time.perf_counter() - t0)


def measure(
    scorer: PerplexityScorer, texts: list[str], seq_len: int, batch_tokens: int, repeats: int
) -> dict:
    scorer._load()
    tok, model = scorer._tokenizer, scorer._model
    ids = np.concatenate(
        [np.asarray(tok.encode(t, add_special_tokens=False), dtype=np.int64) for t in texts]
    )
    scorer.score(texts[:8])  # warm up
    raw, logits_only, ours = [], [], []
    for _ in range(repeats):
        raw.append(raw_forward(model, ids, seq_len, batch_tokens, with_loss=True))
        logits_only.append(raw_forward(model, ids, seq_len, batch_tokens, with_loss=False))
        t0 = time.perf_counter()
        details = scorer.score_details(texts)
        ours.append(details["tokens"].sum() / (time.perf_counter() - t0))
    return {
        "docs": len(texts),
        "tokens": int(details["tokens"].sum()),
        "raw_forward_with_loss_tokens_per_s": round(max(raw)),
        "raw_forward_logits_only_tokens_per_s": round(max(logits_only)),
        "scorer_tokens_per_s": round(max(ours)),
        "ratio": round(max(ours) / max(raw), 3),
        "ratio_vs_logits_only": round(max(ours) / max(logits_only), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="xs")
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--smollm2", action="store_true", help="also measure SmolLM2-135M (slow: ~300 tokens/s)"
    )
    args = ap.parse_args()

    texts = demo_texts().sample(args.docs, seed=0).get_column("text").to_list()
    work = Path(tempfile.mkdtemp(prefix="assay-bench-ppl-"))
    demo = Path("/tmp/assay-bench/demo")
    build_demo_corpus(demo, size="full")
    tok = train_tokenizer(Corpus(demo / "train"), 8192, work / "tok")
    save_model(build_model(args.preset, len(tok), args.seq_len), work / "model", tok)
    scorer = PerplexityScorer(
        str(work / "model"), seq_len=args.seq_len, batch_tokens=args.batch_tokens
    )
    results = {
        f"proxy_{args.preset}": measure(
            scorer, texts, args.seq_len, args.batch_tokens, args.repeats
        )
    }
    if args.smollm2:
        folder, gguf = smollm2_path()
        big = PerplexityScorer(folder, gguf_file=gguf, seq_len=args.seq_len, batch_tokens=2048)
        results["smollm2_135m"] = measure(big, texts[:40], args.seq_len, 2048, 1)
    emit(
        {"benchmark": "perplexity_scoring", "device": "cpu", "target_ratio": 0.9, "models": results}
    )


if __name__ == "__main__":
    main()

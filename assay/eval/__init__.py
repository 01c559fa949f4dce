"""Evaluation of models: per-domain bits per byte, and benchmark tasks through lm-eval."""

from __future__ import annotations

import os
from typing import Any


def evaluate_model(
    model: str | os.PathLike,
    *,
    heldout: Any = None,
    tasks: list[str] | tuple[str, ...] = (),
    gguf_file: str | None = None,
    eval_docs: int | None = 200,
    limit: int | None = None,
    seq_len: int = 256,
    group_by: str | None = "domain",
    batch_tokens: int = 8192,
    device: str | None = "auto",
    dtype: str | None = "auto",
) -> dict[str, Any]:
    """Load a local model (on `device` in `dtype`: by default a GPU in bfloat16 when there is
    one, else the CPU in float32) and report held-out bits per byte per group and lm-eval task
    metrics."""
    from assay.common.lm import count_parameters, load_causal_lm
    from assay.common.losses import build_eval_set, evaluate_bpb, mean_bpb
    from assay.common.tokenizer import load_tokenizer

    lm = load_causal_lm(model, gguf_file, dtype=dtype, device=device)
    tok = load_tokenizer(model, gguf_file)
    limit_len = int(
        getattr(lm.config, "max_position_embeddings", None)
        or getattr(lm.config, "n_positions", seq_len)
    )
    out: dict[str, Any] = {"model": str(model), "params": count_parameters(lm)}
    if heldout is not None:
        evalset = build_eval_set(
            heldout, tok, min(seq_len, limit_len), group_by=group_by, max_docs_per_group=eval_docs
        )
        per_group = evaluate_bpb(lm, evalset, batch_tokens=batch_tokens)
        out["bpb"] = {g: v["bpb"] for g, v in per_group.items()}
        out["bpb_mean"] = mean_bpb(per_group)
        out["heldout"] = per_group
    if tasks:
        from assay.common.harness import evaluate

        out["tasks"] = evaluate(lm, tok, list(tasks), limit=limit)
    return out

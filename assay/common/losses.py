"""Held-out loss and bits per byte, per document and per domain.

Bits per byte (total negative log-likelihood in bits / UTF-8 bytes of the text) is what compares
across tokenizers: loss per token does not, since a larger vocabulary packs more bytes into a
token. Every document is scored on its own: it starts from an EOS token as context, long
documents are cut into windows of `seq_len` whose first token is the last of the window before,
so each token is predicted exactly once and no document sees another's text.

Windows are sorted by length and batched under a token budget (length bucketing), so almost no
compute goes to padding; the same code serves proxy evaluation and the perplexity scorer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.errors import InputError

LN2 = math.log(2.0)


def windows_of(ids: Sequence[int], bos_id: int, seq_len: int) -> list[np.ndarray]:
    """Cut [bos] + ids into windows of at most seq_len; consecutive windows share one token."""
    seq = np.asarray([bos_id, *ids], dtype=np.int64)
    if len(seq) <= seq_len:
        return [seq]
    step = seq_len - 1
    return [seq[a : a + seq_len] for a in range(0, len(seq) - 1, step)]


def document_nll(
    model: Any,
    token_ids: Sequence[Sequence[int]],
    *,
    bos_id: int,
    seq_len: int,
    batch_tokens: int = 8192,
    device: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Summed negative log-likelihood (nats) and number of predicted tokens, per document."""
    import torch

    wins: list[np.ndarray] = []
    owner: list[int] = []
    for d, ids in enumerate(token_ids):
        for w in windows_of(ids, bos_id, seq_len):
            wins.append(w)
            owner.append(d)
    nll = np.zeros(len(token_ids), dtype=np.float64)
    count = np.zeros(len(token_ids), dtype=np.int64)
    if not wins:
        return nll, count
    lengths = np.fromiter((len(w) for w in wins), dtype=np.int64, count=len(wins))
    order = np.argsort(-lengths, kind="stable")
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            i = 0
            while i < len(order):
                longest = int(lengths[order[i]])
                n = max(1, batch_tokens // longest)
                idx = order[i : i + n]
                i += n
                batch = np.zeros((len(idx), longest), dtype=np.int64)
                target = np.full((len(idx), longest), -1, dtype=np.int64)  # -1: no target
                for r, j in enumerate(idx):
                    batch[r, : lengths[j]] = wins[j]
                    target[r, : lengths[j] - 1] = wins[j][1:]
                x = torch.from_numpy(batch).to(device)
                y = torch.from_numpy(target).to(device)
                # No attention mask: padding is on the right and attention is causal, so real
                # tokens never see it, and SDPA keeps its fast is_causal path.
                logits = model(input_ids=x).logits.float()
                # -log p(y) = logsumexp(logits) - logits[y]: no shifted copy of the logits and no
                # full log-softmax tensor (both cost as much as the forward of a small model).
                picked = logits.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
                token_nll = (torch.logsumexp(logits, dim=-1) - picked) * (y >= 0)
                loss = token_nll.sum(dim=1).cpu().numpy()
                for r, j in enumerate(idx):
                    nll[owner[j]] += loss[r]
                    count[owner[j]] += lengths[j] - 1
    finally:
        model.train(was_training)
    return nll, count


@dataclass
class EvalSet:
    """Held-out documents, tokenized, grouped by domain (built once, evaluated many times)."""

    token_ids: dict[str, list[list[int]]]
    n_bytes: dict[str, np.ndarray]
    bos_id: int
    seq_len: int

    @property
    def domains(self) -> list[str]:
        return sorted(self.token_ids)


def build_eval_set(
    corpus: Any,
    tokenizer: Any,
    seq_len: int,
    *,
    group_by: str | None = "domain",
    max_docs_per_group: int | None = None,
    seed: int = 0,
) -> EvalSet:
    """Tokenize a held-out corpus; at most `max_docs_per_group` documents (a seeded sample) each."""
    import polars as pl

    from assay.common.tokens import backend_tokenizer

    frames = list(corpus.iter_batches())
    if not frames:
        raise InputError("the held-out corpus has no documents")
    df = pl.concat(frames, how="diagonal_relaxed")
    key = group_by if group_by and group_by in df.columns else None
    groups = (
        df.get_column(key).cast(pl.String).fill_null("(none)")
        if key
        else pl.repeat("all", df.height, eager=True)
    )
    df = df.with_columns(groups.alias("_group"))
    backend = backend_tokenizer(tokenizer)
    bos = (
        tokenizer.bos_token_id
        if getattr(tokenizer, "bos_token_id", None) is not None
        else tokenizer.eos_token_id
    )
    token_ids: dict[str, list[list[int]]] = {}
    n_bytes: dict[str, np.ndarray] = {}
    for (g,), part in df.group_by("_group", maintain_order=True):
        if max_docs_per_group and part.height > max_docs_per_group:
            part = part.sample(max_docs_per_group, seed=seed)
        texts = part.get_column("text").to_list()
        token_ids[str(g)] = [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
        n_bytes[str(g)] = part.get_column("text").str.len_bytes().to_numpy().astype(np.int64)
    return EvalSet(token_ids, n_bytes, int(bos), seq_len)


def evaluate_bpb(
    model: Any, evalset: EvalSet, *, batch_tokens: int = 8192, device: Any = None
) -> dict[str, dict[str, float]]:
    """Per domain: loss per token (nats), bits per byte, tokens, bytes and documents."""
    out: dict[str, dict[str, float]] = {}
    for g in evalset.domains:
        nll, count = document_nll(
            model,
            evalset.token_ids[g],
            bos_id=evalset.bos_id,
            seq_len=evalset.seq_len,
            batch_tokens=batch_tokens,
            device=device,
        )
        total_bytes = int(evalset.n_bytes[g].sum())
        out[g] = {
            "loss": float(nll.sum() / max(count.sum(), 1)),
            "bpb": float(nll.sum() / LN2 / max(total_bytes, 1)),
            "tokens": int(count.sum()),
            "bytes": total_bytes,
            "docs": len(evalset.token_ids[g]),
        }
    return out


def mean_bpb(per_domain: dict[str, dict[str, float]]) -> float:
    """Byte-weighted bits per byte over all domains."""
    nll_bits = sum(v["bpb"] * v["bytes"] for v in per_domain.values())
    return nll_bits / max(sum(v["bytes"] for v in per_domain.values()), 1)


def unigram_bpb(
    train_tokens: np.ndarray, vocab_size: int, evalset: EvalSet
) -> dict[str, dict[str, float]]:
    """Bits per byte of an add-one-smoothed unigram model of the training tokens (a baseline)."""
    counts = (
        np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size).astype(
            np.float64
        )
        + 1.0
    )
    logp = np.log(counts / counts.sum())
    out: dict[str, dict[str, float]] = {}
    for g in evalset.domains:
        ids = [t for doc in evalset.token_ids[g] for t in doc]
        nll = float(-logp[np.asarray(ids, dtype=np.int64)].sum()) if ids else 0.0
        b = int(evalset.n_bytes[g].sum())
        out[g] = {
            "loss": nll / max(len(ids), 1),
            "bpb": nll / LN2 / max(b, 1),
            "tokens": len(ids),
            "bytes": b,
            "docs": len(evalset.token_ids[g]),
        }
    return out

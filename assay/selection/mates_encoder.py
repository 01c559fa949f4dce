"""The network of MATES' fine-tuned data influence model and its training loop (torch).

As in the official code (cxcscmu/MATES, `modeling_data_influence_model.py`): a document is
tokenized by the encoder's tokenizer and truncated to `max_length` tokens ([CLS] first, [SEP]
last), cut into chunks of `chunk_length` tokens (the second and later chunks start mid-text,
without a [CLS], and their positions start again at 0), every chunk is run through the encoder
on its own, and the last hidden states of *all* the document's tokens are averaged (one mean
over the whole document, not a mean of chunk means); dropout (the encoder's
`classifier_dropout`, else `hidden_dropout_prob`) and a linear layer give the prediction. The
official code pads every document to 1,024 tokens and always runs two chunks; a chunk that is
only padding adds nothing to the mean, so chunks are made only where there are tokens, and a
batch is padded to its longest chunk (padding does not change BERT's outputs for the real
tokens).

Training (`fine_tune`) follows the official `TrainingArguments`: AdamW (betas 0.9/0.999,
eps 1e-8, weight decay on everything but biases and LayerNorm weights), a linear decay of the
learning rate to 0 after an optional linear warmup, gradients clipped to norm 1, MSE on the
z-scored influence, an evaluation of the held-out Spearman correlation every `eval_every`
optimizer steps (and after the last), and the parameters of the best evaluation kept (the
official `load_best_model_at_end` with `metric_for_best_model="spearman"`). With a bfloat16 or
float16 `dtype` the forward passes run under autocast in it (the official `bf16=True`); the
weights stay float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assay.common.numerics import spearman
from assay.errors import ConfigError, InputError, MissingError


def encoder_folder(path: str | Path) -> Path:
    """A local Hugging Face model folder (nothing is downloaded)."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise MissingError(
            f"no encoder folder at {folder} (no config.json): give a local Hugging Face model "
            "folder (a BERT-class encoder and its tokenizer; nothing is downloaded)"
        )
    return folder


def load_encoder(path: str | Path, chunk_length: int) -> tuple[Any, Any]:
    """(tokenizer, encoder) from a local folder, the encoder in float32 on the CPU; refuses a
    chunk longer than the encoder's positions."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = encoder_folder(path)
    common = {"local_files_only": True, "trust_remote_code": False}
    tokenizer = AutoTokenizer.from_pretrained(str(folder), **common)
    encoder = AutoModel.from_pretrained(str(folder), **common)  # its pooler is not used
    positions = getattr(encoder.config, "max_position_embeddings", None)
    if positions is not None and chunk_length > positions:
        raise ConfigError(
            f"chunk_length {chunk_length} is longer than the {positions} positions of the encoder "
            f"{folder}; use chunks of at most {positions} tokens"
        )
    if tokenizer.pad_token_id is None:
        raise InputError(f"the tokenizer of {folder} has no padding token")
    return tokenizer, encoder


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text, with the tokenizer's special tokens, truncated to `max_length`."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    return [list(ids) for ids in enc["input_ids"]]


def chunks(ids: Sequence[int], chunk_length: int) -> list[Sequence[int]]:
    """A document's token ids cut into consecutive chunks of `chunk_length` (the last shorter)."""
    return [ids[a : a + chunk_length] for a in range(0, max(len(ids), 1), chunk_length)]


def make_regressor(encoder: Any, seed: int) -> Any:
    """The encoder with dropout and a linear head, the head initialised as BERT initialises
    its linear layers (normal, std `initializer_range`; zero bias), seeded."""
    import torch

    class ChunkedRegressor(torch.nn.Module):
        """Encoder -> mean over every token of a document's chunks -> dropout -> linear."""

        def __init__(self, encoder: Any) -> None:
            super().__init__()
            cfg = encoder.config
            p = getattr(cfg, "classifier_dropout", None)
            p = p if p is not None else getattr(cfg, "hidden_dropout_prob", 0.1)
            self.encoder = encoder
            self.dropout = torch.nn.Dropout(p)
            self.head = torch.nn.Linear(int(cfg.hidden_size), 1)

        def pooled(self, batch: dict[str, Any]) -> Any:
            """(documents x hidden) mean of the last hidden states of each document's tokens."""
            mask = batch["attention_mask"]
            out = self.encoder(
                input_ids=batch["input_ids"],
                attention_mask=mask,
                token_type_ids=batch["token_type_ids"],
            ).last_hidden_state.float()
            m = mask.to(out.dtype)
            per_chunk = (out * m[..., None]).sum(dim=1)
            n_docs, doc = batch["n_docs"], batch["doc"]
            sums = per_chunk.new_zeros((n_docs, out.shape[-1])).index_add_(0, doc, per_chunk)
            counts = m.new_zeros(n_docs).index_add_(0, doc, m.sum(dim=1))
            return sums / counts[:, None]

        def forward(self, batch: dict[str, Any]) -> Any:
            return self.head(self.dropout(self.pooled(batch)))[:, 0]

    std = float(getattr(encoder.config, "initializer_range", 0.02))
    model = ChunkedRegressor(encoder)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=g) * std)
        model.head.bias.zero_()
    return model


def collate(docs: Sequence[Sequence[int]], chunk_length: int, pad: int, device: Any) -> dict:
    """A batch of documents' token ids as padded chunks: input_ids, attention_mask,
    token_type_ids (chunks x longest chunk), `doc` (each chunk's document) and `n_docs`."""
    import torch

    parts = [(j, c) for j, ids in enumerate(docs) for c in chunks(ids, chunk_length)]
    width = max(len(c) for _, c in parts)
    ids = np.full((len(parts), width), pad, dtype=np.int64)
    mask = np.zeros((len(parts), width), dtype=np.int64)
    for r, (_, c) in enumerate(parts):
        ids[r, : len(c)] = c
        mask[r, : len(c)] = 1
    doc = np.fromiter((j for j, _ in parts), dtype=np.int64, count=len(parts))
    return {
        "input_ids": torch.from_numpy(ids).to(device),
        "attention_mask": torch.from_numpy(mask).to(device),
        "token_type_ids": torch.zeros((len(parts), width), dtype=torch.long, device=device),
        "doc": torch.from_numpy(doc).to(device),
        "n_docs": len(docs),
    }


def autocast(device: str, dtype: str) -> Any:
    """Autocast in `dtype` for a bfloat16 or float16 setting (weights stay float32)."""
    import contextlib

    import torch

    if dtype == "float32":
        return contextlib.nullcontext()
    kind = "cuda" if device.startswith("cuda") else device
    return torch.autocast(kind, dtype=getattr(torch, dtype))


def predict(
    model: Any,
    docs: Sequence[Sequence[int]],
    *,
    chunk_length: int,
    pad: int,
    batch_size: int,
    device: str,
    dtype: str,
) -> np.ndarray:
    """The model's predictions (float64) for tokenized documents, run `batch_size` documents at
    a time in order of length (eval mode, no gradients)."""
    import torch

    out = np.empty(len(docs), dtype=np.float64)
    order = np.argsort(np.fromiter(map(len, docs), np.int64, len(docs)), kind="stable")
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(device, dtype):
        for a in range(0, len(order), batch_size):
            rows = order[a : a + batch_size]
            batch = collate([docs[i] for i in rows], chunk_length, pad, device)
            out[rows] = model(batch).float().cpu().numpy()
    model.train(was_training)
    return out


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on every parameter but biases and LayerNorm weights (as the HF Trainer)."""
    import torch

    norms = {
        f"{name}.{p}" if name else p
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.LayerNorm) or "LayerNorm" in type(module).__name__
        for p, _ in module.named_parameters(recurse=False)
    }
    decay, rest = [], []
    for name, param in model.named_parameters():
        (rest if name in norms or name.endswith("bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _schedule(total: int, warmup: float) -> Callable[[int], float]:
    """The linear schedule of the HF Trainer: up over ceil(warmup x total) steps, then down
    to 0 at `total`."""
    warm = math.ceil(warmup * total)

    def factor(step: int) -> float:
        if step < warm:
            return step / max(1, warm)
        return max(0.0, (total - step) / max(1, total - warm))

    return factor


def fine_tune(
    model: Any,
    train: tuple[Sequence[Sequence[int]], np.ndarray],
    heldout: tuple[Sequence[Sequence[int]], np.ndarray],
    settings: Any,
    *,
    pad: int,
    device: str,
    dtype: str,
    seed: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train `model` on (token ids, z-scored influence) and load into it the parameters of the
    evaluation with the best held-out Spearman; returns that evaluation (with its held-out
    predictions, `_pred`) and every evaluation's record (step, epoch, spearman, mse, loss)."""
    import torch
    import torch.nn.functional as F

    s, (docs, y) = settings, train
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(
        _param_groups(model, s.weight_decay), lr=s.lr, betas=(0.9, 0.999), eps=1e-8
    )
    per_epoch = math.ceil(len(docs) / s.batch_size)
    total = per_epoch * s.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(total, s.warmup))
    scaler = torch.amp.GradScaler(enabled=dtype == "float16")
    target = torch.tensor(y, dtype=torch.float32, device=device)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    step, losses = 0, []
    model.to(device).train()
    for epoch in range(1, s.epochs + 1):
        order = rng.permutation(len(docs))
        for a in range(0, len(order), s.batch_size):
            rows = order[a : a + s.batch_size]
            with autocast(device, dtype):
                pred = model(collate([docs[i] for i in rows], s.chunk_length, pad, device))
            loss = F.mse_loss(pred.float(), target[torch.from_numpy(rows).to(device)])
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            due = step % s.eval_every == 0 if s.eval_every else a + s.batch_size >= len(order)
            if due or step == total:
                record = _evaluate(model, heldout, s, pad, device, dtype)
                record.update(step=step, epoch=epoch, loss=float(np.mean(losses)))
                losses = []
                history.append({k: v for k, v in record.items() if k != "_pred"})
                if not best or _rank(record["spearman"]) > _rank(best["spearman"]):
                    state = {
                        k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                    }
                    best = {**record, "_state": state}
    model.load_state_dict(best.pop("_state"))
    model.eval()
    return best, history


def _evaluate(
    model: Any, heldout: tuple[Sequence[Sequence[int]], np.ndarray], s: Any, pad: int,
    device: str, dtype: str,
) -> dict[str, Any]:  # fmt: skip
    docs, y = heldout
    pred = predict(
        model, docs, chunk_length=s.chunk_length, pad=pad, batch_size=s.batch_size,
        device=device, dtype=dtype,
    )  # fmt: skip
    return {"spearman": spearman(pred, y), "mse": float(np.mean((pred - y) ** 2)), "_pred": pred}


def _rank(rho: float) -> float:
    return -math.inf if math.isnan(rho) else rho

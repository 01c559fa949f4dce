"""MATES' oracle: one optimizer step per probe document from the proxy's state, the change of the
reference loss, restored in memory."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assay.common.lm import check_device
from assay.common.tokens import backend_tokenizer
from assay.errors import ConfigError, InputError, StateError
from assay.util.files import read_json

#: Fewest reference examples: with fewer, a one-step loss change is mostly the noise of a few
#: examples (the paper uses 1,024 LAMBADA examples; Group-MATES 128).
MIN_REFERENCE = 8


def _eos_id(tokenizer: Any) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise InputError("the tokenizer has no EOS token")
    return int(eos)


def encode_documents(texts: Sequence[str], tokenizer: Any, seq_len: int) -> list[np.ndarray]:
    """Each text as one training sequence: EOS (as context, like a document start in a packed
    stream) followed by its tokens, cut to `seq_len`. Every sequence has at least 2 tokens."""
    eos = _eos_id(tokenizer)
    enc = backend_tokenizer(tokenizer).encode_batch(list(texts), add_special_tokens=False)
    out = []
    for e in enc:
        ids = np.asarray([eos, *e.ids[: seq_len - 1]], dtype=np.int64)
        if len(ids) < 2:
            ids = np.asarray([eos, eos], dtype=np.int64)
        out.append(ids)
    return out


def encode_pairs(
    pairs: Sequence[tuple[str, str]], tokenizer: Any, seq_len: int
) -> tuple[list[np.ndarray], list[int]]:
    """(context, continuation) pairs as training sequences and the number of leading tokens of
    each that are context (EOS included). As the official code's `encode_pair`: the whole text
    (`pair_text`) is tokenized once and the tokens past those of the context alone are the
    continuation; the sequence is cut to `seq_len` like `encode_documents` (a continuation cut
    off scores nothing)."""
    from assay.common.targets import pair_text

    eos = _eos_id(tokenizer)
    backend = backend_tokenizer(tokenizer)
    whole = backend.encode_batch([pair_text(c, t) for c, t in pairs], add_special_tokens=False)
    ctx = backend.encode_batch([c for c, _ in pairs], add_special_tokens=False)
    seqs, context = [], []
    for w, c in zip(whole, ctx, strict=True):
        ids = np.asarray([eos, *w.ids[: seq_len - 1]], dtype=np.int64)
        if len(ids) < 2:
            ids = np.asarray([eos, eos], dtype=np.int64)
        seqs.append(ids)
        context.append(min(1 + len(c.ids), len(ids)))
    return seqs, context


#: reference examples per batch whose mean loss per scored token the official code averages
OFFICIAL_REF_BATCH = 32


@dataclass
class ReferenceSet:
    """Tokenized reference (target) examples, batched by length for the loss computation.

    `context` (optional): how many leading tokens of each sequence are context; they condition
    the model but their predictions are not scored. With it, the reference loss is the official
    code's: the mean loss per scored token within each group of `OFFICIAL_REF_BATCH`
    consecutive examples (its evaluation batches), averaged over the groups. Without it, every
    token but the first is scored and the loss is the mean over all of them."""

    sequences: list[np.ndarray]
    context: list[int] | None = None

    def __post_init__(self) -> None:
        if len(self.sequences) < MIN_REFERENCE:
            raise InputError(
                f"the reference set has {len(self.sequences)} examples; MATES needs at least "
                f"{MIN_REFERENCE} to measure a loss change that is more than the noise of a few "
                "examples (the paper uses 1,024)"
            )
        if self.context is not None:
            if len(self.context) != len(self.sequences):
                raise InputError(
                    f"{len(self.context)} context lengths for {len(self.sequences)} examples"
                )
            if self.n_tokens == 0:
                raise InputError(
                    "no reference example has a continuation token left to score (each is cut "
                    "to seq_len tokens): use a longer seq_len or shorter contexts"
                )

    @classmethod
    def from_texts(cls, texts: Sequence[str], tokenizer: Any, seq_len: int) -> ReferenceSet:
        texts = [t for t in texts if t and t.strip()]
        return cls(encode_documents(texts, tokenizer, seq_len))

    @classmethod
    def from_pairs(
        cls, pairs: Sequence[tuple[str, str]], tokenizer: Any, seq_len: int
    ) -> ReferenceSet:
        """(context, continuation) pairs: only the continuation's tokens are scored."""
        pairs = [(c, t) for c, t in pairs if t and t.strip()]
        return cls(*encode_pairs(pairs, tokenizer, seq_len))

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def n_tokens(self) -> int:
        """Scored tokens (each sequence predicts all but its first token, or its continuation)."""
        if self.context is None:
            return int(sum(len(s) - 1 for s in self.sequences))
        return int(
            sum(len(s) - max(c, 1) for s, c in zip(self.sequences, self.context, strict=True))
        )

    def batches(self, batch_size: int, device: Any = None) -> ReferenceBatches:
        """(input_ids, labels) tensors, longest first, padded per batch (labels -100 on padding
        and on context), with each batch's example indices."""
        import torch

        lengths = np.array([len(s) for s in self.sequences])
        order = np.argsort(-lengths, kind="stable")
        out, rows = [], []
        for a in range(0, len(order), batch_size):
            idx = order[a : a + batch_size]
            width = int(lengths[idx].max())
            x = np.zeros((len(idx), width), dtype=np.int64)
            y = np.full((len(idx), width), -100, dtype=np.int64)
            for r, j in enumerate(idx):
                s = self.sequences[j]
                x[r, : len(s)] = s
                y[r, : len(s)] = s
                if self.context is not None:
                    y[r, : self.context[j]] = -100
            out.append((torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)))
            rows.append(idx)
        groups = None if self.context is None else np.arange(len(self)) // OFFICIAL_REF_BATCH
        return ReferenceBatches(out, rows, groups)


@dataclass
class ReferenceBatches:
    """A reference set's padded batches; `groups` (example -> group, or None) selects the
    official per-group reduction of `reference_loss`."""

    batches: list[tuple[Any, Any]]
    rows: list[np.ndarray]
    groups: np.ndarray | None = None

    def __iter__(self) -> Any:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def default_ref_batch_size(device: Any) -> int:
    """Reference examples per forward pass: 8 on CPU (larger padded batches were slower on a
    2-core CPU: 16 examples took 44 ms in batches of 8, 75 ms in one batch), 32 on a GPU (the
    paper's)."""
    return 32 if str(device).startswith("cuda") else 8


def reference_loss(model: Any, batches: ReferenceBatches | Sequence[tuple[Any, Any]]) -> float:
    """Negative log-likelihood (nats) of the scored reference tokens: the mean per token over
    all of them, or, for a set with context (`batches.groups`), the official code's mean over
    groups of each group's mean per scored token."""
    groups = getattr(batches, "groups", None)
    was_training = model.training
    model.eval()
    try:
        if groups is None:
            return _token_mean_loss(model, batches)
        return _group_mean_loss(model, batches, groups)
    finally:
        model.train(was_training)


def _token_mean_loss(model: Any, batches: Any) -> float:
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    with torch.inference_mode():
        for x, y in batches:
            logits = model(input_ids=x).logits.float()
            target = y[:, 1:]
            nll = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                target.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total += float(nll)
            count += int((target != -100).sum())
    return total / max(count, 1)


def _group_mean_loss(model: Any, batches: ReferenceBatches, groups: np.ndarray) -> float:
    """Per-example sums of the scored tokens' loss, then per group (sum / tokens), then the
    mean over groups with a scored token (the official evaluate(): cross-entropy averaged over
    the scored tokens of each batch of 32, then over the batches)."""
    import torch
    import torch.nn.functional as F

    n = len(groups)
    nll = np.zeros(n, dtype=np.float64)
    count = np.zeros(n, dtype=np.int64)
    with torch.inference_mode():
        for (x, y), rows in zip(batches.batches, batches.rows, strict=True):
            logits = model(input_ids=x).logits.float()
            target = y[:, 1:]
            per_token = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                target.reshape(-1),
                ignore_index=-100,
                reduction="none",
            ).view(target.shape)
            nll[rows] = per_token.double().sum(dim=1).cpu().numpy()
            count[rows] = (target != -100).sum(dim=1).cpu().numpy()
    k = int(groups.max()) + 1
    g_nll = np.bincount(groups, weights=nll, minlength=k)
    g_count = np.bincount(groups, weights=count, minlength=k)
    scored = g_count > 0
    return float(np.mean(g_nll[scored] / g_count[scored])) if scored.any() else 0.0


@dataclass
class ProbeResult:
    """Oracle influence of each probed candidate, and how the probing went."""

    influence: np.ndarray  # L_ref after the step - L_ref before it (negative = helps)
    loss_after: np.ndarray
    base_loss: float
    lr: float
    seconds: float
    reference_examples: int
    reference_tokens: int
    workers: int = 1
    trajectory_length: int = 1  # > 1: Group-MATES rollouts, influence = per-step increments

    @property
    def probes_per_second(self) -> float:
        return len(self.influence) / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        inf = self.influence
        return {
            "probes": len(inf),
            "seconds": round(self.seconds, 3),
            "probes_per_second": round(self.probes_per_second, 2),
            "workers": self.workers,
            "trajectory_length": self.trajectory_length,
            "lr": self.lr,
            "base_reference_loss": self.base_loss,
            "reference_examples": self.reference_examples,
            "reference_tokens": self.reference_tokens,
            "influence_mean": float(inf.mean()) if len(inf) else None,
            "influence_std": float(inf.std()) if len(inf) else None,
            "helpful_fraction": float((inf < 0).mean()) if len(inf) else None,
        }


class Prober:
    """One optimizer step per candidate from a fixed training state, undone in memory.

    The model keeps float32 weights on `device`; the probe's training step runs under autocast
    in `dtype` ("auto": bfloat16 on a CUDA GPU, float32 on the CPU, as `train_proxy` trains), and
    the reference loss in float32 (a one-step change is smaller than bfloat16's rounding).

    At construction the parameters and every optimizer state tensor (AdamW's exp_avg,
    exp_avg_sq and step) are copied once; after each probe they are copied back with `copy_`
    and the gradients dropped, which leaves model and optimizer bit-identical to the loaded
    checkpoint. `probe` returns `L_ref(theta + delta_x) - L_ref(theta)` per candidate.

    >>> prober = Prober.from_run("runs/mates/stage-0/proxy", reference)
    >>> result = prober.probe(encode_documents(texts, tokenizer, seq_len))
    """

    def __init__(
        self,
        model: Any,
        optimizer: Any,
        reference: ReferenceSet,
        *,
        lr: float,
        grad_clip: float = 1.0,
        ref_batch_size: int | None = None,
        device: Any = None,
        dtype: str | None = None,
    ):
        import torch

        from assay.common.lm import resolve_dtype

        self.model, self.optimizer, self.reference = model, optimizer, reference
        self.lr, self.grad_clip = float(lr), float(grad_clip)
        self.device = device or next(model.parameters()).device
        self.precision = resolve_dtype(dtype, str(self.device))
        self.ref_batch_size = ref_batch_size or default_ref_batch_size(self.device)
        if self.ref_batch_size < 1:
            raise ConfigError("ref_batch_size must be >= 1")
        self._ref_batches = reference.batches(self.ref_batch_size, self.device)
        self._params = [p for g in optimizer.param_groups for p in g["params"]]
        with torch.no_grad():
            self._saved_params = [p.detach().clone() for p in self._params]
            self._saved_state = [
                {
                    k: (v.detach().clone() if torch.is_tensor(v) else v)
                    for k, v in optimizer.state[p].items()
                }
                for p in self._params
            ]
        self._base: float | None = None

    @classmethod
    def from_run(
        cls,
        run_dir: str | os.PathLike,
        reference: ReferenceSet,
        *,
        ref_batch_size: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ) -> Prober:
        """Load a finished proxy run trained with `keep_optimizer=True` (model and optimizer) on
        `device` ("auto": a GPU when there is one); the step takes the learning rate its
        schedule gives the next global step, in `dtype` (see the class)."""
        from assay.common.lm import load_causal_lm, resolve_device
        from assay.proxies.checkpoint import has_training_state, load_training_state
        from assay.proxies.loop import TrainConfig, lr_at, make_optimizer

        run_dir = Path(run_dir)
        if not has_training_state(run_dir):
            raise StateError(
                f"{run_dir} is not a finished proxy run with optimizer state: train it with "
                "train_proxy(..., keep_optimizer=True) to probe it"
            )
        cfg = TrainConfig(**read_json(run_dir / "run.json")["config"])
        device = resolve_device(device)
        model = load_causal_lm(run_dir / "model", dtype="float32", device=device)
        model.train()
        optimizer = make_optimizer(model, cfg)
        state = load_training_state(run_dir, model, optimizer)
        total = int(state["schedule_total"])
        step = min(int(state["global_step"]), total - 1)
        lr = cfg.lr * lr_at(step, total, cfg)
        return cls(
            model,
            optimizer,
            reference,
            lr=lr,
            grad_clip=cfg.grad_clip,
            ref_batch_size=ref_batch_size,
            device=device,
            dtype=dtype,
        )

    def base_loss(self) -> float:
        """L_ref(theta) at the loaded state."""
        if self._base is None:
            self._base = reference_loss(self.model, self._ref_batches)
        return self._base

    def step(self, input_ids: np.ndarray) -> None:
        """One training step on one sequence (a batch of one), as train_proxy takes it."""
        import torch

        model, opt = self.model, self.optimizer
        model.train()
        for g in opt.param_groups:
            g["lr"] = self.lr
        x = torch.as_tensor(np.asarray(input_ids, dtype=np.int64)[None, :], device=self.device)
        if self.precision != "float32":
            kind = torch.device(self.device).type
            with torch.autocast(kind, dtype=getattr(torch, self.precision)):
                loss = model(input_ids=x, labels=x).loss
        else:
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self._params, self.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def restore(self) -> None:
        """Copy the saved parameters and optimizer state back (in place), drop gradients."""
        import torch

        with torch.no_grad():
            for p, saved in zip(self._params, self._saved_params, strict=True):
                p.copy_(saved)
                p.grad = None
            for p, saved in zip(self._params, self._saved_state, strict=True):
                state = self.optimizer.state[p]
                for k in [k for k in state if k not in saved]:
                    del state[k]
                for k, v in saved.items():
                    if torch.is_tensor(v) and torch.is_tensor(state.get(k)):
                        state[k].copy_(v)
                    else:
                        state[k] = v.clone() if torch.is_tensor(v) else v
                if not saved:
                    self.optimizer.state.pop(p, None)

    def probe(
        self,
        candidates: Sequence[np.ndarray],
        *,
        trajectory_length: int = 1,
        progress: bool = False,
    ) -> ProbeResult:
        """Oracle influence of each candidate sequence (token ids), restoring after each.

        With `trajectory_length` T > 1 (Group-MATES rollouts) consecutive groups of T candidates
        are trained one after another before the restore, and the influence of the t-th is the
        increment `L_ref(after t) - L_ref(after t-1)` (t = 0: minus the base loss)."""
        from assay.util.progress import ProgressBar

        T = int(trajectory_length)
        if T < 1 or len(candidates) % T:
            raise ConfigError(
                f"{len(candidates)} candidates do not make whole trajectories of {T} documents"
            )
        base = self.base_loss()
        after = np.zeros(len(candidates), dtype=np.float64)
        t0 = time.perf_counter()
        with ProgressBar(
            "probe", len(candidates), 0, "probes", enabled=progress, unit="probes"
        ) as bar:
            for a in range(0, len(candidates), T):
                for i in range(a, a + T):
                    self.step(candidates[i])
                    after[i] = reference_loss(self.model, self._ref_batches)
                    bar.update(advance=1)
                self.restore()
        return _result(after, base, T, self, time.perf_counter() - t0)


def _increments(after: np.ndarray, base: float, T: int) -> np.ndarray:
    """Per-step change of the reference loss within trajectories of T steps from `base`."""
    steps = after.reshape(-1, T)
    prev = np.concatenate([np.full((len(steps), 1), base), steps[:, :-1]], axis=1)
    return (steps - prev).reshape(-1)


def _result(after: np.ndarray, base: float, T: int, prober: Prober, seconds: float) -> ProbeResult:
    return ProbeResult(
        influence=_increments(after, base, T),
        loss_after=after,
        base_loss=base,
        lr=prober.lr,
        seconds=seconds,
        reference_examples=len(prober.reference),
        reference_tokens=prober.reference.n_tokens,
        trajectory_length=T,
    )


@dataclass
class _ProbeJob:
    run_dir: str
    reference: ReferenceSet
    candidates: list[np.ndarray]
    ref_batch_size: int | None
    trajectory_length: int
    device: str | None = None
    dtype: str | None = None


def _probe_job(job: _ProbeJob) -> dict[str, Any]:
    """One worker's share: load the checkpoint once, probe every candidate of the share."""
    prober = Prober.from_run(
        job.run_dir,
        job.reference,
        ref_batch_size=job.ref_batch_size,
        device=job.device,
        dtype=job.dtype,
    )
    r = prober.probe(job.candidates, trajectory_length=job.trajectory_length)
    return {"after": r.loss_after, "base": r.base_loss, "lr": r.lr}


def probe_run(
    run_dir: str | os.PathLike,
    candidates: Sequence[np.ndarray],
    reference: ReferenceSet,
    *,
    runner: Any = None,
    ref_batch_size: int | None = None,
    trajectory_length: int = 1,
    progress: bool = False,
    device: str | None = None,
    dtype: str | None = None,
) -> ProbeResult:
    """Oracle influence of `candidates` (token id sequences) at a finished run's final state,
    probed on `device` in `dtype` (see `Prober`).

    With a runner of several workers the candidates (whole trajectories when
    `trajectory_length` > 1) are split into contiguous shares, one per worker (`runner.map`);
    each worker loads the checkpoint once and probes its share. Every probe starts from the same
    state, so the values do not depend on the split (bit-identical in tests on CPU).
    """
    T = int(trajectory_length)
    if T < 1 or len(candidates) % T:
        raise ConfigError(
            f"{len(candidates)} candidates do not make whole trajectories of {T} documents"
        )
    n_traj = len(candidates) // T
    workers = int(getattr(runner, "workers", 1) or 1) if runner is not None else 1
    workers = max(1, min(workers, n_traj))
    if workers == 1:
        prober = Prober.from_run(
            run_dir, reference, ref_batch_size=ref_batch_size, device=device, dtype=dtype
        )
        return prober.probe(candidates, trajectory_length=T, progress=progress)
    bounds = np.linspace(0, n_traj, workers + 1).astype(int) * T
    jobs = [
        _ProbeJob(
            str(run_dir),
            reference,
            list(candidates[a:b]),
            ref_batch_size,
            T,
            device,
            dtype,
        )
        for a, b in itertools.pairwise(bounds)
    ]
    t0 = time.perf_counter()
    parts = runner.map(_probe_job, jobs, runs_on=check_device(device))
    after = np.concatenate([p["after"] for p in parts])
    base = parts[0]["base"]
    return ProbeResult(
        influence=_increments(after, base, T),
        loss_after=after,
        base_loss=base,
        lr=parts[0]["lr"],
        seconds=time.perf_counter() - t0,
        reference_examples=len(reference),
        reference_tokens=reference.n_tokens,
        workers=workers,
        trajectory_length=T,
    )

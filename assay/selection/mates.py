"""MATES: model-aware data selection with data influence models (Yu, Das, Xiong, NeurIPS 2024).

Pretraining runs in stages. Stage 0 trains on random data; at the end of every stage the current
proxy is *probed* and its preferences choose the next stage's data:

1. **Oracle influence** (`Prober`, `probe_run`). For each candidate x of a probe set, take one
   optimizer step on x alone from the current checkpoint (AdamW moments and step counts
   included, gradient clipping as in training, the learning rate of the schedule at that step)
   and measure the change of the loss on a reference set (the target task's examples):
   `I(x) = L_ref(theta + delta_x) - L_ref(theta)`; negative = x helps the target. The model and
   optimizer are restored in memory after every probe (parameters and optimizer state tensors
   are copied back from one snapshot: no reload from disk, which the official code does for
   every probe), and the reference loss is computed in padded, length-sorted batches.
2. **Data influence model** (`MatesScorer`). A regressor from document to z-scored influence:
   frozen sentence embeddings (the bundled MiniLM, or its static distillation) and a head chosen
   among ridge regressions (several alphas) and a small MLP by Spearman correlation on a
   held-out split of the probes (the paper keeps the best checkpoint by Spearman too), then
   refitted on all probes. `score()` is minus the predicted influence: higher = keep.
3. **Selection** (`gumbel_topk`, `assay.selection.select`). The stage's candidate pool is scored
   through `score_corpus` and a fraction (20%: the paper's |pool| // 5) is kept by Gumbel top-k
   on the predicted benefit, `argtopk(-pred / tau + G)` with tau = 0.5. That samples documents
   without replacement with probability proportional to softmax(-pred / tau). The official code
   computes `pred / tau + G` and keeps the k *smallest* values, which is not that distribution
   (the Gumbel distribution is not symmetric: argmin(a + G) is not argmax(-a + G) in law); see
   `gumbel_topk`.

`run_mates` drives the loop on top of `assay.proxies.train.train_proxy`: the corpus is split
into one *consume-once* candidate pool per stage (a seeded hash of the id), each stage continues
the previous one's weights and optimizer state with one learning-rate schedule over all stages
(WSD with 4% warmup by default, as in the paper), and every stage is resumable. Pools, scoring,
selection and tokenization go through the runner; probing is in-process, or split across the
runner's workers (`runner.map`, each worker loading the checkpoint once). Its folder:

    mates_config.json  mates.json  tokenizer/ (when trained here)  pools/stage-<s>/
    stage-<s>/
        oracle.parquet  probing.json   the probes: id, text, influence, loss_after (s >= 1)
        scorer/                        the fitted MatesScorer (reusable on its own)
        scores/  selected/             side-car scores of the pool, the kept documents
        tokens/  proxy/                the stage's token cache and run (model/, state/)
        stage.json                     written last: the stage is done

The reference loss is the mean loss per token over each whole example (the paper's LAMBADA
reference scores only the continuation; target sets here are not split into prompt and answer).

Measured on this project's 2-core CPU (tiny preset, 2k vocabulary, sequences of 128, one
thread): 12.8 probes/s against 16 reference examples, 9.3/s against 32 and 5.6/s against 64;
reloading the checkpoint for every probe instead gives 4.1/s against 32 (the restore takes
1.5 ms).

Group-MATES (Yu et al. 2025, `group=True`): a relational influence model scales each document's
individual influence u_i by `alpha * mean_{j<i} (1 - cos(e_i, e_j) / tau_r)` over the documents
selected before it (alpha and tau_r learned, from rollouts: short trajectories of documents
trained one after another), and selection is greedy within embedding clusters, using the
*learned* alpha and tau_r (the official selection script hard-codes both to 1).
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assay._files import (
    atomic_path,
    config_hash,
    host_name,
    read_json,
    stable_hash64,
    write_json,
)
from assay.mixing.predictors import spearman
from assay.selection.base import Scorer, register_scorer

#: Fewest reference examples: with fewer, a one-step loss change is mostly the noise of a few
#: examples (the paper uses 1,024 LAMBADA examples; Group-MATES 128).
MIN_REFERENCE = 8
#: Fewest probes to fit an influence model and check it on a held-out split.
MIN_PROBES = 12
#: Fewest held-out probes a Spearman correlation is computed on.
MIN_HOLDOUT = 4
DEFAULT_ALPHAS = (0.1, 1.0, 10.0, 100.0)
HEADS = ("ridge", "mlp")
STAGE_FILE = "stage.json"
SUMMARY_FILE = "mates.json"
CONFIG_FILE = "mates_config.json"


# ---------------------------------------------------------------------------------------------
# Gumbel top-k


def gumbel_topk(
    benefit: np.ndarray,
    k: int,
    *,
    tau: float = 0.5,
    seed: int = 0,
    id_hashes: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of k items sampled without replacement with P proportional to softmax(benefit/tau).

    The Gumbel-top-k trick (Kool et al. 2019): the k largest of `benefit / tau + G`, G i.i.d.
    standard Gumbel. For MATES, benefit = -predicted influence (lower influence = lower reference
    loss = better), i.e. `argtopk(-pred / tau + G)`.

    Not the official MATES code, which keeps the k *smallest* of `pred / tau + G`: since
    min(a + G) is not distributed like max(-a + G) (the Gumbel distribution is skewed), that
    picks item i with P != softmax(-pred / tau)_i; e.g. for pred = (0, 1, 2), tau = 1, k = 1 it
    gives about (0.702, 0.245, 0.053) instead of softmax's (0.665, 0.245, 0.090): the worst
    documents are under-sampled (and the best over-sampled) relative to the intended law.

    Noise comes from a seeded generator, or from (seed, id hash) when `id_hashes` is given (then
    the draw of a document does not depend on its position). Returned best key first.
    """
    from assay.selection.select import gumbel_noise

    b = np.asarray(benefit, dtype=np.float64)
    if tau <= 0:
        raise ValueError("tau must be positive")
    if not 0 <= k <= len(b):
        raise ValueError(f"k must be between 0 and {len(b)}, not {k}")
    if id_hashes is not None and len(id_hashes) != len(b):
        raise ValueError(f"{len(id_hashes)} id hashes for {len(b)} items")
    key = b / tau + gumbel_noise(len(b) if id_hashes is None else id_hashes, seed)
    order = np.argsort(-key, kind="stable")
    return order[:k]


# ---------------------------------------------------------------------------------------------
# Tokens


def _backend(tokenizer: Any) -> Any:
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


def _eos_id(tokenizer: Any) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has no EOS token")
    return int(eos)


def encode_documents(texts: Sequence[str], tokenizer: Any, seq_len: int) -> list[np.ndarray]:
    """Each text as one training sequence: EOS (as context, like a document start in a packed
    stream) followed by its tokens, cut to `seq_len`. Every sequence has at least 2 tokens."""
    eos = _eos_id(tokenizer)
    enc = _backend(tokenizer).encode_batch(list(texts), add_special_tokens=False)
    out = []
    for e in enc:
        ids = np.asarray([eos, *e.ids[: seq_len - 1]], dtype=np.int64)
        if len(ids) < 2:
            ids = np.asarray([eos, eos], dtype=np.int64)
        out.append(ids)
    return out


@dataclass
class ReferenceSet:
    """Tokenized reference (target) examples, batched by length for the loss computation."""

    sequences: list[np.ndarray]

    def __post_init__(self) -> None:
        if len(self.sequences) < MIN_REFERENCE:
            raise ValueError(
                f"the reference set has {len(self.sequences)} examples; MATES needs at least "
                f"{MIN_REFERENCE} to measure a loss change that is more than the noise of a few "
                "examples (the paper uses 1,024)"
            )

    @classmethod
    def from_texts(cls, texts: Sequence[str], tokenizer: Any, seq_len: int) -> ReferenceSet:
        texts = [t for t in texts if t and t.strip()]
        return cls(encode_documents(texts, tokenizer, seq_len))

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def n_tokens(self) -> int:
        """Predicted tokens (each sequence predicts all but its first token)."""
        return int(sum(len(s) - 1 for s in self.sequences))

    def batches(self, batch_size: int, device: Any = None) -> list[tuple[Any, Any]]:
        """(input_ids, labels) tensors, longest first, padded per batch (labels -100 on padding)."""
        import torch

        lengths = np.array([len(s) for s in self.sequences])
        order = np.argsort(-lengths, kind="stable")
        out = []
        for a in range(0, len(order), batch_size):
            idx = order[a : a + batch_size]
            width = int(lengths[idx].max())
            x = np.zeros((len(idx), width), dtype=np.int64)
            y = np.full((len(idx), width), -100, dtype=np.int64)
            for r, j in enumerate(idx):
                s = self.sequences[j]
                x[r, : len(s)] = s
                y[r, : len(s)] = s
            out.append((torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)))
        return out


def default_ref_batch_size(device: Any) -> int:
    """Reference examples per forward pass: 8 on CPU (larger padded batches were slower on a
    2-core CPU: 16 examples took 44 ms in batches of 8, 75 ms in one batch), 32 on a GPU (the
    paper's)."""
    return 32 if str(device).startswith("cuda") else 8


def reference_loss(model: Any, batches: Sequence[tuple[Any, Any]]) -> float:
    """Mean negative log-likelihood (nats) per predicted reference token."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
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
    finally:
        model.train(was_training)
    return total / max(count, 1)


# ---------------------------------------------------------------------------------------------
# Oracle probing


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
    ):
        import torch

        self.model, self.optimizer, self.reference = model, optimizer, reference
        self.lr, self.grad_clip = float(lr), float(grad_clip)
        self.device = device or next(model.parameters()).device
        self.ref_batch_size = ref_batch_size or default_ref_batch_size(self.device)
        if self.ref_batch_size < 1:
            raise ValueError("ref_batch_size must be >= 1")
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
    ) -> Prober:
        """Load a finished proxy run trained with `keep_optimizer=True` (model and optimizer);
        the step takes the learning rate its schedule gives the next global step."""
        import torch

        from assay.proxies.model import load_causal_lm
        from assay.proxies.train import (
            TrainConfig,
            has_training_state,
            load_training_state,
            lr_at,
            make_optimizer,
        )

        run_dir = Path(run_dir)
        if not has_training_state(run_dir):
            raise FileNotFoundError(
                f"{run_dir} is not a finished proxy run with optimizer state: train it with "
                "train_proxy(..., keep_optimizer=True) to probe it"
            )
        cfg = TrainConfig(**read_json(run_dir / "run.json")["config"])
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = load_causal_lm(run_dir / "model", device=device)
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
        if str(self.device).startswith("cuda"):
            with torch.autocast("cuda", dtype=torch.bfloat16):
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
        from assay._progress import ProgressBar

        T = int(trajectory_length)
        if T < 1 or len(candidates) % T:
            raise ValueError(
                f"{len(candidates)} candidates do not make whole trajectories of {T} documents"
            )
        base = self.base_loss()
        after = np.zeros(len(candidates), dtype=np.float64)
        t0 = time.perf_counter()
        with ProgressBar("probe", len(candidates), 0, "probes", enabled=progress) as bar:
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
    reference: list[np.ndarray]
    candidates: list[np.ndarray]
    ref_batch_size: int | None
    trajectory_length: int


def _probe_job(job: _ProbeJob) -> dict[str, Any]:
    """One worker's share: load the checkpoint once, probe every candidate of the share."""
    prober = Prober.from_run(
        job.run_dir, ReferenceSet(job.reference), ref_batch_size=job.ref_batch_size
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
) -> ProbeResult:
    """Oracle influence of `candidates` (token id sequences) at a finished run's final state.

    With a runner of several workers the candidates (whole trajectories when
    `trajectory_length` > 1) are split into contiguous shares, one per worker (`runner.map`);
    each worker loads the checkpoint once and probes its share. Every probe starts from the same
    state, so the values do not depend on the split (bit-identical in tests on CPU).
    """
    T = int(trajectory_length)
    if T < 1 or len(candidates) % T:
        raise ValueError(
            f"{len(candidates)} candidates do not make whole trajectories of {T} documents"
        )
    n_traj = len(candidates) // T
    workers = int(getattr(runner, "workers", 1) or 1) if runner is not None else 1
    workers = max(1, min(workers, n_traj))
    if workers == 1:
        prober = Prober.from_run(run_dir, reference, ref_batch_size=ref_batch_size)
        return prober.probe(candidates, trajectory_length=T, progress=progress)
    bounds = np.linspace(0, n_traj, workers + 1).astype(int) * T
    jobs = [
        _ProbeJob(str(run_dir), list(reference.sequences), list(candidates[a:b]), ref_batch_size, T)
        for a, b in itertools.pairwise(bounds)
    ]
    t0 = time.perf_counter()
    parts = runner.map(_probe_job, jobs)
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


# ---------------------------------------------------------------------------------------------
# Data influence model


def _fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> dict[str, np.ndarray]:
    """Ridge regression with an unpenalised intercept (closed form, float64)."""
    mu = x.mean(axis=0)
    xc = x - mu
    d = x.shape[1]
    if len(x) < d:  # dual form: n x n system
        k = xc @ xc.T
        a = np.linalg.solve(k + alpha * np.eye(len(x)), y - y.mean())
        w = xc.T @ a
    else:
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(d), xc.T @ (y - y.mean()))
    b = y.mean() - mu @ w
    return {"w": w.astype(np.float32), "b": np.asarray([b], dtype=np.float32)}


def _fit_mlp(
    x: np.ndarray, y: np.ndarray, *, hidden: int, epochs: int, lr: float, seed: int
) -> dict[str, np.ndarray]:
    """A one-hidden-layer ReLU MLP trained full-batch with AdamW on MSE (seeded)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    w1 = (torch.randn(d, hidden, generator=g) / math.sqrt(d)).requires_grad_()
    b1 = torch.zeros(hidden, requires_grad=True)
    w2 = (torch.randn(hidden, 1, generator=g) / math.sqrt(hidden)).requires_grad_()
    b2 = torch.zeros(1, requires_grad=True)
    opt = torch.optim.AdamW([w1, b1, w2, b2], lr=lr, weight_decay=1e-2)
    xt = torch.from_numpy(x.astype(np.float32))
    yt = torch.from_numpy(y.astype(np.float32))
    for _ in range(epochs):
        pred = (torch.relu(xt @ w1 + b1) @ w2 + b2)[:, 0]
        loss = torch.mean((pred - yt) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().numpy().astype(np.float32) for k, v in zip(("w1", "b1", "w2", "b2"), (w1, b1, w2, b2), strict=True)}  # fmt: skip


def _predict_head(kind: str, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The head's prediction in numpy (float64), the same for a fitted and a loaded scorer."""
    x = np.asarray(x, dtype=np.float64)
    if kind == "ridge":
        return x @ weights["w"].astype(np.float64) + float(weights["b"][0])
    if kind == "mlp":
        h = np.maximum(x @ weights["w1"].astype(np.float64) + weights["b1"], 0.0)
        return (h @ weights["w2"].astype(np.float64))[:, 0] + float(weights["b2"][0])
    raise ValueError(f"unknown head {kind!r}")


def _rank_key(rho: float) -> float:
    return -np.inf if math.isnan(rho) else rho


def _candidates(heads: Sequence[str], alphas: Sequence[float]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for h in heads:
        if h == "ridge":
            out += [{"head": "ridge", "alpha": float(a)} for a in alphas]
        elif h == "mlp":
            out.append({"head": "mlp"})
        else:
            raise ValueError(f"unknown influence-model head {h!r}; choose from {HEADS}")
    if not out:
        raise ValueError("no influence-model heads to fit")
    return out


@register_scorer("mates")
class MatesScorer(Scorer):
    """The MATES data influence model: embeddings -> z-scored oracle influence.

    `fit(texts, influence)` z-scores the oracle values, fits every candidate head (ridge for each
    alpha, a small MLP) on a seeded (1 - holdout) split, keeps the one with the best Spearman
    correlation on the held-out probes, and (with `refit`) fits it again on all probes.
    `predict` is the z-scored predicted influence (lower = better for the target); `score` is
    its negative, so that higher = keep, as for every scorer.

    `finetune=True` trains the encoder too, as the paper does with BERT: a sentence-transformers
    model (the default MiniLM) with a linear head on its unit-length mean-pooled embedding, MSE
    on the z-scored influence, AdamW (lr 5e-5, weight decay 0.01), keeping the epoch with the
    best held-out Spearman (no refit). It needs a CUDA GPU unless `finetune_device` names
    another device explicitly (e.g. "cpu" for a small test); the fine-tuned encoder is saved
    with the scorer (safetensors).

    >>> scorer = MatesScorer(embedder="static").fit(probe_texts, oracle_influence)
    >>> scorer.report["spearman"], scorer.report["head"]
    """

    def __init__(
        self,
        column: str = "mates",
        embedder: dict[str, Any] | str | None = None,
        heads: Sequence[str] = HEADS,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        holdout: float = 0.2,
        hidden: int = 64,
        epochs: int = 100,
        mlp_lr: float = 3e-3,
        refit: bool = True,
        finetune: bool = False,
        finetune_device: str | None = None,
        finetune_epochs: int = 5,
        finetune_lr: float = 5e-5,
        finetune_batch: int = 32,
    ):
        super().__init__(column)
        if not 0 < holdout < 0.5:
            raise ValueError(f"holdout must be a fraction in (0, 0.5), not {holdout}")
        _candidates(heads, alphas)  # validates
        if finetune and finetune_device is None:
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError(
                    "fine-tuning the encoder of the influence model (finetune=True) needs a CUDA "
                    "GPU; without one, use the frozen embeddings and a trained head (the default), "
                    "or force another device with finetune_device='cpu' (slow)"
                )
        self.embedder_config = (
            {"model": embedder} if isinstance(embedder, str) or embedder is None else dict(embedder)
        )
        self.heads, self.alphas = list(heads), [float(a) for a in alphas]
        self.holdout, self.hidden, self.epochs, self.mlp_lr = holdout, hidden, epochs, mlp_lr
        self.refit, self.finetune = refit, finetune
        self.finetune_device, self.finetune_epochs = finetune_device, finetune_epochs
        self.finetune_lr, self.finetune_batch = finetune_lr, finetune_batch
        self._encoder: Any = None  # the fine-tuned SentenceTransformer, when finetune=True
        self.head: dict[str, Any] | None = None  # {"head": kind, "alpha"?: ...}
        self.weights: dict[str, np.ndarray] = {}
        self.report: dict[str, Any] = {}
        self.probe_table: dict[str, np.ndarray] = {}

    def get_config(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "embedder": self.embedder_config,
            "heads": self.heads,
            "alphas": self.alphas,
            "holdout": self.holdout,
            "hidden": self.hidden,
            "epochs": self.epochs,
            "mlp_lr": self.mlp_lr,
            "refit": self.refit,
            "finetune": self.finetune,
            "finetune_device": self.finetune_device,
            "finetune_epochs": self.finetune_epochs,
            "finetune_lr": self.finetune_lr,
            "finetune_batch": self.finetune_batch,
        }

    @property
    def is_fitted(self) -> bool:
        return self.head is not None

    @property
    def portable(self) -> bool:
        return self._encoder is None

    def embedder(self) -> Any:
        from assay.embed import Embedder

        return Embedder(**self.embedder_config)

    def _fit_one(self, cand: dict[str, Any], x: np.ndarray, y: np.ndarray, seed: int) -> dict:
        if cand["head"] == "ridge":
            return _fit_ridge(x.astype(np.float64), y, cand["alpha"])
        return _fit_mlp(x, y, hidden=self.hidden, epochs=self.epochs, lr=self.mlp_lr, seed=seed)

    def fit(
        self,
        texts: Sequence[str],
        influence: Sequence[float] | np.ndarray,
        *,
        ids: Sequence[str] | None = None,
        seed: int = 0,
        embeddings: np.ndarray | None = None,
        progress: bool = False,
    ) -> MatesScorer:
        """Fit on probed documents and their oracle influence (L_ref after - before)."""
        texts = list(texts)
        y_raw = np.asarray(influence, dtype=np.float64)
        if len(y_raw) != len(texts):
            raise ValueError(f"{len(y_raw)} influence values for {len(texts)} texts")
        if len(texts) < MIN_PROBES:
            raise ValueError(
                f"{len(texts)} probes are too few to fit and check an influence model; probe at "
                f"least {MIN_PROBES} documents (the paper probes 80,000 per stage)"
            )
        if not np.all(np.isfinite(y_raw)):
            raise ValueError("the oracle influence has NaN or infinite values")
        mean, std = float(y_raw.mean()), float(y_raw.std())
        if std == 0:
            raise ValueError("every probe has the same oracle influence; nothing to learn")
        y = (y_raw - mean) / std
        keys = list(ids) if ids is not None else [str(i) for i in range(len(texts))]
        # seeded split by a hash of the id: the same probes are held out whatever their order
        order = np.argsort(stable_hash64(keys, seed), kind="stable")
        n_val = max(MIN_HOLDOUT, round(self.holdout * len(texts)))
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        if self.finetune:
            best, results = self._fit_finetuned(texts, y, train, val, seed, progress)
        else:
            x = (
                embeddings
                if embeddings is not None
                else self.embedder().embed(texts, progress=progress)
            )
            x = np.asarray(x, dtype=np.float32)
            results = []
            for i, cand in enumerate(_candidates(self.heads, self.alphas)):
                w = self._fit_one(cand, x[train], y[train], seed + i)
                pred = _predict_head(cand["head"], w, x[val])
                rho = spearman(pred, y[val])
                mse = float(np.mean((pred - y[val]) ** 2))
                results.append({**cand, "spearman": rho, "mse": mse, "_w": w, "_pred": pred})
            best = max(results, key=lambda r: _rank_key(r["spearman"]))
            self.head = {k: v for k, v in best.items() if k in ("head", "alpha")}
            best_i = results.index(best)
            refit = self.refit
            self.weights = self._fit_one(self.head, x, y, seed + best_i) if refit else best["_w"]
        held_pred = np.full(len(texts), np.nan)
        held_pred[val] = best["_pred"]
        split = np.array(["train"] * len(texts), dtype=object)
        split[val] = "holdout"
        self.probe_table = {
            "id": np.asarray(keys, dtype=object),
            "influence": y_raw,
            "z": y,
            "split": split,
            "holdout_prediction": held_pred,
        }
        self.report = {
            "probes": len(texts),
            "train": len(train),
            "holdout": len(val),
            "target_mean": mean,
            "target_std": std,
            "head": self.head,
            "spearman": best["spearman"],
            "candidates": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
            "refit_on_all": self.refit and not self.finetune,
            "embedder": self.embedder_config,
        }
        return self

    def _fit_finetuned(
        self,
        texts: list[str],
        y: np.ndarray,
        train: np.ndarray,
        val: np.ndarray,
        seed: int,
        progress: bool,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Fine-tune encoder + linear head; keep the epoch with the best held-out Spearman."""
        import copy

        import torch
        import torch.nn.functional as F

        emb = self.embedder()
        if emb.kind != "sentence-transformers":
            raise ValueError(
                "finetune=True needs a sentence-transformers encoder (the default MiniLM or a "
                f"local folder), not the {emb.kind} model {emb.model_path}"
            )
        from sentence_transformers import SentenceTransformer

        from assay.embed import _quiet_transformers

        _quiet_transformers()
        device = self.finetune_device or "cuda"
        torch.manual_seed(seed)
        st = SentenceTransformer(emb.model_path, device=device)
        st.max_seq_length = min(emb.max_tokens, st.max_seq_length or emb.max_tokens)
        dim_fn = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        preprocess = getattr(st, "preprocess", None) or st.tokenize
        dim = int(dim_fn())
        head = torch.nn.Linear(dim, 1).to(device)
        dropout = torch.nn.Dropout(0.1)
        opt = torch.optim.AdamW(
            [*st.parameters(), *head.parameters()], lr=self.finetune_lr, weight_decay=0.01
        )
        rng = np.random.default_rng(seed)
        yt = torch.tensor(y, dtype=torch.float32, device=device)
        results: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        self._encoder = st
        for epoch in range(1, self.finetune_epochs + 1):
            st.train()
            order_t = train[rng.permutation(len(train))]
            for a in range(0, len(train), self.finetune_batch):
                batch = order_t[a : a + self.finetune_batch]
                feats = preprocess([texts[i] for i in batch])
                feats = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in feats.items()}
                vec = F.normalize(st(feats)["sentence_embedding"], dim=-1)
                pred = head(dropout(vec))[:, 0]
                loss = F.mse_loss(pred, yt[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
            w = {
                "w": head.weight.detach().cpu().numpy()[0].astype(np.float32),
                "b": head.bias.detach().cpu().numpy().astype(np.float32),
            }
            pred_val = _predict_head("ridge", w, self._encode([texts[i] for i in val]))
            rho = spearman(pred_val, y[val])
            mse = float(np.mean((pred_val - y[val]) ** 2))
            results.append({"head": "finetune", "epoch": epoch, "spearman": rho, "mse": mse})
            if best is None or _rank_key(rho) > _rank_key(best["spearman"]):
                best = {
                    **results[-1],
                    "_w": w,
                    "_pred": pred_val,
                    "_state": copy.deepcopy(st.state_dict()),
                }
        assert best is not None
        st.load_state_dict(best["_state"])
        st.eval()
        self.head = {"head": "ridge", "finetuned": True, "epoch": best["epoch"]}
        self.weights = best["_w"]
        return best, results

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings from the fine-tuned encoder (eval mode, no gradients)."""
        import torch

        from assay.embed import _unit

        self._encoder.eval()
        with torch.inference_mode():
            vecs = self._encoder.encode(
                texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False
            )
        return _unit(np.asarray(vecs, dtype=np.float32))

    def predict(self, texts: Sequence[str], *, embeddings: np.ndarray | None = None) -> np.ndarray:
        """Predicted z-scored oracle influence (lower = better for the target)."""
        if self.head is None:
            raise RuntimeError("MatesScorer is not fitted: call fit() or load a saved one")
        if len(texts) == 0:
            return np.zeros(0, dtype=np.float64)
        if embeddings is not None:
            x = embeddings
        elif self._encoder is not None:
            x = self._encode(list(texts))
        else:
            x = self.embedder().embed(list(texts))
        return _predict_head(self.head["head"], self.weights, x)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return (-self.predict(texts)).astype(np.float32)

    def _save_state(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        assert self.head is not None
        with atomic_path(folder / "head.safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in self.weights.items()}, str(tmp))
        write_json(folder / "head.json", self.head)
        write_json(folder / "fit_report.json", self.report)
        if self._encoder is not None:
            tmp = folder / f".encoder.tmp-{host_name()}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            self._encoder.save(str(tmp), create_model_card=False, safe_serialization=True)
            shutil.rmtree(folder / "encoder", ignore_errors=True)
            tmp.rename(folder / "encoder")
        if self.probe_table:
            import polars as pl

            t = self.probe_table
            frame = pl.DataFrame(
                {
                    "id": [str(i) for i in t["id"]],
                    "influence": t["influence"],
                    "z": t["z"],
                    "split": [str(s) for s in t["split"]],
                    "holdout_prediction": t["holdout_prediction"],
                }
            )
            with atomic_path(folder / "probes.parquet") as tmp:
                frame.write_parquet(tmp)

    def _load_state(self, folder: Path) -> None:
        from safetensors.numpy import load_file

        self.weights = dict(load_file(str(folder / "head.safetensors")))
        self.head = read_json(folder / "head.json")
        if self.head.get("finetuned"):
            from sentence_transformers import SentenceTransformer

            from assay.embed import _best_device, _quiet_transformers

            _quiet_transformers()
            self._encoder = SentenceTransformer(
                str(folder / "encoder"), device=self.finetune_device or _best_device()
            )
            self._encoder.max_seq_length = min(
                self.embedder().max_tokens, self._encoder.max_seq_length or 1 << 30
            )
        if (folder / "fit_report.json").exists():
            self.report = read_json(folder / "fit_report.json")


# ---------------------------------------------------------------------------------------------
# The staged loop


def mates_train_config(**overrides: Any) -> Any:
    """Training settings for staged MATES runs: one WSD schedule with 4% warmup over all stages
    (the paper's), every selected token seen at most once per stage (consume-once)."""
    from assay.proxies.train import TrainConfig

    base = {"schedule": "wsd", "warmup": 0.04, "decay_fraction": 0.1, "max_epochs": 1.0}
    return TrainConfig(**{**base, **overrides})


@dataclass
class PoolTask:
    """Per shard: the documents of one stage's candidate pool (seeded hash of the id modulo the
    number of stages), and their exact proxy-token count in the shard's stats."""

    stage: int
    stages: int
    seed: int
    tokenizer: Any  # tokenizers.Tokenizer (picklable)
    options: Any

    def output_name(self, shard: Any) -> str:
        return f"{shard.stem}.parquet"

    def __call__(self, shard: Any, out: Path | None) -> Any:
        import polars as pl

        from assay.corpus import ShardStats, ShardWriter
        from assay.runner import report_progress

        assert out is not None
        stats = ShardStats(shard.name)
        writer = ShardWriter(out, fmt="parquet")
        tokens = 0
        for batch in shard.read(self.options, stats):
            h = stable_hash64(batch.get_column("id").to_list(), self.seed)
            mine = batch.filter(pl.Series((h % np.uint64(self.stages)) == self.stage))
            if mine.height:
                enc = self.tokenizer.encode_batch(
                    mine.get_column("text").to_list(), add_special_tokens=False
                )
                tokens += sum(len(e.ids) + 1 for e in enc)  # + EOS, as in a TokenCache
                writer.write(mine)
            stats.docs_out += mine.height
            report_progress(batch.height)
        writer.close()
        stats.extra["tokens"] = tokens
        return stats


@dataclass
class StageResult:
    stage: int
    method: str  # "random" or "mates" / "group-mates"
    pool_docs: int
    pool_tokens: int
    kept_docs: int
    kept_tokens: int
    run: dict[str, Any]  # the stage's ProxyRun summary
    reference_loss: float  # L_ref at the end of the stage
    probing: dict[str, Any] = field(default_factory=dict)
    influence_model: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MatesResult:
    out_dir: str
    config: dict[str, Any]
    stages: list[StageResult]
    final_run: dict[str, Any]
    heldout_bpb: dict[str, float]
    reference_loss: float

    @property
    def model_dir(self) -> str:
        return str(Path(self.final_run["out_dir"]) / "model")

    def proxy_run(self) -> Any:
        """The last stage's `ProxyRun` (its model, curve and held-out losses)."""
        from assay.proxies.train import ProxyRun

        return ProxyRun.load(self.final_run["out_dir"])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stages": [s.to_dict() for s in self.stages]}


def _run_summary(run: Any) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "out_dir": run.out_dir,
        "steps": run.steps,
        "tokens": run.tokens,
        "train_loss": run.train_loss,
        "bpb": run.bpb,
        "loss": run.loss,
        "tokens_per_second": run.tokens_per_second,
        "wall_seconds": run.wall_seconds,
    }


def _pools(
    corpus: Any, out: Path, stages: int, seed: int, tokenizer: Any, runner: Any
) -> list[tuple[Any, int, int]]:
    """(pool corpus, documents, tokens) per stage: consume-once pools written under out/pools."""
    from assay.corpus import Corpus

    pools = []
    for s in range(stages):
        folder = out / "pools" / f"stage-{s}"
        result = runner.run(
            PoolTask(s, stages, seed, _backend(tokenizer), corpus.options),
            corpus.shards,
            folder,
            label=f"mates:pool-{s}",
        )
        tokens = sum(int(st.extra.get("tokens", 0)) for st in result.shards)
        pools.append((Corpus(folder), result.docs_out, tokens))
    return pools


def run_mates(
    corpus: Any,
    out_dir: str | os.PathLike,
    *,
    reference: str | os.PathLike | Sequence[str],
    stage_tokens: int,
    stages: int = 5,
    keep: float = 0.2,
    tau: float = 0.5,
    probes: int = 1000,
    preset: str = "tiny",
    seed: int = 0,
    fields: Sequence[str] | None = None,
    max_reference: int | None = 1024,
    tokenizer: Any = None,
    heldout: Any = None,
    eval_docs: int | None = 200,
    config: Any = None,
    embedder: dict[str, Any] | str | None = None,
    heads: Sequence[str] = HEADS,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    holdout: float = 0.2,
    ref_batch_size: int | None = None,
    method: str = "mates",
    group: bool = False,
    trajectory_length: int = 4,
    docs_per_cluster: int = 200,
    runner: Any = None,
    progress: bool = False,
) -> MatesResult:
    """Staged pretraining with MATES data selection; returns every stage's figures.

    `corpus` is split into `stages` consume-once candidate pools (a seeded hash of the id).
    Stage 0 trains on a random `keep` fraction of its pool; each later stage probes the previous
    stage's final state on `probes` documents of its own pool against `reference` (target
    examples: a file, a built-in benchmark such as 'assay_champ', or a list of texts; see
    `load_targets`), fits the influence model, scores its pool with it (`score_corpus`) and keeps
    `keep` of it by Gumbel top-k at temperature `tau` (`select`). Each stage trains
    `stage_tokens` tokens, continuing the previous stage's weights and optimizer state under one
    schedule over all stages (`config`, default `mates_train_config()`).

    `method='random'` makes every stage random (the baseline with the same pools, budget and
    schedule). `group=True` uses Group-MATES (rollouts, relational model, cluster-wise greedy
    selection). Everything is written under `out_dir` (`mates.json`, `stage-<s>/`); a finished
    stage is never redone, and an interrupted one resumes from its last finished step.
    """
    from assay.corpus import Corpus
    from assay.proxies.data import TokenCache, tokenizer_fingerprint
    from assay.proxies.model import get_preset
    from assay.proxies.tokenizer import load_tokenizer, train_tokenizer
    from assay.proxies.train import train_proxy
    from assay.runner import LocalRunner
    from assay.selection.targets import load_targets

    t_start = time.perf_counter()
    if method not in ("mates", "random"):
        raise ValueError(f"method must be 'mates' or 'random', not {method!r}")
    if stages < 1:
        raise ValueError("stages must be >= 1")
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be a fraction in (0, 1], not {keep}")
    if tau <= 0:
        raise ValueError("tau must be positive")
    if method == "mates" and stages > 1 and probes < MIN_PROBES:
        raise ValueError(f"probe at least {MIN_PROBES} documents per stage, not {probes}")
    if group and (trajectory_length < 1 or probes // max(trajectory_length, 1) < 5):
        raise ValueError(
            f"Group-MATES needs at least 5 rollouts of trajectory_length={trajectory_length} "
            f"documents per stage; {probes} probes make {probes // max(trajectory_length, 1)}"
        )
    get_preset(preset)
    cfg = config if config is not None else mates_train_config()
    runner = runner or LocalRunner(workers=1, progress=progress)
    out = Path(out_dir)
    corpus.check_output(out, "MATES folder")
    if heldout is not None:
        heldout.check_output(out, "MATES folder")
    out.mkdir(parents=True, exist_ok=True)

    # Reference set: checked before any work.
    ref_texts = load_targets(reference, fields, max_items=max_reference, seed=seed)
    if len(ref_texts) < MIN_REFERENCE:
        raise ValueError(
            f"the reference set has {len(ref_texts)} examples; MATES needs at least "
            f"{MIN_REFERENCE} (the paper uses 1,024)"
        )

    if tokenizer is None:
        tdir = out / "tokenizer"
        tok = (
            load_tokenizer(tdir)
            if (tdir / "tokenizer.json").exists()
            else train_tokenizer(corpus, get_preset(preset).vocab_size, tdir, seed=seed)
        )
    elif isinstance(tokenizer, str | os.PathLike):
        tok = load_tokenizer(tokenizer)
    else:
        tok = tokenizer

    identity = {
        "corpus": [s.name for s in corpus.shards],
        "content": config_hash([s.identity() for s in corpus.shards]),
        "tokenizer": tokenizer_fingerprint(tok),
        "reference": config_hash(ref_texts),
        "stage_tokens": stage_tokens,
        "stages": stages,
        "keep": keep,
        "tau": tau,
        "probes": probes,
        "preset": preset,
        "seed": seed,
        "config": asdict(cfg),
        "embedder": embedder,
        "heads": list(heads),
        "alphas": [float(a) for a in alphas],
        "holdout": holdout,
        "method": method,
        "group": group,
        **(
            {"trajectory_length": trajectory_length, "docs_per_cluster": docs_per_cluster}
            if group
            else {}
        ),
        "heldout": None if heldout is None else [s.name for s in heldout.shards],
    }
    cfg_path = out / CONFIG_FILE
    if cfg_path.exists():
        old = read_json(cfg_path)
        if old != identity:
            diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            raise ValueError(
                f"{out} holds a MATES run with other settings ({', '.join(diff)} differ); "
                "use another folder"
            )
    write_json(cfg_path, identity)

    ref = ReferenceSet.from_texts(ref_texts, tok, cfg.seq_len)

    # Pools and the checks that need their sizes, before any training.
    pools = _pools(corpus, out, stages, seed, tok, runner)
    per_step = cfg.batch_size * cfg.grad_accum
    steps_per_stage = (stage_tokens // cfg.seq_len) // per_step
    if steps_per_stage < 1:
        raise ValueError(
            f"stage_tokens={stage_tokens:,} make fewer than one step of {per_step} sequences "
            f"x {cfg.seq_len} tokens"
        )
    need = steps_per_stage * per_step * cfg.seq_len
    for s, (_, docs, tokens) in enumerate(pools):
        supply = tokens * keep * cfg.max_epochs
        if docs == 0 or supply < need:
            raise ValueError(
                f"the stage-{s} candidate pool is too small: {docs:,} documents of {tokens:,} "
                f"tokens; keeping {keep:.0%} of it (each token used at most "
                f"{cfg.max_epochs:g} times) gives about {int(supply):,} tokens, less than the "
                f"{need:,} tokens a stage trains on. Give a larger corpus, fewer stages, fewer "
                "stage_tokens or a larger keep fraction"
            )
        if s > 0 and method == "mates" and probes > docs:
            raise ValueError(
                f"the probe set ({probes:,} documents) is larger than the stage-{s} candidate "
                f"pool ({docs:,} documents); probe fewer documents or give a larger corpus"
            )

    results: list[StageResult] = []
    prev_run_dir: Path | None = None
    final_run: Any = None
    for s in range(stages):
        stage_dir = out / f"stage-{s}"
        done = stage_dir / STAGE_FILE
        if done.exists():
            saved = read_json(done)
            results.append(StageResult(**saved))
            prev_run_dir = stage_dir / "proxy"
            continue
        t_stage = time.perf_counter()
        pool, pool_docs, pool_tokens = pools[s]
        probing: dict[str, Any] = {}
        model_report: dict[str, Any] = {}
        stage_method = "random" if s == 0 or method == "random" else method
        if stage_method == "random":
            selected = _select_random(pool, stage_dir, keep, seed + s, runner)
        else:
            assert prev_run_dir is not None
            if group:
                selected, probing, model_report = _group_stage(
                    pool, stage_dir, prev_run_dir, ref, tok, cfg, probes=probes, keep=keep,
                    seed=seed + s, embedder=embedder, holdout=holdout,
                    trajectory_length=trajectory_length, docs_per_cluster=docs_per_cluster,
                    runner=runner, ref_batch_size=ref_batch_size, progress=progress,
                )  # fmt: skip
                stage_method = "group-mates"
            else:
                scorer, probing = _fit_stage_scorer(
                    pool, stage_dir, prev_run_dir, ref, tok, cfg, probes=probes, seed=seed + s,
                    embedder=embedder, heads=heads, alphas=alphas, holdout=holdout,
                    runner=runner, ref_batch_size=ref_batch_size, progress=progress,
                )  # fmt: skip
                model_report = scorer.report
                selected = _select_mates(pool, stage_dir, scorer, keep, tau, seed + s, runner)
        cache = TokenCache.build(
            Corpus(selected), tok, stage_dir / "tokens", domain_column=None, runner=runner
        )
        kept_docs = sum(d.n_docs for d in cache.domains.values())
        kept_tokens = sum(d.n_tokens for d in cache.domains.values())
        if kept_tokens * cfg.max_epochs < need:
            raise ValueError(
                f"stage {s} kept {kept_docs:,} documents of {kept_tokens:,} tokens, less than the "
                f"{need:,} tokens the stage trains on (each used at most {cfg.max_epochs:g} "
                "times); raise keep or lower stage_tokens"
            )
        run = train_proxy(
            cache,
            "natural",
            stage_tokens,
            preset,
            seed + s,
            out_dir=stage_dir / "proxy",
            tokenizer=tok,
            heldout=heldout,
            eval_docs=eval_docs,
            config=cfg,
            progress=progress,
            init_from=prev_run_dir,
            keep_optimizer=True,
            schedule_offset=s * steps_per_stage,
            schedule_total=stages * steps_per_stage,
        )
        ref_loss = _run_reference_loss(stage_dir / "proxy", ref, ref_batch_size)
        result = StageResult(
            stage=s,
            method=stage_method,
            pool_docs=pool_docs,
            pool_tokens=pool_tokens,
            kept_docs=kept_docs,
            kept_tokens=kept_tokens,
            run=_run_summary(run),
            reference_loss=ref_loss,
            probing=probing,
            influence_model=_compact_model_report(model_report),
            seconds=round(time.perf_counter() - t_stage, 3),
        )
        write_json(done, result.to_dict())
        results.append(result)
        prev_run_dir = stage_dir / "proxy"
        final_run = run

    from assay.proxies.train import ProxyRun

    assert prev_run_dir is not None
    final_run = final_run or ProxyRun.load(prev_run_dir)
    summary = MatesResult(
        out_dir=str(out),
        config=identity,
        stages=results,
        final_run=_run_summary(final_run),
        heldout_bpb=dict(final_run.bpb),
        reference_loss=results[-1].reference_loss,
    )
    payload = summary.to_dict()
    payload["seconds"] = round(time.perf_counter() - t_start, 3)
    write_json(out / SUMMARY_FILE, payload)
    return summary


def _compact_model_report(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("probes", "train", "holdout", "head", "spearman", "candidates", "target_mean",
            "target_std", "alpha", "tau", "individual")  # fmt: skip
    return {k: v for k, v in report.items() if k in keep}


def _run_reference_loss(run_dir: Path, ref: ReferenceSet, batch_size: int | None) -> float:
    from assay.proxies.model import load_causal_lm

    model = load_causal_lm(run_dir / "model")
    device = next(model.parameters()).device
    return reference_loss(model, ref.batches(batch_size or default_ref_batch_size(device), device))


def _select_random(pool: Any, stage_dir: Path, keep: float, seed: int, runner: Any) -> Path:
    from assay.scores import score_corpus
    from assay.selection.random_scorer import RandomScorer
    from assay.selection.select import select

    score_corpus(RandomScorer(seed=seed), pool, stage_dir / "scores", runner=runner)
    select(
        pool, stage_dir / "scores", stage_dir / "selected", runner=runner,
        column="random", policy="topk", keep=keep, by="docs", seed=seed, group_by=None,
    )  # fmt: skip
    return stage_dir / "selected"


def _select_mates(
    pool: Any, stage_dir: Path, scorer: MatesScorer, keep: float, tau: float, seed: int, runner: Any
) -> Path:
    from assay.scores import score_corpus
    from assay.selection.select import select

    score_corpus(scorer, pool, stage_dir / "scores", runner=runner)
    # score = -predicted influence, so Gumbel top-k on it is argtopk(-pred / tau + G)
    select(
        pool, stage_dir / "scores", stage_dir / "selected", runner=runner,
        column=scorer.column, policy="gumbel", keep=keep, tau=tau, by="docs", seed=seed,
        group_by=None,
    )  # fmt: skip
    return stage_dir / "selected"


def _probe_sample(pool: Any, n: int, seed: int) -> tuple[list[str], list[str]]:
    frame = pool.sample(n, seed=seed, columns=["id", "text"])
    # a fixed order (by id hash), whatever the order the sample came in
    ids = frame.get_column("id").to_list()
    texts = frame.get_column("text").to_list()
    order = np.argsort(stable_hash64(ids, seed), kind="stable")
    return [ids[i] for i in order], [texts[i] for i in order]


def _oracle(
    pool: Any,
    stage_dir: Path,
    prev_run_dir: Path,
    ref: ReferenceSet,
    tok: Any,
    cfg: Any,
    *,
    probes: int,
    seed: int,
    runner: Any,
    ref_batch_size: int | None,
    progress: bool,
    trajectory_length: int = 1,
) -> tuple[list[str], list[str], np.ndarray, dict[str, Any]]:
    """Probe a sample of the pool (or read the probes of an interrupted stage back); with
    `trajectory_length` > 1, consecutive documents of the sample form the rollouts."""
    import polars as pl

    path = stage_dir / "oracle.parquet"
    if path.exists():
        frame = pl.read_parquet(path)
        return (
            frame.get_column("id").to_list(),
            frame.get_column("text").to_list(),
            frame.get_column("influence").to_numpy(),
            read_json(stage_dir / "probing.json"),
        )
    ids, texts = _probe_sample(pool, probes, seed)
    seqs = encode_documents(texts, tok, cfg.seq_len)
    T = trajectory_length
    result = probe_run(
        prev_run_dir, seqs, ref, runner=runner, ref_batch_size=ref_batch_size,
        trajectory_length=T, progress=progress,
    )  # fmt: skip
    frame = pl.DataFrame(
        {
            "id": ids,
            "text": texts,
            "trajectory": np.arange(len(ids)) // T,
            "position": np.arange(len(ids)) % T,
            "tokens": [len(x) for x in seqs],
            "influence": result.influence,
            "loss_after": result.loss_after,
        }
    )
    info = result.summary()
    write_json(stage_dir / "probing.json", info)
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)
    return ids, texts, result.influence, info


def _fit_stage_scorer(
    pool: Any,
    stage_dir: Path,
    prev_run_dir: Path,
    ref: ReferenceSet,
    tok: Any,
    cfg: Any,
    *,
    probes: int,
    seed: int,
    embedder: Any,
    heads: Sequence[str],
    alphas: Sequence[float],
    holdout: float,
    runner: Any,
    ref_batch_size: int,
    progress: bool,
) -> tuple[MatesScorer, dict[str, Any]]:
    from assay.selection.base import load_scorer

    ids, texts, influence, info = _oracle(
        pool, stage_dir, prev_run_dir, ref, tok, cfg, probes=probes, seed=seed, runner=runner,
        ref_batch_size=ref_batch_size, progress=progress,
    )  # fmt: skip
    folder = stage_dir / "scorer"
    if (folder / "scorer.json").exists():
        scorer = load_scorer(folder)
        assert isinstance(scorer, MatesScorer)
        return scorer, info
    scorer = MatesScorer(embedder=embedder, heads=heads, alphas=alphas, holdout=holdout)
    scorer.fit(texts, influence, ids=ids, seed=seed, progress=progress)
    tmp = stage_dir / f".scorer.tmp-{host_name()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    scorer.save(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return load_scorer(folder), info  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Group-MATES


class RelationalInfluenceModel:
    """Group-MATES' relational data influence model on frozen, unit-length embeddings.

    The individual influence is linear, `u_i = w . e_i + b`. Within a trajectory (documents
    trained one after another) the t-th document's predicted increment of the reference loss is
    `u_t` for t = 0 and `u_t * alpha * mean_{j<t} (1 - cos(e_t, e_j) / tau)` after, with `alpha`
    and `tau` learned (both start at 1, as in the official model). Targets are the z-scored
    increments; the checkpoint kept is the one with the best Spearman correlation on held-out
    trajectories (evaluated every `eval_every` epochs).
    """

    def __init__(self, *, epochs: int = 400, lr: float = 1e-2, eval_every: int = 20):
        self.epochs, self.lr, self.eval_every = epochs, lr, eval_every
        self.w: np.ndarray | None = None
        self.b = 0.0
        self.alpha = 1.0
        self.tau = 1.0
        self.report: dict[str, Any] = {}

    @staticmethod
    def _forward(e: Any, w: Any, b: Any, alpha: Any, tau: Any) -> tuple[Any, Any]:
        """(relational prediction, individual u), both (m, T), from embeddings (m, T, d)."""
        import torch

        u = e @ w + b
        T = e.shape[1]
        if T == 1:
            return u, u
        cos = torch.einsum("mtd,msd->mts", e, e)
        rel = (1.0 - cos / tau) * torch.tril(torch.ones(T, T, dtype=e.dtype), diagonal=-1)
        counts = torch.arange(T, dtype=e.dtype).clamp(min=1)
        mean_rel = rel.sum(dim=2) / counts
        pred = torch.cat([u[:, :1], u[:, 1:] * alpha * mean_rel[:, 1:]], dim=1)
        return pred, u

    def fit(
        self,
        embeddings: np.ndarray,
        increments: np.ndarray,
        *,
        holdout: float = 0.2,
        seed: int = 0,
    ) -> RelationalInfluenceModel:
        """`embeddings` (m, T, d) of m trajectories of T documents, `increments` (m, T)."""
        import torch

        e_all = np.asarray(embeddings, dtype=np.float32)
        y_raw = np.asarray(increments, dtype=np.float64)
        if e_all.ndim != 3 or y_raw.shape != e_all.shape[:2]:
            raise ValueError(
                "embeddings must be (trajectories, T, dim) and increments (trajectories, T)"
            )
        m, T, d = e_all.shape
        n_val = max(2, round(holdout * m))
        if m - n_val < 2 or m * T < MIN_PROBES:
            raise ValueError(
                f"{m} trajectories of {T} documents are too few to fit and check a relational "
                f"influence model; probe at least {max(MIN_PROBES, 4 * T)} documents"
            )
        mean, std = float(y_raw.mean()), float(y_raw.std())
        if std == 0:
            raise ValueError("every rollout step has the same influence; nothing to learn")
        y = (y_raw - mean) / std
        order = np.random.default_rng(seed).permutation(m)
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        torch.manual_seed(seed)
        w = torch.zeros(d, requires_grad=True)
        b = torch.zeros((), requires_grad=True)
        alpha = torch.ones((), requires_grad=True)
        tau = torch.ones((), requires_grad=True)
        opt = torch.optim.AdamW([w, b, alpha, tau], lr=self.lr, weight_decay=0.0)
        et, ev = torch.from_numpy(e_all[train]), torch.from_numpy(e_all[val])
        yt = torch.from_numpy(y[train].astype(np.float32))
        best: tuple[float, int, tuple] | None = None
        for epoch in range(1, self.epochs + 1):
            pred, _ = self._forward(et, w, b, alpha, tau.clamp(min=1e-3))
            loss = torch.mean((pred - yt) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if epoch % self.eval_every == 0 or epoch == self.epochs:
                with torch.no_grad():
                    pv, _ = self._forward(ev, w, b, alpha, tau.clamp(min=1e-3))
                rho = spearman(pv.numpy().ravel(), y[val].ravel())
                key = -np.inf if math.isnan(rho) else rho
                if best is None or key > best[0]:
                    snap = tuple(t.detach().clone() for t in (w, b, alpha, tau))
                    best = (key, epoch, snap)
        assert best is not None
        w_, b_, a_, t_ = best[2]
        self.w = w_.numpy().astype(np.float32)
        self.b, self.alpha, self.tau = float(b_), float(a_), max(float(t_), 1e-3)
        with torch.no_grad():
            pv, uv = self._forward(
                ev, *map(torch.as_tensor, (self.w, self.b, self.alpha, self.tau))
            )
        self.report = {
            "trajectories": m,
            "trajectory_length": T,
            "train": len(train),
            "holdout": len(val),
            "target_mean": mean,
            "target_std": std,
            "spearman": spearman(pv.numpy().ravel(), y[val].ravel()),
            "individual": spearman(uv.numpy().ravel(), y[val].ravel()),
            "best_epoch": best[1],
            "alpha": self.alpha,
            "tau": self.tau,
            "head": {"head": "relational"},
        }
        return self

    def individual(self, embeddings: np.ndarray) -> np.ndarray:
        """u = w . e + b: the z-scored individual influence (lower = better)."""
        if self.w is None:
            raise RuntimeError("the relational model is not fitted")
        return np.asarray(embeddings, dtype=np.float64) @ self.w.astype(np.float64) + self.b

    def save(self, folder: str | os.PathLike) -> None:
        from safetensors.numpy import save_file

        assert self.w is not None
        f = Path(folder)
        f.mkdir(parents=True, exist_ok=True)
        with atomic_path(f / "relational.safetensors") as tmp:
            save_file({"w": self.w, "b": np.asarray([self.b], dtype=np.float32)}, str(tmp))
        write_json(
            f / "relational.json", {"alpha": self.alpha, "tau": self.tau, "report": self.report}
        )

    @classmethod
    def load(cls, folder: str | os.PathLike) -> RelationalInfluenceModel:
        from safetensors.numpy import load_file

        f = Path(folder)
        weights = load_file(str(f / "relational.safetensors"))
        meta = read_json(f / "relational.json")
        model = cls()
        model.w, model.b = weights["w"], float(weights["b"][0])
        model.alpha, model.tau, model.report = meta["alpha"], meta["tau"], meta["report"]
        return model

    def as_scorer(self, embedder: dict[str, Any] | str | None) -> MatesScorer:
        """The individual part as a `MatesScorer` (score = -u), for `score_corpus`."""
        scorer = MatesScorer(embedder=embedder, heads=("ridge",))
        assert self.w is not None
        scorer.head = {"head": "ridge", "source": "group-mates individual influence"}
        scorer.weights = {"w": self.w, "b": np.asarray([self.b], dtype=np.float32)}
        scorer.report = dict(self.report)
        return scorer


def group_select(
    influence: np.ndarray,
    embeddings: np.ndarray,
    keep: float,
    *,
    alpha: float,
    tau: float,
    docs_per_cluster: int = 200,
    seed: int = 0,
) -> np.ndarray:
    """Group-MATES' cluster-wise greedy selection; a boolean mask over the documents.

    Documents are clustered (k-means on unit embeddings, about `docs_per_cluster` each); in each
    cluster, `round(keep * size)` documents are taken greedily: first the lowest individual
    influence u, then each time the argmin of `u * avg_rel`, where avg_rel is the running mean over
    the documents already taken of `alpha * (1 - cos / tau)`. alpha and tau are the relational
    model's *learned* values (the official `select_indices.py` hard-codes both to 1).
    """
    from assay.mixing.cluster import kmeans, nearest

    u = np.asarray(influence, dtype=np.float64)
    e = np.asarray(embeddings, dtype=np.float32)
    if len(u) != len(e):
        raise ValueError(f"{len(u)} influence values for {len(e)} embeddings")
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be a fraction in (0, 1], not {keep}")
    if tau <= 0:
        raise ValueError("tau must be positive")
    mask = np.zeros(len(u), dtype=bool)
    if not len(u):
        return mask
    k = max(1, min(len(u), round(len(u) / max(docs_per_cluster, 1))))
    labels = np.zeros(len(u), dtype=np.int64) if k == 1 else nearest(e, kmeans(e, k, seed=seed))
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        n_take = round(keep * len(idx))
        if n_take == 0:
            continue
        ec, uc = e[idx].astype(np.float64), u[idx]
        avg_rel = np.zeros(len(idx))
        taken = np.zeros(len(idx), dtype=bool)
        for i in range(n_take):
            scores = (uc if i == 0 else avg_rel * uc).copy()
            scores[taken] = np.inf
            j = int(np.argmin(scores))
            taken[j] = True
            cur = alpha * (1.0 - ec @ ec[j] / tau)
            avg_rel = (i * avg_rel + cur) / (i + 1)
        mask[idx[taken]] = True
    return mask


def _group_stage(
    pool: Any,
    stage_dir: Path,
    prev_run_dir: Path,
    ref: ReferenceSet,
    tok: Any,
    cfg: Any,
    *,
    probes: int,
    keep: float,
    seed: int,
    embedder: Any,
    holdout: float,
    trajectory_length: int,
    docs_per_cluster: int,
    runner: Any,
    ref_batch_size: int | None,
    progress: bool,
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Rollouts -> relational model -> individual scores (score_corpus) -> greedy selection."""
    import polars as pl

    from assay.embed import Embedder
    from assay.scores import SCORES_META, ScoreSet, score_corpus, score_file
    from assay.selection.select import select

    T = trajectory_length
    n = (probes // T) * T
    _, texts, influence, info = _oracle(
        pool, stage_dir, prev_run_dir, ref, tok, cfg, probes=n, seed=seed, runner=runner,
        ref_batch_size=ref_batch_size, progress=progress, trajectory_length=T,
    )  # fmt: skip
    emb_config = {"model": embedder} if isinstance(embedder, str) or embedder is None else dict(embedder)  # fmt: skip
    model_dir = stage_dir / "relational"
    if (model_dir / "relational.json").exists():
        model = RelationalInfluenceModel.load(model_dir)
    else:
        vecs = Embedder(**emb_config).embed(texts, progress=progress)
        model = RelationalInfluenceModel().fit(
            vecs.reshape(-1, T, vecs.shape[1]),
            np.asarray(influence).reshape(-1, T),
            holdout=holdout,
            seed=seed,
        )
        model.save(model_dir)
    scorer_dir = stage_dir / "scorer"
    if not (scorer_dir / "scorer.json").exists():
        model.as_scorer(emb_config).save(scorer_dir)
    from assay.selection.base import load_scorer

    scorer = load_scorer(scorer_dir)
    score_corpus(scorer, pool, stage_dir / "scores", runner=runner)

    group_dir = stage_dir / "group_scores"
    if not (group_dir / SCORES_META).exists():
        frame = ScoreSet(stage_dir / "scores").read_all(pool.shards, [scorer.column])
        pool_ids = frame.get_column("id").to_list()
        by_id: dict[str, str] = {}
        for batch in pool.iter_batches():
            by_id.update(zip(batch.get_column("id").to_list(), batch.get_column("text").to_list(), strict=True))  # fmt: skip
        vecs = Embedder(**emb_config).embed([by_id[i] for i in pool_ids], progress=progress)
        u = -frame.get_column(scorer.column).to_numpy().astype(np.float64)
        mask = group_select(u, vecs, keep, alpha=model.alpha, tau=model.tau,
                            docs_per_cluster=docs_per_cluster, seed=seed)  # fmt: skip
        chosen = frame.with_columns(pl.Series("group_mates", mask.astype(np.float32)))
        for shard in pool.shards:
            part = chosen.filter(pl.col("shard") == shard.name).select("id", "group_mates")
            with atomic_path(score_file(group_dir, shard)) as tmp:
                part.write_parquet(tmp)
        write_json(
            group_dir / SCORES_META,
            {"columns": ["group_mates"], "scorer": {"type": "group-mates", "config": {}}},
        )
    select(
        pool, group_dir, stage_dir / "selected", runner=runner,
        column="group_mates", policy="threshold", threshold=0.5, group_by=None,
    )  # fmt: skip
    return stage_dir / "selected", info, model.report


__all__ = [
    "MIN_PROBES",
    "MIN_REFERENCE",
    "MatesResult",
    "MatesScorer",
    "ProbeResult",
    "Prober",
    "ReferenceSet",
    "RelationalInfluenceModel",
    "StageResult",
    "encode_documents",
    "group_select",
    "gumbel_topk",
    "mates_train_config",
    "probe_run",
    "reference_loss",
    "run_mates",
    "spearman",
]

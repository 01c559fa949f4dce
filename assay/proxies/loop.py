"""How a proxy is optimised: its settings (`TrainConfig`), the learning-rate schedule, AdamW, and
the training loop over packed sequences (what `assay.proxies.train.train_proxy` runs).

A loop you can read in one sitting (nanoGPT's shape) on top of accelerate, so the same call runs
on this CPU or on a GPU with bf16 autocast:

    for step in range(steps):
        for micro in range(grad_accum):          # sequences are packed once, in training order
            x = this process's slice of the micro-batch
            loss = model(x, labels=x).loss / grad_accum
            accelerator.backward(loss)
        clip; optimizer.step(); lr schedule; zero_grad
        every eval_every steps: per-domain held-out bits per byte (the curve BiMix fits)
        every checkpoint_every steps: save model (safetensors), optimizer and step, atomically

Under `accelerate launch` (or torchrun) with N processes the loop is data parallel: a
micro-batch holds N x `batch_size` sequences, process r trains on the r-th slice of
`batch_size` of them, and accelerate all-reduces the gradients (averaged: every sequence has
the same number of tokens, so the step is the one a single process takes on the whole
micro-batch). N processes at `batch_size` b therefore see the same tokens, and follow the same
loss curve, as one process at N x b. The logged loss is the mean over the processes; only the
main process writes checkpoints and the run's files, the others wait for it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from assay.io.corpus import Corpus
from assay.proxies.checkpoint import load_training_state, restore_checkpoint, save_checkpoint
from assay.proxies.data import PackedData
from assay.proxies.model import build_model
from assay.util.config import Strict
from assay.util.progress import ProgressBar


class TrainConfig(Strict):
    """Optimisation settings; the defaults suit the tiny/xs presets at sequence length 256."""

    seq_len: int = Field(256, ge=2, description="Tokens per training sequence.")
    batch_size: int = Field(16, ge=1, description="Sequences per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(3e-3, gt=0, description="Peak learning rate (AdamW).")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate / peak.")
    warmup: float = Field(
        0.05, ge=0, description="Warm-up: a fraction of the steps, or a step count if >= 1."
    )
    schedule: Literal["cosine", "wsd", "constant"] = Field(
        "cosine",
        description="Learning-rate schedule: cosine, wsd (warmup-stable-decay) or constant.",
    )
    decay_fraction: float = Field(
        0.2, ge=0, le=1, description="WSD: share of the steps in the final linear decay."
    )
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamW beta2.")
    grad_clip: float = Field(1.0, ge=0, description="Gradient-norm clipping (0: none).")
    eval_every: int = Field(
        0, ge=0, description="Held-out evaluation every this many steps (0: at the end only)."
    )
    checkpoint_every: int = Field(
        0, ge=0, description="Checkpoint every this many steps (0: at the end only)."
    )
    max_epochs: float = Field(4.0, gt=0, description="Most passes over any domain's tokens.")
    on_cap: Literal["redistribute", "error"] = Field(
        "redistribute",
        description="A domain with too few tokens for its share: redistribute the rest of its "
        "share to the others, or stop with an error.",
    )
    arch: Literal["llama", "gpt2"] = Field("llama", description="Proxy architecture.")
    eval_batch_tokens: int = Field(8192, ge=1, description="Tokens per evaluation batch.")

    @model_validator(mode="before")
    @classmethod
    def _known_settings(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                raise ValueError(
                    f"unknown training settings {unknown}; known: {', '.join(cls.model_fields)}"
                )
        return data


def process_state() -> Any:
    """accelerate's view of this process: alone, or one of the data-parallel processes of
    `accelerate launch` / torchrun (whose process group it joins on the first call)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def lr_at(step: int, steps: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier: linear warmup, then cosine / warmup-stable-decay / constant."""
    warm = int(cfg.warmup) if cfg.warmup >= 1 else round(cfg.warmup * steps)
    if warm and step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    floor = cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        progress = (step - warm) / max(steps - warm, 1)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    decay_start = int(steps * (1 - cfg.decay_fraction))
    if step < decay_start:
        return 1.0
    return 1.0 - (1.0 - floor) * (step - decay_start + 1) / max(steps - decay_start, 1)


def make_optimizer(model: Any, cfg: TrainConfig) -> Any:
    """AdamW as train_proxy builds it: weight decay on matrices only, in that group order."""
    import torch

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        fused=False,
    )


@dataclass
class TrainingJob:
    """One run to train: where it goes, its settings and schedule, and (after `prepare`) the
    accelerator, model, optimizer and held-out set."""

    out: Path
    run_id: str
    cfg: TrainConfig
    preset: str
    seed: int
    steps: int
    total_steps: int  # of the learning-rate schedule, which this run starts at schedule_offset
    schedule_offset: int
    processes: int = 1  # data-parallel processes (accelerate launch): each trains on a slice
    accelerator: Any = None
    model: Any = None
    optimizer: Any = None
    evalset: Any = None  # None without a held-out corpus

    @property
    def per_step(self) -> int:
        """Sequences per optimizer step, over all processes."""
        return self.cfg.batch_size * self.cfg.grad_accum * self.processes

    @property
    def is_main(self) -> bool:
        """Whether this is the process that writes (the only one, unless data parallel)."""
        return self.accelerator is None or bool(self.accelerator.is_main_process)

    def prepare(
        self, vocab_size: int, heldout: Corpus | None, tokenizer: Any, eval_docs: int | None
    ) -> None:
        """The accelerator, a fresh model (seeded) and its optimizer, and the held-out set."""
        import torch
        from accelerate import Accelerator

        cfg = self.cfg
        self.accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),
            mixed_precision="bf16" if torch.cuda.is_available() else "no",
        )
        assert self.accelerator.num_processes == self.processes, "one process group per run"
        model = build_model(self.preset, vocab_size, cfg.seq_len, arch=cfg.arch, seed=self.seed)
        optimizer = make_optimizer(model, cfg)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        if heldout is not None:
            from assay.common.losses import build_eval_set

            self.evalset = build_eval_set(
                heldout, tokenizer, cfg.seq_len, max_docs_per_group=eval_docs, seed=self.seed
            )

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Per-domain held-out bits per byte of the model as it is now."""
        return _eval(self.accelerator.unwrap_model(self.model), self.evalset, self.cfg)


@dataclass
class LoopResult:
    """What the loop did: the step it started at (after a checkpoint of the run, else 0), the
    curve and training losses of every step of the run, and the seconds spent training
    (evaluations and checkpoints not counted)."""

    start: int
    curve: list[dict[str, Any]]
    losses: list[float]
    seconds: float


def train_loop(
    job: TrainingJob,
    packed: PackedData,
    init_from: str | os.PathLike | None,
    stop_after: int | None,
    progress: bool,
) -> LoopResult:
    """Train the prepared job on `packed`: resumed from the run's checkpoint when there is one,
    else from `init_from`'s final state when given, else from the fresh model."""
    import torch

    cfg = job.cfg
    start, curve = restore_checkpoint(
        job.out, job.run_id, job.accelerator, job.model, job.optimizer
    )  # the main process drops another run's checkpoint; every process loads this run's
    if start == 0 and init_from is not None:  # a checkpoint of this run itself wins
        load_training_state(init_from, job.accelerator.unwrap_model(job.model), job.optimizer)
    data_t = torch.from_numpy(packed.input_ids.astype(np.int64))
    bar = _train_bar(job.steps, start, progress and job.is_main, label=f"proxy {job.preset}")
    losses: list[float] = [c["train_loss"] for c in curve if "train_loss" in c]
    job.model.train()
    t_loop, tokens_done, side_seconds = time.perf_counter(), 0, 0.0  # side: evals, checkpoints
    with bar:
        for step in range(start, job.steps):
            mult = lr_at(job.schedule_offset + step, job.total_steps, cfg)
            total = _train_step(job, data_t, step, cfg.lr * mult)
            losses.append(total)
            tokens_done += job.per_step * cfg.seq_len
            tps = tokens_done / max(time.perf_counter() - t_loop - side_seconds, 1e-9)
            bar.update(step + 1, loss=f"{total:.3f}", tps=f"{tps:,.0f}")
            point: dict[str, Any] = {
                "step": step + 1,
                "tokens": (step + 1) * job.per_step * cfg.seq_len,
                "train_loss": total,
                "lr": cfg.lr * mult,
            }
            side_seconds += _after_step(job, step + 1, point, curve, stop_after)
    return LoopResult(start, curve, losses, time.perf_counter() - t_loop - side_seconds)


def micro_batch_rows(step: int, micro: int, cfg: TrainConfig, rank: int, processes: int) -> int:
    """The first packed sequence of process `rank`'s slice of a micro-batch: micro-batch
    `step * grad_accum + micro` holds `processes * batch_size` sequences, one slice each."""
    return ((step * cfg.grad_accum + micro) * processes + rank) * cfg.batch_size


def _train_step(job: TrainingJob, data_t: Any, step: int, lr: float) -> float:
    """One optimizer step (over `grad_accum` micro-batches) at `lr`, on this process's slice
    of each; returns the step's loss (the mean over the processes)."""
    import contextlib

    import torch

    cfg, model, optimizer, accelerator = job.cfg, job.model, job.optimizer, job.accelerator
    rank, n = accelerator.process_index, job.processes
    for group in optimizer.param_groups:
        group["lr"] = lr
    total = 0.0
    for micro in range(cfg.grad_accum):
        a = micro_batch_rows(step, micro, cfg, rank, n)
        x = data_t[a : a + cfg.batch_size].to(accelerator.device)
        last = micro == cfg.grad_accum - 1  # gradients are all-reduced once, after the last
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            loss = model(input_ids=x, labels=x).loss / cfg.grad_accum
            accelerator.backward(loss)
        total += float(loss.detach())
    if n > 1:
        mine = torch.tensor([total], dtype=torch.float64, device=accelerator.device)
        total = float(accelerator.reduce(mine, reduction="mean")[0])
    if cfg.grad_clip:
        accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def _after_step(
    job: TrainingJob,
    done: int,
    point: dict[str, Any],
    curve: list[dict[str, Any]],
    stop_after: int | None,
) -> float:
    """After `done` steps: evaluate into `point` and add it to `curve`, checkpoint, stop (with
    `stop_after`) when due; returns the seconds this took."""
    cfg = job.cfg
    last = done == job.steps
    side_seconds = 0.0
    if job.evalset is not None and (last or (cfg.eval_every and done % cfg.eval_every == 0)):
        t_side = time.perf_counter()
        point["bpb"] = job.evaluate()
        side_seconds += time.perf_counter() - t_side
    curve.append(point)
    stop = stop_after is not None and done >= stop_after
    if not last and ((cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or stop):
        t_side = time.perf_counter()
        if job.is_main:
            save_checkpoint(
                job.out, job.run_id, done, job.accelerator, job.model, job.optimizer, curve
            )
        job.accelerator.wait_for_everyone()
        side_seconds += time.perf_counter() - t_side
        if stop:
            raise TrainingStopped(done)
    return side_seconds


class TrainingStopped(RuntimeError):
    """Raised by `stop_after`: the run was checkpointed and can be resumed."""

    def __init__(self, step: int):
        super().__init__(f"stopped after step {step} with a checkpoint; call again to resume")
        self.step = step


def _eval(model: Any, evalset: Any, cfg: TrainConfig) -> dict[str, dict[str, float]]:
    from assay.common.losses import evaluate_bpb

    return evaluate_bpb(model, evalset, batch_tokens=cfg.eval_batch_tokens)


def _train_bar(steps: int, start: int, enabled: bool, label: str) -> ProgressBar:
    return ProgressBar(
        label,
        steps,
        start,
        "steps · loss {task.fields[loss]} · {task.fields[tps]} tok/s",
        enabled,
        loss="-",
        tps="-",
    )

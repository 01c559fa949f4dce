"""Train a proxy LM on a mixture: `train_proxy(...) -> ProxyRun`.

A loop you can read in one sitting (nanoGPT's shape) on top of accelerate, so the same call runs
on this CPU or on a GPU with bf16 autocast:

    for step in range(steps):
        for micro in range(grad_accum):          # sequences are packed once, in training order
            loss = model(x, labels=x).loss / grad_accum
            accelerator.backward(loss)
        clip; optimizer.step(); lr schedule; zero_grad
        every eval_every steps: per-domain held-out bits per byte (the curve BiMix fits)
        every checkpoint_every steps: save model (safetensors), optimizer and step, atomically

Staged training (MATES trains in stages and re-selects its data between them) continues one run
from another: `keep_optimizer=True` leaves the final optimizer state in `out_dir/state/` beside
the model, and a later call with `init_from=<that folder>` starts from its weights *and* AdamW
moments and step counts. `schedule_offset` / `schedule_total` evaluate the learning-rate schedule
on the global step, so that one warmup / cosine / WSD schedule spans all stages.

Runs are deterministic on CPU for a seed: the data order is a function of the seed, the model
initialisation too, and resuming from a checkpoint restores the optimizer state and continues
with the very next batch, so a resumed run ends with the same loss as an uninterrupted one.
A finished run directory is recognised and returned without training again.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from assay.common.lm import count_parameters
from assay.common.mixture import Mixture, resolve_mixture
from assay.common.tokens import TokenCache, tokenizer_fingerprint
from assay.io.corpus import Corpus
from assay.proxies.data import pack_mixture
from assay.proxies.model import build_model, get_preset, save_model
from assay.util.config import Strict
from assay.util.files import host_name, read_json, write_json
from assay.util.guard import check_output, folder_lock
from assay.util.hashing import config_hash
from assay.util.progress import ProgressBar

RUN_FILE = "run.json"
STATE_DIR = "state"  # final optimizer state of a run trained with keep_optimizer=True


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


@dataclass
class ProxyRun:
    """Everything a mixture search needs to know about one proxy run."""

    run_id: str
    out_dir: str
    preset: str
    seed: int
    tokens: int
    steps: int
    params: dict[str, int]
    mixture: dict[str, float]
    effective_mixture: dict[str, float]
    data: dict[str, Any]
    train_loss: float
    bpb: dict[str, float]
    loss: dict[str, float]
    curve: list[dict[str, Any]]
    wall_seconds: float
    tokens_per_second: float
    config: dict[str, Any]
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def model_dir(self) -> str:
        return str(Path(self.out_dir) / "model")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> ProxyRun:
        return cls(**read_json(Path(out_dir) / RUN_FILE))


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


def load_weights(model: Any, path: str | os.PathLike) -> None:
    """Load safetensors weights into `model` (tied output embeddings re-tied), strictly."""
    from safetensors.torch import load_file

    weights = load_file(str(path))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {k for k in missing if "lm_head" in k}
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"the weights in {path} do not match the model ({missing=}, {unexpected=})"
        )
    if tied:
        model.tie_weights()


def has_training_state(run_dir: str | os.PathLike) -> bool:
    """Whether a finished run kept its optimizer state (train_proxy(..., keep_optimizer=True))."""
    d = Path(run_dir)
    return (d / RUN_FILE).exists() and (d / STATE_DIR / "optimizer.pt").exists()


def load_training_state(run_dir: str | os.PathLike, model: Any, optimizer: Any) -> dict[str, Any]:
    """Load a finished run's final weights and optimizer state; returns its `state.json`
    (run_id, steps, global_step: the schedule step the next update would take, schedule_total)."""
    import torch

    d = Path(run_dir)
    if not has_training_state(d):
        raise FileNotFoundError(
            f"{d} is not a finished proxy run with optimizer state: train it with "
            "train_proxy(..., keep_optimizer=True)"
        )
    load_weights(model, d / "model" / "model.safetensors")
    # weights_only: never unpickle arbitrary objects, even from our own folder.
    optimizer.load_state_dict(torch.load(d / STATE_DIR / "optimizer.pt", weights_only=True))
    return read_json(d / STATE_DIR / "state.json")


def _resolve_tokenizer(
    tokenizer: Any, corpus: Corpus | None, preset: str, out: Path, seed: int
) -> Any:
    from assay.common.tokenizer import load_tokenizer, train_tokenizer

    if tokenizer is None:
        if corpus is None:
            raise ValueError("pass a tokenizer (a TokenCache was given, so none can be trained)")
        tdir = out / "tokenizer"
        if (tdir / "tokenizer.json").exists():
            return load_tokenizer(tdir)
        return train_tokenizer(corpus, get_preset(preset).vocab_size, tdir, seed=seed)
    if isinstance(tokenizer, str | os.PathLike):
        return load_tokenizer(tokenizer)
    return tokenizer


def train_proxy(
    data: Corpus | TokenCache,
    mixture: Mixture | dict[str, float] | str,
    tokens: int,
    preset: str = "tiny",
    seed: int = 0,
    *,
    out_dir: str | os.PathLike,
    tokenizer: Any = None,
    heldout: Corpus | None = None,
    eval_docs: int | None = 200,
    config: TrainConfig | None = None,
    tasks: list[str] | None = None,
    runs_table: str | os.PathLike | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    init_from: str | os.PathLike | None = None,
    keep_optimizer: bool = False,
    schedule_offset: int = 0,
    schedule_total: int | None = None,
    **overrides: Any,
) -> ProxyRun:
    """Train one proxy on `tokens` tokens of `mixture` drawn from `data`; evaluate; save; report.

    `data` is a Corpus with a `domain` column (tokenized once into `out_dir/tokens`) or a shared
    TokenCache. `mixture` is a Mixture, a mapping, a file, or 'natural' / 'uniform'. Without a `tokenizer`, one is trained on the corpus at the preset's vocabulary
    size. `heldout` (a Corpus with the same domains) gives the per-domain bits per byte;
    `tasks` names local lm-eval tasks to run at the end. `stop_after` stops after that many
    steps with a checkpoint (for tests of resumption); calling again resumes.

    Staged training: `init_from` (a finished run trained with `keep_optimizer=True`) starts from
    its final weights and optimizer state instead of a fresh model; `keep_optimizer` keeps this
    run's final optimizer state in `out_dir/state/`; the learning rate of local step `i` is
    `lr_at(schedule_offset + i, schedule_total, config)` (default: offset 0, total = this run's
    steps, i.e. a schedule of its own).
    """
    import torch
    from accelerate import Accelerator

    cfg = config or TrainConfig()
    if overrides:
        cfg = TrainConfig.model_validate({**cfg.model_dump(), **overrides})
    get_preset(preset)
    out = Path(out_dir)
    if isinstance(data, Corpus):
        data.check_output(out, "run folder")
    else:
        check_output(out, [data.root], "run folder", may_contain=True)
    if heldout is not None:
        heldout.check_output(out, "run folder")
    with folder_lock(out):
        t_start = time.perf_counter()

        corpus = data if isinstance(data, Corpus) else None
        tok = _resolve_tokenizer(tokenizer, corpus, preset, out, seed)
        cache = (
            data if isinstance(data, TokenCache) else TokenCache.build(data, tok, out / "tokens")
        )
        mix = resolve_mixture(mixture, {d: t.n_tokens for d, t in cache.domains.items()})
        identity = {
            "preset": preset,
            "seed": seed,
            "tokens": tokens,
            "mixture": mix.to_dict(),
            "config": cfg.model_dump(),
            "tokenizer": tokenizer_fingerprint(tok),
            "data": cache.meta.get("identity"),
            "tasks": tasks or [],
            "eval_docs": eval_docs,
        }
        # Staged settings enter the identity only when used, so that plain runs keep their ids.
        init_state: dict[str, Any] | None = None
        if init_from is not None:
            if not has_training_state(init_from):
                raise FileNotFoundError(
                    f"init_from={str(init_from)!r} is not a finished proxy run with optimizer state: "
                    "train it with train_proxy(..., keep_optimizer=True)"
                )
            init_state = read_json(Path(init_from) / STATE_DIR / "state.json")
            identity["init_from"] = init_state["run_id"]
        if schedule_offset or schedule_total is not None:
            identity["schedule"] = [schedule_offset, schedule_total]
        if schedule_offset < 0:
            raise ValueError("schedule_offset must be >= 0")
        run_id = config_hash(identity)
        if (out / RUN_FILE).exists():
            done = read_json(out / RUN_FILE)
            if done.get("run_id") == run_id:
                if keep_optimizer and not (out / STATE_DIR / "optimizer.pt").exists():
                    raise ValueError(
                        f"{out} holds this run finished without its optimizer state; train it again "
                        "with keep_optimizer=True in another folder"
                    )
                run = ProxyRun(**done)
                if runs_table is not None:
                    from assay.proxies.runs import RunsTable

                    RunsTable(runs_table).append(run)
                return run
            raise ValueError(f"{out} holds a finished run with other settings; use another folder")

        packed = pack_mixture(
            cache, mix, tokens, cfg.seq_len, seed=seed, max_epochs=cfg.max_epochs, on_cap=cfg.on_cap
        )
        per_step = cfg.batch_size * cfg.grad_accum
        steps = len(packed.input_ids) // per_step
        if steps < 1:
            raise ValueError(
                f"{tokens:,} tokens make fewer than one step of {per_step} sequences x {cfg.seq_len} tokens"
            )
        total_steps = steps if schedule_total is None else schedule_total
        if schedule_offset + steps > total_steps:
            raise ValueError(
                f"schedule_total={total_steps} is less than schedule_offset + steps "
                f"({schedule_offset} + {steps}); the schedule must cover this run"
            )

        accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),
            mixed_precision="bf16" if torch.cuda.is_available() else "no",
        )
        model = build_model(preset, cache.vocab_size, cfg.seq_len, arch=cfg.arch, seed=seed)
        optimizer = make_optimizer(model, cfg)
        model, optimizer = accelerator.prepare(model, optimizer)

        evalset = None
        if heldout is not None:
            from assay.common.losses import build_eval_set

            evalset = build_eval_set(
                heldout, tok, cfg.seq_len, max_docs_per_group=eval_docs, seed=seed
            )

        start, curve = _restore(out, run_id, accelerator, model, optimizer)
        if start == 0 and init_from is not None:  # a checkpoint of this run itself wins
            load_training_state(init_from, accelerator.unwrap_model(model), optimizer)
        data_t = torch.from_numpy(packed.input_ids.astype(np.int64))
        bar = _train_bar(steps, start, progress, label=f"proxy {preset}")
        losses: list[float] = [c["train_loss"] for c in curve if "train_loss" in c]
        model.train()
        t_loop, tokens_done, side_seconds = time.perf_counter(), 0, 0.0  # side: evals, checkpoints
        step = start
        with bar:
            for step in range(start, steps):
                mult = lr_at(schedule_offset + step, total_steps, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * mult
                total = 0.0
                for micro in range(cfg.grad_accum):
                    a = (step * cfg.grad_accum + micro) * cfg.batch_size
                    x = data_t[a : a + cfg.batch_size].to(accelerator.device)
                    loss = model(input_ids=x, labels=x).loss / cfg.grad_accum
                    accelerator.backward(loss)
                    total += float(loss.detach())
                if cfg.grad_clip:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(total)
                tokens_done += per_step * cfg.seq_len
                tps = tokens_done / max(time.perf_counter() - t_loop - side_seconds, 1e-9)
                bar.update(step + 1, loss=f"{total:.3f}", tps=f"{tps:,.0f}")
                last = step + 1 == steps
                point: dict[str, Any] = {
                    "step": step + 1,
                    "tokens": (step + 1) * per_step * cfg.seq_len,
                    "train_loss": total,
                    "lr": cfg.lr * mult,
                }
                if evalset is not None and (
                    last or (cfg.eval_every and (step + 1) % cfg.eval_every == 0)
                ):
                    t_side = time.perf_counter()
                    point["bpb"] = _eval(accelerator.unwrap_model(model), evalset, cfg)
                    side_seconds += time.perf_counter() - t_side
                curve.append(point)
                if not last and (
                    (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0)
                    or (stop_after is not None and step + 1 >= stop_after)
                ):
                    t_side = time.perf_counter()
                    _checkpoint(out, run_id, step + 1, accelerator, model, optimizer, curve)
                    side_seconds += time.perf_counter() - t_side
                    if stop_after is not None and step + 1 >= stop_after:
                        raise TrainingStopped(step + 1)
        train_seconds = time.perf_counter() - t_loop - side_seconds

        unwrapped = accelerator.unwrap_model(model)
        final = (
            curve[-1].get("bpb")
            if curve and "bpb" in curve[-1]
            else (_eval(unwrapped, evalset, cfg) if evalset else {})
        )
        task_results: dict[str, dict[str, float]] = {}
        if tasks:
            from assay.common.harness import evaluate

            task_results = evaluate(unwrapped, tok, tasks)
        save_model(unwrapped, out / "model", tok)
        if keep_optimizer:
            _save_state(out, run_id, optimizer, steps, schedule_offset, total_steps, init_state)
        tail = losses[-max(1, len(losses) // 10) :]
        run = ProxyRun(
            run_id=run_id,
            out_dir=str(out),
            preset=preset,
            seed=seed,
            tokens=steps * per_step * cfg.seq_len,
            steps=steps,
            params=count_parameters(unwrapped),
            mixture=mix.to_dict(),
            effective_mixture=packed.report["effective_mixture"],
            data=packed.report,
            train_loss=float(np.mean(tail)),
            bpb={d: v["bpb"] for d, v in (final or {}).items()},
            loss={d: v["loss"] for d, v in (final or {}).items()},
            curve=_compact_curve(curve),
            wall_seconds=round(time.perf_counter() - t_start, 3),
            tokens_per_second=round(
                (steps - start) * per_step * cfg.seq_len / max(train_seconds, 1e-9), 1
            ),
            config=cfg.model_dump(),
            tasks=task_results,
        )
        write_json(out / RUN_FILE, run.to_dict())
        shutil.rmtree(out / "checkpoint", ignore_errors=True)
        if runs_table is not None:
            from assay.proxies.runs import RunsTable

            RunsTable(runs_table).append(run)
        return run


def _save_state(
    out: Path,
    run_id: str,
    optimizer: Any,
    steps: int,
    offset: int,
    total: int,
    init_state: dict[str, Any] | None,
) -> None:
    """The final optimizer state (and where the schedule stands) in `out/state/`, atomically."""
    import torch

    from assay.util.files import atomic_path

    with atomic_path(out / STATE_DIR / "optimizer.pt") as tmp:
        torch.save(optimizer.state_dict(), tmp)
    write_json(
        out / STATE_DIR / "state.json",
        {
            "run_id": run_id,
            "steps": steps,
            "global_step": offset + steps,
            "schedule_total": total,
            "init_from": init_state["run_id"] if init_state else None,
        },
    )


class TrainingStopped(RuntimeError):
    """Raised by `stop_after`: the run was checkpointed and can be resumed."""

    def __init__(self, step: int):
        super().__init__(f"stopped after step {step} with a checkpoint; call again to resume")
        self.step = step


def _eval(model: Any, evalset: Any, cfg: TrainConfig) -> dict[str, dict[str, float]]:
    from assay.common.losses import evaluate_bpb

    return evaluate_bpb(model, evalset, batch_tokens=cfg.eval_batch_tokens)


def _compact_curve(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep evaluation points and about 200 training-loss points (a run's JSON stays small)."""
    keep_every = max(1, len(curve) // 200)
    return [
        c for i, c in enumerate(curve) if "bpb" in c or i % keep_every == 0 or i == len(curve) - 1
    ]


def _checkpoint(
    out: Path, run_id: str, step: int, accelerator: Any, model: Any, optimizer: Any, curve: list
) -> None:
    """Model (safetensors), optimizer state and step, written to a temp folder then renamed."""
    import torch

    tmp = out / f".checkpoint.tmp-{host_name()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    accelerator.unwrap_model(model).save_pretrained(str(tmp / "model"), safe_serialization=True)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    write_json(tmp / "state.json", {"run_id": run_id, "step": step, "curve": curve})
    final = out / "checkpoint"
    old = out / f".checkpoint.old-{host_name()}-{os.getpid()}"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _restore(
    out: Path, run_id: str, accelerator: Any, model: Any, optimizer: Any
) -> tuple[int, list]:
    """Resume from `out/checkpoint` when it belongs to this run; otherwise start at step 0."""
    import torch

    ck = out / "checkpoint"
    if not (ck / "state.json").exists():
        return 0, []
    state = read_json(ck / "state.json")
    if state.get("run_id") != run_id:
        shutil.rmtree(ck)
        return 0, []
    load_weights(accelerator.unwrap_model(model), ck / "model" / "model.safetensors")
    # weights_only: never unpickle arbitrary objects, even from our own folder.
    optimizer.load_state_dict(torch.load(ck / "optimizer.pt", weights_only=True))
    return int(state["step"]), list(state["curve"])


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

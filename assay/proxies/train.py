"""Train a proxy LM on a mixture: `train_proxy(...) -> ProxyRun`.

A run: its identity (the hash of everything its result depends on), a finished run recognised
and returned, the mixture packed from a token cache, the training loop (`assay.proxies.loop`,
with `TrainConfig`, `lr_at` and `make_optimizer`), checkpoints and kept optimizer state
(`assay.proxies.checkpoint`), the final evaluation and `run.json`.

Staged training (MATES trains in stages and re-selects its data between them) continues one run
from another: `keep_optimizer=True` leaves the final optimizer state in `out_dir/state/` beside
the model, and a later call with `init_from=<that folder>` starts from its weights *and* AdamW
moments and step counts. `schedule_offset` / `schedule_total` evaluate the learning-rate schedule
on the global step, so that one warmup / cosine / WSD schedule spans all stages.

Under `accelerate launch` with N processes a run is data parallel (`assay.proxies.loop`): each
process trains on its slice of every batch, so N processes at `batch_size` b train as one at
N x b. The main process locks the folder, makes the tokenizer and token cache when they are
missing (the others then read them), and alone writes checkpoints, the model and `run.json`;
the run id records N when it is more than one.

Runs are deterministic on CPU for a seed: the data order is a function of the seed, the model
initialisation too, and resuming from a checkpoint restores the optimizer state and continues
with the very next batch, so a resumed run ends with the same loss as an uninterrupted one.
A finished run directory is recognised and returned without training again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assay.common.lm import count_parameters
from assay.common.mixture import Mixture, resolve_mixture
from assay.common.tokens import TokenCache, tokenizer_fingerprint
from assay.errors import ConfigError, StateError
from assay.io.corpus import Corpus
from assay.proxies.checkpoint import RUN_FILE, STATE_DIR, has_training_state, save_state
from assay.proxies.data import PackedData, pack_mixture
from assay.proxies.loop import LoopResult, TrainConfig, TrainingJob, process_state, train_loop

# Re-exported: train_proxy's interface, as it was when they lived here.
from assay.proxies.loop import TrainingStopped as TrainingStopped
from assay.proxies.loop import lr_at as lr_at
from assay.proxies.loop import make_optimizer as make_optimizer
from assay.proxies.model import get_preset, save_model
from assay.util.files import read_json, write_json
from assay.util.guard import check_output, folder_lock
from assay.util.hashing import config_hash

log = logging.getLogger(__name__)


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


def _resolve_tokenizer(
    tokenizer: Any, corpus: Corpus | None, preset: str, out: Path, seed: int
) -> Any:
    from assay.common.tokenizer import load_tokenizer, train_tokenizer

    if tokenizer is None:
        if corpus is None:
            raise ConfigError("pass a tokenizer (a TokenCache was given, so none can be trained)")
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
    TokenCache. `mixture` is a Mixture, a mapping, a file, or 'natural' / 'uniform'. Without a
    `tokenizer`, one is trained on the corpus at the preset's vocabulary size. `heldout` (a
    Corpus with the same domains) gives the per-domain bits per byte; `tasks` names local lm-eval
    tasks to run at the end. `stop_after` stops after that many steps with a checkpoint (for
    tests of resumption); calling again resumes.

    Staged training: `init_from` (a finished run trained with `keep_optimizer=True`) starts from
    its final weights and optimizer state instead of a fresh model; `keep_optimizer` keeps this
    run's final optimizer state in `out_dir/state/`; the learning rate of local step `i` is
    `lr_at(schedule_offset + i, schedule_total, config)` (default: offset 0, total = this run's
    steps, i.e. a schedule of its own).
    """
    cfg = config or TrainConfig()
    if overrides:
        cfg = TrainConfig.model_validate({**cfg.model_dump(), **overrides})
    get_preset(preset)
    out = Path(out_dir)
    _check_run_folder(out, data, heldout)
    state = process_state()  # one of several under accelerate launch: data parallel
    main = state.is_main_process
    with folder_lock(out) if main else contextlib.nullcontext():
        t_start = time.perf_counter()
        with state.main_process_first():  # the others read what the main process makes
            corpus = data if isinstance(data, Corpus) else None
            tok = _resolve_tokenizer(tokenizer, corpus, preset, out, seed)
            cache = (
                data
                if isinstance(data, TokenCache)
                else TokenCache.build(data, tok, out / "tokens")
            )
        mix = resolve_mixture(mixture, {d: t.n_tokens for d, t in cache.domains.items()})
        identity = _run_identity(preset, seed, tokens, mix, cfg, tok, cache, tasks, eval_docs)
        if state.num_processes > 1:  # only then: single-process runs keep their ids
            identity["processes"] = state.num_processes
        init_state = _staged_identity(identity, init_from, schedule_offset, schedule_total)
        run_id = config_hash(identity)
        finished = _finished_run(out, run_id, keep_optimizer)
        if finished is not None:
            log.info("proxy run %s in %s: finished before, reused", run_id, out)
            if main:
                _append_to_table(runs_table, finished)
            return finished

        packed = pack_mixture(
            cache, mix, tokens, cfg.seq_len, seed=seed, max_epochs=cfg.max_epochs, on_cap=cfg.on_cap
        )
        n = state.num_processes
        steps, total_steps = _count_steps(packed, tokens, cfg, schedule_offset, schedule_total, n)
        job = TrainingJob(out, run_id, cfg, preset, seed, steps, total_steps, schedule_offset, n)
        log.info(
            "proxy run %s: %s, %s tokens in %d steps (%d processes) -> %s",
            run_id,
            preset,
            f"{steps * job.per_step * cfg.seq_len:,}",
            steps,
            n,
            out,
        )
        job.prepare(cache.vocab_size, heldout, tok, eval_docs)
        trained = train_loop(job, packed, init_from, stop_after, progress)
        run = _finish_run(
            job, packed, mix, tok, tasks, trained, t_start, keep_optimizer, init_state
        )
        if main:
            _append_to_table(runs_table, run)
        return run


def _check_run_folder(out: Path, data: Corpus | TokenCache, heldout: Corpus | None) -> None:
    """The run folder may be neither an input nor inside one (a shared TokenCache may hold it)."""
    if isinstance(data, Corpus):
        data.check_output(out, "run folder")
    else:
        check_output(out, [data.root], "run folder", may_contain=True)
    if heldout is not None:
        heldout.check_output(out, "run folder")


def _run_identity(
    preset: str,
    seed: int,
    tokens: int,
    mix: Mixture,
    cfg: TrainConfig,
    tok: Any,
    cache: TokenCache,
    tasks: list[str] | None,
    eval_docs: int | None,
) -> dict[str, Any]:
    """What the run id is the hash of (`_staged_identity` adds the staged settings)."""
    return {
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


def _staged_identity(
    identity: dict[str, Any],
    init_from: str | os.PathLike | None,
    schedule_offset: int,
    schedule_total: int | None,
) -> dict[str, Any] | None:
    """Add the staged settings to `identity` (only when used, so that plain runs keep their
    ids); returns the state of the run `init_from` continues (None without it)."""
    init_state: dict[str, Any] | None = None
    if init_from is not None:
        if not has_training_state(init_from):
            raise StateError(
                f"init_from={str(init_from)!r} is not a finished proxy run with optimizer state: "
                "train it with train_proxy(..., keep_optimizer=True)"
            )
        init_state = read_json(Path(init_from) / STATE_DIR / "state.json")
        identity["init_from"] = init_state["run_id"]
    if schedule_offset or schedule_total is not None:
        identity["schedule"] = [schedule_offset, schedule_total]
    if schedule_offset < 0:
        raise ConfigError("schedule_offset must be >= 0")
    return init_state


def _finished_run(out: Path, run_id: str, keep_optimizer: bool) -> ProxyRun | None:
    """The run `out` holds finished, if it is this one; None when it holds none."""
    if not (out / RUN_FILE).exists():
        return None
    done = read_json(out / RUN_FILE)
    if done.get("run_id") != run_id:
        raise StateError(f"{out} holds a finished run with other settings; use another folder")
    if keep_optimizer and not (out / STATE_DIR / "optimizer.pt").exists():
        raise StateError(
            f"{out} holds this run finished without its optimizer state; train it again "
            "with keep_optimizer=True in another folder"
        )
    return ProxyRun(**done)


def _append_to_table(runs_table: str | os.PathLike | None, run: ProxyRun) -> None:
    if runs_table is not None:
        from assay.proxies.runs import RunsTable

        RunsTable(runs_table).append(run)


def _count_steps(
    packed: PackedData,
    tokens: int,
    cfg: TrainConfig,
    schedule_offset: int,
    schedule_total: int | None,
    processes: int = 1,
) -> tuple[int, int]:
    """Optimizer steps of the run (each of `processes` x batch_size x grad_accum sequences),
    and of the learning-rate schedule it is part of."""
    per_step = cfg.batch_size * cfg.grad_accum * processes
    steps = len(packed.input_ids) // per_step
    if steps < 1:
        raise ConfigError(
            f"{tokens:,} tokens make fewer than one step of {per_step} sequences x "
            f"{cfg.seq_len} tokens"
            + (
                f" ({processes} processes x {cfg.batch_size * cfg.grad_accum})"
                if processes > 1
                else ""
            )
        )
    total_steps = steps if schedule_total is None else schedule_total
    if schedule_offset + steps > total_steps:
        raise ConfigError(
            f"schedule_total={total_steps} is less than schedule_offset + steps "
            f"({schedule_offset} + {steps}); the schedule must cover this run"
        )
    return steps, total_steps


def _finish_run(
    job: TrainingJob,
    packed: PackedData,
    mix: Mixture,
    tok: Any,
    tasks: list[str] | None,
    trained: LoopResult,
    t_start: float,
    keep_optimizer: bool,
    init_state: dict[str, Any] | None,
) -> ProxyRun:
    """Final evaluation and tasks, the model (and optimizer state) saved, `run.json` written,
    by the main process; the other processes of a data-parallel run read its `run.json`."""
    if not job.is_main:
        job.accelerator.wait_for_everyone()
        return ProxyRun.load(job.out)
    try:
        return _write_run(
            job, packed, mix, tok, tasks, trained, t_start, keep_optimizer, init_state
        )
    finally:
        job.accelerator.wait_for_everyone()


def _write_run(
    job: TrainingJob,
    packed: PackedData,
    mix: Mixture,
    tok: Any,
    tasks: list[str] | None,
    trained: LoopResult,
    t_start: float,
    keep_optimizer: bool,
    init_state: dict[str, Any] | None,
) -> ProxyRun:
    cfg, out, curve = job.cfg, job.out, trained.curve
    unwrapped = job.accelerator.unwrap_model(job.model)
    final = (
        curve[-1].get("bpb")
        if curve and "bpb" in curve[-1]
        else (job.evaluate() if job.evalset else {})
    )
    task_results: dict[str, dict[str, float]] = {}
    if tasks:
        from assay.common.harness import evaluate

        task_results = evaluate(unwrapped, tok, tasks)
    save_model(unwrapped, out / "model", tok)
    if keep_optimizer:
        save_state(
            out,
            job.run_id,
            job.optimizer,
            job.steps,
            job.schedule_offset,
            job.total_steps,
            init_state,
        )
    tail = trained.losses[-max(1, len(trained.losses) // 10) :]
    trained_tokens = (job.steps - trained.start) * job.per_step * cfg.seq_len
    run = ProxyRun(
        run_id=job.run_id,
        out_dir=str(out),
        preset=job.preset,
        seed=job.seed,
        tokens=job.steps * job.per_step * cfg.seq_len,
        steps=job.steps,
        params=count_parameters(unwrapped),
        mixture=mix.to_dict(),
        effective_mixture=packed.report["effective_mixture"],
        data=packed.report,
        train_loss=float(np.mean(tail)),
        bpb={d: v["bpb"] for d, v in (final or {}).items()},
        loss={d: v["loss"] for d, v in (final or {}).items()},
        curve=_compact_curve(curve),
        wall_seconds=round(time.perf_counter() - t_start, 3),
        tokens_per_second=round(trained_tokens / max(trained.seconds, 1e-9), 1),
        config=cfg.model_dump(),
        tasks=task_results,
    )
    write_json(out / RUN_FILE, run.to_dict())
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    log.info(
        "proxy run %s: trained in %.1f s (%s tokens/s), train loss %.3f%s",
        run.run_id,
        run.wall_seconds,
        f"{run.tokens_per_second:,.0f}",
        run.train_loss,
        "; held-out bpb " + ", ".join(f"{d} {v:.3f}" for d, v in run.bpb.items())
        if run.bpb
        else "",
    )
    return run


def _compact_curve(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep evaluation points and about 200 training-loss points (a run's JSON stays small)."""
    keep_every = max(1, len(curve) // 200)
    return [
        c for i, c in enumerate(curve) if "bpb" in c or i % keep_every == 0 or i == len(curve) - 1
    ]

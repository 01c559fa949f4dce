"""Run a per-shard task over a corpus: in this process, a local process pool, or Ray.

A task is any picklable object with

    output_name(shard) -> str | None      # relative output path, or None for no output
    __call__(shard, out: Path | None) -> ShardStats

The runner owns the bookkeeping every task needs, so tasks stay small:

* **resume by content**: a shard is done when its output exists and its stats record the same
  *source* as now: the input shard's identity (name, size, modification time, a hash of its
  first and last MiB) plus whatever else the task reads (`task.source(shard)`, for instance
  the score files a selection used). A shard whose input changed is redone; finished shards are
  otherwise skipped unless `overwrite=True`. The output is written under a temporary name and
  renamed when the task returned; the stats, written last, are the record that it is complete.
* **stats**: each shard's `ShardStats` is saved in `<out>/_stats/<shard>.json`; all of them,
  resumed ones included, are merged into `<out>/_stats.json`.
* **safety**: an output folder that equals, contains or lies inside an input shard is refused;
  the folder is locked for the run (a second writer is refused) and marked as assay's.
* **parts**: a large file may be read as several shards (`assay.io.split`); when a file is now
  cut otherwise than when an output was made (it grew, or `split_bytes` changed), the outputs
  of its old parts (those with stats, so written by assay) are removed, so that the folder never
  holds a file's documents twice.

Everything the runner writes beside the outputs starts with `_` or `.`, which corpus discovery
skips, so an output folder can be read back as a corpus.
* **progress**: a bar with shards done, documents and documents per second (outside a
  terminal, a log line every few seconds: `assay.util.progress`). Tasks report documents as
  they go with `report_progress(n)`; it works across processes.
* **logs**: a line when a run starts (shards, how many to run, how many resumed) and ends
  (counts, seconds, rate), one per shard at DEBUG. Pool workers and Ray tasks log as the
  parent process does (`assay.util.log.worker_logging`).

The same task runs unchanged on every runner: `LocalRunner(workers=1)` (in-process, easiest to
debug), `LocalRunner(workers=N)` (a spawn-based process pool) and `RayRunner(address=...)`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from assay.errors import ConfigError, DependencyError
from assay.exec.devices import gpus_for, pin_worker, pool_gpus, task_device
from assay.io.shards import FileShard, Shard, ShardStats
from assay.io.split import parse_part_name, shard_named
from assay.util.files import (
    json_normal,
    read_json,
    remove_stale_temps,
    temp_path_for,
    write_json,
    writing,
)
from assay.util.guard import check_output, folder_lock, mark_output
from assay.util.log import configure_worker, worker_logging
from assay.util.progress import ProgressBar
from assay.util.remote import publish, unpublish

log = logging.getLogger(__name__)

STATS_DIR = "_stats"
STATS_FILE = "_stats.json"


class ShardTask(Protocol):
    def output_name(self, shard: Shard) -> str | None: ...

    def __call__(self, shard: Shard, out: Path | None) -> ShardStats: ...


def shard_source(task: Any, shard: Shard) -> dict[str, Any]:
    """What a shard's output is made from: the shard's identity, plus `task.source(shard)`
    when the task reads more (score files, a list of ids to keep, a model)."""
    source: dict[str, Any] = {"shard": shard.identity()}
    extra = getattr(task, "source", None)
    if extra is not None:
        source["task"] = extra(shard)
    return json_normal(source)


@dataclass
class RunResult:
    """Merged statistics of one runner call."""

    label: str
    shards: list[ShardStats] = field(default_factory=list)
    ran: int = 0
    resumed: int = 0
    seconds: float = 0.0
    #: shards whose output existed but whose input had changed since: redone (part of `ran`)
    stale: int = 0

    @property
    def docs_in(self) -> int:
        return sum(s.docs_in for s in self.shards)

    @property
    def docs_out(self) -> int:
        return sum(s.docs_out for s in self.shards)

    @property
    def chars_out(self) -> int:
        return sum(s.chars_out for s in self.shards)

    @property
    def skipped(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for s in self.shards:
            for k, v in s.skipped.items():
                total[k] = total.get(k, 0) + v
        return dict(sorted(total.items()))

    def to_dict(self) -> dict[str, Any]:
        ran_docs = sum(s.docs_in for s in self.shards[-self.ran :]) if self.ran else 0
        return {
            "label": self.label,
            "shards": len(self.shards),
            "ran": self.ran,
            "resumed": self.resumed,
            "stale": self.stale,
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "chars_out": self.chars_out,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "docs_per_second": round(ran_docs / self.seconds, 1) if self.seconds > 0 else None,
            "per_shard": [s.to_dict() for s in self.shards],
        }


# ---------------------------------------------------------------------------------------------
# Progress reporting from inside tasks

_progress_hook: Any = None


def report_progress(n_docs: int) -> None:
    """Tell the runner that `n_docs` more documents were processed (no-op outside a runner)."""
    if _progress_hook is not None:
        _progress_hook(n_docs)


def _queue_hook(q: Any) -> Any:
    def hook(n: int) -> None:
        with contextlib.suppress(Exception):
            q.put_nowait(n)

    return hook


def _thread_env(threads: int) -> dict[str, str]:
    """Environment that keeps each worker's native libraries to its share of the cores."""
    n = str(max(1, threads))
    return {
        "POLARS_MAX_THREADS": n,
        "RAYON_NUM_THREADS": n,
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "TOKENIZERS_PARALLELISM": "false",
    }


def _init_worker(
    q: Any,
    env: dict[str, str],
    slot: Any = None,
    gpus: Sequence[str] = (),
    log_level: int | None = None,
) -> None:
    global _progress_hook
    os.environ.update(env)
    configure_worker(log_level)
    _pin_pool_worker(slot, gpus)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(env["OMP_NUM_THREADS"]))
    _progress_hook = _queue_hook(q)


def _pin_pool_worker(slot: Any, gpus: Sequence[str]) -> None:
    """Worker i of a pool (numbered by `slot`, a shared counter, as they start) uses GPU i mod n."""
    if slot is None or not gpus:
        return
    with slot.get_lock():
        index = slot.value
        slot.value += 1
    pin_worker(index, gpus)


# ---------------------------------------------------------------------------------------------
# One shard


def execute_shard(
    task: ShardTask,
    shard: Shard,
    final: str | None,
    stats_path: str | None,
    source: dict[str, Any] | None = None,
) -> ShardStats:
    """Run `task` on one shard; publish its output atomically, then its stats.

    The stats file is the record that the output is complete and what it was made from: it is
    removed before a shard is redone and written only after the output is in place, so a kill
    at any point leaves no output that a resumed run would take for finished.
    """
    t0 = time.perf_counter()
    if final is None:
        stats = task(shard, None)
        stats.seconds = time.perf_counter() - t0
        return stats
    final_path = Path(final)
    with writing(final_path):
        final_path.parent.mkdir(parents=True, exist_ok=True)
        if stats_path is not None:
            Path(stats_path).unlink(missing_ok=True)
            unpublish(stats_path)  # a remote folder: the shard is not done there either
    tmp = temp_path_for(final_path)
    try:
        with writing(final_path):
            stats = task(shard, tmp)
            if not tmp.exists():
                raise RuntimeError(
                    f"{type(task).__name__} wrote no output for shard {shard.name!r}"
                )
            stats.seconds = time.perf_counter() - t0
            stats.source = source or {}
            os.replace(tmp, final_path)
        publish(final_path)  # output first, then the stats that say it is complete
        if stats_path is not None:
            write_json(stats_path, stats.to_dict())
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    log.debug(
        "shard %s: %d documents in, %d out in %.1f s",
        shard.name,
        stats.docs_in,
        stats.docs_out,
        stats.seconds,
    )
    return stats


def _execute_in_ray_worker(
    task: ShardTask,
    shard: Shard,
    final: str | None,
    stats_path: str | None,
    source: dict[str, Any] | None = None,
    log_level: int | None = None,
) -> ShardStats:
    """A Ray task holds one CPU: keep native thread pools to one thread before any work; log as
    the driver does."""
    configure_worker(log_level)
    if os.environ.get("POLARS_MAX_THREADS") != "1":
        os.environ.update(_thread_env(1))
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
    return execute_shard(task, shard, final, stats_path, source)


@dataclass
class _Job:
    index: int
    shard: Shard
    final: str | None
    stats_path: str | None
    source: dict[str, Any] | None = None


def _remove_other_cuts(task: ShardTask, shards: Sequence[Shard], out_dir: Path) -> None:
    """Remove the outputs (and stats) of these files' shards cut into other parts than now."""
    stats_dir = out_dir / STATS_DIR
    files = {s.file_name: s.path for s in shards if isinstance(s, FileShard)}
    if not stats_dir.is_dir():
        return
    current = {s.name for s in shards}
    for f in sorted(stats_dir.rglob("*.json")):
        name = f.relative_to(stats_dir).as_posix()[: -len(".json")]
        parsed = parse_part_name(name)
        file = parsed[0] if parsed else name
        if name in current or file not in files:
            continue
        output = task.output_name(shard_named(name, files[file]))
        if output is not None:
            (out_dir / output).unlink(missing_ok=True)
        f.unlink()


# ---------------------------------------------------------------------------------------------
# Runners


class Runner:
    """Plans which shards still need work, executes them, merges and saves stats."""

    workers: int = 1
    progress: bool = True

    def run(
        self,
        task: ShardTask,
        shards: Sequence[Shard],
        out_dir: str | os.PathLike | None,
        *,
        overwrite: bool = False,
        label: str = "",
    ) -> RunResult:
        label = label or type(task).__name__
        if out_dir is None:
            return self._run(task, shards, None, overwrite, label)
        check_output(out_dir, [s.path for s in shards if isinstance(s, FileShard)])
        with folder_lock(out_dir):
            mark_output(out_dir, label)
            remove_stale_temps(out_dir)
            return self._run(task, shards, out_dir, overwrite, label)

    def _run(
        self,
        task: ShardTask,
        shards: Sequence[Shard],
        out_dir: str | os.PathLike | None,
        overwrite: bool,
        label: str,
    ) -> RunResult:
        t0 = time.perf_counter()
        results: dict[int, ShardStats] = {}
        jobs: list[_Job] = []
        stale = 0
        for i, shard in enumerate(shards):
            name = task.output_name(shard)
            if name is None or out_dir is None:
                jobs.append(_Job(i, shard, None, None))
                continue
            final = Path(out_dir) / name
            stats_path = Path(out_dir) / STATS_DIR / f"{shard.name}.json"
            source = shard_source(task, shard)
            if final.exists() and stats_path.exists() and not overwrite:
                saved = read_json(stats_path)
                if saved.get("source") == source:
                    results[i] = ShardStats.from_dict(saved)
                    continue
                stale += 1  # the output was made from something else: redo it
            jobs.append(_Job(i, shard, str(final), str(stats_path), source))
        resumed = len(results)
        log.info(
            "%s: %d shards, %d to run, %d already done%s",
            label,
            len(shards),
            len(jobs),
            resumed,
            f" ({stale} redone: their input changed)" if stale else "",
        )
        if out_dir is not None:
            _remove_other_cuts(task, shards, Path(out_dir))
        if jobs:
            with _ProgressBar(label, total=len(shards), done=resumed, enabled=self.progress) as bar:
                for job, stats in self._execute(task, jobs, bar):
                    results[job.index] = stats
                    bar.shard_done()
        result = RunResult(
            label=label,
            shards=[results[i] for i in sorted(results)],
            ran=len(jobs),
            resumed=resumed,
            seconds=time.perf_counter() - t0,
            stale=stale,
        )
        # Put the shards that ran last so that to_dict() can compute their throughput.
        ran_idx = {j.index for j in jobs}
        result.shards = [results[i] for i in sorted(results) if i not in ran_idx] + [
            results[i] for i in sorted(results) if i in ran_idx
        ]
        summary = result.to_dict()
        if out_dir is not None:
            write_json(Path(out_dir) / STATS_FILE, summary)
        log.info(
            "%s: done: %d shards ran, %d resumed; %s documents in, %s out; %.1f s (%s docs/s)",
            label,
            result.ran,
            result.resumed,
            f"{result.docs_in:,}",
            f"{result.docs_out:,}",
            result.seconds,
            f"{summary['docs_per_second']:,.0f}" if summary["docs_per_second"] else "-",
        )
        return result

    def _execute(
        self, task: ShardTask, jobs: list[_Job], bar: _ProgressBar
    ) -> Iterator[tuple[_Job, ShardStats]]:
        raise NotImplementedError

    def map(self, fn: Any, items: Sequence[Any], *, runs_on: str = "cpu") -> list[Any]:
        """`[fn(x) for x in items]`, the calls run in parallel (independent jobs that are not
        shards, such as the proxy runs of one mixture-search iteration). `fn` must be a
        module-level function and the items picklable; `runs_on` says where their models run
        (cpu, auto, cuda: see `assay.exec.devices`)."""
        raise NotImplementedError


class LocalRunner(Runner):
    """One machine. `workers=1` runs in this process; more uses a spawn-based process pool,
    whose worker i sees only GPU i mod n of the machine's `gpus` (None: those visible; a count,
    or `CUDA_VISIBLE_DEVICES` entries)."""

    def __init__(
        self,
        workers: int | None = 1,
        progress: bool = True,
        gpus: int | Sequence[str] | None = None,
    ):
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.progress = progress
        self.gpus = gpus

    def _execute(
        self, task: ShardTask, jobs: list[_Job], bar: _ProgressBar
    ) -> Iterator[tuple[_Job, ShardStats]]:
        global _progress_hook
        if self.workers == 1 or len(jobs) == 1:
            previous, _progress_hook = _progress_hook, bar.docs
            try:
                for job in jobs:
                    yield job, execute_shard(task, job.shard, job.final, job.stats_path, job.source)
            finally:
                _progress_hook = previous
            return

        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        env = _thread_env((os.cpu_count() or 1) // self.workers)
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(jobs)),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(q, env, ctx.Value("i", 0), pool_gpus(self.gpus), worker_logging()),
        )
        try:
            futures = {
                pool.submit(execute_shard, task, j.shard, j.final, j.stats_path, j.source): j
                for j in jobs
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(q, bar)
                for f in done:
                    yield futures[f], f.result()
            _drain(q, bar)
        except BrokenProcessPool as e:
            pool.shutdown(wait=True, cancel_futures=True)
            raise RuntimeError(
                "a worker process died: out of memory, a crash in native code, or a script run "
                "with workers > 1 whose top-level code is not under `if __name__ == '__main__':` "
                "(worker processes are spawned and import the main module); finished shards are "
                "kept, run again to resume"
            ) from e
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        else:
            pool.shutdown(wait=True)
        finally:
            q.close()

    def map(self, fn: Any, items: Sequence[Any], *, runs_on: str = "cpu") -> list[Any]:
        if self.workers == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")
        env = _thread_env((os.cpu_count() or 1) // min(self.workers, len(items)))
        with ProcessPoolExecutor(
            max_workers=min(self.workers, len(items)),
            mp_context=ctx,
            initializer=_init_map_worker,
            initargs=(env, ctx.Value("i", 0), pool_gpus(self.gpus), worker_logging()),
        ) as pool:
            return list(pool.map(fn, items))


def _init_map_worker(
    env: dict[str, str], slot: Any = None, gpus: Sequence[str] = (), log_level: int | None = None
) -> None:
    os.environ.update(env)
    configure_worker(log_level)
    _pin_pool_worker(slot, gpus)


def _drain(q: Any, bar: _ProgressBar) -> None:
    while True:
        try:
            bar.docs(q.get_nowait())
        except queue.Empty:
            return
        except (OSError, ValueError):
            return


class RayRunner(Runner):
    """The same tasks as Ray tasks, one CPU each, and one GPU each when the task's model runs on
    one (`runs_on`: "cuda", or "auto" on a cluster with GPUs; see `assay.exec.devices`).

    With no `address` a local Ray instance is started (with `workers` CPUs); with one, tasks go
    to that cluster, whose workers must see the same paths (shared or network storage).
    """

    def __init__(
        self, address: str | None = None, workers: int | None = None, progress: bool = True
    ):
        self.address = address
        self.workers = workers or (os.cpu_count() or 1)
        self.progress = progress

    def _ensure_ray(self) -> Any:
        try:
            import ray
        except ImportError as e:  # pragma: no cover - depends on the install
            raise DependencyError("the Ray runner needs Ray: pip install 'assay[ray]'") from e
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "logging_level": logging.WARNING,
                "log_to_driver": True,
            }
            # No runtime_env here: it would stop Ray from using the workers it prestarts at init,
            # and every run would wait for fresh ones. Thread limits are set inside each task.
            # An address (given, or in RAY_ADDRESS) joins that cluster. Without one a new local
            # instance starts ("local": ray.init would otherwise join the latest cluster
            # started on this machine, with its own CPUs and settings), and it must listen on
            # the loopback interface only: otherwise its GCS, raylet, workers and agents bind
            # to every interface (0.0.0.0 / ::) or to the host's external IP, and anyone who
            # reaches the host could submit code to them.
            env_address = os.environ.get("RAY_ADDRESS", "") not in ("", "local")
            if self.address or env_address:
                ray.init(**kwargs, **({"address": self.address} if self.address else {}))
                return ray
            kwargs.update(address="local", num_cpus=self.workers)
            # Each Ray service binds to loopback exactly when the node IP is the loopback
            # address. But ray.init rewrites a loopback `_node_ip_address` (a private
            # argument; there is no public one) to the host's external IP unless
            # `ray._private.ray_constants.ENABLE_RAY_CLUSTER` (private, read from
            # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when Ray is imported) is false, so clear that
            # flag for the start only, unless the user set the variable. The services get the
            # node IP on their command lines, so nothing else needs changing.
            try:
                from ray._private import ray_constants
            except ImportError:  # pragma: no cover - depends on the Ray version
                ray_constants = None
            patch = hasattr(ray_constants, "ENABLE_RAY_CLUSTER") and (
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
            )
            saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
            if patch:
                ray_constants.ENABLE_RAY_CLUSTER = False
            try:
                ray.init(**kwargs, _node_ip_address="127.0.0.1")
            finally:
                if patch:
                    ray_constants.ENABLE_RAY_CLUSTER = saved
        return ray

    def _execute(
        self, task: ShardTask, jobs: list[_Job], bar: _ProgressBar
    ) -> Iterator[tuple[_Job, ShardStats]]:
        ray = self._ensure_ray()
        gpus = gpus_for(task_device(task), ray.cluster_resources().get("GPU", 0))
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_execute_in_ray_worker)
        task_ref, level = ray.put(task), worker_logging()
        pending = {
            remote.remote(task_ref, j.shard, j.final, j.stats_path, j.source, level): j
            for j in jobs
        }
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in done:
                    job = pending.pop(ref)
                    try:
                        stats = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        cause = getattr(e, "cause", None)
                        raise (cause if isinstance(cause, BaseException) else e) from None
                    bar.docs(stats.docs_in)
                    yield job, stats
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)

    def map(self, fn: Any, items: Sequence[Any], *, runs_on: str = "cpu") -> list[Any]:
        ray = self._ensure_ray()
        gpus = gpus_for(runs_on, ray.cluster_resources().get("GPU", 0))
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_logged_call)
        level = worker_logging()
        refs = [remote.remote(fn, level, x) for x in items]
        try:
            return list(ray.get(refs))
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            raise (cause if isinstance(cause, BaseException) else e) from None


def _logged_call(fn: Any, log_level: int | None, item: Any) -> Any:
    """`fn(item)` in a Ray worker that logs as the driver does."""
    configure_worker(log_level)
    return fn(item)


def make_runner(
    kind: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
) -> Runner:
    """A runner from CLI/recipe settings: kind 'local' or 'ray'."""
    if kind == "local":
        return LocalRunner(workers=workers or 1, progress=progress)
    if kind == "ray":
        return RayRunner(address=address, workers=workers, progress=progress)
    raise ConfigError(f"unknown runner {kind!r}; use 'local' or 'ray'")


# ---------------------------------------------------------------------------------------------
# Progress bar


class _ProgressBar:
    """Shards done, documents and documents per second of one runner call."""

    def __init__(self, label: str, total: int, done: int, enabled: bool):
        self.n_docs, self.t0 = 0, time.perf_counter()
        self._bar = ProgressBar(
            label,
            total,
            done,
            "shards · {task.fields[docs]:,} docs · {task.fields[rate]} docs/s",
            enabled,
            docs=0,
            rate="-",
        )

    def __enter__(self) -> _ProgressBar:
        self._bar.__enter__()
        return self

    def docs(self, n: int) -> None:
        self.n_docs += n
        rate = self.n_docs / max(time.perf_counter() - self.t0, 1e-9)
        self._bar.update(docs=self.n_docs, rate=f"{rate:,.0f}")

    def shard_done(self) -> None:
        self._bar.update(advance=1)

    def __exit__(self, *exc: Any) -> None:
        self._bar.__exit__(*exc)

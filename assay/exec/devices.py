"""GPUs for tasks: how many a task asks for, how many this machine has, and which one each
worker of a local process pool uses.

Nothing here imports torch or needs a GPU. A task (or the scorer it runs) says where its model
runs with `runs_on`: "cpu", "auto" (a GPU when there is one) or "cuda[:N]". On Ray, such a task
asks for one GPU (`gpus_for`), so Ray places it on a node with a free GPU and makes that GPU the
only one it sees. In a local process pool, worker i sees only GPU i mod n (through
`CUDA_VISIBLE_DEVICES`, set before the worker starts CUDA), so the workers spread over the
GPUs instead of all landing on the first.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from assay.errors import ConfigError

_NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def task_device(task: Any) -> str:
    """Where a task's model runs: its `runs_on` ("cpu" when it has none)."""
    return str(getattr(task, "runs_on", None) or "cpu")


def gpus_for(runs_on: str, available: float) -> float:
    """GPUs a task asks its executor for: none on the CPU, one on "cuda" or "cuda:N" (refused
    when the executor has none: the task would wait for ever), one on "auto" when the executor
    has GPUs."""
    name = runs_on.strip().lower()
    if name == "auto":
        return 1.0 if available >= 1 else 0.0
    if name.startswith("cuda"):
        if available < 1:
            raise ConfigError(
                f"the task runs on {runs_on!r} but the cluster has no GPU; use device auto "
                "(a GPU when there is one) or cpu"
            )
        return 1.0
    return 0.0


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as `CUDA_VISIBLE_DEVICES` entries (indices or UUIDs),
    found without starting CUDA: that variable when it is set, else the GPUs of the NVIDIA
    driver (Linux), else torch's count when torch is already imported."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        out = []
        for item in (x.strip() for x in env.split(",")):
            if not item or item.startswith("-"):  # CUDA stops at the first invalid entry
                break
            out.append(item)
        return out
    if _NVIDIA_GPUS.is_dir():
        return [str(i) for i in range(len(list(_NVIDIA_GPUS.iterdir())))]
    torch = sys.modules.get("torch")
    if torch is not None:
        return [str(i) for i in range(torch.cuda.device_count())]
    return []


def pool_gpus(gpus: int | Sequence[str] | None) -> list[str]:
    """A pool's GPUs: the visible ones (None), the first `gpus` indices (a count), or as listed."""
    if gpus is None:
        return visible_gpus()
    if isinstance(gpus, int):
        return [str(i) for i in range(gpus)]
    return [str(g) for g in gpus]


def pin_worker(index: int, gpus: Sequence[str]) -> str | None:
    """Give worker `index` of a pool one of its GPUs, in turn (i mod n), and return it; without
    GPUs nothing changes. The worker then sees that GPU alone, as "cuda" (device 0)."""
    if not gpus:
        return None
    position = index % len(gpus)
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[position]
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # too late to hide the others
        torch.cuda.set_device(position)
    return gpus[position]

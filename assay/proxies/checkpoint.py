"""What a proxy run keeps on disk besides its model: checkpoints to resume from, and the final
optimizer state that a later stage continues from.

- `out/checkpoint/` (while training, with `checkpoint_every` or `stop_after`): the model
  (safetensors), the optimizer state and the step with the curve so far; written to a temporary
  folder and renamed, and removed when the run finishes. Only the main process of a
  data-parallel run writes it; every process resumes from it.
- `out/state/` (a finished run trained with `keep_optimizer=True`): `optimizer.pt` and
  `state.json` (run_id, steps, global_step, schedule_total, init_from), what `init_from` and
  MATES' probes load.

Optimizer states are read with `weights_only=True`: never unpickle arbitrary objects, even from
our own folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from assay.errors import StateError
from assay.util.files import host_name, read_json, write_json
from assay.util.remote import publish

RUN_FILE = "run.json"
STATE_DIR = "state"  # final optimizer state of a run trained with keep_optimizer=True


def load_weights(model: Any, path: str | os.PathLike) -> None:
    """Load safetensors weights into `model` (tied output embeddings re-tied), strictly."""
    from safetensors.torch import load_file

    weights = load_file(str(path))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {k for k in missing if "lm_head" in k}
    if set(missing) - tied or unexpected:
        raise StateError(
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
        raise StateError(
            f"{d} is not a finished proxy run with optimizer state: train it with "
            "train_proxy(..., keep_optimizer=True)"
        )
    load_weights(model, d / "model" / "model.safetensors")
    # weights_only: never unpickle arbitrary objects, even from our own folder.
    optimizer.load_state_dict(torch.load(d / STATE_DIR / "optimizer.pt", weights_only=True))
    return read_json(d / STATE_DIR / "state.json")


def save_state(
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


def save_checkpoint(
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
    publish(final)


def restore_checkpoint(
    out: Path, run_id: str, accelerator: Any, model: Any, optimizer: Any
) -> tuple[int, list]:
    """Resume from `out/checkpoint` when it belongs to this run; otherwise start at step 0.

    With several data-parallel processes the main one removes another run's checkpoint first,
    then every process loads this run's."""
    import torch

    ck = out / "checkpoint"
    main = accelerator.is_main_process
    if (
        main
        and (ck / "state.json").exists()
        and read_json(ck / "state.json").get("run_id") != run_id
    ):
        shutil.rmtree(ck)
    accelerator.wait_for_everyone()
    if not (ck / "state.json").exists():
        return 0, []
    state = read_json(ck / "state.json")
    load_weights(accelerator.unwrap_model(model), ck / "model" / "model.safetensors")
    # weights_only: never unpickle arbitrary objects, even from our own folder.
    optimizer.load_state_dict(torch.load(ck / "optimizer.pt", weights_only=True))
    return int(state["step"]), list(state["curve"])

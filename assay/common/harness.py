"""Benchmark tasks through lm-eval's Python API, on an in-memory model and local task files.

    from assay.eval.harness import evaluate
    evaluate(model, tokenizer, ["assay_mmlu_dev", "assay_champ"])
    # {"assay_mmlu_dev": {"acc": 0.25, "acc_norm": 0.26, "logprob": -9.1, "prob_norm": 0.25,
    #                     "n": 270}}

Tasks are lm-eval YAML files in a local folder (assay's own are built on first use from
installed packages, see `assay.eval.tasks`; any folder of user tasks works too). Nothing is
fetched from a hub: the offline switches are set before lm-eval is imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from assay.common.tasks import TASKS, build_tasks, default_task_dir
from assay.errors import ConfigError


def _offline() -> None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    # lm-eval warns for every item whose context is cut to the model's length, and draws bars.
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    logging.getLogger("lm-eval").setLevel(logging.ERROR)
    import datasets

    datasets.disable_progress_bars()


@contextlib.contextmanager
def _lean_lm_eval(quiet: bool) -> Iterator[None]:
    """While lm-eval runs: no tqdm bars (it offers no switch) and no environment report.

    lm-eval records its own git hash (printing git's error outside a repository) and torch's
    environment (several subprocesses per call); an assay run directory already records both.
    """
    import lm_eval.evaluator as ev
    import tqdm.std

    saved = (tqdm.std.tqdm.__init__, ev.get_git_commit_hash, ev.add_env_info)
    original_init = saved[0]

    def quiet_init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        original_init(self, *args, **kwargs)

    if quiet:
        tqdm.std.tqdm.__init__ = quiet_init  # type: ignore[method-assign]
    ev.get_git_commit_hash = lambda: None
    ev.add_env_info = lambda storage: None
    try:
        yield
    finally:
        tqdm.std.tqdm.__init__ = saved[0]  # type: ignore[method-assign]
        ev.get_git_commit_hash, ev.add_env_info = saved[1], saved[2]


def evaluate(
    model: Any,
    tokenizer: Any,
    tasks: list[str] | tuple[str, ...] = TASKS,
    *,
    task_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    num_fewshot: int = 0,
    seed: int = 0,
    quiet: bool = True,
) -> dict[str, dict[str, float]]:
    """Run lm-eval tasks on `model`; returns {task: {metric: value, "n": items}}."""
    _offline()
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    folder = Path(task_dir) if task_dir else default_task_dir()
    if task_dir is None or not any(folder.glob("*.yaml")):
        build_tasks(folder)
    unknown = [t for t in tasks if not (folder / f"{t}.yaml").exists()]
    if unknown and task_dir is None:
        raise ConfigError(
            f"unknown tasks {unknown}; assay's local tasks are {', '.join(TASKS)} "
            "(or pass task_dir)"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    was_training = model.training
    model.eval()
    try:
        with _lean_lm_eval(quiet):
            lm = HFLM(
                pretrained=model,
                tokenizer=tokenizer,
                batch_size=batch_size,
                max_length=_max_length(model),
            )
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(tasks),
                num_fewshot=num_fewshot,
                limit=limit,
                task_manager=TaskManager(include_path=str(folder), include_defaults=False),
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
                log_samples=False,
                verbosity="ERROR",
            )
    finally:
        model.train(was_training)
    out: dict[str, dict[str, float]] = {}
    for task in tasks:
        metrics = results["results"].get(task, {})
        row = {
            k.split(",")[0]: float(v)
            for k, v in metrics.items()
            if "," in k and not k.split(",")[0].endswith("_stderr") and isinstance(v, int | float)
        }
        row["n"] = float(results.get("n-samples", {}).get(task, {}).get("effective", 0))
        out[task] = row
    return out


def _max_length(model: Any) -> int:
    cfg = model.config
    return int(getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 2048))

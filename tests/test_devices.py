"""Where models run: device and dtype settings resolve on a machine without a GPU, a Ray task
asks for a GPU when its model may use one, and pool workers take one GPU each."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from assay.common.lm import (
    DeviceSettings,
    check_device,
    load_causal_lm,
    planned_dtype,
    resolve_device,
    resolve_dtype,
)
from assay.errors import ConfigError
from assay.exec.devices import gpus_for, pin_worker, pool_gpus, visible_gpus
from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.io.shards import ShardStats

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")


def test_device_names_are_checked() -> None:
    assert [check_device(d) for d in (None, "auto", "CPU", "cuda", "cuda:3", "mps")] == [
        "auto", "auto", "cpu", "cuda", "cuda:3", "mps",
    ]  # fmt: skip
    for bad in ("gpu", "cuda:", "cuda:x", "tpu", ""):
        with pytest.raises(ConfigError, match="unknown device"):
            check_device(bad)
    with pytest.raises(ValidationError, match="unknown device"):
        DeviceSettings(device="gpu")
    with pytest.raises(ValidationError):
        DeviceSettings(dtype="float64")
    # the defaults are left out of dumps: settings hashes of steps made before stay the same
    assert DeviceSettings().model_dump() == {}
    assert DeviceSettings(device="cuda:1", dtype="float16").model_dump() == {
        "device": "cuda:1", "dtype": "float16",
    }  # fmt: skip


@no_gpu
def test_auto_is_the_cpu_in_float32_here_and_a_gpu_asked_for_is_refused() -> None:
    assert resolve_device("auto") == resolve_device(None) == "cpu"
    assert (
        resolve_dtype("auto", "cpu") == "float32" and resolve_dtype("bfloat16", "cpu") == "bfloat16"
    )
    assert resolve_dtype("auto", "cuda") == "bfloat16"  # bf16 on CUDA by default
    assert (
        planned_dtype("auto", "auto") == "float32" and planned_dtype(None, "cuda:0") == "bfloat16"
    )
    for gpu in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match="sees 0 CUDA GPU"):
            resolve_device(gpu)


def test_load_causal_lm_in_the_dtype_asked_for(tmp_path: Path, proxy_tokenizer) -> None:
    from assay.proxies.model import build_model, save_model

    folder = save_model(build_model("tiny", proxy_tokenizer.vocab_size, 64), tmp_path / "lm")
    default = load_causal_lm(folder)
    assert {p.dtype for p in default.parameters()} == {torch.float32}
    assert next(default.parameters()).device.type == "cpu" and not default.training
    half = load_causal_lm(folder, dtype="bfloat16", device="cpu")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    with pytest.raises(ConfigError, match="unknown dtype"):
        load_causal_lm(folder, dtype="int8")


def test_a_task_asks_for_a_gpu_when_its_model_may_use_one() -> None:
    assert gpus_for("cpu", 8) == 0
    assert gpus_for("auto", 0) == 0 and gpus_for("auto", 2) == 1
    assert gpus_for("cuda", 1) == gpus_for("cuda:1", 4) == 1
    with pytest.raises(ConfigError, match="has no GPU"):
        gpus_for("cuda", 0)  # it would wait for one for ever


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, expected in (
        ("0,2", ["0", "2"]),
        ("", []),
        ("1,-1,3", ["1"]),
        ("GPU-ab", ["GPU-ab"]),
    ):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
        assert visible_gpus() == pool_gpus(None) == expected
    assert pool_gpus(3) == ["0", "1", "2"] and pool_gpus(["5", "7"]) == ["5", "7"]


def test_worker_i_takes_gpu_i_mod_n(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert pin_worker(0, []) is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    seen = []
    for i in range(5):
        assert pin_worker(i, ["4", "6"]) == os.environ["CUDA_VISIBLE_DEVICES"]
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["4", "6", "4", "6", "4"]


class WhichGpu:
    """Writes the worker's process id and the GPUs it sees."""

    def output_name(self, shard):
        return f"{shard.stem}.txt"

    def __call__(self, shard, out):
        out.write_text(f"{os.getpid()} {os.environ.get('CUDA_VISIBLE_DEVICES')}")
        return ShardStats(shard.name)


def _gpu_of_this_worker(_: int) -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_pool_workers_each_use_one_gpu(tmp_path: Path, demo_dir: Path) -> None:
    # a pretend machine with two GPUs: the workers never start CUDA, so none is needed
    runner = LocalRunner(workers=2, progress=False, gpus=["3", "5"])
    runner.run(WhichGpu(), Corpus(demo_dir / "train").shards, tmp_path / "out")
    seen = [p.read_text().split() for p in sorted((tmp_path / "out").glob("*.txt"))]
    by_worker = {}
    for pid, gpu in seen:
        by_worker.setdefault(pid, set()).add(gpu)
    assert len(seen) == 4 and all(len(g) == 1 for g in by_worker.values())
    assert set().union(*by_worker.values()) <= {"3", "5"}
    if len(by_worker) == 2:  # both workers took shards: one GPU each
        assert set().union(*by_worker.values()) == {"3", "5"}
    assert set(runner.map(_gpu_of_this_worker, range(4))) <= {"3", "5"}
    # in this process nothing changes
    assert LocalRunner(workers=1, gpus=2).map(_gpu_of_this_worker, [0]) == [
        os.environ.get("CUDA_VISIBLE_DEVICES")
    ]


def test_scorers_say_where_their_models_run(tmp_path: Path) -> None:
    from assay.common.embed import STATIC_FILES
    from assay.io.shards import ReadOptions
    from assay.selection.doc_stats import DocStatsScorer
    from assay.selection.mass import MassScorer
    from assay.selection.perplexity import PerplexityScorer
    from assay.selection.score import ScoreTask

    assert DocStatsScorer().runs_on == "cpu"  # no model
    assert PerplexityScorer("lm").runs_on == "auto"
    assert ScoreTask(PerplexityScorer("lm", device="cuda:1"), ReadOptions()).runs_on == "cuda:1"
    assert MassScorer().runs_on == "auto"  # MiniLM: a GPU when there is one
    for name in STATIC_FILES:  # the files of a static (model2vec) model: numpy on the CPU
        (tmp_path / name).touch()
    assert MassScorer(embedder="static").runs_on == MassScorer(embedder=str(tmp_path)).runs_on
    assert MassScorer(embedder=str(tmp_path)).runs_on == "cpu"

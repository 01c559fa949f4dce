"""train_proxy under accelerate is data parallel: two CPU processes on gloo, each at half the
batch, train as one process at the whole batch (same tokens, same loss curve), and resume."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
from pathlib import Path

import pytest

from assay.proxies.loop import TrainConfig, micro_batch_rows
from assay.proxies.train import ProxyRun, TrainingStopped, train_proxy

MIX = {"news": 0.4, "code": 0.3, "math": 0.2, "reference": 0.1}
SETTINGS = {"seq_len": 64, "lr": 3e-3, "warmup": 2}
STEPS, BATCH = 6, 8  # optimizer steps, and sequences per step over all processes
TOKENS = STEPS * BATCH * SETTINGS["seq_len"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank(rank: int, world: int, port: int, cache: str, tokenizer: str, out: str) -> None:
    """One of `world` processes as `accelerate launch` starts them: stopped after 2 steps (a
    checkpoint), then resumed to the end."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )  # fmt: skip
    import torch

    from assay.common.tokens import TokenCache

    torch.set_num_threads(1)
    kwargs = {"tokenizer": tokenizer, "progress": False, "batch_size": BATCH // world}
    data = TokenCache.open(cache)
    with pytest.raises(TrainingStopped):
        train_proxy(data, MIX, TOKENS, "tiny", 5, out_dir=out, stop_after=2, **kwargs, **SETTINGS)
    train_proxy(data, MIX, TOKENS, "tiny", 5, out_dir=out, **kwargs, **SETTINGS)


def test_each_process_reads_its_own_slice_of_the_batch() -> None:
    cfg = TrainConfig(batch_size=4, grad_accum=2)
    # micro-batch m of 2 processes x 4 sequences: rank 0 takes [8m, 8m+4), rank 1 [8m+4, 8m+8)
    rows = [micro_batch_rows(s, m, cfg, r, 2) for s in range(2) for m in range(2) for r in (0, 1)]
    assert rows == list(range(0, 32, 4))
    assert [micro_batch_rows(s, m, cfg, 0, 1) for s in range(2) for m in range(2)] == [0, 4, 8, 12]


@pytest.mark.slow
def test_two_processes_at_half_the_batch_train_as_one_at_the_whole(
    tmp_path: Path, token_cache, proxy_tokenizer
) -> None:
    import torch

    tok_dir = str(tmp_path / "tokenizer")
    proxy_tokenizer.save_pretrained(tok_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two processes runs (quicker on a loaded machine)
    try:
        one = train_proxy(
            token_cache, MIX, TOKENS, "tiny", 5, out_dir=tmp_path / "one", tokenizer=tok_dir,
            progress=False, batch_size=BATCH, **SETTINGS,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)

    ctx = mp.get_context("spawn")
    port = _free_port()
    args = (str(token_cache.root), tok_dir, str(tmp_path / "two"))
    procs = [ctx.Process(target=_rank, args=(r, 2, port, *args)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=240)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0]

    two = ProxyRun.load(tmp_path / "two")
    assert two.steps == one.steps == STEPS and two.tokens == one.tokens == TOKENS
    assert two.run_id != one.run_id  # the process count is part of the run's identity
    curve_one = [p["train_loss"] for p in one.curve]
    curve_two = [p["train_loss"] for p in two.curve]
    assert curve_two == pytest.approx(curve_one, rel=1e-4, abs=1e-4)
    assert curve_one[-1] < curve_one[0] - 0.5  # it learned: the curves are not both flat
    # only the main process wrote: one model, no checkpoint or temporary files left
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if not p.name.startswith("_")) == [
        "model", "run.json",
    ]  # fmt: skip

"""Train a batch of proxies on given mixtures of one TokenCache, in parallel through a runner.

Every mixer needs this: CLIMB and RegMix for each iteration's proposals, BiMix for the runs
its law is fitted on, a benchmark for each method's final proxy. The runs are independent, so
they go through `runner.map` (a local process pool or Ray tasks); each worker reopens the
shared token cache (memory-mapped, never copied) and trains one proxy. A proxy folder that
already holds the finished run is returned as it is, so a killed batch resumes where it
stopped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from assay.common.mixture import Mixture
from assay.errors import ConfigError


def token_cache_for(
    corpus: Any,
    folder: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike | None = None,
    vocab_size: int = 2048,
    seed: int = 0,
) -> tuple[Any, str]:
    """The corpus tokenized once into `folder/tokens` (reused when it is there), and the
    tokenizer folder used: `tokenizer`, or one trained into `folder/tokenizer`."""
    from assay.common.tokenizer import load_tokenizer, train_tokenizer
    from assay.common.tokens import TokenCache

    root = Path(folder)
    if tokenizer is None:
        tokenizer = root / "tokenizer"
        if not (tokenizer / "tokenizer.json").exists():
            train_tokenizer(corpus, vocab_size, tokenizer, seed=seed)
    cache = TokenCache.build(corpus, load_tokenizer(tokenizer), root / "tokens")
    return cache, str(tokenizer)


def heldout_paths(heldout: Sequence[str] | str | None) -> list[str]:
    """The held-out paths a proxy batch reads, as a list (none, one or several)."""
    if heldout is None:
        return []
    return [heldout] if isinstance(heldout, str | os.PathLike) else [str(h) for h in heldout]


def _train_one(job: dict[str, Any]) -> dict[str, Any]:
    from assay.common.tokens import TokenCache
    from assay.io.corpus import Corpus
    from assay.proxies.train import TrainConfig, train_proxy

    run = train_proxy(
        TokenCache.open(job["cache"]),
        job["mixture"],
        job["tokens"],
        job["preset"],
        job["seed"],
        out_dir=job["out_dir"],
        tokenizer=job["tokenizer"],
        heldout=Corpus(job["heldout"]) if job["heldout"] else None,
        eval_docs=job["eval_docs"],
        config=TrainConfig(**job["train"]),
        tasks=job["tasks"] or None,
        progress=False,
    )
    return run.to_dict()


def train_mixtures(
    cache_dir: str | os.PathLike,
    mixtures: Sequence[Mapping[str, float]],
    out_dirs: Sequence[str | os.PathLike],
    *,
    tokens: int,
    tokenizer: str,
    preset: str = "tiny",
    seeds: Sequence[int] | int = 0,
    heldout: Sequence[str] | str | None = None,
    eval_docs: int | None = None,
    train: Mapping[str, Any] | None = None,
    tasks: Sequence[str] = (),
    runner: Any = None,
    runs_table: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """One proxy per mixture (same budget and preset); returns each run as a dict, in order.

    Unknown domains are refused before anything trains. `runs_table`, when given, gets one
    row per run (the interchange every mixer reads).
    """
    from assay.common.tokens import TokenCache
    from assay.exec.runner import LocalRunner

    if len(mixtures) != len(out_dirs):
        raise ConfigError(f"{len(mixtures)} mixtures but {len(out_dirs)} output folders")
    known = TokenCache.open(cache_dir).domains
    for m in mixtures:
        Mixture(m).check_domains(known)
    seed_list = [seeds] * len(mixtures) if isinstance(seeds, int) else list(seeds)
    held = (
        [str(heldout)]
        if isinstance(heldout, str | os.PathLike)
        else [str(h) for h in heldout or []]
    )
    common = {
        "cache": str(cache_dir),
        "tokens": tokens,
        "preset": preset,
        "tokenizer": str(tokenizer),
        "heldout": held or None,
        "eval_docs": eval_docs,
        "train": dict(train or {}),
        "tasks": list(tasks),
    }
    jobs = [
        {**common, "mixture": dict(m), "seed": s, "out_dir": str(Path(d))}
        for m, d, s in zip(mixtures, out_dirs, seed_list, strict=True)
    ]
    runner = runner or LocalRunner(workers=1)
    runs = list(runner.map(_train_one, jobs))
    if runs_table is not None:
        from assay.proxies.runs import RunsTable

        table = RunsTable(runs_table)
        for run in runs:
            table.append(run)
    return runs

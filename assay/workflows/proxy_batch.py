"""Train a batch of proxies on given mixtures of one TokenCache, in parallel through a runner.

Every mixer needs this: CLIMB and RegMix for each iteration's proposals, BiMix for the runs
its law is fitted on, a benchmark for each method's final proxy. The runs are independent, so
they go through `runner.map` (a local process pool or Ray tasks); each worker reopens the
shared token cache (memory-mapped, never copied) and trains one proxy. A proxy folder that
already holds the finished run is returned as it is, so a killed batch resumes where it
stopped.

`ProxyOptions` are the settings every such workflow shares (the proxies' size, held-out
documents, training settings and seed); `SearchSettings` and `BiMixSettings` extend them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, field_validator

from assay.common.mixture import Mixture
from assay.errors import ConfigError
from assay.proxies.train import TrainConfig
from assay.util.config import Strict

S = TypeVar("S", bound=BaseModel)


def check_preset(v: str) -> str:
    """A proxy size that exists (`get_preset` raises otherwise)."""
    from assay.proxies.model import get_preset

    get_preset(v)
    return v


class ProxyOptions(Strict):
    """What the workflows that train proxies share: their size, held-out documents, training
    settings and seed."""

    preset: str = Field(
        "tiny",
        description="Proxy size: tiny, xs, s, m or l (paper scale: 1m, 160m, 350m, 410m, 1b, 7b).",
    )
    eval_docs: int | None = Field(
        200, ge=1, description="Held-out documents per domain (null: all)."
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training settings.")
    seed: int | None = Field(None, description="Seed (default: the recipe's; 0).")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        return check_preset(v)


def settings_with(cls: type[S], settings: BaseModel | None, options: Mapping[str, Any]) -> S:
    """`cls` settings from `settings` (any model holding its fields, such as a recipe step)
    with `options` (keyword arguments of the same names) applied over them."""
    base = settings.model_dump(include=set(cls.model_fields)) if settings is not None else {}
    return cls.model_validate({**base, **options})


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
    # train_proxy trains on a GPU when it has one: on Ray each run asks for one if there are any
    runs = list(runner.map(_train_one, jobs, runs_on="auto"))
    if runs_table is not None:
        from assay.proxies.runs import RunsTable

        table = RunsTable(runs_table)
        for run in runs:
            table.append(run)
    return runs

"""A family of proxy LMs of known, ordered capability: the model family PreSelect needs when a
user has no ready family of real models with benchmark scores.

PreSelect labels a document by whether the family's losses on it rank the models as their
benchmark scores do. That only carries information if the family's benchmark order is not the
order of every document: checkpoints of one run (`vary="tokens"`) or models of growing size
(`vary="preset"`) improve on nearly everything at once, so most documents come out perfectly
concordant. Proxies trained on different mixtures of the pool's domains (`vary="mixture"`)
disagree in a targeted way: the ones that saw more target-like data do better on the target,
and the documents whose losses agree with that order are the target-like ones. The paper's
Llama family mixes both (sizes, and Llama 1 vs 2 trained on different data).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assay.common.tokens import TokenCache
from assay.errors import ConfigError, InputError
from assay.io.corpus import Corpus
from assay.proxies.train import ProxyRun, TrainConfig, train_proxy

VARY = ("tokens", "preset", "mixture")


@dataclass
class Member:
    """One proxy of a family: what it trains on and for how long."""

    name: str
    tokens: int
    preset: str = "tiny"
    mixture: dict[str, float] | str = "natural"
    seed: int = 0


def family_members(
    vary: str,
    n: int,
    *,
    tokens: int,
    domains: Sequence[str] = (),
    presets: Sequence[str] = ("tiny", "xs", "s"),
    preset: str = "tiny",
    concentration: float = 1.0,
    seed: int = 0,
) -> list[Member]:
    """`n` members varying one thing.

    tokens: budgets tokens/2^(n-1), ..., tokens/2, tokens. preset: the first `n` of `presets` at
    `tokens`. mixture: `n` mixtures drawn from a symmetric Dirichlet(`concentration`) over
    `domains` (seeded), each at `tokens`.
    """
    if vary not in VARY:
        raise ConfigError(f"vary must be one of {VARY}, not {vary!r}")
    if n < 3:
        raise ConfigError(f"a model family needs at least 3 members, not {n}")
    if vary == "tokens":
        return [
            Member(f"tokens-{tokens >> (n - 1 - i)}", tokens >> (n - 1 - i), preset, seed=seed)
            for i in range(n)
        ]
    if vary == "preset":
        if n > len(presets):
            raise ConfigError(f"{n} members asked for but only presets {list(presets)} given")
        return [Member(f"preset-{p}", tokens, p, seed=seed) for p in presets[:n]]
    if len(domains) < 2:
        raise InputError("a family varying the mixture needs a corpus with at least 2 domains")
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(len(domains), concentration), size=n)
    return [
        Member(
            f"mixture-{i}",
            tokens,
            preset,
            {d: float(w) for d, w in zip(domains, row, strict=True)},
            seed,
        )
        for i, row in enumerate(weights)
    ]


def train_family(
    data: Corpus | TokenCache,
    members: Sequence[Member],
    out_dir: str | os.PathLike,
    *,
    tokenizer: Any,
    heldout: Corpus | None = None,
    config: TrainConfig | None = None,
    runs_table: str | os.PathLike | None = None,
    progress: bool = True,
    **overrides: Any,
) -> list[ProxyRun]:
    """Train every member (resumable: finished members are recognised and not retrained)."""
    out = Path(out_dir)
    cache = data
    if isinstance(data, Corpus):
        from assay.common.tokenizer import load_tokenizer

        tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else tokenizer
        cache = TokenCache.build(data, tok, out / "tokens")
    runs = []
    for m in members:
        runs.append(
            train_proxy(
                cache,
                m.mixture,
                m.tokens,
                m.preset,
                m.seed,
                out_dir=out / m.name,
                tokenizer=tokenizer,
                heldout=heldout,
                config=config,
                runs_table=runs_table,
                progress=progress,
                **overrides,
            )
        )
    return runs


def train_corpus_family(
    corpus: Corpus,
    folder: str | os.PathLike,
    *,
    vary: str = "mixture",
    n: int = 5,
    tokens: int = 200_000,
    preset: str = "tiny",
    presets: Sequence[str] = ("tiny", "xs", "s"),
    concentration: float = 1.0,
    tokenizer: str | None = None,
    config: TrainConfig | None = None,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """A family of proxies trained on `corpus` (PreSelect's family when no models are given):
    one entry per member, `{"path": model folder, "name": ...}`, without benchmark scores.

    The corpus is tokenized once into `folder/tokens` with `tokenizer`, or one trained into
    `folder/tokenizer` at the preset's vocabulary size."""
    from assay.common.tokenizer import load_tokenizer, train_tokenizer
    from assay.proxies.model import get_preset

    root = Path(folder)
    if tokenizer is None:
        tok_dir = root / "tokenizer"
        if not (tok_dir / "tokenizer.json").exists():
            train_tokenizer(corpus, get_preset(preset).vocab_size, tok_dir, seed=seed)
        tokenizer = str(tok_dir)
    cache = TokenCache.build(corpus, load_tokenizer(tokenizer), root / "tokens")
    members = family_members(
        vary,
        n,
        tokens=tokens,
        domains=sorted(cache.domains),
        presets=presets,
        preset=preset,
        concentration=concentration,
        seed=seed,
    )
    runs = train_family(cache, members, root, tokenizer=tokenizer, config=config, progress=progress)
    return [{"path": r.model_dir, "name": m.name} for r, m in zip(runs, members, strict=True)]

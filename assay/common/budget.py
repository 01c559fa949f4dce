"""A token budget shared among a mixture's domains, no domain repeated beyond an epoch cap.

`allocate_tokens(mixture, tokens_per_domain, budget, max_epochs)` gives each domain its share
of the budget in whole tokens. A domain whose share needs more than `max_epochs` passes over
its tokens is cut to its cap (`floor(tokens x max_epochs)`), and the tokens it cannot give go
to the other domains of the mixture in proportion to their weights (as often as needed: a
domain may reach its own cap only after another's excess came to it). With
`on_cap="error"` a binding cap is an error instead; a budget larger than every cap together
is always one. What materializing and exporting a mixture spend comes from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from assay.common.mixture import Mixture
from assay.errors import ConfigError

OnCap = Literal["redistribute", "error"]


@dataclass(frozen=True)
class Allocation:
    """Tokens per domain (summing to the budget), and the domains whose epoch cap bound."""

    tokens: dict[str, int]
    available: dict[str, int]
    max_epochs: float
    capped: list[str] = field(default_factory=list)

    @property
    def budget(self) -> int:
        return sum(self.tokens.values())

    @property
    def effective(self) -> Mixture:
        """The shares actually spent (the mixture, unless a cap bound)."""
        return Mixture({d: n for d, n in self.tokens.items() if n > 0}, normalize=True)

    def epochs(self, domain: str) -> float:
        return self.tokens[domain] / max(self.available[domain], 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "max_epochs": self.max_epochs,
            "tokens_per_domain": dict(self.tokens),
            "available_tokens": dict(self.available),
            "epochs_per_domain": {d: round(self.epochs(d), 6) for d in self.tokens},
            "effective_mixture": self.effective.to_dict(),
            "capped_domains": list(self.capped),
        }


def allocate_tokens(
    mixture: Mixture,
    tokens_per_domain: Mapping[str, int],
    budget: int,
    max_epochs: float = 1.0,
    *,
    on_cap: OnCap = "redistribute",
) -> Allocation:
    """Whole tokens per domain of `mixture`, proportional to its weights, none above its cap
    of `max_epochs` passes, summing to `budget` (largest remainders round)."""
    if isinstance(budget, bool) or int(budget) != budget or budget < 1:
        raise ConfigError(f"the token budget must be a positive whole number, not {budget!r}")
    if not max_epochs > 0:
        raise ConfigError(f"max_epochs must be positive, not {max_epochs!r}")
    if on_cap not in ("redistribute", "error"):
        raise ConfigError("on_cap must be 'redistribute' or 'error'")
    budget = int(budget)
    domains = [d for d in mixture.domains if mixture[d] > 0]
    Mixture.uniform(domains).check_domains(tokens_per_domain)
    weights = np.array([mixture[d] for d in domains], dtype=np.float64)
    n = np.array([int(tokens_per_domain[d]) for d in domains], dtype=np.int64)
    caps = np.floor(n * float(max_epochs)).astype(np.int64)
    if caps.sum() < budget:
        raise ConfigError(
            f"a budget of {budget:,} tokens needs more than {max_epochs:g} epochs of the "
            f"mixture's domains ({int(caps.sum()):,} tokens within their caps): lower the "
            "budget, raise max_epochs, or add domains"
        )
    target, capped = capped_shares(weights, caps.astype(np.float64), float(budget))
    names = [domains[i] for i in np.flatnonzero(capped)]
    if names and on_cap == "error":
        raise ConfigError(
            f"the epoch cap ({max_epochs:g}) binds for {names}: their share of "
            f"{budget:,} tokens needs more passes over their tokens"
        )
    counts = round_within(target, caps, budget)
    return Allocation(
        tokens=dict(zip(domains, (int(c) for c in counts), strict=True)),
        available=dict(zip(domains, (int(x) for x in n), strict=True)),
        max_epochs=float(max_epochs),
        capped=names,
    )


def capped_shares(
    weights: np.ndarray, caps: np.ndarray, budget: float
) -> tuple[np.ndarray, np.ndarray]:
    """Real-valued shares of `budget` in proportion to `weights` (all positive), none above its
    cap: a capped domain keeps its cap and the rest is shared again among the others; also
    which domains were capped. Token budgets here, proxies' sequence counts alike."""
    capped = np.zeros(len(weights), dtype=bool)
    target = weights / weights.sum() * budget
    while True:
        over = (target > caps + 1e-9) & ~capped
        if not over.any():
            return target, capped
        capped |= over
        target[capped] = caps[capped]
        free = ~capped
        target[free] = weights[free] / weights[free].sum() * (budget - caps[capped].sum())


def round_within(target: np.ndarray, caps: np.ndarray, budget: int) -> np.ndarray:
    """Whole counts summing to `budget`, none above its cap: floors, then the largest
    remainders (ties in order)."""
    counts = np.minimum(np.floor(target).astype(np.int64), caps)
    short = budget - int(counts.sum())
    for i in np.argsort(-(target - counts), kind="stable"):
        if short <= 0:
            break
        if counts[i] < caps[i]:
            counts[i] += 1
            short -= 1
    return counts

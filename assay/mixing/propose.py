"""Mixture proposals for a search: Dirichlet draws around a prior, as RegMix and CLIMB do.

- prior: the natural token distribution raised to a temperature (RegMix: 0.5) and renormalised
- strength: each draw's Dirichlet concentration is prior x strength, the strength sampled from
  log-spaced values (RegMix: 15 values in [0.1, 5]); small strengths give sparse mixtures,
  large ones mixtures close to the prior
- caps: a draw is rejected when a domain would be repeated more than `max_epochs` times for
  the token budget (or, without a budget, exceed `max_ratio` times its natural share: RegMix's
  15x)
- share caps: a draw is rejected when a domain's share exceeds `max_share` (one cap for every
  domain, or a cap per domain name): the guard against a search that pours the budget into one
  domain its tiny proxies over-reward (a junk-like or off-target domain); unlike the other caps
  it binds the final answer too (`allowed_final`)
- floor: weights below `floor` become 0 and the rest are rounded to that grid (RegMix: 2e-4)
- deduplication: identical mixtures (after rounding) are proposed once
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from assay.common.mixture import Mixture
from assay.errors import ConfigError, InputError


class MixtureProposer:
    """Seeded, deduplicated Dirichlet proposals over fixed domains."""

    def __init__(
        self,
        tokens_per_domain: Mapping[str, float],
        *,
        temperature: float = 0.5,
        strengths: tuple[float, float, int] = (0.1, 5.0, 15),
        budget: float | None = None,
        max_epochs: float | None = None,
        max_ratio: float | None = 15.0,
        floor: float = 2e-4,
        max_share: float | Mapping[str, float] | None = None,
        seed: int = 0,
    ):
        self.domains = sorted(tokens_per_domain)
        n = np.array([float(tokens_per_domain[d]) for d in self.domains])
        if len(self.domains) < 2 or (n <= 0).any():
            raise InputError(
                f"proposals need at least 2 domains with tokens: {dict(tokens_per_domain)}"
            )
        if not temperature > 0:
            raise ConfigError("temperature must be positive")
        self.tokens = n
        self.natural = n / n.sum()
        prior = self.natural**temperature
        self.prior = prior / prior.sum()
        lo, hi, k = strengths
        self.strengths = np.geomspace(lo, hi, int(k))
        self.budget, self.max_epochs, self.max_ratio = budget, max_epochs, max_ratio
        self.floor = floor
        self.share_cap = share_caps(self.domains, max_share)
        self.rng = np.random.default_rng(seed)
        self.seen: set[tuple[float, ...]] = set()
        if budget is not None and max_epochs is not None and budget > n.sum() * max_epochs:
            raise ConfigError(
                f"a budget of {budget:,.0f} tokens needs more than {max_epochs:g} epochs of the "
                f"whole corpus ({n.sum():,.0f} tokens): no mixture can satisfy the cap"
            )

    def allowed(self, w: np.ndarray) -> bool:
        """Whether a mixture satisfies the caps (max_epochs for the budget, else max_ratio)."""
        return bool(self.allowed_rows(w[None, :])[0])

    def allowed_rows(self, rows: np.ndarray) -> np.ndarray:
        """Per row of `rows` (mixtures), whether it satisfies the caps."""
        ok = self.within_share_caps(rows)
        if self.budget is not None and self.max_epochs is not None:
            cap = self.tokens * self.max_epochs * (1 + 1e-9)
            return ok & (rows * self.budget <= cap).all(axis=1)
        if self.max_ratio is not None:
            limit = self.natural * self.max_ratio
            return ok & (rows <= limit).all(axis=1)
        return ok

    def within_share_caps(self, rows: np.ndarray) -> np.ndarray:
        """Per row of `rows`, whether every domain's share is within its `max_share` cap."""
        return (rows <= self.share_cap * (1 + 1e-9)).all(axis=1)

    def allowed_final(self, rows: np.ndarray) -> np.ndarray:
        """Per row of `rows`, the caps a final answer keeps: `max_share`, and `max_epochs` for the
        budget when both are set (not `max_ratio`, a rule of the proposals only)."""
        ok = self.within_share_caps(rows)
        if self.budget is None or self.max_epochs is None:
            return ok
        cap = self.tokens * self.max_epochs * (1 + 1e-9)
        return ok & (rows * self.budget <= cap).all(axis=1)

    def _round(self, w: np.ndarray) -> np.ndarray | None:
        if self.floor > 0:
            w = np.where(w < self.floor, 0.0, w)
            if w.sum() <= 0:
                return None
            w = np.round(w / w.sum() / self.floor) * self.floor
            if w.sum() <= 0:
                return None
        return w / w.sum()

    def propose(self, n: int, *, max_tries: int = 1000) -> list[Mixture]:
        """`n` new mixtures (never one proposed before by this proposer)."""
        out: list[Mixture] = []
        tries = 0
        while len(out) < n:
            tries += 1
            if tries > max_tries * max(n, 1):
                raise ConfigError(
                    f"only {len(out)} of {n} distinct mixtures satisfy the caps after {tries - 1} "
                    "draws: loosen max_epochs / max_ratio or the floor"
                )
            s = self.rng.choice(self.strengths)
            w = self.rng.dirichlet(np.maximum(self.prior * s, 1e-6))
            w = self._round(w)
            if w is None or not self.allowed(w):
                continue
            key = tuple(np.round(w, 10))
            if key in self.seen:
                continue
            self.seen.add(key)
            out.append(Mixture.from_vector(self.domains, w))
        return out

    def candidates(self, n: int) -> np.ndarray:
        """A large matrix of allowed draws (rows) for a predictor to rank; not deduplicated
        against earlier proposals, and not remembered."""
        rows: list[np.ndarray] = []
        for _ in range(100):
            if len(rows) >= n:
                break
            s = self.rng.choice(self.strengths, size=n)
            w = np.vstack([self.rng.dirichlet(np.maximum(self.prior * x, 1e-6)) for x in s])
            for row in w:
                r = self._round(row)
                if r is not None and self.allowed(r):
                    rows.append(r)
        if len(rows) < n:
            raise ConfigError(
                f"only {len(rows)} of {100 * n} draws satisfy the caps: loosen max_share, "
                "max_epochs / max_ratio or the floor"
            )
        return np.vstack(rows[:n])


def share_caps(domains: list[str], max_share: float | Mapping[str, float] | None) -> np.ndarray:
    """The most share each of `domains` may take: `max_share` for every domain, or per domain
    name (domains not named are not capped), or no cap (1.0 each)."""
    if max_share is None:
        return np.ones(len(domains))
    if isinstance(max_share, Mapping):
        unknown = sorted(set(max_share) - set(domains))
        if unknown:
            raise ConfigError(
                f"max_share names domains the corpus does not have: {unknown} (domains: {domains})"
            )
        caps = np.array([float(max_share.get(d, 1.0)) for d in domains])
    else:
        caps = np.full(len(domains), float(max_share))
    if not ((caps > 0) & (caps <= 1)).all():
        raise ConfigError(f"every max_share must be in (0, 1], not {max_share}")
    if caps.sum() < 1 - 1e-9:
        raise ConfigError(
            f"max_share {max_share} caps the {len(domains)} domains' shares at {caps.sum():.3g} "
            "in all: no mixture sums to 1; raise the caps"
        )
    return caps

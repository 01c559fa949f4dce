"""BiMix: a bivariate scaling law of domain proportion and training steps (Ge et al., "Data
Mixing Made Efficient: A Bivariate Scaling Law for Language Model Pretraining").

Per domain i, with proportion r_i and training step (or tokens) s:

    L_i(r_i, s) = (A_i / r_i^alpha_i) * (B_i / s^beta_i + C_i)

The law is separable (domain i's loss depends on its own share only), so each domain is
fitted on its own from (r, s, loss) points: every evaluation step of a few proxy runs' curves.

A_i only ever appears multiplied by B_i and C_i, so the five coefficients have one degree of
freedom too many: scaling A_i by k and B_i, C_i by 1/k changes nothing. The fit fixes A_i = 1
(B_i and C_i absorb it); predictions are unaffected. It minimises relative error (residuals
of log L) with SciPy's bounded trust-region-reflective least squares, the paper's solver.

Optimal proportions for a budget s minimise sum_i w_i L_i(r_i, s) on the simplex. Setting the
gradient to zero gives r_i = (w_i alpha_i A_i K_i(s) / lambda)^(1 / (1 + alpha_i)) with
K_i(s) = B_i s^-beta_i + C_i; lambda is found by a 1-D root find on sum_i r_i = 1, and the
result is checked against a numerical optimiser.

The unit of L. The paper fits and sums per-token validation loss (nats per token). Summing
bits per byte instead is not the same objective: a domain's bits per byte is its loss per token
times (tokens per byte) / ln 2, so sum_i bpb_i = sum_i (t_i / (b_i ln 2)) L_i weights each
domain by its tokens per byte under the proxy's tokenizer (code, numbers and languages the
tokenizer splits finely count more), which moves the optimum. The law is fitted on either unit
(`points_from_runs(unit=...)`): "loss" (the paper's) or "bpb", and says which (`BiMix.unit`).

A fitted alpha near 0 (below `ALPHA_NEAR_ZERO`) means the domain's loss barely depends on its
share at the proxies' scale; the unconstrained optimum then gives that domain almost nothing
(its share grows like alpha), which the law cannot see but a real run would. `optimal_mixture`
warns then; `min_share` (0 by default, as in the paper) is the remedy.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from assay.common.mixture import Mixture
from assay.errors import ConfigError, InputError

MIN_POINTS = 5  # five coefficients (four free)
UNITS = ("loss", "bpb")  # per-token loss (nats, the paper's) or bits per byte
# "alpha near 0": halving the domain's share then raises its loss by under 2^0.01 - 1 = 0.7%,
# within what the proxies' noise and the fit's extrapolation error (0.4-2% here) can tell apart
ALPHA_NEAR_ZERO = 0.01


@dataclass
class DomainLaw:
    A: float
    alpha: float
    B: float
    beta: float
    C: float
    points: int = 0
    rmse_log: float = float("nan")

    def predict(self, r: Any, s: Any) -> np.ndarray:
        r, s = np.asarray(r, dtype=np.float64), np.asarray(s, dtype=np.float64)
        return self.A / r**self.alpha * (self.B / s**self.beta + self.C)


def _fit_domain(r: np.ndarray, s: np.ndarray, loss: np.ndarray, name: str) -> DomainLaw:
    from scipy.optimize import least_squares

    if len(loss) < MIN_POINTS:
        raise InputError(
            f"domain {name!r}: {len(loss)} points; the law needs at least {MIN_POINTS} "
            "(several eval steps of at least 2 runs with different proportions)"
        )
    if not (np.isfinite(loss).all() and np.isfinite(r).all() and np.isfinite(s).all()):
        raise InputError(
            f"domain {name!r}: non-finite losses, proportions or steps in the fit data"
        )
    if (loss <= 0).any() or (r <= 0).any() or (s <= 0).any():
        raise InputError(f"domain {name!r}: losses, proportions and steps must be positive")
    if len(np.unique(r)) < 2:
        raise InputError(
            f"domain {name!r}: every point has the same proportion; alpha is not identifiable"
        )
    if len(np.unique(s)) < 3:
        raise InputError(f"domain {name!r}: fewer than 3 distinct steps; beta is not identifiable")
    log_loss = np.log(loss)
    log_r, log_s = np.log(r), np.log(s)

    def residual(p: np.ndarray) -> np.ndarray:
        alpha, beta, log_b, log_c = p
        k = np.exp(log_b - beta * log_s) + np.exp(log_c)
        return -alpha * log_r + np.log(k) - log_loss

    best = None
    for beta0 in (0.3, 0.6, 1.0):  # a few starts: the landscape in beta is not convex
        c0 = np.log(max(loss.min() * 0.8, 1e-6))
        b0 = np.log(max(loss.max() - loss.min(), 1e-3)) + beta0 * log_s.min()
        fit = least_squares(
            residual,
            x0=np.array([0.05, beta0, b0, c0]),
            bounds=([0.0, 0.0, -50.0, -50.0], [5.0, 5.0, 50.0, 50.0]),
            method="trf",
        )
        if best is None or fit.cost < best.cost:
            best = fit
    alpha, beta, log_b, log_c = best.x
    rmse = float(np.sqrt(np.mean(best.fun**2)))
    return DomainLaw(
        1.0, float(alpha), float(np.exp(log_b)), float(beta), float(np.exp(log_c)), len(loss), rmse
    )


class BiMix:
    """The fitted law for every domain: `fit(points)`, `predict`, `optimal_mixture`."""

    def __init__(self, laws: Mapping[str, DomainLaw] | None = None, *, unit: str = "loss"):
        self.laws: dict[str, DomainLaw] = dict(laws or {})
        self.unit = _check_unit(unit)

    @property
    def domains(self) -> list[str]:
        return sorted(self.laws)

    def fit(self, points: Any) -> BiMix:
        """`points`: rows with `domain`, `r` (proportion), `s` (steps or tokens), `loss`
        (a polars/pandas frame, a mapping of columns, or a list of dicts)."""
        cols = _columns(points)
        domains = np.asarray(cols["domain"]).astype(str)
        r, s, loss = (np.asarray(cols[k], dtype=np.float64) for k in ("r", "s", "loss"))
        if not len(domains):
            raise InputError("no points to fit the law on")
        self.laws = {
            str(d): _fit_domain(r[domains == d], s[domains == d], loss[domains == d], str(d))
            for d in sorted(set(domains))
        }
        return self

    def predict(self, mixture: Mapping[str, float], s: float) -> dict[str, float]:
        out = {}
        for d in self.domains:
            r = float(mixture.get(d, 0.0))
            out[d] = float(self.laws[d].predict(r, s)) if r > 0 else float("inf")
        return out

    def total_loss(
        self, mixture: Mapping[str, float], s: float, weights: Mapping[str, float] | None = None
    ) -> float:
        pred = self.predict(mixture, s)
        return float(sum((weights or {}).get(d, 1.0) * v for d, v in pred.items()))

    def optimal_mixture(
        self,
        s: float,
        weights: Mapping[str, float] | None = None,
        *,
        min_share: float = 0.0,
        check: bool = True,
        warn: bool = True,
    ) -> Mixture:
        """Proportions minimising the (weighted) sum of domain losses at budget `s`, each at
        least `min_share`. With `warn`, a `UserWarning` names the domains whose fitted alpha is
        below `ALPHA_NEAR_ZERO` when no floor is set.

        With the floor, the KKT conditions give r_i = max(min_share, (g_i / lambda)^(1/(1+alpha_i)))
        and the same 1-D root find applies (the sum is monotone in lambda). A floor matters
        when a fitted alpha is ~0 (small proxies whose loss on a domain barely depends on its
        share): the unconstrained optimum then starves that domain, which the law cannot see
        but a real run would.
        """
        from scipy.optimize import brentq

        d = self.domains
        if not 0 <= min_share * len(d) < 1:
            raise ConfigError(
                f"min_share={min_share} leaves nothing to share among {len(d)} domains"
            )
        w = np.array([(weights or {}).get(x, 1.0) for x in d], dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ConfigError("domain weights must be non-negative with a positive sum")
        unknown = sorted(set(weights or {}) - set(d))
        if unknown:
            raise ConfigError(f"weights name unknown domains {unknown}; the law has {d}")
        alpha = np.array([self.laws[x].alpha for x in d])
        a = np.array([self.laws[x].A for x in d])
        k = np.array([self.laws[x].B * s ** -self.laws[x].beta + self.laws[x].C for x in d])
        g = w * alpha * a * k  # r_i = (g_i / lambda)^(1/(1+alpha_i))
        active = g > 0
        if not active.any():
            raise InputError("no domain's loss depends on its proportion (all alpha = 0)")
        if warn and min_share == 0:
            self._warn_flat_domains()

        def shares(log_lam: float) -> np.ndarray:
            r = np.full(len(d), min_share)
            r[active] = np.maximum(
                min_share, np.exp((np.log(g[active]) - log_lam) / (1 + alpha[active]))
            )
            return r

        def excess(log_lam: float) -> float:
            return float(shares(log_lam).sum() - 1)

        lo, hi = -50.0, 50.0
        while excess(lo) < 0:
            lo -= 50
        while excess(hi) > 0:
            hi += 50
        mix = Mixture.from_vector(d, shares(brentq(excess, lo, hi, xtol=1e-14)))
        if check:
            wd = dict(zip(d, w, strict=True))
            numeric = self._numeric_optimum(s, w, min_share)
            if self.total_loss(numeric, s, wd) < self.total_loss(mix, s, wd) - 1e-6:
                raise RuntimeError("the closed-form optimum is worse than the numerical one")
        return mix

    def flat_domains(self) -> list[str]:
        """Domains whose fitted alpha is below `ALPHA_NEAR_ZERO` (their share barely matters
        to the law, so the unconstrained optimum starves them)."""
        return [d for d in self.domains if self.laws[d].alpha < ALPHA_NEAR_ZERO]

    def _warn_flat_domains(self) -> None:
        flat = self.flat_domains()
        if flat:
            alphas = ", ".join(f"{d} {self.laws[d].alpha:.2g}" for d in flat)
            warnings.warn(
                f"fitted alpha below {ALPHA_NEAR_ZERO} ({alphas}): the law sees almost no "
                "effect of these domains' shares, so the optimum gives them almost nothing; "
                "set min_share to keep a floor",
                UserWarning,
                stacklevel=3,
            )

    def _numeric_optimum(self, s: float, w: np.ndarray, min_share: float = 0.0) -> Mixture:
        from scipy.optimize import minimize

        d = self.domains
        weights = dict(zip(d, w, strict=True))
        free = 1 - min_share * len(d)

        def point(z: np.ndarray) -> np.ndarray:
            r = np.exp(z - z.max())
            return min_share + free * r / r.sum()

        def objective(z: np.ndarray) -> float:
            return self.total_loss(dict(zip(d, point(z), strict=True)), s, weights)

        res = minimize(
            objective,
            np.zeros(len(d)),
            method="Nelder-Mead",
            options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 20_000},
        )
        return Mixture.from_vector(d, point(res.x))

    def budget_curve(
        self,
        budgets: Sequence[float],
        weights: Mapping[str, float] | None = None,
        *,
        min_share: float = 0.0,
    ) -> list[dict[str, Any]]:
        """Optimal mixture and its predicted losses at each budget (to choose a budget)."""
        rows = []
        for s in budgets:
            mix = self.optimal_mixture(s, weights, min_share=min_share, check=False, warn=False)
            pred = self.predict(mix, s)
            rows.append(
                {
                    "s": float(s),
                    "mixture": mix.to_dict(),
                    "loss": pred,
                    "total": float(sum(pred.values())),
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {d: asdict(law) for d, law in sorted(self.laws.items())}

    def save(self, path: Any) -> None:
        from assay.util.files import write_json

        write_json(path, {"law": "bimix", "unit": self.unit, "domains": self.to_dict()})

    @classmethod
    def load(cls, path: Any) -> BiMix:
        from assay.util.files import read_json

        data = read_json(path)
        laws = {d: DomainLaw(**v) for d, v in data["domains"].items()}
        return cls(laws, unit=data.get("unit", "bpb"))  # laws saved before units were: bpb


def _check_unit(unit: str) -> str:
    if unit not in UNITS:
        raise ConfigError(f"unit must be one of {UNITS}, not {unit!r}")
    return unit


def _columns(points: Any) -> dict[str, Any]:
    if hasattr(points, "to_dict") and hasattr(points, "columns"):  # polars or pandas
        try:
            return {c: list(points[c]) for c in points.columns}
        except Exception:  # pragma: no cover
            pass
    if isinstance(points, Mapping):
        return dict(points)
    rows = list(points)
    return {k: [row[k] for row in rows] for k in ("domain", "r", "s", "loss")}


def points_from_runs(
    runs: Any, *, x: str = "tokens", mixture_prefix: str = "ew.", unit: str = "loss"
) -> dict[str, list]:
    """(domain, r, s, loss) fit points from a runs table: every evaluated step of each run's
    curve, with the run's effective mixture (`ew.<domain>`) as r and, as loss, the held-out
    loss per token (`unit="loss"`, nats) or bits per byte (`unit="bpb"`)."""
    _check_unit(unit)
    frame = runs.read() if hasattr(runs, "read") else runs
    out: dict[str, list] = {"domain": [], "r": [], "s": [], "loss": [], "run": []}
    for row in frame.iter_rows(named=True):
        curve = (
            json.loads(row["curve"])
            if isinstance(row.get("curve"), str)
            else row.get("curve") or []
        )
        for point in curve:
            if unit not in point and "bpb" in point:
                raise InputError(
                    f"run {row.get('run_id')!r} has no per-token losses in its curve (a runs "
                    "table written before they were recorded): fit with unit='bpb' or retrain"
                )
            for d, loss in point.get(unit, {}).items():
                r = row.get(f"{mixture_prefix}{d}")
                if r is None or not r > 0:
                    continue
                out["domain"].append(d)
                out["r"].append(float(r))
                out["s"].append(float(point[x]))
                out["loss"].append(float(loss))
                out["run"].append(str(row.get("run_id", "")))
    return out


def evaluate_fit(points: Any) -> dict[str, Any]:
    """How well the law predicts what it was not fitted on.

    - extrapolation: fit on every step but each run's last, predict the last; the mean and
      worst relative error per domain (the paper reports < 0.2% mean on the Pile)
    - held-out mixtures (needs a `run` column and >= 3 runs): leave one run out, fit on the
      others, predict the held-out run's points; R^2 per domain over all held-out points
      (the paper reports R^2 > 0.97)
    """
    cols = _columns(points) if not isinstance(points, Mapping) else dict(points)
    domain = np.asarray(cols["domain"]).astype(str)
    r, s, loss = (np.asarray(cols[k], dtype=np.float64) for k in ("r", "s", "loss"))
    run = np.asarray(cols["run"]).astype(str) if "run" in cols else np.zeros(len(s)).astype(str)
    last = np.zeros(len(s), dtype=bool)
    for key in set(zip(run, domain, strict=True)):
        idx = np.flatnonzero((run == key[0]) & (domain == key[1]))
        last[idx[s[idx] == s[idx].max()]] = True

    def subset(mask: np.ndarray) -> dict[str, Any]:
        return {"domain": domain[mask], "r": r[mask], "s": s[mask], "loss": loss[mask]}

    law = BiMix().fit(subset(~last))
    report: dict[str, Any] = {"extrapolation": {}}
    for d in law.domains:
        m = last & (domain == d)
        rel = np.abs(law.laws[d].predict(r[m], s[m]) / loss[m] - 1)
        report["extrapolation"][d] = {
            "mean_rel_error": float(rel.mean()),
            "max_rel_error": float(rel.max()),
        }
    runs = sorted(set(run))
    if len(runs) >= 3:
        pred = np.full(len(s), np.nan)
        skipped = []
        for held in runs:
            try:
                fit = BiMix().fit(subset(run != held))
            except ValueError as e:  # the other runs alone cannot pin the law down
                skipped.append({"run": held, "reason": str(e)})
                continue
            for d in fit.domains:
                m = (run == held) & (domain == d)
                pred[m] = fit.laws[d].predict(r[m], s[m])
        report["heldout_r2"] = {}
        if skipped:
            report["heldout_skipped"] = skipped
        for d in sorted(set(domain)):
            m = (domain == d) & np.isfinite(pred)
            if m.sum() < 2:
                report["heldout_r2"][d] = float("nan")
                continue
            ss_res = float(np.sum((loss[m] - pred[m]) ** 2))
            ss_tot = float(np.sum((loss[m] - loss[m].mean()) ** 2))
            report["heldout_r2"][d] = 1 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return report


@dataclass
class BiMixFit:
    """A law fitted on proxy runs, its quality, and what it recommends."""

    law: BiMix
    quality: dict[str, Any]
    mixture: Mixture
    budget: float
    predicted: dict[str, float]
    curve: list[dict[str, Any]]
    runs: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.law.unit,
            "law": self.law.to_dict(),
            "quality": self.quality,
            "mixture": self.mixture.to_dict(),
            "budget": self.budget,
            "predicted": self.predicted,
            "budget_curve": self.curve,
            "runs": self.runs,
        }

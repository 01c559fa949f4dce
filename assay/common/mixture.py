"""A mixture: how much of each domain goes into a training run.

`Mixture({"news": 0.5, "code": 0.3, "math": 0.2})` is validated on construction (non-negative,
finite, sums to 1 within 1e-6) and against the domains that exist when it is used. It reads
and writes YAML/JSON as a plain mapping, the interchange every mixture tool uses.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from assay.errors import ConfigError, InputError, MissingError

TOLERANCE = 1e-6


class Mixture(Mapping[str, float]):
    """An immutable {domain: weight} mapping whose weights sum to 1."""

    def __init__(self, weights: Mapping[str, float], *, normalize: bool = False):
        if not weights:
            raise ConfigError("a mixture needs at least one domain")
        w = {str(k): float(v) for k, v in weights.items()}
        bad = {k: v for k, v in w.items() if not math.isfinite(v) or v < 0}
        if bad:
            raise ConfigError(f"mixture weights must be finite and non-negative: {bad}")
        total = sum(w.values())
        if total <= 0:
            raise ConfigError("mixture weights sum to 0")
        if normalize:
            w = {k: v / total for k, v in w.items()}
        elif abs(total - 1.0) > TOLERANCE:
            raise ConfigError(
                f"mixture weights must sum to 1 (they sum to {total:.6g}); "
                "pass normalize=True to rescale"
            )
        self._w = dict(sorted(w.items()))

    # Mapping protocol
    def __getitem__(self, key: str) -> float:
        return self._w[key]

    def __iter__(self):
        return iter(self._w)

    def __len__(self) -> int:
        return len(self._w)

    def __repr__(self) -> str:
        return "Mixture({" + ", ".join(f"{k!r}: {v:.4f}" for k, v in self._w.items()) + "})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self) == dict(other)

    def __hash__(self) -> int:
        return hash(tuple(self._w.items()))

    @property
    def domains(self) -> list[str]:
        return list(self._w)

    def check_domains(self, known: Iterable[str]) -> None:
        known = set(known)
        unknown = sorted(set(self._w) - known)
        if unknown:
            raise ConfigError(
                f"mixture names unknown domains {unknown}; "
                f"known domains: {', '.join(sorted(known))}"
            )

    def vector(self, domains: list[str]) -> np.ndarray:
        """Weights in the order of `domains` (0 for a domain the mixture does not name)."""
        return np.array([self._w.get(d, 0.0) for d in domains], dtype=np.float64)

    @classmethod
    def from_vector(
        cls, domains: list[str], weights: Iterable[float], *, normalize: bool = True
    ) -> Mixture:
        return cls(dict(zip(domains, weights, strict=True)), normalize=normalize)

    @classmethod
    def uniform(cls, domains: Iterable[str]) -> Mixture:
        ds = list(domains)
        return cls(dict.fromkeys(ds, 1.0 / len(ds)), normalize=True)

    def to_dict(self) -> dict[str, float]:
        return dict(self._w)

    def save(self, path: str | os.PathLike) -> None:
        from assay.util.files import atomic_path

        p = Path(path)
        text = (
            json.dumps(self._w, indent=2)
            if p.suffix == ".json"
            else yaml.safe_dump(self._w, sort_keys=True)
        )
        with atomic_path(p) as tmp:
            tmp.write_text(text)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Mixture:
        p = Path(path)
        if not p.exists():
            raise MissingError(f"mixture file not found: {p}")
        data: Any = yaml.safe_load(p.read_text())
        if isinstance(data, dict) and "mixture" in data and isinstance(data["mixture"], dict):
            data = data["mixture"]
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: a mixture file is a mapping of domain: weight")
        return cls(data)


def resolve_mixture(
    spec: Mixture | Mapping[str, float] | str | os.PathLike, tokens_per_domain: Mapping[str, int]
) -> Mixture:
    """A mixture from a spec: 'natural' (token-proportional), 'uniform', a mapping or a file.

    'natural' and 'uniform' need the domains' token counts; a mapping may also be written as
    the string 'news=0.5,code=0.5'.
    """
    if isinstance(spec, str) and spec in ("natural", "uniform"):
        counts = {d: n for d, n in tokens_per_domain.items() if n > 0}
        if not counts:
            raise InputError("no domain has any tokens")
        if spec == "uniform":
            return Mixture.uniform(counts)
        return Mixture(counts, normalize=True)
    if isinstance(spec, str) and "=" in spec and not Path(spec).exists():
        pairs = [p.split("=", 1) for p in spec.split(",") if p.strip()]
        try:
            return Mixture({k.strip(): float(v) for k, v in pairs}, normalize=True)
        except ValueError as e:
            raise ConfigError(
                f"cannot read mixture {spec!r}: write it as domain=weight,domain=weight"
            ) from e
    return as_mixture(spec)


def as_mixture(value: Mixture | Mapping[str, float] | str | os.PathLike) -> Mixture:
    """A Mixture from a Mixture, a mapping, or a YAML/JSON file path."""
    if isinstance(value, Mixture):
        return value
    if isinstance(value, Mapping):
        return Mixture(value)
    return Mixture.load(value)

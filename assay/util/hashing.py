"""Stable hashes: of strings (ids), of 64-bit values, of configurations."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def stable_hash64(values: list[str], seed: int = 0) -> np.ndarray:
    """64-bit hashes of strings that never change across runs, machines or library versions.

    polars' and Python's own hashes are salted or unstable between versions, which would break
    "same seed, same selection". blake2b is in the standard library and fast enough (about a
    million ids per second) for the per-document keys of sampling and selection.
    """
    key = seed.to_bytes(8, "little", signed=True)
    out = np.empty(len(values), dtype=np.uint64)
    blake = hashlib.blake2b
    for i, v in enumerate(values):
        out[i] = int.from_bytes(blake(v.encode("utf-8"), digest_size=8, key=key).digest(), "little")
    return out


def mix64(h: np.ndarray, seed: int) -> np.ndarray:
    """Re-hash 64-bit values with a seed (splitmix64 finaliser), vectorised."""
    with np.errstate(over="ignore"):
        z = h.astype(np.uint64) ^ np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform_from_hash(h: np.ndarray) -> np.ndarray:
    """Map 64-bit hashes to floats strictly inside (0, 1)."""
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))


def config_hash(obj: Any) -> str:
    """A short, order-independent hash of a JSON-able configuration."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]

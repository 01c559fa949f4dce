"""Random scores: the baseline every selection method must beat.

A document's score is a uniform number in [0, 1) from a seeded hash of its text, so a random
selection is reproducible, the same on any runner and worker count, and selecting the top k of
it is a uniform sample of k documents (or of a character or token budget, through the usual
selection policies).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from assay.selection.base import Scorer, register_scorer
from assay.util.hashing import stable_hash64, uniform_from_hash


@register_scorer("random")
class RandomScorer(Scorer):
    def __init__(self, column: str = "random", seed: int = 0):
        super().__init__(column)
        self.seed = int(seed)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        return uniform_from_hash(stable_hash64(list(texts), self.seed)).astype(np.float32)

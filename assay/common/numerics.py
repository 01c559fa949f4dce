"""Numerics several engines share: rank correlation, k-means, nearest centroids."""

from __future__ import annotations

import numpy as np

from assay.errors import ConfigError


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation; NaN for fewer than 3 pairs or a constant side (a predictor
    that predicts one value ranks nothing)."""
    from scipy.stats import rankdata

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def default_k(n_docs: int) -> int:
    """K_init scaled to the sample: ~sqrt(n/2), between 2 and 1,000 (CLIMB's K_init)."""
    return int(np.clip(round(np.sqrt(n_docs / 2)), 2, 1000))


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, n_iter: int = 100) -> np.ndarray:
    """Centroids (k x dim), with faiss when it is installed, else scikit-learn."""
    if k > len(x):
        raise ConfigError(f"cannot make {k} clusters from {len(x)} documents")
    try:
        import faiss  # type: ignore[import-not-found]

        km = faiss.Kmeans(x.shape[1], k, niter=n_iter, seed=seed, verbose=False)
        km.train(np.ascontiguousarray(x, dtype=np.float32))
        return np.asarray(km.centroids, dtype=np.float32)
    except ImportError:
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=k, n_init=3, max_iter=n_iter, random_state=seed).fit(x)
        return km.cluster_centers_.astype(np.float32)


#: distances computed at once by `nearest` (rows x centroids): 64 MiB of float32
NEAREST_BLOCK = 1 << 24


def nearest(x: np.ndarray, centroids: np.ndarray, *, block: int | None = None) -> np.ndarray:
    """The index of each row's nearest centroid (squared Euclidean distance), in blocks of rows
    with at most `block` (default `NEAREST_BLOCK`) distances each: memory O(block), never
    rows x centroids. A set that fits one block gives exactly the values of one whole
    computation."""
    rows = max(1, (NEAREST_BLOCK if block is None else block) // max(1, len(centroids)))
    c2 = (centroids * centroids).sum(1)[None, :]
    out = np.empty(len(x), dtype=np.int64)
    for a in range(0, len(x), rows):
        xb = x[a : a + rows]
        d = (xb * xb).sum(1)[:, None] - 2 * xb @ centroids.T + c2
        out[a : a + rows] = np.argmin(d, axis=1)
    return out

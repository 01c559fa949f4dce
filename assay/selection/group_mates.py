"""Group-MATES: a relational influence model and cluster-wise greedy selection."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from assay.common.numerics import spearman
from assay.errors import ConfigError, InputError
from assay.selection.base import NotFittedError
from assay.selection.mates import MIN_PROBES, MatesScorer
from assay.util.files import atomic_path, read_json, write_json


class RelationalInfluenceModel:
    """Group-MATES' relational data influence model on frozen, unit-length embeddings.

    The individual influence is linear, `u_i = w . e_i + b`. Within a trajectory (documents
    trained one after another) the t-th document's predicted increment of the reference loss is
    `u_t` for t = 0 and `u_t * alpha * mean_{j<t} (1 - cos(e_t, e_j) / tau)` after, with `alpha`
    and `tau` learned (both start at 1, as in the official model). Targets are the z-scored
    increments; the checkpoint kept is the one with the best Spearman correlation on held-out
    trajectories (evaluated every `eval_every` epochs).
    """

    def __init__(self, *, epochs: int = 400, lr: float = 1e-2, eval_every: int = 20):
        self.epochs, self.lr, self.eval_every = epochs, lr, eval_every
        self.w: np.ndarray | None = None
        self.b = 0.0
        self.alpha = 1.0
        self.tau = 1.0
        self.report: dict[str, Any] = {}

    @staticmethod
    def _forward(e: Any, w: Any, b: Any, alpha: Any, tau: Any) -> tuple[Any, Any]:
        """(relational prediction, individual u), both (m, T), from embeddings (m, T, d)."""
        import torch

        u = e @ w + b
        T = e.shape[1]
        if T == 1:
            return u, u
        cos = torch.einsum("mtd,msd->mts", e, e)
        rel = (1.0 - cos / tau) * torch.tril(torch.ones(T, T, dtype=e.dtype), diagonal=-1)
        counts = torch.arange(T, dtype=e.dtype).clamp(min=1)
        mean_rel = rel.sum(dim=2) / counts
        pred = torch.cat([u[:, :1], u[:, 1:] * alpha * mean_rel[:, 1:]], dim=1)
        return pred, u

    def fit(
        self,
        embeddings: np.ndarray,
        increments: np.ndarray,
        *,
        holdout: float = 0.2,
        seed: int = 0,
    ) -> RelationalInfluenceModel:
        """`embeddings` (m, T, d) of m trajectories of T documents, `increments` (m, T)."""
        import torch

        e_all = np.asarray(embeddings, dtype=np.float32)
        y_raw = np.asarray(increments, dtype=np.float64)
        if e_all.ndim != 3 or y_raw.shape != e_all.shape[:2]:
            raise InputError(
                "embeddings must be (trajectories, T, dim) and increments (trajectories, T)"
            )
        m, T, _ = e_all.shape
        n_val = max(2, round(holdout * m))
        if m - n_val < 2 or m * T < MIN_PROBES:
            raise InputError(
                f"{m} trajectories of {T} documents are too few to fit and check a relational "
                f"influence model; probe at least {max(MIN_PROBES, 4 * T)} documents"
            )
        mean, std = float(y_raw.mean()), float(y_raw.std())
        if std == 0:
            raise InputError("every rollout step has the same influence; nothing to learn")
        y = (y_raw - mean) / std
        order = np.random.default_rng(seed).permutation(m)
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        torch.manual_seed(seed)
        ev = torch.from_numpy(e_all[val])
        best_epoch = self._train(e_all[train], y[train], ev, y[val])
        with torch.no_grad():
            pv, uv = self._forward(
                ev, *map(torch.as_tensor, (self.w, self.b, self.alpha, self.tau))
            )
        self.report = {
            "trajectories": m,
            "trajectory_length": T,
            "train": len(train),
            "holdout": len(val),
            "target_mean": mean,
            "target_std": std,
            "spearman": spearman(pv.numpy().ravel(), y[val].ravel()),
            "individual": spearman(uv.numpy().ravel(), y[val].ravel()),
            "best_epoch": best_epoch,
            "alpha": self.alpha,
            "tau": self.tau,
            "head": {"head": "relational"},
        }
        return self

    def _train(self, e_train: np.ndarray, y_train: np.ndarray, ev: Any, y_val: np.ndarray) -> int:
        """Full-batch AdamW on the training trajectories; keeps (in `self`) the parameters with
        the best held-out Spearman and returns their epoch."""
        import torch

        d = e_train.shape[2]
        w = torch.zeros(d, requires_grad=True)
        b = torch.zeros((), requires_grad=True)
        alpha = torch.ones((), requires_grad=True)
        tau = torch.ones((), requires_grad=True)
        opt = torch.optim.AdamW([w, b, alpha, tau], lr=self.lr, weight_decay=0.0)
        et = torch.from_numpy(e_train)
        yt = torch.from_numpy(y_train.astype(np.float32))
        best: tuple[float, int, tuple] | None = None
        for epoch in range(1, self.epochs + 1):
            pred, _ = self._forward(et, w, b, alpha, tau.clamp(min=1e-3))
            loss = torch.mean((pred - yt) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if epoch % self.eval_every == 0 or epoch == self.epochs:
                with torch.no_grad():
                    pv, _ = self._forward(ev, w, b, alpha, tau.clamp(min=1e-3))
                rho = spearman(pv.numpy().ravel(), y_val.ravel())
                key = -np.inf if math.isnan(rho) else rho
                if best is None or key > best[0]:
                    snap = tuple(t.detach().clone() for t in (w, b, alpha, tau))
                    best = (key, epoch, snap)
        assert best is not None
        w_, b_, a_, t_ = best[2]
        self.w = w_.numpy().astype(np.float32)
        self.b, self.alpha, self.tau = float(b_), float(a_), max(float(t_), 1e-3)
        return best[1]

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """The relational prediction (trajectories, T) of trajectories' embeddings (m, T, d), on
        the z-scored scale of the targets it was fitted on."""
        import torch

        if self.w is None:
            raise NotFittedError("the relational model is not fitted")
        e = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
        params = map(torch.as_tensor, (self.w, self.b, self.alpha, self.tau))
        with torch.no_grad():
            pred, _ = self._forward(e, *params)
        return pred.numpy().astype(np.float64)

    def individual(self, embeddings: np.ndarray) -> np.ndarray:
        """u = w . e + b: the z-scored individual influence (lower = better)."""
        if self.w is None:
            raise NotFittedError("the relational model is not fitted")
        return np.asarray(embeddings, dtype=np.float64) @ self.w.astype(np.float64) + self.b

    def save(self, folder: str | os.PathLike) -> None:
        from safetensors.numpy import save_file

        assert self.w is not None
        f = Path(folder)
        f.mkdir(parents=True, exist_ok=True)
        with atomic_path(f / "relational.safetensors") as tmp:
            save_file({"w": self.w, "b": np.asarray([self.b], dtype=np.float32)}, str(tmp))
        write_json(
            f / "relational.json", {"alpha": self.alpha, "tau": self.tau, "report": self.report}
        )

    @classmethod
    def load(cls, folder: str | os.PathLike) -> RelationalInfluenceModel:
        from safetensors.numpy import load_file

        f = Path(folder)
        weights = load_file(str(f / "relational.safetensors"))
        meta = read_json(f / "relational.json")
        model = cls()
        model.w, model.b = weights["w"], float(weights["b"][0])
        model.alpha, model.tau, model.report = meta["alpha"], meta["tau"], meta["report"]
        return model

    def as_scorer(self, embedder: dict[str, Any] | str | None) -> MatesScorer:
        """The individual part as a `MatesScorer` (score = -u), for `score_corpus`."""
        scorer = MatesScorer(embedder=embedder, heads=("ridge",))
        assert self.w is not None
        scorer.head = {"head": "ridge", "source": "group-mates individual influence"}
        scorer.weights = {"w": self.w, "b": np.asarray([self.b], dtype=np.float32)}
        scorer.report = dict(self.report)
        return scorer


def group_select(
    influence: np.ndarray,
    embeddings: np.ndarray,
    keep: float,
    *,
    alpha: float,
    tau: float,
    docs_per_cluster: int = 200,
    seed: int = 0,
) -> np.ndarray:
    """Group-MATES' cluster-wise greedy selection; a boolean mask over the documents.

    Documents are clustered (k-means on unit embeddings, about `docs_per_cluster` each); in each
    cluster, `round(keep * size)` documents are taken greedily: first the lowest individual
    influence u, then each time the argmin of `u * avg_rel`, where avg_rel is the running mean over
    the documents already taken of `alpha * (1 - cos / tau)`. alpha and tau are the relational
    model's *learned* values (the official `select_indices.py` hard-codes both to 1).
    """
    from assay.common.numerics import kmeans, nearest

    u = np.asarray(influence, dtype=np.float64)
    e = np.asarray(embeddings, dtype=np.float32)
    if len(u) != len(e):
        raise InputError(f"{len(u)} influence values for {len(e)} embeddings")
    if not 0 < keep <= 1:
        raise ConfigError(f"keep must be a fraction in (0, 1], not {keep}")
    if tau <= 0:
        raise ConfigError("tau must be positive")
    mask = np.zeros(len(u), dtype=bool)
    if not len(u):
        return mask
    k = max(1, min(len(u), round(len(u) / max(docs_per_cluster, 1))))
    labels = np.zeros(len(u), dtype=np.int64) if k == 1 else nearest(e, kmeans(e, k, seed=seed))
    # every cluster's documents in ascending order, from one stable sort: O(n log n), not O(n k)
    members = np.argsort(labels, kind="stable")
    ends = np.cumsum(np.bincount(labels, minlength=k))
    for c in range(k):
        idx = members[(ends[c - 1] if c else 0) : ends[c]]
        taken = _greedy(u[idx], e[idx], round(keep * len(idx)), alpha, tau)
        mask[idx[taken]] = True
    return mask


def _greedy(uc: np.ndarray, ec: np.ndarray, n_take: int, alpha: float, tau: float) -> np.ndarray:
    """Group-MATES' greedy pick of `n_take` documents of one cluster (a mask): the lowest
    individual influence first, then each time the lowest `u * avg_rel`."""
    taken = np.zeros(len(uc), dtype=bool)
    if n_take == 0:
        return taken
    ec = ec.astype(np.float64)
    avg_rel = np.zeros(len(uc))
    for i in range(n_take):
        scores = (uc if i == 0 else avg_rel * uc).copy()
        scores[taken] = np.inf
        j = int(np.argmin(scores))
        taken[j] = True
        cur = alpha * (1.0 - ec @ ec[j] / tau)
        avg_rel = (i * avg_rel + cur) / (i + 1)
    return taken


#: scores held at once by the beam search: beams x candidates float64 values per block
BEAM_BLOCK = 1 << 21


def beam_rollouts(
    influence: np.ndarray,
    embeddings: np.ndarray,
    length: int,
    width: int,
    *,
    alpha: float,
    tau: float,
    beams: int = 5,
    order: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Group-MATES' bootstrap rollouts: trajectories of `length` distinct candidates found by a
    beam search under a relational model; (trajectories (at most `width`) x `length` candidate
    indices, their predicted totals), best first.

    At step t each kept trajectory proposes its `beams` best next candidates by
    `u * avg_rel` (avg_rel: the mean over its t documents of `alpha * (1 - cos / tau)`), a
    child's score is its parent's plus that value, and the `width` best children are kept;
    "best" is the lowest with `order=1` (predicted most helpful) and the highest with
    `order=-1` (most harmful). As the official `bootstrap.py` (`num_rollouts=10, num_beams=5,
    num_selected=10000`, run once per order), except at t = 0, where the official code's
    zero `avg_rel` scores every candidate 0 (its first documents are the first `beams` of the
    pool in storage order) and this one scores by `u`, the model's prediction for a first
    document. avg_rel is computed from each trajectory's summed embeddings (the same mean), so
    the search holds `width x dim` numbers and blocks of at most `BEAM_BLOCK` scores, never a
    beam x candidates array. Deterministic: a trajectory's children are ordered by score then
    index, and the children of all by score then that order (a stable sort).
    """
    u = np.asarray(influence, dtype=np.float64)
    e = np.asarray(embeddings, dtype=np.float64)
    n = len(u)
    if e.shape[0] != n:
        raise InputError(f"{n} influence values for {e.shape[0]} embeddings")
    if not 1 <= length <= n:
        raise InputError(f"rollouts of {length} documents need at least {length} candidates")
    if width < 1 or beams < 1 or order not in (1, -1):
        raise ConfigError("width and beams must be >= 1 and order 1 or -1")
    if tau <= 0:
        raise ConfigError("tau must be positive")
    paths = np.zeros((1, 0), dtype=np.int64)
    sums = np.zeros((1, e.shape[1]))
    totals = np.zeros(1)
    for t in range(length):
        k = min(beams, n - t)
        parent, doc, score = _expand(u, e, paths, sums, totals, k, alpha, tau, order)
        keep = np.argsort(order * score, kind="stable")[:width]
        parent, doc = parent[keep], doc[keep]
        paths = np.concatenate([paths[parent], doc[:, None]], axis=1)
        sums = sums[parent] + e[doc]
        totals = score[keep]
    return paths, totals


def _expand(
    u: np.ndarray,
    e: np.ndarray,
    paths: np.ndarray,
    sums: np.ndarray,
    totals: np.ndarray,
    k: int,
    alpha: float,
    tau: float,
    order: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every trajectory's `k` best next candidates: (parent row, candidate, parent total +
    its step score), parent-major, each parent's children best first."""
    n_beams, t = paths.shape
    rows = max(1, BEAM_BLOCK // max(len(u), 1))
    parents, docs, scores = [], [], []
    for a in range(0, n_beams, rows):
        blk = slice(a, min(a + rows, n_beams))
        if t == 0:
            step = np.broadcast_to(u, (blk.stop - blk.start, len(u))).copy()
        else:
            step = alpha * (1.0 - (sums[blk] / t) @ e.T / tau) * u
        ranked = order * step
        np.put_along_axis(ranked, paths[blk], np.inf, axis=1)  # no document twice
        part = np.argpartition(ranked, k - 1, axis=1)[:, :k]  # O(candidates), then sort k
        top = np.take_along_axis(
            part, np.lexsort((part, np.take_along_axis(ranked, part, axis=1))), axis=1
        )
        parents.append(np.repeat(np.arange(blk.start, blk.stop), k))
        docs.append(top.ravel())
        scores.append((totals[blk, None] + np.take_along_axis(step, top, axis=1)).ravel())
    return np.concatenate(parents), np.concatenate(docs), np.concatenate(scores)

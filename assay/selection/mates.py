"""MATES: model-aware data selection with data influence models (Yu, Das, Xiong, NeurIPS 2024).

Pretraining runs in stages. Stage 0 trains on random data; at the end of every stage the current
proxy is *probed* and its preferences choose the next stage's data:

1. **Oracle influence** (`Prober`, `probe_run`). For each candidate x of a probe set, take one
   optimizer step on x alone from the current checkpoint (AdamW moments and step counts
   included, gradient clipping as in training, the learning rate of the schedule at that step)
   and measure the change of the loss on a reference set (the target task's examples):
   `I(x) = L_ref(theta + delta_x) - L_ref(theta)`; negative = x helps the target. The model and
   optimizer are restored in memory after every probe (parameters and optimizer state tensors
   are copied back from one snapshot: no reload from disk, which the official code does for
   every probe), and the reference loss is computed in padded, length-sorted batches.
2. **Data influence model** (`MatesScorer`). A regressor from document to z-scored influence:
   frozen sentence embeddings (the bundled MiniLM, or its static distillation) and a head chosen
   among ridge regressions (several alphas) and a small MLP by Spearman correlation on a
   held-out split of the probes (the paper keeps the best checkpoint by Spearman too), then
   refitted on all probes. `score()` is minus the predicted influence: higher = keep. The
   paper's own model, an encoder fine-tuned end to end on 1,024 tokens in two mean-pooled
   chunks, is `MatesFinetunedScorer` (`assay.selection.mates_finetune`).
3. **Selection** (`gumbel_topk`, `assay.selection.select`). The stage's candidate pool is scored
   through `score_corpus` and a fraction (20%: the paper's |pool| // 5) is kept by Gumbel top-k
   on the predicted benefit, `argtopk(-pred / tau + G)` with tau = 0.5. That samples documents
   without replacement with probability proportional to softmax(-pred / tau). The official code
   computes `pred / tau + G` and keeps the k *smallest* values, which is not that distribution
   (the Gumbel distribution is not symmetric: argmin(a + G) is not argmax(-a + G) in law); see
   `gumbel_topk`.

`run_mates` drives the loop on top of `assay.proxies.train.train_proxy`: the corpus is split
into one *consume-once* candidate pool per stage (a seeded hash of the id), each stage continues
the previous one's weights and optimizer state with one learning-rate schedule over all stages
(WSD with 4% warmup by default, as in the paper), and every stage is resumable. Pools, scoring,
selection and tokenization go through the runner; probing is in-process, or split across the
runner's workers (`runner.map`, each worker loading the checkpoint once). Its folder:

    mates_config.json  mates.json  tokenizer/ (when trained here)  pools/stage-<s>/
    stage-<s>/
        oracle.parquet  probing.json   the probes: id, text, influence, loss_after (s >= 1)
        scorer/                        the fitted MatesScorer (reusable on its own)
        scores/  selected/             side-car scores of the pool, the kept documents
        tokens/  proxy/                the stage's token cache and run (model/, state/)
        stage.json                     written last: the stage is done

The reference loss scores only each target example's continuation where the target set has a
split (`assay.common.targets.target_split`: a built-in benchmark's question, then answer, or named
context and continuation fields), its context conditioning the model, and is averaged as the
official evaluate(): the mean per scored token within each group of 32 examples, then over the
groups (`reference_loss`). `reference_scoring='whole'` scores every token of each example (the
mean per token over all of them). `selection='gumbel_official'` selects as the official code
(`gumbel_topk_mask(official=True)`), bias included.

Measured on this project's 2-core CPU (tiny preset, 2k vocabulary, sequences of 128, one
thread): 12.8 probes/s against 16 reference examples, 9.3/s against 32 and 5.6/s against 64;
reloading the checkpoint for every probe instead gives 4.1/s against 32 (the restore takes
1.5 ms).

Group-MATES (Yu et al. 2025, `group=True`): a relational influence model scales each document's
individual influence u_i by `alpha * mean_{j<i} (1 - cos(e_i, e_j) / tau_r)` over the documents
selected before it (alpha and tau_r learned, from rollouts: short trajectories of documents
trained one after another), and selection is greedy within embedding clusters, using the
*learned* alpha and tau_r (the official selection script hard-codes both to 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assay.common.numerics import spearman
from assay.errors import ConfigError, InputError, StateError
from assay.selection.base import (
    NotFittedError,
    Scorer,
    embedder_runs_on,
    embedder_settings,
    register_scorer,
)
from assay.util.files import atomic_path, read_json, write_json
from assay.util.hashing import stable_hash64

#: Fewest probes to fit an influence model and check it on a held-out split.
MIN_PROBES = 12

#: Fewest held-out probes a Spearman correlation is computed on.
MIN_HOLDOUT = 4
DEFAULT_ALPHAS = (0.1, 1.0, 10.0, 100.0)
HEADS = ("ridge", "mlp")


# ---------------------------------------------------------------------------------------------
# Gumbel top-k


# ---------------------------------------------------------------------------------------------
# Tokens


# ---------------------------------------------------------------------------------------------
# Oracle probing


# ---------------------------------------------------------------------------------------------
# Data influence model


def _fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> dict[str, np.ndarray]:
    """Ridge regression with an unpenalised intercept (closed form, float64)."""
    mu = x.mean(axis=0)
    xc = x - mu
    d = x.shape[1]
    if len(x) < d:  # dual form: n x n system
        k = xc @ xc.T
        a = np.linalg.solve(k + alpha * np.eye(len(x)), y - y.mean())
        w = xc.T @ a
    else:
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(d), xc.T @ (y - y.mean()))
    b = y.mean() - mu @ w
    return {"w": w.astype(np.float32), "b": np.asarray([b], dtype=np.float32)}


def _fit_mlp(
    x: np.ndarray, y: np.ndarray, *, hidden: int, epochs: int, lr: float, seed: int
) -> dict[str, np.ndarray]:
    """A one-hidden-layer ReLU MLP trained full-batch with AdamW on MSE (seeded)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    w1 = (torch.randn(d, hidden, generator=g) / math.sqrt(d)).requires_grad_()
    b1 = torch.zeros(hidden, requires_grad=True)
    w2 = (torch.randn(hidden, 1, generator=g) / math.sqrt(hidden)).requires_grad_()
    b2 = torch.zeros(1, requires_grad=True)
    opt = torch.optim.AdamW([w1, b1, w2, b2], lr=lr, weight_decay=1e-2)
    xt = torch.from_numpy(x.astype(np.float32))
    yt = torch.from_numpy(y.astype(np.float32))
    for _ in range(epochs):
        pred = (torch.relu(xt @ w1 + b1) @ w2 + b2)[:, 0]
        loss = torch.mean((pred - yt) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    names = ("w1", "b1", "w2", "b2")
    return {
        k: v.detach().numpy().astype(np.float32)
        for k, v in zip(names, (w1, b1, w2, b2), strict=True)
    }


def _predict_head(kind: str, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The head's prediction in numpy (float64), the same for a fitted and a loaded scorer."""
    x = np.asarray(x, dtype=np.float64)
    if kind == "ridge":
        return x @ weights["w"].astype(np.float64) + float(weights["b"][0])
    if kind == "mlp":
        h = np.maximum(x @ weights["w1"].astype(np.float64) + weights["b1"], 0.0)
        return (h @ weights["w2"].astype(np.float64))[:, 0] + float(weights["b2"][0])
    raise ValueError(f"unknown head {kind!r}")


def _rank_key(rho: float) -> float:
    return -np.inf if math.isnan(rho) else rho


def _candidates(heads: Sequence[str], alphas: Sequence[float]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for h in heads:
        if h == "ridge":
            out += [{"head": "ridge", "alpha": float(a)} for a in alphas]
        elif h == "mlp":
            out.append({"head": "mlp"})
        else:
            raise ConfigError(f"unknown influence-model head {h!r}; choose from {HEADS}")
    if not out:
        raise ConfigError("no influence-model heads to fit")
    return out


def _influence_stats(y_raw: np.ndarray, n: int) -> tuple[float, float]:
    """Mean and standard deviation of the oracle influence of `n` probes, checked."""
    if len(y_raw) != n:
        raise InputError(f"{len(y_raw)} influence values for {n} texts")
    if n < MIN_PROBES:
        raise InputError(
            f"{n} probes are too few to fit and check an influence model; probe at "
            f"least {MIN_PROBES} documents (the paper probes 80,000 per stage)"
        )
    if not np.all(np.isfinite(y_raw)):
        raise InputError("the oracle influence has NaN or infinite values")
    mean, std = float(y_raw.mean()), float(y_raw.std())
    if std == 0:
        raise InputError("every probe has the same oracle influence; nothing to learn")
    return mean, std


def holdout_split(keys: Sequence[str], holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) row indices, each sorted: a share `holdout` (at least `MIN_HOLDOUT`)
    chosen by a seeded hash of the id, so the same probes are held out whatever their order."""
    order = np.argsort(stable_hash64(list(keys), seed), kind="stable")
    n_val = max(MIN_HOLDOUT, round(holdout * len(keys)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def probe_record(
    keys: Sequence[str],
    y_raw: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    val_pred: np.ndarray,
    mean: float,
    std: float,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The probe table (`write_probe_table`'s columns) and the start of a fit report: the
    counts and the z-scoring of the oracle values, from a fit's split and held-out predictions."""
    held_pred = np.full(len(keys), np.nan)
    held_pred[val] = val_pred
    split = np.array(["train"] * len(keys), dtype=object)
    split[val] = "holdout"
    table = {
        "id": np.asarray(keys, dtype=object),
        "influence": y_raw,
        "z": y,
        "split": split,
        "holdout_prediction": held_pred,
    }
    report = {
        "probes": len(keys),
        "train": len(train),
        "holdout": len(val),
        "target_mean": mean,
        "target_std": std,
    }
    return table, report


def write_probe_table(folder: Path, table: dict[str, np.ndarray]) -> None:
    """`probes.parquet`: each probe's id, oracle influence, z-score, split and held-out
    prediction (NaN for the training probes)."""
    import polars as pl

    frame = pl.DataFrame(
        {
            "id": [str(i) for i in table["id"]],
            "influence": table["influence"],
            "z": table["z"],
            "split": [str(s) for s in table["split"]],
            "holdout_prediction": table["holdout_prediction"],
        }
    )
    with atomic_path(folder / "probes.parquet") as tmp:
        frame.write_parquet(tmp)


@register_scorer("mates")
class MatesScorer(Scorer):
    """The MATES data influence model: embeddings -> z-scored oracle influence.

    `fit(texts, influence)` z-scores the oracle values, fits every candidate head (ridge for each
    alpha, a small MLP) on a seeded (1 - holdout) split, keeps the one with the best Spearman
    correlation on the held-out probes, and (with `refit`) fits it again on all probes.
    `predict` is the z-scored predicted influence (lower = better for the target); `score` is
    its negative, so that higher = keep, as for every scorer.

    The paper's model, an encoder fine-tuned end to end, is `MatesFinetunedScorer`
    (`assay.selection.mates_finetune`, the scorer `mates_finetune`).

    >>> scorer = MatesScorer(embedder="static").fit(probe_texts, oracle_influence)
    >>> scorer.report["spearman"], scorer.report["head"]
    """

    def __init__(
        self,
        column: str = "mates",
        embedder: dict[str, Any] | str | None = None,
        heads: Sequence[str] = HEADS,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        holdout: float = 0.2,
        hidden: int = 64,
        epochs: int = 100,
        mlp_lr: float = 3e-3,
        refit: bool = True,
    ):
        super().__init__(column)
        if not 0 < holdout < 0.5:
            raise ConfigError(f"holdout must be a fraction in (0, 0.5), not {holdout}")
        _candidates(heads, alphas)  # validates
        self.embedder = embedder_settings(embedder)
        self.heads = list(heads)
        self.alphas = [float(a) for a in alphas]
        self.holdout = holdout
        self.hidden = hidden
        self.epochs = epochs
        self.mlp_lr = mlp_lr
        self.refit = refit
        self._embedder: Any = None  # the frozen Embedder, built on first use (never pickled)
        self.head: dict[str, Any] | None = None  # {"head": kind, "alpha"?: ...}
        self.weights: dict[str, np.ndarray] = {}
        self.report: dict[str, Any] = {}
        self.probe_table: dict[str, np.ndarray] = {}

    @property
    def is_fitted(self) -> bool:
        return self.head is not None

    @property
    def runs_on(self) -> str:
        """Where its embedder runs: the CPU for a static one, else the embedder's device
        ("auto": a GPU when there is one)."""
        return embedder_runs_on(self.embedder)

    def make_embedder(self) -> Any:
        from assay.common.embed import Embedder

        return Embedder(**self.embedder)

    def embedding_model(self) -> Any:
        """This scorer's `Embedder`, built once: its model loads and its cache opens on the
        first batch, not on every one."""
        if self._embedder is None:
            self._embedder = self.make_embedder()
        return self._embedder

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_embedder": None}

    def _fit_one(self, cand: dict[str, Any], x: np.ndarray, y: np.ndarray, seed: int) -> dict:
        if cand["head"] == "ridge":
            return _fit_ridge(x.astype(np.float64), y, cand["alpha"])
        return _fit_mlp(x, y, hidden=self.hidden, epochs=self.epochs, lr=self.mlp_lr, seed=seed)

    def fit(
        self,
        texts: Sequence[str],
        influence: Sequence[float] | np.ndarray,
        *,
        ids: Sequence[str] | None = None,
        seed: int = 0,
        embeddings: np.ndarray | None = None,
        progress: bool = False,
    ) -> MatesScorer:
        """Fit on probed documents and their oracle influence (L_ref after - before)."""
        texts = list(texts)
        y_raw = np.asarray(influence, dtype=np.float64)
        mean, std = _influence_stats(y_raw, len(texts))
        y = (y_raw - mean) / std
        keys = list(ids) if ids is not None else [str(i) for i in range(len(texts))]
        train, val = holdout_split(keys, self.holdout, seed)
        x = (
            embeddings
            if embeddings is not None
            else self.embedding_model().embed(texts, progress=progress)
        )
        best, results = self._fit_heads(np.asarray(x, dtype=np.float32), y, train, val, seed)
        self.probe_table, self.report = probe_record(
            keys, y_raw, y, train, val, best["_pred"], mean, std
        )
        self.report |= {
            "head": self.head,
            "spearman": best["spearman"],
            "candidates": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
            "refit_on_all": self.refit,
            "embedder": self.embedder,
        }
        return self

    def _fit_heads(
        self, x: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray, seed: int
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Fit every candidate head on `train`, keep the best by Spearman on `val` (refitted on
        all probes with `refit`); the best candidate's row and every candidate's."""
        results = []
        for i, cand in enumerate(_candidates(self.heads, self.alphas)):
            w = self._fit_one(cand, x[train], y[train], seed + i)
            pred = _predict_head(cand["head"], w, x[val])
            rho = spearman(pred, y[val])
            mse = float(np.mean((pred - y[val]) ** 2))
            results.append({**cand, "spearman": rho, "mse": mse, "_w": w, "_pred": pred})
        best = max(results, key=lambda r: _rank_key(r["spearman"]))
        self.head = {k: v for k, v in best.items() if k in ("head", "alpha")}
        best_i = results.index(best)
        self.weights = self._fit_one(self.head, x, y, seed + best_i) if self.refit else best["_w"]
        return best, results

    def predict(self, texts: Sequence[str], *, embeddings: np.ndarray | None = None) -> np.ndarray:
        """Predicted z-scored oracle influence (lower = better for the target)."""
        if self.head is None:
            raise NotFittedError("MatesScorer is not fitted: call fit() or load a saved one")
        if len(texts) == 0:
            return np.zeros(0, dtype=np.float64)
        x = embeddings if embeddings is not None else self.embedding_model().embed(list(texts))
        return _predict_head(self.head["head"], self.weights, x)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return (-self.predict(texts)).astype(np.float32)

    def _save_state(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        assert self.head is not None
        with atomic_path(folder / "head.safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in self.weights.items()}, str(tmp))
        write_json(folder / "head.json", self.head)
        write_json(folder / "fit_report.json", self.report)
        if self.probe_table:
            write_probe_table(folder, self.probe_table)

    def _load_state(self, folder: Path) -> None:
        from safetensors.numpy import load_file

        self.weights = dict(load_file(str(folder / "head.safetensors")))
        self.head = read_json(folder / "head.json")
        if self.head.get("finetuned"):
            raise StateError(
                f"{folder} holds an influence model whose sentence-transformers encoder was "
                "fine-tuned by an earlier assay (MatesScorer(finetune=True)), which is no longer "
                "read; fit the paper's fine-tuned model again (the scorer mates_finetune, or "
                "influence_model: finetune in a mates step)"
            )
        if (folder / "fit_report.json").exists():
            self.report = read_json(folder / "fit_report.json")


# ---------------------------------------------------------------------------------------------
# The staged loop


# ---------------------------------------------------------------------------------------------
# Group-MATES

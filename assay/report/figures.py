"""The report's own figures, drawn from counts and small tables (never from a corpus): score
histograms, a selection's histogram split at its cutoff, proxies' learning curves, per-domain
bits per byte and BiMix's predicted loss by budget. Each returns a matplotlib figure, which
the page embeds with `plots.svg_uri`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from assay.report.plots import pyplot


def histograms_figure(hists: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Any:
    """Small multiples: one histogram (edges, counts) per score column."""
    plt = pyplot()
    names = list(hists)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.5 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        edges, counts = hists[name]
        ax.stairs(counts, edges, fill=True, color="C0", alpha=0.8)
        ax.set_title(name, fontsize="small")
        ax.tick_params(labelsize="x-small")
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    fig.suptitle("score distributions (documents per bin)", fontsize="medium")
    fig.tight_layout()
    return fig


def selection_figure(
    edges: np.ndarray, kept: np.ndarray, dropped: np.ndarray, cutoff: float | None, column: str
) -> Any:
    """The selection column's histogram, kept and dropped documents stacked, cutoff marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.stairs(dropped + kept, edges, fill=True, color="C3", alpha=0.55, label="dropped")
    ax.stairs(kept, edges, fill=True, color="C2", alpha=0.9, label="kept")
    if cutoff is not None and np.isfinite(cutoff):
        ax.axvline(cutoff, color="black", ls="--", lw=1.2, label=f"cutoff {cutoff:.4g}")
    ax.set_xlabel(column)
    ax.set_ylabel("documents")
    ax.set_title(f"selection by {column}")
    ax.legend(fontsize="small")
    return fig


def learning_curves_figure(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> Any:
    """Train loss against tokens for each run (left); held-out bits per byte of each domain at
    each evaluation (right: one line per domain for a single run, the domain mean for many)."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    many = len(curves) > 1
    for k, (name, curve) in enumerate(curves.items()):
        color = f"C{k % 10}"
        train = [(p["tokens"], p["train_loss"]) for p in curve if "train_loss" in p]
        if train:
            x, y = zip(*train, strict=True)
            left.plot(x, y, color=color, lw=1, label=name if many else "train loss")
        evals = [p for p in curve if isinstance(p.get("bpb"), Mapping) and p["bpb"]]
        if many and evals:
            means = [np.mean([_bpb(v) for v in p["bpb"].values()]) for p in evals]
            right.plot([p["tokens"] for p in evals], means, "o-", color=color, ms=3, lw=1)
        elif evals:
            for j, d in enumerate(sorted(evals[-1]["bpb"])):
                pts = [(p["tokens"], _bpb(p["bpb"][d])) for p in evals if d in p["bpb"]]
                x, y = zip(*pts, strict=True)
                right.plot(x, y, "o-", color=f"C{j % 10}", ms=3, lw=1, label=d)
    left.set_xlabel("tokens")
    left.set_ylabel("train loss (nats per token)")
    left.set_title("training")
    right.set_xlabel("tokens")
    right.set_ylabel("mean held-out bits per byte" if many else "held-out bits per byte")
    right.set_title("evaluations")
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0] and len(ax.get_legend_handles_labels()[0]) <= 12:
            ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def _bpb(v: Any) -> float:
    return float(v["bpb"] if isinstance(v, Mapping) else v)


def domain_bars_figure(values: Mapping[str, float], *, ylabel: str, title: str) -> Any:
    """One bar per domain (bits per byte, weights)."""
    plt = pyplot()
    names = list(values)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names) + 2), 3))
    bars = ax.bar(names, [values[n] for n in names], color="C0")
    ax.bar_label(bars, fmt="%.3f", fontsize="x-small")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30, labelsize="small")
    return fig


def budget_curve_figure(curve: Sequence[Mapping[str, float]], unit: str, budget: float) -> Any:
    """BiMix's predicted total loss of the optimal mixture at each token budget."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.plot([c["tokens"] for c in curve], [c["total"] for c in curve], "o-", ms=4)
    ax.axvline(budget, color="grey", ls="--", lw=1, label=f"budget {budget:,.0f}")
    ax.set_xscale("log")
    ax.set_xlabel("tokens")
    ax.set_ylabel(f"predicted total {unit}")
    ax.set_title("optimal mixture's predicted loss by budget")
    ax.legend(fontsize="small")
    return fig

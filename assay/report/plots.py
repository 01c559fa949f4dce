"""Plots of a run: what each method chose, how well predictors predicted, how the BiMix law
fits each domain's curves (as PNG files, `plot_*`), and the figures of the HTML report
(`*_figure`, embedded with `svg_uri`).

matplotlib (the `report` extra) is imported only here, with the non-interactive Agg backend,
so that plotting works on a headless machine and `import assay` stays light.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import DependencyError


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - the report extra is part of `all`
        raise DependencyError("plots need matplotlib: pip install 'assay[report]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> str:
    from assay.util.files import atomic_path

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    return str(p)


def svg_uri(fig: Any) -> str:
    """A figure as an SVG `data:` URI (an image of its own: no ids shared with the page, no
    script, no fonts fetched), and the figure closed."""
    buf = io.BytesIO()
    with pyplot().rc_context({"svg.fonttype": "none", "svg.hashsalt": "assay"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    pyplot().close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def plot_mixtures(mixtures: Mapping[str, Mapping[str, float]], path: str | os.PathLike) -> str:
    """One stacked bar per method: its weight on every domain."""
    return _save(mixtures_figure(mixtures), path)


def mixtures_figure(mixtures: Mapping[str, Mapping[str, float]]) -> Any:
    plt = pyplot()
    methods = list(mixtures)
    domains = sorted({d for m in mixtures.values() for d in m})
    fig, ax = plt.subplots(figsize=(1.2 * len(methods) + 3, 4))
    bottom = np.zeros(len(methods))
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(domains), 2)))
    for d, c in zip(domains, colors, strict=False):
        w = np.array([mixtures[m].get(d, 0.0) for m in methods])
        ax.bar(methods, w, bottom=bottom, label=d, color=c)
        bottom += w
    ax.set_ylabel("weight")
    ax.set_ylim(0, 1)
    ax.set_title("mixture weights per method")
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize="small")
    ax.tick_params(axis="x", rotation=30)
    return fig


def plot_predicted_vs_measured(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    *,
    metric: str = "metric",
) -> str:
    """Scatter of predicted (x) against measured (y) per series, with the diagonal."""
    return _save(predicted_vs_measured_figure(series, metric=metric), path)


def predicted_vs_measured_figure(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, metric: str = "metric"
) -> Any:
    from assay.common.numerics import spearman

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    lo, hi = np.inf, -np.inf
    for name, (pred, meas) in series.items():
        p, m = np.asarray(pred, dtype=float), np.asarray(meas, dtype=float)
        rho = spearman(p, m)
        ax.scatter(p, m, s=18, label=f"{name} (Spearman {rho:.2f}, n={len(p)})")
        lo, hi = min(lo, p.min(), m.min()), max(hi, p.max(), m.max())
    pad = 0.02 * (hi - lo or 1)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"predicted {metric}")
    ax.set_ylabel(f"measured {metric}")
    ax.legend(fontsize="small")
    ax.set_title("predicted vs measured")
    return fig


def plot_bimix_fits(points: Mapping[str, Sequence[Any]], law: Any, path: str | os.PathLike) -> str:
    """Per domain: each run's held-out loss against tokens (dots) and the law's curve at the
    run's proportion (line)."""
    return _save(bimix_fits_figure(points, law), path)


def bimix_fits_figure(points: Mapping[str, Sequence[Any]], law: Any) -> Any:
    plt = pyplot()
    domain = np.asarray(points["domain"]).astype(str)
    r, s, loss = (np.asarray(points[k], dtype=float) for k in ("r", "s", "loss"))
    run = np.asarray(points.get("run", [""] * len(s))).astype(str)
    names = sorted(set(domain))
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    grid = np.geomspace(s.min(), s.max() * 1.05, 60)
    for ax, d in zip(axes.ravel(), names, strict=False):
        for k, rid in enumerate(sorted(set(run[domain == d]))):
            m = (domain == d) & (run == rid)
            color = f"C{k % 10}"
            ax.scatter(s[m], loss[m], s=12, color=color, label=f"r={r[m][0]:.2f}")
            ax.plot(grid, law.laws[d].predict(r[m][0], grid), color=color, lw=1)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # log minor labels overlap
        ax.set_title(
            f"{d}: alpha={law.laws[d].alpha:.3f}, beta={law.laws[d].beta:.2f}", fontsize="small"
        )
        ax.set_xlabel("tokens")
        unit = getattr(law, "unit", "bpb")
        ax.set_ylabel("held-out bits per byte" if unit == "bpb" else "held-out loss per token")
        ax.legend(fontsize="x-small")
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    fig.suptitle("BiMix fits per domain")
    return fig

"""One section of the report per step kind that has more to show than its summary: scores,
selections, proxies, searches, BiMix fits and mixtures. A kind without one here gets the
generic table of its summary (`page.step_section`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from assay.report import figures, rundir
from assay.report.html import MAX_ROWS, details, esc, figure, key_values, note, png_file, table
from assay.report.plots import bimix_fits_figure, predicted_vs_measured_figure, svg_uri
from assay.report.rundir import RunDir, StepRecord
from assay.util.files import read_json

#: score columns drawn per score step (a scorer may write many)
MAX_COLUMNS = 12
#: proxy runs whose learning curves are drawn
MAX_CURVES = 40
#: documents shown on each side of a selection's cutoff
EXAMPLES = 3

Section = Callable[[RunDir, StepRecord], str]
SECTIONS: dict[str, Section] = {}


def section(kind: str) -> Callable[[Section], Section]:
    def add(fn: Section) -> Section:
        SECTIONS[kind] = fn
        return fn

    return add


@section("score")
def score_section(run: RunDir, step: StepRecord) -> str:
    s = step.summary
    dist = s.get("distribution") or {}
    stats = ["count", "mean", "p1", "p10", "p50", "p90", "p99"]
    rows = [[c, *(dist[c].get(k) for k in stats)] for c in dist]
    parts = [
        f'<p class="meta">scored <b>{s.get("docs", 0):,}</b> documents; columns: '
        f"{', '.join(s.get('columns') or [])}</p>",
        table(["column", *stats], rows) if rows else "",
    ]
    scores = step.output("scores")
    columns = (s.get("columns") or [])[:MAX_COLUMNS]
    if scores is not None and columns:
        hists = rundir.score_histograms(scores, columns)
        if hists:
            parts.append(figure(svg_uri(figures.histograms_figure(hists)), "score histograms"))
    if "fit" in s:
        parts.append(details("fit report", key_values(s["fit"])))
    return "".join(parts)


@section("select")
def select_section(run: RunDir, step: StepRecord) -> str:
    s = step.summary
    cfg = s.get("config") or {}
    by, cutoff = cfg.get("by", "docs"), s.get("score_cutoff")
    parts = [
        f'<p class="meta">kept <b class="kept-docs">{s.get("kept_docs", 0):,}</b> of '
        f"{s.get('docs', 0):,} documents ({s.get('kept_fraction', 0):.1%} of {by}) by "
        f"<code>{cfg.get('column')}</code>, policy {cfg.get('policy')} ({cfg.get('mode')})"
        + (f", score cutoff {cutoff:.4g}" if cutoff is not None else "")
        + "</p>"
    ]
    if s.get("passed_docs") is not None:
        parts.append(note(f"{s['passed_docs']:,} documents passed the filter {cfg.get('where')}"))
    groups = s.get("groups") or {}
    if groups:
        rows = [
            [g, v["docs"], v["kept_docs"], v["kept_docs"] / max(v["docs"], 1)]
            for g, v in groups.items()
        ]
        parts.append(f"<h3>kept per {cfg.get('group_by') or 'group'}</h3>")
        parts.append(table(["group", "docs", "kept docs", "kept share"], rows))
    selected = step.output("selected")
    if selected is not None:
        hist = rundir.selection_histogram(selected)
        if hist is not None:
            fig = figures.selection_figure(*hist, cutoff, str(cfg.get("column")))
            parts.append(figure(svg_uri(fig), "selection histogram"))
        parts.append(_examples(run, step, selected))
    return "".join(parts)


def _examples(run: RunDir, step: StepRecord, selected: Any) -> str:
    from assay.io.corpus import Corpus
    from assay.io.shards import ReadOptions

    examples = rundir.nearest_cutoff(selected, EXAMPLES)
    if not examples:
        return ""
    spec = step.config.get("corpus") or run.recipe.get("corpus") or {}
    paths = rundir.corpus_paths(run, step.config.get("corpus"))
    missing = "" if paths else "texts not available: the corpus is not named in the recipe"
    if paths:
        try:
            options = {k: v for k, v in spec.items() if k in ReadOptions.model_fields}
            rundir.attach_texts(examples, Corpus(paths, **options))
        except (OSError, ValueError) as e:  # the corpus was moved or changed since the run
            missing = f"texts not available: {e}"
    if not missing and any(e.text is None for e in examples):
        missing = "some texts were not found: the corpus changed since the run"
    out = ["<h3>documents on either side of the cutoff</h3>", note(missing) if missing else ""]
    out.append('<div class="examples">')
    for kept in (True, False):
        side = [e for e in examples if e.kept == kept]
        out.append("<div><h3>" + ("lowest kept" if kept else "highest dropped") + "</h3>")
        for e in side:
            css = "kept" if kept else "dropped"
            text = "" if e.text is None else f"<pre>{esc(e.text)}</pre>"
            out.append(
                f'<div class="doc {css}"><b>score {e.score:.4g}</b> · {esc(e.id or e.shard)}'
                f" (row {e.row}){text}</div>"
            )
        out.append("</div>")
    out.append("</div>")
    return "".join(out)


def _read_run(step: StepRecord) -> dict[str, Any] | None:
    folder = step.output("run")
    if folder is None or not (folder / "run.json").is_file():
        return None
    return read_json(folder / "run.json")


def _curve(value: Any) -> list[dict[str, Any]]:
    return json.loads(value) if isinstance(value, str) else list(value or [])


@section("train_proxy")
def train_proxy_section(run: RunDir, step: StepRecord) -> str:
    s = step.summary
    params = (s.get("params") or {}).get("total")
    parts = [
        f'<p class="meta">{s.get("tokens", 0):,} tokens'
        + (f", {params:,} parameters" if params else "")
        + f", {s.get('tokens_per_second', 0):,.0f} tokens/s, final train loss "
        f"{s.get('train_loss', float('nan')):.3f}</p>"
    ]
    if s.get("cap_note"):
        parts.append(note(s["cap_note"]))
    record = _read_run(step)
    if record is not None:
        fig = figures.learning_curves_figure({step.name: _curve(record.get("curve"))})
        parts.append(figure(svg_uri(fig), "learning curve"))
    bpb = s.get("bpb") or {}
    if bpb:
        title = "held-out bits per byte per domain"
        fig = figures.domain_bars_figure(bpb, ylabel="bits per byte", title=title)
        parts.append(figure(svg_uri(fig), "bits per byte per domain"))
        mix = s.get("effective_mixture") or {}
        rows = [[d, mix.get(d, 0.0), b] for d, b in bpb.items()]
        parts.append(table(["domain", "weight trained on", "bits per byte"], rows))
    for task, metrics in (s.get("tasks") or {}).items():
        parts.append(f"<h3>{esc(task)}</h3>" + key_values(metrics))
    return "".join(parts)


def _runs_table(path: Any, objective: str | None) -> tuple[str, pl.DataFrame | None]:
    if path is None or not path.is_file():
        return "", None
    frame = pl.read_parquet(path)
    if objective in frame.columns:
        frame = frame.sort(objective, nulls_last=True)
    weights = sorted(c for c in frame.columns if c.startswith("w."))
    scores = sorted(c for c in frame.columns if c.startswith("bpb."))
    keep = [c for c in ["run_id", "tokens", "wall_seconds", *weights, *scores] if c in frame]
    rows = frame.select(keep).head(MAX_ROWS).rows()
    more = max(frame.height - len(rows), 0)
    html = table(keep, rows) + (note(f"and {more:,} more runs, not shown") if more else "")
    return html, frame


def _curves(step: StepRecord, frame: pl.DataFrame | None) -> str:
    """Learning curves of a search's proxies: each run's run.json (the whole curve), else the
    runs table's copy (its evaluations)."""
    if frame is None or frame.is_empty() or "out_dir" not in frame.columns:
        return ""
    curves = {}
    for row in frame.head(MAX_CURVES).iter_rows(named=True):
        recorded = Path(str(row["out_dir"]))
        found = [recorded, step.folder / step.kind / "proxies" / recorded.name]
        run_json = next((f / "run.json" for f in found if (f / "run.json").is_file()), None)
        curve = read_json(run_json).get("curve") if run_json else row.get("curve")
        curves[str(row.get("run_id") or recorded.name)[:8]] = _curve(curve)
    return figure(svg_uri(figures.learning_curves_figure(curves)), "proxy learning curves")


@section("search")
def search_section(run: RunDir, step: StepRecord) -> str:
    s = step.summary
    sp = s.get("spearman") or {}
    parts = [
        f'<p class="meta">{s.get("method")} over iterations {s.get("iterations")}; objective '
        f"{s.get('objective')}: best run {s.get('best_run_metric', float('nan')):.4f}, median "
        f"{s.get('median_run_metric', float('nan')):.4f}; predictor used: {s.get('predictor')}"
        "</p>",
        table(["predictor", "held-out Spearman"], sp.items()) if sp else "",
    ]
    mixture = s.get("mixture") or {}
    if mixture:
        title = "chosen mixture"
        fig = figures.domain_bars_figure(mixture, ylabel="weight", title=title)
        parts.append(figure(svg_uri(fig), "chosen mixture"))
    search_json = step.output("search")
    if search_json is not None:
        parts.append(
            png_file(search_json.parent / "predicted_vs_measured.png", "predicted vs measured")
        )
    html, frame = _runs_table(step.output("runs_table"), s.get("objective"))
    parts += [_curves(step, frame), "<h3>runs</h3>" + html if html else ""]
    return "".join(parts)


@section("bimix")
def bimix_section(run: RunDir, step: StepRecord) -> str:
    s = step.summary
    unit, law, mix = s.get("unit", "bpb"), s.get("law") or {}, s.get("mixture") or {}
    r2s, errs = s.get("heldout_r2") or {}, s.get("extrapolation_mean_rel_error") or {}
    fields = ("alpha", "beta", "B", "C")
    rows = [
        [d, *(v.get(k) for k in fields), errs.get(d), r2s.get(d), mix.get(d)]
        for d, v in law.items()
    ]
    header = ["domain", "alpha", "beta", "B", "C", "extrap. rel. error", "held-out R2", "share"]
    parts = [
        f'<p class="meta">BiMix law per domain ({unit}), optimum at '
        f"{s.get('budget', 0):,.0f} tokens</p>",
        table(header, rows),
    ]
    law_file, fit = step.output("law"), step.output("fit")
    points = fit.parent / "points.parquet" if fit is not None else None
    if law_file is not None and points is not None and points.is_file():
        from assay.mixing.bimix import BiMix

        law = BiMix.load(law_file)
        fig = bimix_fits_figure(pl.read_parquet(points).to_dict(as_series=False), law)
        parts.append(figure(svg_uri(fig), "BiMix fits: measured points, fitted curves"))
        parts.append(_law_against_proxies(run, law))
    if s.get("budget_curve"):
        fig = figures.budget_curve_figure(s["budget_curve"], unit, float(s.get("budget", 0)))
        parts.append(figure(svg_uri(fig), "predicted loss by budget"))
    return "".join(parts)


def _law_against_proxies(run: RunDir, law: Any) -> str:
    """The law's loss of each domain at the mixture and tokens of each proxy of the run,
    against the proxy's measured held-out loss (in the law's unit)."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for proxy in run.steps:
        record = _read_run(proxy) if proxy.kind == "train_proxy" else None
        if record is None:
            continue
        mix, measured = record.get("effective_mixture") or {}, record.get(law.unit) or {}
        pred, meas = [], []
        for d, domain_law in law.laws.items():
            if mix.get(d, 0) > 0 and d in measured:
                pred.append(float(domain_law.predict(mix[d], float(record["tokens"]))))
                meas.append(float(measured[d]))
        if pred:
            series[proxy.name] = (pred, meas)
    if sum(len(p) for p, _ in series.values()) < 2:
        return ""
    fig = predicted_vs_measured_figure(series, metric=f"held-out {law.unit}")
    return (
        "<h3>the law against the run's proxies</h3>"
        + note("one point per domain of each proxy: the law at its mixture and tokens")
        + figure(svg_uri(fig), "BiMix law: predicted vs measured")
    )


@section("mixture")
def mixture_section(run: RunDir, step: StepRecord) -> str:
    s = step.summary
    mixture = s.get("mixture") or {}
    parts = [f'<p class="meta">method {s.get("method")}</p>']
    if mixture:
        fig = figures.domain_bars_figure(mixture, ylabel="weight", title=f"{s.get('method')}")
        parts.append(figure(svg_uri(fig), "mixture weights"))
    rest = {k: v for k, v in s.items() if k not in ("method", "mixture")}
    return "".join(parts) + (details("details", key_values(rest)) if rest else "")

"""`write_report(run_dir)`: one self-contained HTML page of a run directory.

Everything is inline (style, figures as SVG or PNG `data:` URIs); the page has no script and
names nothing on the network, so it opens anywhere, offline, and can be mailed or archived.
Its sections follow the recipe: an overview of the steps (what ran, what it read, how long it
took), then a section per step present (a kind without a section of its own shows its summary
as a table), the mixtures chosen side by side, the environment and the inputs' fingerprints.
Its cost is bounded on large runs: histograms are counted from score files a column of one
file at a time, and only a handful of documents are read back (`rundir`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from assay.report.html import CSS, details, esc, figure, fmt, key_values, note, table
from assay.report.plots import mixtures_figure, svg_uri
from assay.report.rundir import RunDir, StepRecord, load_run
from assay.report.sections import SECTIONS

REPORT_FILE = "report.html"
#: in the head of every report: a file that exists at `out` is replaced only if it holds this
GENERATOR = '<meta name="generator" content="assay report">'
#: the fields of a step that say what it reads
READS = ("corpus", "heldout", "scores", "mixture", "tokenizer", "model", "targets", "runs")


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the HTML report of a run directory (default `RUN_DIR/report.html`), atomically;
    returns its path."""
    from assay.util.files import atomic_path

    run = load_run(run_dir)
    path = Path(out) if out is not None else run.root / REPORT_FILE
    _check_out(path)
    page = render(run)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def _check_out(path: Path) -> None:
    """The report is an .html file, and replaces only an earlier report: never a recipe, a
    corpus shard or any other file a user may have given by mistake."""
    from assay.errors import InputError

    if path.suffix.lower() not in (".html", ".htm"):
        raise InputError(
            f"the report is an HTML file: give --out a name ending in .html, not {path}"
        )
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the report's file name")
    if path.exists():
        with path.open("rb") as f:
            head = f.read(4096)
        if GENERATOR.encode() not in head:
            raise InputError(f"{path} exists and is not an assay report: it is not replaced")


def render(run: RunDir) -> str:
    name = run.recipe.get("name") or run.root.name
    total = sum(float(s.state.get("seconds") or 0) for s in run.steps)
    sections = [step_section(run, s) for s in run.steps]
    mixtures = _mixtures(run)
    nav = [f'<a href="#step-{esc(s.name)}">{esc(s.name)}</a>' for s in run.steps]
    nav += ['<a href="#mixtures">mixtures</a>'] if mixtures else []
    nav += ['<a href="#environment">environment</a>', '<a href="#inputs">inputs</a>']
    return "".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            GENERATOR,
            f"<title>assay report: {esc(name)}</title><style>{CSS}</style></head><body>",
            f"<header><h1>assay run: {esc(name)}</h1><p>{esc(run.root)} · {len(run.steps)} "
            f"steps · {total:,.1f} s of step time · started {esc(run.env.get('started', '?'))}"
            f" · report written {time.strftime('%Y-%m-%d %H:%M:%S')}</p></header>",
            f"<nav>{''.join(nav)}</nav><main>",
            _overview(run),
            *sections,
            mixtures,
            _environment(run),
            _inputs(run),
            "</main></body></html>",
        ]
    )


def _reads(step: StepRecord) -> str:
    """What a step read, from its settings: names of earlier steps and paths."""
    out = []
    for key in READS:
        value = step.config.get(key)
        if key == "corpus" and key in step.config and value is None:
            out.append("the recipe's corpus")
            continue
        if value in (None, [], {}, ""):
            continue
        if isinstance(value, dict) and ("paths" in value or "step" in value):
            value = value.get("step") or value.get("paths")
        out.append(f"{key}: {fmt(value)}")
    return "; ".join(out)


def _overview(run: RunDir) -> str:
    rows = [
        [s.name, s.kind, s.state.get("status", "?"), float(s.state.get("seconds") or 0), _reads(s)]
        for s in run.steps
    ]
    body = table(["step", "kind", "status", "seconds", "reads"], rows)
    if not run.steps:
        body = note("no step has finished in this run directory yet")
    return f'<section id="overview"><h2>Steps</h2>{body}</section>'


def step_section(run: RunDir, step: StepRecord) -> str:
    seconds = float(step.state.get("seconds") or 0)
    head = (
        f'<section id="step-{esc(step.name)}"><h2>{esc(step.name)}<span class="kind">'
        f"{esc(step.kind)}</span></h2>"
        f'<p class="meta">{esc(step.state.get("status", "?"))} in {seconds:,.1f} s'
        + (f" · reads {esc(_reads(step))}" if _reads(step) else "")
        + "</p>"
    )
    render = SECTIONS.get(step.kind)
    try:
        body = render(run, step) if render else key_values(step.summary)
    except Exception as e:  # a section that cannot be drawn must not lose the rest of the page
        body = note(f"this section could not be drawn ({type(e).__name__}: {e})")
        body += key_values(step.summary)
    outputs = step.state.get("outputs") or {}
    extra = details("outputs", table(["output", "path"], outputs.items())) if outputs else ""
    if step.config:
        extra += details("settings", f'<pre class="code">{esc(_yaml(step.config))}</pre>')
    if render and step.summary:
        extra += details("summary (step.json)", key_values(step.summary))
    return head + body + extra + "</section>"


def _yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, sort_keys=False)


def _mixtures(run: RunDir) -> str:
    """Every mixture the run chose (search, bimix, mixture steps) and every one a proxy was
    trained on, side by side."""
    found: dict[str, dict[str, float]] = {}
    for s in run.steps:
        mix = s.summary.get("effective_mixture" if s.kind == "train_proxy" else "mixture")
        if isinstance(mix, dict) and mix and all(isinstance(v, int | float) for v in mix.values()):
            found[s.name] = {str(k): float(v) for k, v in mix.items()}
    if not found:
        return ""
    domains = sorted({d for m in found.values() for d in m})
    rows = [[d, *(found[n].get(d, 0.0) for n in found)] for d in domains]
    return (
        '<section id="mixtures"><h2>Mixtures</h2>'
        + figure(svg_uri(mixtures_figure(found)), "mixture weights per step")
        + table(["domain", *found], rows)
        + "</section>"
    )


def _environment(run: RunDir) -> str:
    env = dict(run.env)
    packages = env.pop("packages", {}) or {}
    body = key_values(env) if env else note("no env.json")
    if packages:
        body += "<h3>packages</h3>" + table(["package", "version"], packages.items())
    return f'<section id="environment"><h2>Environment</h2>{body}</section>'


def _inputs(run: RunDir) -> str:
    rows = [
        [path, v.get("size"), v.get("sha256_edges", v.get("etag", ""))]
        for path, v in run.inputs.items()
        if isinstance(v, dict)
    ]
    body = table(["input", "bytes", "fingerprint"], rows) if rows else note("no inputs.json")
    return f'<section id="inputs"><h2>Inputs</h2>{body}</section>'

"""`assay inspect`: a thin wrapper over `assay.selection.inspect.inspect_scores`, and the text
rendering of what it returns (the histogram, the kept share per group, the examples)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

BAR = 40  # characters of the longest histogram bar


@click.command("inspect")
@click.argument("path")
@click.option(
    "--column", "columns", multiple=True, help="Score column to show (repeatable; default: all)."
)
@click.option(
    "--corpus",
    multiple=True,
    help="The corpus the texts come from, as given to `assay score` (repeatable; default: the "
    "one the scores record).",
)
@click.option(
    "--group-by",
    default="domain",
    show_default=True,
    help="Corpus field or score column to group by (a scores folder; a selection groups as "
    "it was made); 'none' for no groups.",
)
@click.option("--bins", default=20, show_default=True, type=int, help="Histogram bins.")
@click.option(
    "--examples", default=3, show_default=True, type=int, help="Examples of each kind per group."
)
@click.option(
    "--width", default=100, show_default=True, type=int, help="Characters of text per example."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def inspect_command(
    path: str,
    columns: tuple[str, ...],
    corpus: tuple[str, ...],
    group_by: str,
    bins: int,
    examples: int,
    width: int,
    as_json: bool,
) -> None:
    """Show a scores folder or a selection: per score column a histogram (with the selection's
    cutoff), the kept share per group, and the top, bottom and near-cutoff documents of each
    group. PATH is the output of `assay score` or `assay select` (or their --out folder)."""
    from assay.io.corpus import Corpus
    from assay.recipe.pipeline import step_output
    from assay.selection.inspect import inspect_scores

    target = step_output(path, "selected") or step_output(path, "scores") or path
    result = inspect_scores(
        target,
        columns=list(columns) or None,
        corpus=Corpus(list(corpus)) if corpus else None,
        group_by=None if group_by.lower() in ("none", "") else group_by,
        bins=bins,
        examples=examples,
        width=width,
    )
    console = Console()
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        render(result, console)


def render(result: dict[str, Any], console: Console) -> None:
    """`inspect_scores`' result as text."""
    console.print(
        f"[bold]{result['kind']}[/] {escape(result['path'])}: {result['docs']:,} documents of "
        f"{escape(', '.join(result['corpus']))}"
        + (f", by {escape(result['group_by'])}" if result["group_by"] else ""),
        soft_wrap=True,
    )
    for name, column in result["columns"].items():
        console.print()
        _summary(name, column, console)
        _histogram(column, console)
        _groups(column, console)
        _examples(column, console)


def _summary(name: str, c: dict[str, Any], console: Console) -> None:
    line = f"[bold]{escape(name)}[/]: {c['count']:,} scores"
    if c["missing"]:
        line += f", {c['missing']:,} missing"
    if c["count"]:
        line += f", min {c['min']:.4g}, mean {c['mean']:.4g}, max {c['max']:.4g}"
    if c["cutoff"] is not None:
        line += f"; cutoff {c['cutoff']:.4g} (keep {c['mode']})"
    if c["kept"] is not None:
        line += f"; kept {c['kept']['kept_docs']:,} = {c['kept']['kept_share']:.1%} of docs"
        if c["by"] != "docs":
            line += f", {c['kept']['kept_weight_share']:.1%} of {c['by']}"
    console.print(line, soft_wrap=True)


def _histogram(c: dict[str, Any], console: Console) -> None:
    edges, counts = c["histogram"]["edges"], c["histogram"]["counts"]
    if not counts:
        return
    top = max(counts) or 1
    cutoff = c["cutoff"]
    marked = False
    for i, n in enumerate(counts):
        lo, hi = edges[i], edges[i + 1]
        last = i == len(counts) - 1
        holds = cutoff is not None and lo <= cutoff and (cutoff < hi or (last and cutoff <= hi))
        bar = "█" * round(BAR * n / top) or ("▏" if n else "")
        mark = f"  [bold red]◀ cutoff {cutoff:.4g}[/]" if holds and not marked else ""
        marked = marked or holds
        console.print(
            f"  {lo:>11.4g} – {hi:<11.4g} {n:>8,} {bar}{mark}", highlight=False, soft_wrap=True
        )
    if cutoff is not None and not marked:
        side = "below" if edges and cutoff < edges[0] else "above"
        console.print(f"  [bold red]cutoff {cutoff:.4g} is {side} every score[/]")


def _groups(c: dict[str, Any], console: Console) -> None:
    kept = c["kept"] is not None
    t = Table(box=None, pad_edge=False)
    for h in ("group", "docs", "mean", *(("kept", "kept %") if kept else ())):
        t.add_column(h, justify="left" if h == "group" else "right")
    weighted = kept and c["by"] != "docs"
    if weighted:
        t.add_column(f"kept % {c['by']}", justify="right")
    cut = any(e.get("cutoff") is not None for e in c["groups"].values())
    if cut:
        t.add_column("last kept", justify="right")
    for g, e in c["groups"].items():
        row = [escape(g), f"{e['docs']:,}", "-" if e["mean"] is None else f"{e['mean']:.4g}"]
        if kept:
            row += [f"{e['kept_docs']:,}", f"{e['kept_share']:.1%}"]
        if weighted:
            row.append(f"{e['kept_weight_share']:.1%}")
        if cut:
            row.append("-" if e.get("cutoff") is None else f"{e['cutoff']:.4g}")
        t.add_row(*row)
    console.print(t)


TITLES = {"top": "highest", "bottom": "lowest", "near_cutoff": "nearest the cutoff"}


def _examples(c: dict[str, Any], console: Console) -> None:
    for g, e in c["groups"].items():
        for kind, title in TITLES.items():
            docs = e.get(kind) or []
            if not docs:
                continue
            console.print(f"  [bold]{escape(g)}[/], {title}:")
            for d in docs:
                mark = "" if d["kept"] is None else ("+ " if d["kept"] else "- ")
                console.print(
                    f"    {mark}{d['score']:.4g}  [dim]{escape(str(d['id']))}[/]  "
                    f"{escape(d['text'])}",
                    soft_wrap=True,
                    highlight=False,
                )

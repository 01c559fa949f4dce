"""`assay list`: a thin wrapper over `assay.recipe.catalog.catalog`."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table


@click.command("list")
@click.argument("kind", type=click.Choice(["scorers", "steps", "tasks"]))
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def list_command(kind: str, as_json: bool) -> None:
    """List what is registered: scorers, recipe step kinds (with their verbs) or the built-in
    target tasks, each with a one-line description."""
    from assay.recipe.catalog import catalog

    entries = catalog(kind)
    if as_json:
        click.echo(json.dumps(entries, indent=2, ensure_ascii=False))
        return
    t = Table(box=None, pad_edge=False)
    t.add_column(kind[:-1])
    if kind == "steps":
        t.add_column("verb")
    t.add_column("description")
    for e in entries:
        verb = [e["verb"] or "(recipes only)"] if kind == "steps" else []
        t.add_row(escape(e["name"]), *verb, escape(e["description"]))
    Console().print(t)

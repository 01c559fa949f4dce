"""The `assay` command line: a verb per step (generated from the step models), `run` for a
recipe, `scorers` for the registered scorers. Each verb is a thin wrapper over one library
function (`run_step`, `run_recipe`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from assay.cli.inspect import inspect_command
from assay.cli.listing import list_command
from assay.cli.steps import step_command, step_verbs
from assay.recipe.costs import Hardware
from assay.recipe.spec import Scale

out = Console()
err = Console(stderr=True)


def show_step(cls: Any, outcome: Any) -> None:
    cls.show(outcome, out)


@click.group(
    help="Score, select and mix language-model pretraining data.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--debug",
    is_flag=True,
    help="Show the traceback of every error (by default, errors about input, settings or "
    "files are one line).",
)
@click.option("--quiet", "-q", is_flag=True, help="Log warnings and errors only; no progress.")
@click.option("--verbose", "-v", is_flag=True, help="Log debug lines too.")
@click.option(
    "--no-progress", is_flag=True, help="Hide every progress bar, assay's and other libraries'."
)
@click.pass_context
def app(ctx: click.Context, debug: bool, quiet: bool, verbose: bool, no_progress: bool) -> None:
    from assay.util.log import command_line_logging

    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose contradict each other")
    ctx.call_on_close(command_line_logging(quiet, verbose, no_progress))


for _verb, _cls in step_verbs().items():
    app.add_command(step_command(_cls, show_step), _verb)


@app.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    help="Run directory (default: runs/<recipe name>).",
)
@click.option("--overwrite", is_flag=True, help="Redo every step (default: reuse finished work).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print each step's plan and an estimate of its compute; read and write nothing. "
    "Several recipes may then be given (arguments without '=').",
)
@click.option("--gpu", help=Hardware.model_fields["gpu"].description + " (--dry-run)")
@click.option("--peak-tflops", type=float, help=Hardware.model_fields["peak_tflops"].description)
@click.option("--mfu", type=float, help=Hardware.model_fields["mfu"].description)
@click.option(
    "--attention-flops", is_flag=True, help=Hardware.model_fields["attention"].description
)
@click.option("--corpus-tokens", type=int, help=Scale.model_fields["corpus_tokens"].description)
@click.option("--corpus-docs", type=int, help=Scale.model_fields["corpus_docs"].description)
def run(
    recipe: Path,
    overrides: tuple[str, ...],
    run_dir: Path | None,
    overwrite: bool,
    no_progress: bool,
    dry_run: bool,
    **estimate: Any,
) -> None:
    """Run a recipe end to end in a self-describing run directory. OVERRIDES are dotted
    settings such as select.keep=0.2 or runner.workers=2. With --dry-run, print the plan and
    its compute instead (FLOPs, tokens, GPU-hours at --mfu of --gpu)."""
    from assay.recipe import STEPS, run_recipe

    given = {k: v for k, v in estimate.items() if v not in (None, False)}
    if dry_run:
        recipes = [recipe, *(Path(o) for o in overrides if "=" not in o)]
        dry_run_recipes(recipes, [o for o in overrides if "=" in o], run_dir, given)
        return
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise click.UsageError(f"{flags} apply to --dry-run only")

    from assay.util.progress import progress_hidden

    with progress_hidden(no_progress):
        result = run_recipe(
            recipe, list(overrides), run_dir=run_dir, overwrite=overwrite, progress=not no_progress
        )
    t = Table(title=f"recipe {result.recipe.name} in {result.run_dir}")
    for c in ("step", "kind", "status", "seconds"):
        t.add_column(c)
    for s in result.steps:
        t.add_row(s.name, s.kind, s.status, f"{s.seconds:.1f}")
    out.print(t)
    for s in result.steps:
        for k, v in s.outputs.items():
            out.print(f"  {s.name}.{k}: {v}", highlight=False, soft_wrap=True)
    for s in result.steps:
        out.print(f"[bold]{s.name}[/]:", end=" ")
        STEPS[s.kind].show(s, out)


def dry_run_recipes(
    recipes: list[Path], overrides: list[str], run_dir: Path | None, given: dict[str, Any]
) -> None:
    """Print the plan and compute estimate of each recipe (`plan_recipe`)."""
    from pydantic import ValidationError

    from assay.errors import ConfigError
    from assay.recipe import load_recipe
    from assay.recipe.dryrun import plan_recipe

    renamed = {"attention_flops": "attention"}
    settings = {renamed.get(k, k): v for k, v in given.items()}
    try:
        hardware = Hardware(**{k: v for k, v in settings.items() if k in Hardware.model_fields})
        scale = Scale(**{k: v for k, v in settings.items() if k in Scale.model_fields})
    except ValidationError as e:
        err = e.errors()[0]
        flag = {v: k for k, v in renamed.items()}.get(str(err["loc"][0]), str(err["loc"][0]))
        raise ConfigError(f"--{flag.replace('_', '-')}: {err['msg']}") from None
    for i, path in enumerate(recipes):
        parsed = load_recipe(path, overrides)
        if run_dir is not None:
            parsed = parsed.model_copy(update={"run_dir": str(run_dir)})
        if i:
            out.print()
        for line in plan_recipe(parsed, hardware=hardware, scale=scale).lines():
            out.print(line, highlight=False, soft_wrap=True, markup=False)


app.add_command(inspect_command)
app.add_command(list_command)


@app.command()
def scorers() -> None:
    """List the registered scorers' names, one a line (`assay list scorers` describes them)."""
    from assay.selection.base import available_scorers

    for name in available_scorers():
        out.print(name)


@app.command()
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--out",
    "out_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The HTML file to write (default: RUN_DIR/report.html).",
)
def report(run_dir: Path, out_file: Path | None) -> None:
    """Write one self-contained HTML report of a run directory (of `assay run`)."""
    from assay.report import write_report

    path = write_report(run_dir, out_file)
    out.print(f"report: {path}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """The `assay` entry point: errors assay can explain (`AssayError`) are one line and exit
    code 2; anything else is a bug and shows its traceback (as everything does with --debug)."""
    import os

    from assay.errors import AssayError

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args[:1] or os.environ.get("ASSAY_DEBUG") == "1"
    try:
        app(args, standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(1)
    except AssayError as e:
        if debug:
            raise
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

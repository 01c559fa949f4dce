"""Options and helpers shared by the verbs of cli.py and cli_mixing.py."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

out = Console()
err = Console(stderr=True)

# -- shared options ------------------------------------------------------------------------------
Paths = Annotated[
    list[str],
    typer.Argument(
        help="Corpus files, folders (searched recursively) or globs: .jsonl, .jsonl.gz, .jsonl.zst, .parquet."
    ),
]
TextField = Annotated[
    str, typer.Option("--text-field", help="Record field holding the document text.")
]
IdField = Annotated[
    str,
    typer.Option(
        "--id-field",
        help="Record field holding a unique document id; '' to always generate '<shard>:<line>' ids.",
    ),
]
OnError = Annotated[
    str,
    typer.Option(
        "--on-error",
        help="Bad records (malformed JSON, missing or empty text, bad UTF-8, too long): 'fail' stops with file and line; 'skip' counts them in the stats.",
    ),
]
MaxChars = Annotated[
    int,
    typer.Option(
        "--max-chars", help="Documents longer than this are bad input; 0 disables the limit."
    ),
]
RunnerKind = Annotated[
    str, typer.Option("--runner", help="'local' (process pool on this machine) or 'ray'.")
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        "-j",
        help="Parallel shard workers (local: processes, 1 = in this process; ray: CPUs of the local instance).",
    ),
]
Address = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Ray cluster address (e.g. 'auto' or 'ray://host:10001'); default starts a local Ray instance.",
    ),
]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Redo shards whose outputs already exist (default: resume and skip them).",
    ),
]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")]


def _corpus(paths: list[str], text_field: str, id_field: str, on_error: str, max_chars: int) -> Any:
    from assay.io.corpus import Corpus

    return Corpus(
        paths,
        text_field=text_field,
        id_field=id_field or None,
        on_error=on_error,
        max_chars=max_chars or None,
    )


def _runner(kind: str, workers: int | None, address: str | None, no_progress: bool) -> Any:
    from assay.exec.runner import make_runner

    return make_runner(kind, workers, address, progress=not no_progress)


def _params(items: list[str] | None) -> dict[str, Any]:
    import yaml

    params: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"{item!r} must look like key=value")
        k, v = item.split("=", 1)
        params[k] = yaml.safe_load(v)
    return params

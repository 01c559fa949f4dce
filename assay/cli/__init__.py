"""The `assay` command line: each verb a thin wrapper over one library function."""

from assay.cli.main import app, main

__all__ = ["app", "main"]

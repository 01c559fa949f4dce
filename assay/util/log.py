"""Logging set-up for programs that run assay: its command line and its worker processes.

The library only logs: each module to `logging.getLogger(__name__)`, under the `assay` logger,
and never configures logging itself. A program configures it with `configure_logging` (the
command line does: INFO by default, `--quiet` WARNING, `--verbose` DEBUG): one handler on the
root logger writing to stderr, the `assay` logger at the level asked for, other libraries at
WARNING, and Python warnings (`warnings.warn`) through the same handler.

Worker processes (the runner's spawn pools, Ray tasks) start with no logging set up: the
runner hands them `worker_logging()` (None when the program did not call `configure_logging`)
and they call `configure_worker` with it, so their lines reach the same stderr (a Ray task's
reaches the driver's) at the same level, marked with the worker's process id.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from assay.util.progress import progress_mode, set_progress

ROOT = "assay"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WORKER_FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d]: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted (a test's capture, rich's
    redirection while a bar is shown), never to a stream that was closed since."""

    def __init__(self, fmt: str = FORMAT) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(fmt, DATE_FORMAT))

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always sys.stderr


def _installed() -> StderrHandler | None:
    for h in logging.getLogger().handlers:
        if isinstance(h, StderrHandler):
            return h
    return None


def configure_logging(level: int = logging.INFO, fmt: str = FORMAT) -> Callable[[], None]:
    """Log assay's records at `level` and above, other libraries' at WARNING and above, to
    stderr; returns a function that puts logging back as it was."""
    root, ours = logging.getLogger(), logging.getLogger(ROOT)
    saved = (root.level, ours.level, list(root.handlers))
    for h in root.handlers:
        if isinstance(h, StderrHandler):
            root.removeHandler(h)
    root.addHandler(StderrHandler(fmt))
    root.setLevel(logging.WARNING)
    ours.setLevel(level)
    logging.captureWarnings(True)

    def undo() -> None:
        logging.captureWarnings(False)
        for h in list(root.handlers):
            if isinstance(h, StderrHandler):
                root.removeHandler(h)
        for h in saved[2]:
            if isinstance(h, StderrHandler):
                root.addHandler(h)
        root.setLevel(saved[0])
        ours.setLevel(saved[1])

    return undo


def worker_logging() -> int | None:
    """What a worker process needs to log as this one does: the `assay` logger's level, or
    None when this process did not configure logging (`configure_logging`)."""
    if _installed() is None:
        return None
    return logging.getLogger(ROOT).getEffectiveLevel()


def configure_worker(level: int | None) -> None:
    """In a worker process: log as the parent does (`worker_logging()`), marked with the pid."""
    if level is None:
        return
    configure_logging(level, WORKER_FORMAT)


def command_line_logging(quiet: bool, verbose: bool, no_progress: bool) -> Callable[[], None]:
    """The command line's set-up: INFO (`quiet`: WARNING and no progress; `verbose`: DEBUG),
    progress hidden with `no_progress`, and other libraries' bars hidden too outside a terminal
    (they would fill a log with carriage returns). Returns the undo."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    undo_logs = configure_logging(level)
    show = not (quiet or no_progress)
    undo_progress = set_progress(show, third_party=show and progress_mode() == "bar")

    def undo() -> None:
        undo_progress()
        undo_logs()

    return undo

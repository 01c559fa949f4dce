"""One progress display for every long loop (runner shards, training steps), on stderr.

In a terminal it is a rich bar. Outside one (stderr not a tty: a batch job's or Ray job's log),
it is a log line (`logging`, INFO, logger `assay.util.progress`) every `interval` seconds
(`ASSAY_PROGRESS_INTERVAL`, default 10) and a last one at the end, each with done/total, the
loop's own fields (documents, rate), the elapsed time and the time left.

`ASSAY_PROGRESS=0` (set by the test suite), `set_progress(False)` (the command line's
`--no-progress` and `--quiet`) or `enabled=False` turns it off; updates are then free.
`ASSAY_PROGRESS=bar` or `=log` forces the bar or the log lines. `set_progress(False)` also hides
the bars of the libraries assay calls (tqdm, Hugging Face datasets, hub and transformers),
through their environment variables, which worker processes inherit, and their switches when
they are already imported.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

log = logging.getLogger(__name__)

#: seconds between two progress lines outside a terminal, unless ASSAY_PROGRESS_INTERVAL says
DEFAULT_INTERVAL = 10.0
#: what hides the bars of third-party libraries, read when they are imported
THIRD_PARTY_ENV = {
    "TQDM_DISABLE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}

_enabled: bool = True  # set_progress


def progress_mode(enabled: bool = True) -> str:
    """'bar', 'log' or 'off': what a progress display shows here and now."""
    setting = os.environ.get("ASSAY_PROGRESS", "1").strip().lower()
    if not enabled or not _enabled or setting in ("0", "false", "off", "no"):
        return "off"
    if setting in ("bar", "log"):
        return setting
    try:
        terminal = bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # no stderr, or a closed one
        terminal = False
    return "bar" if terminal else "log"


def progress_interval() -> float:
    """Seconds between two progress log lines (`ASSAY_PROGRESS_INTERVAL`, default 10)."""
    raw = os.environ.get("ASSAY_PROGRESS_INTERVAL")
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL
    return value if math.isfinite(value) and value >= 0 else DEFAULT_INTERVAL


def set_progress(enabled: bool, third_party: bool | None = None) -> Callable[[], None]:
    """Show (or hide) assay's progress in this process; `third_party=False` (default: as
    `enabled`) also hides other libraries' bars here and in the processes started from here.
    Returns a function that restores the previous settings."""
    global _enabled
    previous, _enabled = _enabled, enabled
    undo_bars = (
        hide_third_party_bars() if not (enabled if third_party is None else third_party) else None
    )

    def undo() -> None:
        global _enabled
        _enabled = previous
        if undo_bars is not None:
            undo_bars()

    return undo


@contextlib.contextmanager
def progress_hidden(hidden: bool = True) -> Iterator[None]:
    """Within: no progress at all (assay's and other libraries'), when `hidden`."""
    undo = set_progress(False) if hidden else None
    try:
        yield
    finally:
        if undo is not None:
            undo()


def hide_third_party_bars() -> Callable[[], None]:
    """Hide tqdm's and Hugging Face's progress bars; returns a function that shows them again
    (as they were)."""
    saved_env = {k: os.environ.get(k) for k in THIRD_PARTY_ENV}
    os.environ.update(THIRD_PARTY_ENV)
    restore: list[Callable[[], None]] = []
    for module, disable, enable, is_on in (
        ("datasets", "disable_progress_bars", "enable_progress_bars", "is_progress_bar_enabled"),
        (
            "huggingface_hub.utils",
            "disable_progress_bars",
            "enable_progress_bars",
            "are_progress_bars_disabled",
        ),
        (
            "transformers.utils.logging",
            "disable_progress_bar",
            "enable_progress_bar",
            "is_progress_bar_enabled",
        ),
    ):
        lib = sys.modules.get(module)
        if lib is None or not hasattr(lib, disable):
            continue  # not imported: the environment variables apply when it is
        try:
            was_on = bool(getattr(lib, is_on)())
            if is_on.startswith("are_"):  # huggingface_hub asks the other way round
                was_on = not was_on
            getattr(lib, disable)()
        except Exception:  # a library's switch must never stop a run
            continue
        if was_on:
            restore.append(getattr(lib, enable))

    def undo() -> None:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for fn in restore:
            with contextlib.suppress(Exception):
                fn()

    return undo


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class ProgressBar:
    """A rich bar with a counter and a line of named fields: `update(completed, **fields)`.

    `fields` is a rich template over `task.fields` (`"shards · {task.fields[docs]:,} docs"`);
    outside a terminal the same template makes the log line, with `unit` (the counter's unit,
    for its rate) when the template does not begin with one.
    """

    def __init__(
        self,
        label: str,
        total: int,
        completed: int,
        fields: str,
        enabled: bool = True,
        *,
        unit: str = "",
        **initial: Any,
    ):
        self.mode = progress_mode(enabled)
        self.enabled = self.mode != "off"
        self.label, self.total, self.completed, self.fields = label, total, completed, fields
        self.unit, self.values, self.initial = unit, dict(initial), initial
        self._progress: Any = None
        self._task: Any = None
        self._start = completed
        self._t0 = self._last = 0.0
        self._interval = progress_interval()

    def __enter__(self) -> ProgressBar:
        self._t0 = self._last = time.perf_counter()
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.fields),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(
                self.label, total=self.total, completed=self.completed, **self.initial
            )
        return self

    def update(self, completed: int | None = None, advance: int = 0, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, completed=completed, advance=advance or None, **fields
            )
        elif self.mode == "log":
            self.completed = (self.completed if completed is None else completed) + advance
            self.values.update(fields)
            now = time.perf_counter()
            if now - self._last >= self._interval:
                self._last = now
                self._log(now, final=False)

    def line(self, now: float, final: bool) -> str:
        """The log line: `label: done/total <fields> · <elapsed> elapsed · <left> left`."""
        try:
            shown = (
                self.fields.format(task=SimpleNamespace(fields=self.values)) if self.fields else ""
            )
        except (KeyError, ValueError, IndexError):
            shown = ""
        elapsed = now - self._t0
        parts = [f"{self.label}: {self.completed:,}/{self.total:,} {shown or self.unit}".rstrip()]
        done = self.completed - self._start
        if self.unit and done > 0 and elapsed > 0:
            parts.append(f"{done / elapsed:,.1f} {self.unit}/s")
        parts.append(f"{_clock(elapsed)} elapsed")
        if not final:
            left = (self.total - self.completed) * elapsed / done if done > 0 else None
            parts.append(f"{_clock(left)} left" if left is not None else "time left unknown")
        return " · ".join(parts)

    def _log(self, now: float, final: bool) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        log.info("%s", self.line(now, final) + (" · finished" if final else ""))

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
        elif self.mode == "log" and exc[0] is None:
            self._log(time.perf_counter(), final=True)

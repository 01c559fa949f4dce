"""One progress bar for every long loop (runner shards, training steps), on stderr.

`ASSAY_PROGRESS=0` (set by the test suite) or `enabled=False` turns it off; updates are then free.
"""

from __future__ import annotations

import os
from typing import Any


class ProgressBar:
    """A rich bar with a counter and a line of named fields: `update(completed, **fields)`."""

    def __init__(
        self,
        label: str,
        total: int,
        completed: int,
        fields: str,
        enabled: bool = True,
        **initial: Any,
    ):
        self.enabled = enabled and os.environ.get("ASSAY_PROGRESS", "1") != "0"
        self.label, self.total, self.completed, self.fields, self.initial = (
            label,
            total,
            completed,
            fields,
            initial,
        )
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
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

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

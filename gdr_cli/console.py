"""The shared rich console and progress bars (rates and ETA) for long work."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 200)
"""Messages, tables and progress go to stderr; stdout is kept for machine-readable output (`--json`)."""

stdout = Console(highlight=False)


def quiet() -> bool:
    """True when progress bars should be hidden (GDR_QUIET=1, or a non-primary distributed rank)."""
    return os.environ.get("GDR_QUIET") == "1" or int(os.environ.get("RANK", "0")) != 0


def progress(unit: str = "it", *fields: str) -> Progress:
    """A progress bar with count, rate in `unit`/s, elapsed time, ETA and extra `fields` (e.g. loss).

    Use as `with progress("ex", "loss") as p: t = p.add_task("train", total=n, loss="-")`
    and `p.update(t, advance=k, loss=f"{x:.3f}")`.
    """
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=28),
        MofNCompleteColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        *[TextColumn(f"{f}={{task.fields[{f}]}}") for f in fields],
    ]
    hidden = quiet() or (not sys.stderr.isatty() and os.environ.get("GDR_PROGRESS") != "1")
    return Progress(*columns, console=console, disable=hidden)


class _RateColumn(TextColumn):
    def __init__(self, unit: str):
        super().__init__("")
        self.unit = unit

    def render(self, task):  # type: ignore[override]
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text("-" if speed is None else f"{speed:,.1f} {self.unit}/s")

"""The goal table as a newcomer reads it (rich), and a progress bar for the run.

One line per (goal, engine): what the engine did, what it was measured against, both
best figures, the best and median ratio, the goal and the verdict (``pass`` / ``MISS`` /
``aim met`` / ``aim missed`` / ``error`` / ``skipped``). Errors and skips are listed under
the table with their reason.
"""
from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from perf.model import Row


def console() -> Console:
    """A console wide enough for the table when stdout is not a terminal (CI, pipes)."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=220, force_terminal=False, color_system=None)


def progress(con: Console) -> Progress:
    return Progress(TextColumn("{task.description:<16}"), BarColumn(), TimeElapsedColumn(),
                    console=con, transient=True, disable=not con.is_terminal)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1e3:,.1f} ms"
    if unit == "B/s":
        return f"{value / 2**20:,.1f} MiB/s"
    return f"{value:,.0f} {unit}"


def verdict(row: Row) -> str:
    if row.skipped:
        return "skipped"
    if row.error:
        return "error"
    ok = row.passed
    if ok is None:
        return "-"
    if not row.enforced:
        return "aim met" if ok else "aim missed"
    return "pass" if ok else "MISS"


def print_table(con: Console, rows: list[Row]) -> None:
    t = Table(title="issue 9 goals: engine vs reference, interleaved in one run",
              show_lines=False)
    for name, kw in (("row", {}), ("engine", {}), ("what the engine does", {"max_width": 46}),
                     ("reference", {"max_width": 40}), ("engine best", {"justify": "right"}),
                     ("reference best", {"justify": "right"}),
                     ("ratio best", {"justify": "right"}),
                     ("ratio median", {"justify": "right"}), ("goal", {}), ("result", {})):
        t.add_column(name, **kw)
    for r in rows:
        best, med = r.best_ratio, r.median_ratio
        res = verdict(r)
        if r.extra_text:
            res += f" ({r.extra_text})"
        style = {"pass": "green", "MISS": "red", "error": "red"}.get(verdict(r))
        t.add_row(r.goal_id, r.engine, r.what, r.reference,
                  _fmt(r.best(r.engine_samples), r.unit),
                  _fmt(r.best(r.reference_samples), r.unit),
                  "-" if best is None else f"{best:.2f}x",
                  "-" if med is None else f"{med:.2f}x",
                  r.goal_text + ("" if r.enforced else " (aim)"), res, style=style)
    con.print(t)
    for r in rows:
        if r.error:
            con.print(f"  {r.key}: error: {r.error}")
        elif r.skipped:
            con.print(f"  {r.key}: skipped: {r.skipped}")

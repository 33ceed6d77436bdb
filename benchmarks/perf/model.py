"""A row of the goal table, its samples, and the interleaved measurement loop.

A :class:`Row` pairs one engine measurement with one reference measurement. Each run
returns a :class:`Sample` (a rate, or a time for P9, plus the work it did so the script can
check the engine did what it was asked). :func:`measure_row` runs ``engine, reference,
engine, reference, ...`` ``repeat`` times inside one set-up, so both sides see the same
machine load. The best ratio is the engine's best run over the reference's best run (each
side's least disturbed run, timeit's rule) and decides the verdict; the median ratio is the
median run over the median run. (The ratio of one pair is kept too, but a single disturbed
reference run would make it flatter the engine, so it decides nothing.)

Not thread-safe: one row is measured at a time.
"""
from __future__ import annotations

import gc
import statistics
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    """One timed run: ``value`` is a rate (higher is better) or seconds (``lower`` rows)."""

    value: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    """One line of the table: a goal, on one engine, against one reference.

    ``run(repeat)`` measures it and returns ``(engine samples, reference samples)``,
    interleaved. ``lower``: the figure is a time and the goal is a ceiling (P9).
    ``enforced``: ``--check`` fails on a miss (False for the LMDB aims, which are not in the
    issue's table of floors). ``extra_check`` adds a condition on the engine samples (P5's
    fsyncs per message) and returns ``(ok, text)``.
    """

    goal_id: str
    engine: str
    what: str
    reference: str
    unit: str
    goal: float
    run: Callable[[int], tuple[list[Sample], list[Sample]]] | None = None
    lower: bool = False
    enforced: bool = True
    extra_check: Callable[[list[Sample]], tuple[bool, str]] | None = None
    # results
    engine_samples: list[Sample] = field(default_factory=list)
    reference_samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None
    extra_ok: bool | None = None
    extra_text: str = ""

    @property
    def key(self) -> str:
        return f"{self.goal_id}/{self.engine}"

    @property
    def ratios(self) -> list[float]:
        """engine / reference per interleaved pair (for a time row: engine time / ref time)."""
        out = []
        for e, r in zip(self.engine_samples, self.reference_samples):
            if r.value > 0:
                out.append(e.value / r.value)
        return out

    @property
    def best_ratio(self) -> float | None:
        """The engine's best run over the reference's best run."""
        e, r = self.best(self.engine_samples), self.best(self.reference_samples)
        return None if e is None or not r else e / r

    @property
    def median_ratio(self) -> float | None:
        """The engine's median run over the reference's median run."""
        if not self.engine_samples or not self.reference_samples:
            return None
        r = statistics.median(s.value for s in self.reference_samples)
        return statistics.median(s.value for s in self.engine_samples) / r if r else None

    def best(self, samples: list[Sample]) -> float | None:
        if not samples:
            return None
        vals = [s.value for s in samples]
        return min(vals) if self.lower else max(vals)

    @property
    def passed(self) -> bool | None:
        """True / False by the best ratio (and the extra condition); None when not measured."""
        b = self.best_ratio
        if b is None:
            return None
        ok = b <= self.goal if self.lower else b >= self.goal
        if self.extra_ok is False:
            ok = False
        return ok

    @property
    def goal_text(self) -> str:
        return f"<= {self.goal:g}x" if self.lower else f">= {self.goal:g}x"

    def to_dict(self) -> dict[str, Any]:
        return {
            "goal": self.goal_id, "engine": self.engine, "what": self.what,
            "reference": self.reference, "unit": self.unit, "target": self.goal_text,
            "lower_is_better": self.lower, "enforced": self.enforced,
            "engine_samples": [{"value": s.value, **s.extra} for s in self.engine_samples],
            "reference_samples": [{"value": s.value, **s.extra}
                                  for s in self.reference_samples],
            "pair_ratios": self.ratios, "best_ratio": self.best_ratio,
            "median_ratio": self.median_ratio, "passed": self.passed,
            "extra_check": self.extra_text or None, "error": self.error,
            "skipped": self.skipped,
        }


def interleave(repeat: int, engine: Callable[[], Sample], reference: Callable[[], Sample]
               ) -> tuple[list[Sample], list[Sample]]:
    """``engine, reference, engine, reference, ...``, ``repeat`` pairs (a collection first,
    so neither side pays for the other's garbage)."""
    es, rs = [], []
    for _ in range(repeat):
        gc.collect()
        es.append(engine())
        gc.collect()
        rs.append(reference())
    return es, rs


def measure_row(row: Row, repeat: int) -> Row:
    """Measure ``row`` in place (an exception is recorded as the row's error)."""
    if row.skipped or row.run is None:
        return row
    try:
        row.engine_samples, row.reference_samples = row.run(repeat)
        if row.extra_check is not None:
            row.extra_ok, row.extra_text = row.extra_check(row.engine_samples)
    except Exception as exc:  # a broken path is a row that misses, never a lost run
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        row.error = f"{type(exc).__name__}: {exc} (at {tb.filename}:{tb.lineno})"
    return row

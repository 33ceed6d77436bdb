"""PNG plots of the scaling suites (needs the ``plot`` extra: matplotlib).

For a suite with a ``plot_x`` parameter (``partitions``, ``batching``, ``tags``,
``recovery``), :func:`plot_suite` draws the suite's first figure (throughput) and, when the
suite has one, its p99 latency against that parameter: one line per engine and reference
(and per flush mode where the suite varies it). Engines are solid lines, references dashed.
"""
from __future__ import annotations

import os
from pathlib import Path

from mqstore.bench.suites import SuiteResult
from mqstore.errors import ConfigError

LOG_X = {"partitions", "batch_records", "log_mb"}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'mqstore[plot]'") from None
    return plt


def plot_suite(res: SuiteResult, directory: str | os.PathLike[str]) -> Path | None:
    """Write ``<suite>.png`` into ``directory``; None when the suite has nothing to plot."""
    x_key = res.plot_x
    rows = [r for r in res.rows if x_key and x_key in r.params]
    if not rows:
        return None
    plt = _pyplot()
    y_cols = [res.columns[0]]
    lat = next((c for c in res.columns if c.key in ("p99_ms",)), None)
    if lat is not None:
        y_cols.append(lat)
    fig, axes = plt.subplots(1, len(y_cols), figsize=(6.5 * len(y_cols), 4.5), squeeze=False)
    series: dict[str, list[tuple[float, float]]] = {}
    styles: dict[str, str] = {}
    for r in rows:
        extra = " ".join(f"{k}={v}" for k, v in sorted(r.params.items()) if k != x_key)
        label = f"{r.target} {extra}".strip()
        styles[label] = "-" if r.kind == "engine" else "--"
        series.setdefault(label, [])
    for ax, col in zip(axes[0], y_cols):
        for label in series:
            pts = []
            for r in rows:
                extra = " ".join(f"{k}={v}" for k, v in sorted(r.params.items()) if k != x_key)
                if f"{r.target} {extra}".strip() != label:
                    continue
                v = r.values.get(col.key)
                if isinstance(v, (int, float)):
                    pts.append((float(r.params[x_key]), float(v)))
            if not pts:
                continue
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], styles[label], marker="o",
                    label=label)
        if x_key in LOG_X:
            ax.set_xscale("log")
        ax.set_xlabel(x_key.replace("_", " "))
        ax.set_ylabel(col.label)
        ax.set_title(f"{res.name}: {col.label} vs {x_key.replace('_', ' ')}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"mqstore bench {res.name} — {res.verdict.label}", fontsize=10)
    fig.tight_layout()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{res.name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

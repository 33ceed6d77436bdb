"""PNG plots of the scaling suites (needs the ``plot`` extra: matplotlib).

For a suite with a ``plot_x`` parameter (``partitions``, ``batching``, ``tags``,
``recovery``), :func:`plot_suite` draws the suite's first figure (throughput, log scale) and,
when the suite has one, its p99 latency against that parameter: one line per engine (solid)
and reference (dashed). Cases that differ in another parameter (the flush mode in
``partitions``, clean or crash in ``recovery``) get their own column of panels.
"""
from __future__ import annotations

import os
from pathlib import Path

from mqstore.bench.suites import Row, SuiteResult
from mqstore.errors import ConfigError

LOG_X = {"partitions", "batch_records", "log_mb"}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'mqstore[plot]'") from None
    return plt, NullFormatter


def _variant(row: Row, x_key: str) -> str:
    """The case's parameters other than the x axis (e.g. ``flush=sync``), or the case kind."""
    extra = " ".join(f"{k}={v}" for k, v in sorted(row.params.items()) if k != x_key)
    if not extra and row.case.split()[-1] in ("crash", "clean"):
        extra = row.case.split()[-1]
    return extra


def plot_suite(res: SuiteResult, directory: str | os.PathLike[str]) -> Path | None:
    """Write ``<suite>.png`` into ``directory``; None when the suite has nothing to plot."""
    x_key = res.plot_x
    rows = [r for r in res.rows if x_key and x_key in r.params]
    if not rows:
        return None
    plt, NullFormatter = _pyplot()
    metrics = [res.columns[0]]
    lat = next((c for c in res.columns if c.key == "p99_ms"), None)
    if lat is not None:
        metrics.append(lat)
    variants = sorted({_variant(r, x_key) for r in rows})
    targets = list(dict.fromkeys(r.target for r in rows))
    kinds = {r.target: r.kind for r in rows}
    colours = {t: f"C{i}" for i, t in enumerate(targets)}
    fig, axes = plt.subplots(len(metrics), len(variants), squeeze=False,
                             figsize=(5.2 * len(variants) + 1.8, 3.6 * len(metrics)))
    for mi, col in enumerate(metrics):
        for vi, variant in enumerate(variants):
            ax = axes[mi][vi]
            for t in targets:
                pts = sorted((float(r.params[x_key]), float(r.values[col.key]))
                             for r in rows if r.target == t and _variant(r, x_key) == variant
                             and isinstance(r.values.get(col.key), (int, float)))
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts],
                            "-" if kinds[t] == "engine" else "--", color=colours[t],
                            marker="o", label=t)
            if x_key in LOG_X:
                ax.set_xscale("log")
            xs = sorted({float(r.params[x_key]) for r in rows})
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.xaxis.set_minor_formatter(NullFormatter())
            if mi == 0 and all(v > 0 for r in rows
                               if isinstance(v := r.values.get(col.key), (int, float))):
                ax.set_yscale("log")
            ax.set_xlabel(x_key.replace("_", " "))
            ax.set_ylabel(col.label)
            ax.set_title(f"{col.label}" + (f" ({variant})" if variant else ""), fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.suptitle(f"mqstore bench {res.name}: {res.verdict.label}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1))
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{res.name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""Reports: rich tables with ratios, Kafka/RocketMQ-style summary lines, OMB-shaped JSON.

- :func:`suite_table`: one rich table per suite, one row per (case, target), each ratio column
  giving the figure divided by the first engine's figure in the same case.
- :func:`kafka_producer_line` / :func:`kafka_consumer_line` / :func:`rocketmq_producer_line` /
  :func:`rocketmq_consumer_line`: the closing lines of ``kafka-producer-perf-test``,
  ``kafka-consumer-perf-test`` and RocketMQ's benchmark ``Producer`` / ``Consumer``.
- :func:`omb_result`: a dict with OMB's ``TestResult`` keys (latencies in ms, publish delay in
  µs, per-window series) plus an ``mqstore`` block (engine configuration, machine, CRC
  backend, resources). :func:`write_omb_json` names the file like OMB:
  ``<workload>-<driver>-<yyyy-MM-dd-HH-mm-ss>.json``.
"""
from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from mqstore.bench.metrics import LatencyHistogram
from mqstore.bench.runner import RunResult
from mqstore.bench.suites import SuiteResult
from mqstore.bench.workload import Workload

OMB_PCTS = (("Avg", None), ("50pct", 50.0), ("75pct", 75.0), ("95pct", 95.0),
            ("99pct", 99.0), ("999pct", 99.9), ("9999pct", 99.99), ("Max", 100.0))


def fmt_value(fmt: str, v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def ratio_text(v: Any, base: Any) -> str:
    if not isinstance(v, (int, float)) or not isinstance(base, (int, float)) or not base:
        return "—"
    return f"×{v / base:.2f}"


def suite_table(res: SuiteResult) -> Table:
    """The suite's rows side by side, with ratios against the first engine of each case."""
    mark = {True: "[green]shown[/]", False: "[red]NOT shown[/]", None: "[yellow]undecided[/]"}
    table = Table(title=f"[bold]{res.name}[/] — {escape(res.claim)}", title_justify="left",
                  caption=f"{mark[res.verdict.shown]}: {escape(res.verdict.text)}",
                  caption_justify="left")
    table.add_column("case", no_wrap=True)
    table.add_column("target", no_wrap=True)
    for col in res.columns:
        table.add_column(col.label, justify="right")
        if col.ratio:
            table.add_column("ratio", justify="right", style="cyan")
    bases: dict[str, Any] = {}
    last_case = None
    for row in res.rows:
        if row.case not in bases:
            first = next((r for r in res.rows if r.case == row.case and r.kind == "engine"), row)
            bases[row.case] = first
        base = bases[row.case]
        cells = [escape(row.case) if row.case != last_case else "",
                 _target_cell(row.target, row.kind)]
        for col in res.columns:
            v = row.values.get(col.key)
            cells.append(fmt_value(col.fmt, v))
            if col.ratio:
                cells.append(ratio_text(v, base.values.get(col.key)))
        table.add_row(*cells, end_section=_last_of_case(res, row))
        last_case = row.case
    return table


def _target_cell(name: str, kind: str) -> str:
    """A target name for a table cell (escaped: a variant ``name[opt=v]`` is not markup)."""
    return escape(name) if kind == "engine" else f"[dim]{escape(name)}[/]"


def _last_of_case(res: SuiteResult, row: Any) -> bool:
    same = [r for r in res.rows if r.case == row.case]
    return bool(same) and same[-1] is row


def run_table(results: list[RunResult], title: str) -> Table:
    """A workload run on several targets: throughput and latency with ratios."""
    table = Table(title=title, title_justify="left")
    for name in ("target", "pub msg/s", "ratio", "pub MiB/s", "cons msg/s", "pub p50 ms",
                 "pub p99 ms", "pub p99.9 ms", "e2e p99 ms", "fsyncs", "CPU s", "disk MiB",
                 "RSS MiB"):
        table.add_column(name, justify="left" if name == "target" else "right")
    base = next((r for r in results if r.kind == "engine"), results[0] if results else None)
    for r in results:
        pl, e2e = r.publish_latency.summary_ms(), r.end_to_end.summary_ms()
        wb = r.resources.get("disk_write_bytes")
        table.add_row(
            _target_cell(r.target, r.kind), f"{r.publish_rate:,.0f}",
            ratio_text(r.publish_rate, base.publish_rate if base else None),
            f"{r.publish_mb_s:,.1f}", f"{r.consume_rate:,.0f}", f"{pl['p50']:.3f}",
            f"{pl['p99']:.3f}", f"{pl['p99.9']:.3f}",
            f"{e2e['p99']:.3f}" if r.end_to_end.count else "—",
            "—" if r.fsyncs is None else f"{r.fsyncs:,}", f"{r.cpu_s:.2f}",
            "—" if wb is None else f"{wb / 2**20:,.1f}",
            f"{r.resources.get('rss_peak_kb', 0) / 1024:,.0f}",
        )
    return table


# --------------------------------------------------------------------------- summary lines
def kafka_producer_line(r: RunResult) -> str:
    """``kafka-producer-perf-test``'s final line."""
    s = r.publish_latency.summary_ms()
    return (f"{r.produced} records sent, {r.publish_rate:.1f} records/sec "
            f"({r.publish_mb_s:.2f} MB/sec), {s['avg']:.2f} ms avg latency, "
            f"{s['max']:.2f} ms max latency, {s['p50']:.0f} ms 50th, {s['p95']:.0f} ms 95th, "
            f"{s['p99']:.0f} ms 99th, {s['p99.9']:.0f} ms 99.9th.")


def kafka_consumer_line(r: RunResult) -> str:
    """``kafka-consumer-perf-test``'s header and row (times as yyyy-MM-dd HH:mm:ss:SSS)."""
    end = time.time()
    start = end - r.consume_s
    mb = r.consumed_bytes / 2**20
    secs = max(r.consume_s, 1e-9)
    header = ("start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, "
              "nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec")
    row = (f"{_kafka_time(start)}, {_kafka_time(end)}, {mb:.4f}, {mb / secs:.4f}, "
           f"{r.consumed}, {r.consumed / secs:.4f}, 0, {secs * 1000:.0f}, {mb / secs:.4f}, "
           f"{r.consumed / secs:.4f}")
    return header + "\n" + row


def _kafka_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f":{int(t * 1000) % 1000:03d}"


def rocketmq_producer_line(r: RunResult) -> str:
    """RocketMQ benchmark ``Producer``'s closing line."""
    s = r.publish_latency.summary_ms()
    return (f"[Complete] Send Total: {r.produced} | Send TPS: {r.publish_rate:.0f} | "
            f"Max RT(ms): {s['max']:.0f} | Average RT(ms): {s['avg']:.3f} | Send Failed: 0 | "
            "Response Failed: 0")


def rocketmq_consumer_line(r: RunResult) -> str:
    """RocketMQ benchmark ``Consumer``'s line (B2C = born to consume; S2C is the same here,
    the store being in-process)."""
    e = r.end_to_end.summary_ms()
    return (f"Current Time: {int(time.time() * 1000)} | Consume TPS: {r.consume_rate:.0f} | "
            f"AVG(B2C) RT(ms): {e['avg']:.3f} | AVG(S2C) RT(ms): {e['avg']:.3f} | "
            f"MAX(B2C) RT(ms): {e['max']:.0f} | MAX(S2C) RT(ms): {e['max']:.0f} | "
            "Consume Fail: 0")


# --------------------------------------------------------------------------- OMB JSON
def machine_description() -> dict[str, Any]:
    """The machine a result was measured on."""
    from mqstore import native

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        pass
    return {"hostname": platform.node(), "os": platform.platform(), "cpu": cpu,
            "cpus": os.cpu_count(), "memory_bytes": mem,
            "python": platform.python_version(), "implementation": platform.python_implementation(),
            "crc_backend": native.backend}


def _latency_keys(prefix: str, h: LatencyHistogram, scale: float) -> dict[str, float]:
    out = {}
    for suffix, p in OMB_PCTS:
        if p is None:
            v = h.mean
        elif p >= 100.0:
            v = h.max
        else:
            v = h.percentile(p)
        out[f"{prefix}{suffix}"] = v / scale
    return out


def _series_keys(prefix: str, series: list[dict], key: str, unit_ms_to: float) -> dict:
    names = {"Avg": "avg", "50pct": "p50", "75pct": "p75", "95pct": "p95", "99pct": "p99",
             "999pct": "p99.9", "9999pct": "p99.99", "Max": "max"}
    out = {}
    for suffix, name in names.items():
        out[f"{prefix}{suffix}"] = [
            (s[key][name] * unit_ms_to) if s.get(key) else 0.0 for s in series]
    return out


def omb_result(r: RunResult, wl: Workload) -> dict[str, Any]:
    """An OMB ``TestResult``-shaped dict for one (workload, target) run, plus ``mqstore``."""
    d: dict[str, Any] = {
        "workload": wl.name,
        "driver": r.target,
        "messageSize": wl.messageSize,
        "topics": wl.topics,
        "partitions": wl.partitionsPerTopic,
        "producersPerTopic": wl.producersPerTopic,
        "consumersPerTopic": wl.consumers_per_topic,
        "publishRate": [s["publishRate"] for s in r.series],
        "publishErrorRate": [0.0 for _ in r.series],
        "consumeRate": [s["consumeRate"] for s in r.series],
        "backlog": [s["backlog"] for s in r.series],
    }
    d.update(_series_keys("publishLatency", r.series, "publishLatency", 1.0))
    d.update(_series_keys("publishDelayLatency", r.series, "publishDelayLatency", 1000.0))
    d.update(_series_keys("endToEndLatency", r.series, "endToEndLatency", 1.0))
    d.update(_latency_keys("aggregatedPublishLatency", r.publish_latency, 1e6))
    d.update(_latency_keys("aggregatedPublishDelayLatency", r.publish_delay, 1e3))
    d.update(_latency_keys("aggregatedEndToEndLatency", r.end_to_end, 1e6))
    d["aggregatedPublishLatencyQuantiles"] = r.publish_latency.quantiles_ms()
    d["aggregatedPublishDelayLatencyQuantiles"] = {
        k: v * 1000.0 for k, v in r.publish_delay.quantiles_ms().items()}
    d["aggregatedEndToEndLatencyQuantiles"] = r.end_to_end.quantiles_ms()
    d["mqstore"] = {
        "kind": r.kind,
        "config": r.config,
        "machine": machine_description(),
        "workload": wl.to_dict(),
        "produced": r.produced, "produced_bytes": r.produced_bytes,
        "consumed": r.consumed, "consumed_bytes": r.consumed_bytes,
        "publish_s": r.publish_s, "consume_s": r.consume_s,
        "publish_rate": r.publish_rate, "publish_mb_s": r.publish_mb_s,
        "consume_rate": r.consume_rate, "consume_mb_s": r.consume_mb_s,
        "batches": r.batches, "fsyncs": r.fsyncs, "resources": r.resources,
        "window_s": 1.0, "notes": r.notes,
    }
    return d


def result_filename(workload: str, driver: str, when: float | None = None) -> str:
    """OMB's file name: ``<workload>-<driver>-<yyyy-MM-dd-HH-mm-ss>.json`` (made safe)."""
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(when or time.time()))
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", workload).strip("_") or "workload"
    drv = re.sub(r"[^A-Za-z0-9._=-]+", "_", driver).strip("_") or "driver"
    return f"{safe}-{drv}-{stamp}.json"


def write_omb_json(directory: str | os.PathLike[str], r: RunResult, wl: Workload) -> Path:
    """Write the OMB-shaped result of one run into ``directory``; return the path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / result_filename(wl.name, r.target)
    path.write_text(json.dumps(omb_result(r, wl), indent=2, sort_keys=False), encoding="utf-8")
    return path


def suite_json(res: SuiteResult) -> dict[str, Any]:
    """A suite's table and verdict as JSON (rows with their figures and parameters)."""
    return {
        "suite": res.name, "claim": res.claim,
        "verdict": {"shown": res.verdict.shown, "text": res.verdict.text},
        "columns": [c.key for c in res.columns],
        "rows": [{"case": r.case, "target": r.target, "kind": r.kind, "values": r.values,
                  "params": r.params} for r in res.rows],
        "notes": res.notes, "machine": machine_description(),
    }


def write_suite_json(directory: str | os.PathLike[str], res: SuiteResult) -> Path:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"suite-{res.name}-{time.strftime('%Y-%m-%d-%H-%M-%S')}.json"
    path.write_text(json.dumps(suite_json(res), indent=2), encoding="utf-8")
    return path

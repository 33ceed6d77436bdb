"""The standard suites: each reproduces one claim of the Kafka-vs-RocketMQ comparison.

A suite runs its cases on every engine (and the references that make sense for it), then
says whether this machine shows the claim (:class:`Verdict`). This module holds the framework
and the three workload-driven suites (``partitions``, ``batching``, ``flush``); the suites
that call Store methods directly (``delivery``, ``catchup``, ``lookup``, ``tags``,
``recovery``) are in :mod:`mqstore.bench.probes`.

Sizes: ``quick`` (the default ``mqstore bench``, seconds per suite), ``default`` and
``full`` (adds 10,000 partitions and bigger logs).
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mqstore.bench.runner import RunResult, run_workload
from mqstore.bench.workload import Workload

SIZES = ("quick", "default", "full")
DEFAULT_REFERENCES = ("raw-files", "raw-shared", "sqlite-wal")


@dataclass
class Verdict:
    """Whether this machine shows a suite's claim: True, False, or None (cannot tell)."""

    shown: bool | None
    text: str

    @property
    def label(self) -> str:
        return {True: "shown", False: "NOT shown", None: "undecided"}[self.shown]


@dataclass
class Row:
    """One line of a suite table: a case on one target, with its figures."""

    case: str
    target: str
    kind: str
    values: dict[str, float | str | None]
    result: RunResult | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Column:
    key: str
    label: str
    fmt: str = "{:,.0f}"
    ratio: bool = False  # show value / value of the first engine in the same case


@dataclass
class SuiteResult:
    """Everything one suite produced: rows for the table, the verdict, notes."""

    name: str
    claim: str
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)
    verdict: Verdict = field(default_factory=lambda: Verdict(None, "not run"))
    notes: list[str] = field(default_factory=list)
    plot_x: str | None = None  # a params key to plot against (scaling suites)

    def value(self, case: str, target: str, key: str) -> Any:
        for r in self.rows:
            if r.case == case and r.target == target:
                return r.values.get(key)
        return None


@dataclass
class SuiteContext:
    """What a suite needs from the command line: targets, size, where to write, progress."""

    engines: list[str]
    references: list[str] = field(default_factory=lambda: list(DEFAULT_REFERENCES))
    size: str = "quick"
    base_dir: str | None = None
    processes: bool = False
    seed: int = 42
    on_step: Callable[[str], None] | None = None
    on_progress: Callable[[float], None] | None = None
    #: multiplies every message count (tests use a small scale to stay fast)
    scale: float = 1.0
    #: the partitions suite stops at this many partitions (None: the size decides)
    max_partitions: int | None = None
    _warm: set = field(default_factory=set, repr=False)

    def pick(self, quick: Any, default: Any, full: Any) -> Any:
        return {"quick": quick, "default": default, "full": full}[self.size]

    def n(self, quick: int, default: int, full: int, minimum: int = 16) -> int:
        """A message count for this size, times ``scale``."""
        return max(minimum, int(self.pick(quick, default, full) * self.scale))

    def step(self, label: str) -> None:
        if self.on_step:
            self.on_step(label)

    def run(self, wl: Workload, target: str, **kw: Any) -> RunResult:
        """Run one workload on one target in a fresh directory under ``base_dir``.

        The first run of each (target, flush mode) is preceded by a small untimed run, so
        imports, lazy set-up and first-file costs do not land on whichever case comes first.
        """
        key = (target, wl.flush)
        if key not in self._warm:
            self._warm.add(key)
            run_workload(wl.replace(name="warm-up", messages=200, seed=self.seed,
                                    partitionsPerTopic=1, producerRate=0), target,
                         base_dir=self.base_dir)
        return run_workload(wl.replace(seed=self.seed), target, base_dir=self.base_dir,
                            processes=self.processes, progress=self.on_progress, **kw)

    def tempdir(self, prefix: str) -> tempfile.TemporaryDirectory:
        return tempfile.TemporaryDirectory(prefix=f"mqbench-{prefix}-", dir=self.base_dir)


@dataclass
class Suite:
    """A registered suite: name, the claim it tests, and how to plan and run it."""

    name: str
    claim: str
    count_steps: Callable[[SuiteContext], int]
    run: Callable[[SuiteContext], SuiteResult]


SUITES: dict[str, Suite] = {}


def register(name: str, claim: str, count_steps: Callable[[SuiteContext], int]):
    """Decorator: add a suite function ``fn(ctx) -> SuiteResult`` to :data:`SUITES`."""

    def deco(fn: Callable[[SuiteContext], SuiteResult]) -> Callable[[SuiteContext], SuiteResult]:
        SUITES[name] = Suite(name, claim, count_steps, fn)
        return fn

    return deco


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or ``b`` is zero."""
    if a is None or b is None or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return None
    if b == 0:
        return None
    return a / b


def throughput_row(case: str, res: RunResult, **params: Any) -> Row:
    """The usual figures of a workload run as a table row."""
    pl = res.publish_latency.summary_ms()
    return Row(case, res.target, res.kind, {
        "msg_s": res.publish_rate,
        "mb_s": res.publish_mb_s,
        "p50_ms": pl["p50"],
        "p99_ms": pl["p99"],
        "e2e_p99_ms": res.end_to_end.summary_ms()["p99"] if res.end_to_end.count else None,
        "fsyncs_per_msg": res.fsyncs_per_msg,
        "cpu_us_msg": res.cpu_us_per_msg,
        "write_amp": ratio(res.resources.get("disk_write_bytes"), res.produced_bytes),
        "files": res.resources.get("open_files"),
        "batch": res.produced / res.batches if res.batches else None,
        "consumed": res.consumed,
    }, res, params)


def _targets(ctx: SuiteContext, refs: tuple[str, ...]) -> list[str]:
    return list(ctx.engines) + [r for r in ctx.references if r in refs]


def _engine_pair(ctx: SuiteContext) -> tuple[str, str] | None:
    if "segments" in ctx.engines and "commitlog" in ctx.engines:
        return "segments", "commitlog"
    return None


# =========================================================================== partitions
def _partition_counts(ctx: SuiteContext) -> list[int]:
    counts = ctx.pick([1, 10, 100, 1000], [1, 10, 100, 1000], [1, 10, 100, 1000, 10000])
    if ctx.max_partitions:
        counts = [c for c in counts if c <= ctx.max_partitions] or [1]
    return counts


def _partition_modes(ctx: SuiteContext) -> list[str]:
    return ctx.pick(["os"], ["os", "sync"], ["os", "sync"])


PARTITIONS_REFS = ("raw-files", "raw-shared", "sqlite-wal")
#: below this many messages per partition (at the largest count) the verdict is withheld
MIN_MESSAGES_PER_PARTITION = 16


@register(
    "partitions",
    "Kafka keeps a file per partition, so throughput falls and fsyncs multiply as partitions "
    "grow; RocketMQ's single CommitLog stays flat (Alibaba's 64+-partition comparison).",
    lambda ctx: len(_partition_counts(ctx)) * len(_partition_modes(ctx))
    * len(_targets(ctx, PARTITIONS_REFS)),
)
def partitions_suite(ctx: SuiteContext) -> SuiteResult:
    res = SuiteResult("partitions", SUITES["partitions"].claim, [
        Column("msg_s", "msg/s", ratio=True), Column("mb_s", "MiB/s", "{:.1f}"),
        Column("p99_ms", "p99 ms", "{:.2f}"), Column("fsyncs_per_msg", "fsync/msg", "{:.3f}"),
        Column("files", "open files"), Column("write_amp", "disk/bytes", "{:.2f}"),
    ], plot_x="partitions")
    n = ctx.n(3000, 20000, 50000)
    per_min = ctx.pick(2, 20, 20)  # messages per partition at least (quick: too few to judge)
    for mode in _partition_modes(ctx):
        for parts in _partition_counts(ctx):
            wl = Workload(name=f"partitions-{parts}-{mode}", partitionsPerTopic=parts,
                          messageSize=1024, messages=max(n, parts * per_min), batch_records=1,
                          flush=mode, subscriptionsPerTopic=0)
            for target in _targets(ctx, PARTITIONS_REFS):
                ctx.step(f"partitions P={parts} flush={mode} {target}")
                r = ctx.run(wl, target)
                res.rows.append(throughput_row(f"P={parts} flush={mode}", r,
                                               partitions=parts, flush=mode))
    counts = _partition_counts(ctx)
    lo, hi = counts[0], counts[-1]
    drops = {}
    for t in ctx.engines + [r for r in ctx.references if r.startswith("raw")]:
        a = res.value(f"P={lo} flush=os", t, "msg_s")
        b = res.value(f"P={hi} flush=os", t, "msg_s")
        drops[t] = ratio(b, a)
    pair = _engine_pair(ctx)
    detail = ", ".join(f"{t} keeps {v:.0%}" for t, v in drops.items() if v is not None)
    per_partition = max(n, hi * per_min) / hi
    if pair and drops.get(pair[0]) is not None and drops.get(pair[1]) is not None:
        seg, cl = drops[pair[0]], drops[pair[1]]
        shown = seg < cl * 0.9
        text = f"throughput at P={hi} vs P={lo} (flush=os): {detail}. "
        if per_partition < MIN_MESSAGES_PER_PARTITION:
            # a few messages per partition never reach the index work that makes the
            # difference; one run at this size flips either way
            res.verdict = Verdict(None, text + f"Only {per_partition:.0f} messages per "
                                  f"partition at P={hi}: too few to judge; run "
                                  "`mqstore bench partitions` (default size).")
        else:
            res.verdict = Verdict(shown, text + (
                "segments falls more than commitlog." if shown else
                "segments does not fall clearly more than commitlog here."))
    else:
        res.verdict = Verdict(None, f"needs both engines; {detail}")
    return res


# =========================================================================== batching
BATCH_SIZES = (1, 16, 256, 4096)
LINGERS = (0, 5, 50)
BATCHING_REFS = ("raw-shared", "sqlite-wal")


@register(
    "batching",
    "Kafka stores producer batches as they are, so bigger batches raise throughput and cut "
    "CPU per message; RocketMQ frames every message at the store and gains less. Linger "
    "trades latency for batch size.",
    lambda ctx: (len(BATCH_SIZES) + len(LINGERS)) * len(_targets(ctx, BATCHING_REFS)),
)
def batching_suite(ctx: SuiteContext) -> SuiteResult:
    res = SuiteResult("batching", SUITES["batching"].claim, [
        Column("msg_s", "msg/s", ratio=True), Column("mb_s", "MiB/s", "{:.1f}"),
        Column("batch", "avg batch", "{:,.1f}"), Column("cpu_us_msg", "CPU µs/msg", "{:.1f}"),
        Column("p50_ms", "p50 ms", "{:.2f}"), Column("p99_ms", "p99 ms", "{:.2f}"),
    ], plot_x="batch_records")
    n = ctx.n(4096 * 2, 4096 * 16, 4096 * 64)
    for b in BATCH_SIZES:
        wl = Workload(name=f"batching-{b}", partitionsPerTopic=4, messageSize=100,
                      messages=n, batch_records=b, batch_bytes=1 << 20,
                      subscriptionsPerTopic=0)
        for target in _targets(ctx, BATCHING_REFS):
            ctx.step(f"batching batch={b} {target}")
            r = ctx.run(wl, target)
            res.rows.append(throughput_row(f"batch={b}", r, batch_records=b))
    rate = ctx.pick(2000, 5000, 10000)
    for linger in LINGERS:
        wl = Workload(name=f"linger-{linger}", partitionsPerTopic=4, messageSize=100,
                      messages=ctx.n(500, 5000, 20000), producerRate=rate,
                      batch_records=4096, batch_bytes=1 << 20, linger_ms=float(linger),
                      subscriptionsPerTopic=0)
        for target in _targets(ctx, BATCHING_REFS):
            ctx.step(f"batching linger={linger}ms {target}")
            r = ctx.run(wl, target)
            res.rows.append(throughput_row(f"linger={linger}ms @{rate}/s", r, linger_ms=linger))
    gains = {t: ratio(res.value(f"batch={BATCH_SIZES[-1]}", t, "msg_s"),
                      res.value("batch=1", t, "msg_s")) for t in _targets(ctx, BATCHING_REFS)}
    detail = ", ".join(f"{t} x{g:.1f}" for t, g in gains.items() if g is not None)
    pair = _engine_pair(ctx)
    lat0 = {t: res.value(f"linger=0ms @{rate}/s", t, "p50_ms") for t in ctx.engines}
    lat50 = {t: res.value(f"linger=50ms @{rate}/s", t, "p50_ms") for t in ctx.engines}
    linger_txt = ", ".join(f"{t} p50 {lat0[t]:.2f} -> {lat50[t]:.2f} ms" for t in ctx.engines
                           if lat0[t] is not None and lat50[t] is not None)
    if pair and gains.get(pair[0]) and gains.get(pair[1]):
        shown = gains[pair[0]] > 1.5 and gains[pair[0]] > gains[pair[1]]
        res.verdict = Verdict(shown, f"throughput gain from batch 1 to {BATCH_SIZES[-1]}: "
                              f"{detail}; linger 0 -> 50 ms: {linger_txt}.")
    else:
        res.verdict = Verdict(None, f"needs both engines; gains {detail}")
    return res


# =========================================================================== flush
FLUSH_MODES = ("sync", "async", "os")
FLUSH_REFS = ("raw-files", "sqlite-wal")


def _producer_counts(ctx: SuiteContext) -> tuple[int, ...]:
    return (1, 8)


@register(
    "flush",
    "Synchronous flush (RocketMQ SYNC_FLUSH, Kafka flush.messages=1) costs throughput; group "
    "commit lets concurrent producers share one fsync, so fsyncs per message fall with 8 "
    "producers.",
    lambda ctx: len(FLUSH_MODES) * len(_producer_counts(ctx)) * len(_targets(ctx, FLUSH_REFS)),
)
def flush_suite(ctx: SuiteContext) -> SuiteResult:
    res = SuiteResult("flush", SUITES["flush"].claim, [
        Column("msg_s", "msg/s", ratio=True), Column("p50_ms", "p50 ms", "{:.3f}"),
        Column("p99_ms", "p99 ms", "{:.3f}"), Column("fsyncs_per_msg", "fsync/msg", "{:.3f}"),
        Column("cpu_us_msg", "CPU µs/msg", "{:.1f}"),
    ])
    n = ctx.n(800, 8000, 40000)
    for mode in FLUSH_MODES:
        for prods in _producer_counts(ctx):
            # one partition: group commit is measured alone, not the per-partition files
            wl = Workload(name=f"flush-{mode}-{prods}p", partitionsPerTopic=1, messageSize=1024,
                          messages=n, producersPerTopic=prods, batch_records=1, flush=mode,
                          flush_interval_ms=100, subscriptionsPerTopic=0)
            for target in _targets(ctx, FLUSH_REFS):
                ctx.step(f"flush {mode} {prods} producers {target}")
                r = ctx.run(wl, target)
                res.rows.append(throughput_row(f"{mode} {prods}p", r, flush=mode,
                                               producers=prods))
    parts = []
    shown_all: list[bool] = []
    for t in ctx.engines:
        f1 = res.value("sync 1p", t, "fsyncs_per_msg")
        f8 = res.value("sync 8p", t, "fsyncs_per_msg")
        s = res.value("sync 1p", t, "msg_s")
        o = res.value("os 1p", t, "msg_s")
        if None in (f1, f8, s, o):
            continue
        ok = f8 < f1 * 0.8 and s < o
        shown_all.append(ok)
        parts.append(f"{t}: sync/os throughput {s / o:.2f}, fsync/msg {f1:.2f} (1p) -> "
                     f"{f8:.2f} (8p)")
    res.verdict = Verdict(all(shown_all) if shown_all else None, "; ".join(parts) or "no data")
    return res


def run_suite(name: str, ctx: SuiteContext) -> SuiteResult:
    """Run a registered suite by name (importing the direct-store suites on first use)."""
    import mqstore.bench.probes  # noqa: F401  (registers delivery, catchup, ...)

    try:
        suite = SUITES[name]
    except KeyError:
        raise KeyError(f"unknown suite {name!r}; known: {sorted(SUITES)}") from None
    return suite.run(ctx)


def suite_names() -> list[str]:
    """Every suite, in the order of the claims table."""
    import mqstore.bench.probes  # noqa: F401

    order = ["partitions", "batching", "flush", "delivery", "catchup", "lookup", "tags",
             "recovery"]
    return [n for n in order if n in SUITES] + sorted(set(SUITES) - set(order))

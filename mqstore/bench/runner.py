"""Run one workload against one target: producers, consumers, measurements.

:func:`run_workload` builds the target in a fresh directory, creates the topics, starts the
consumers (threads; with ``processes=True`` separate processes that open the store
``read_only`` and follow the writer, the only multi-process shape the one-writer contract
allows) and the producers (threads of this process), and returns a :class:`RunResult`.

Producers follow the workload: ``producerRate`` shared among them (0 = unthrottled), batches of
``batch_records`` / ``batch_bytes`` closed after ``linger_ms``, stopped by the message count or
the duration. Each value carries its send time in its first 8 bytes (see
:mod:`mqstore.bench.payloads`), so consumers record end-to-end latency. Publish latency is from
a message's send (its creation, so time spent waiting in a lingering batch counts) to the
return of the ``append_batch`` that stored it, as OMB measures send-to-ack; publish delay is
how late the send was against the rate limiter's schedule (coordinated omission shows there,
as in OMB). A message belongs to the measured phase when it is sent after the warm-up.

Every target sees the same payloads, keys and tags: they are functions of the seed and the
message number.
"""
from __future__ import annotations

import bisect
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mqstore.api import Message
from mqstore.bench.consumers import (ConsumerStats, RunState, hist_for,
                                     join_consumers, merge_windows, publish_ends,
                                     start_consumers, topic_names)
from mqstore.bench.metrics import (LatencyHistogram, ResourceSnapshot, count_maps,
                                   count_open_files, reset_peak_rss)
from mqstore.bench.payloads import PayloadSource, stamp, stamp_all
from mqstore.bench.references import REFERENCES, make_reference
from mqstore.bench.targets import StoreTarget, Target, parse_engine_spec
from mqstore.bench.workload import Workload

Progress = Callable[[float], None]
#: from this many messages on, a batch's publish latencies are recorded in one numpy pass
BULK_RECORD = 32


@dataclass
class RunResult:
    """What one run of one workload on one target measured (rates in messages and MiB/s)."""

    workload: str
    target: str
    kind: str
    produced: int = 0
    produced_bytes: int = 0
    consumed: int = 0
    consumed_bytes: int = 0
    publish_s: float = 0.0
    consume_s: float = 0.0
    publish_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    publish_delay: LatencyHistogram = field(default_factory=LatencyHistogram)
    end_to_end: LatencyHistogram = field(default_factory=LatencyHistogram)
    batches: int = 0
    fsyncs: int | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    series: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    spec: Workload | None = None  # the workload as run (after overrides)

    @property
    def publish_rate(self) -> float:
        return self.produced / self.publish_s if self.publish_s > 0 else 0.0

    @property
    def publish_mb_s(self) -> float:
        return self.produced_bytes / 2**20 / self.publish_s if self.publish_s > 0 else 0.0

    @property
    def consume_rate(self) -> float:
        return self.consumed / self.consume_s if self.consume_s > 0 else 0.0

    @property
    def consume_mb_s(self) -> float:
        return self.consumed_bytes / 2**20 / self.consume_s if self.consume_s > 0 else 0.0

    @property
    def cpu_s(self) -> float:
        return float(self.resources.get("cpu_user_s", 0.0) + self.resources.get("cpu_sys_s", 0.0))

    @property
    def cpu_us_per_msg(self) -> float:
        return self.cpu_s / self.produced * 1e6 if self.produced else 0.0

    @property
    def fsyncs_per_msg(self) -> float | None:
        if self.fsyncs is None or not self.produced:
            return None
        return self.fsyncs / self.produced


# --------------------------------------------------------------------------- targets
def make_target(name: str, directory: str, workload: Workload) -> Target:
    """An engine (any registered name) or a reference (``raw-files``, ``raw-shared``,
    ``sqlite-wal``) in ``directory``, with the workload's flush policy and engine options."""
    if name in REFERENCES:
        return make_reference(name, directory, workload.flush, workload.flush_interval_ms)
    base = parse_engine_spec(name)[0]
    return StoreTarget(name, directory, workload.flush, workload.flush_interval_ms,
                       workload.engine_options.get(base))


# --------------------------------------------------------------------------- producing
class _Producer:
    """One producer thread: numbered messages ``first, first + step, ...``."""

    def __init__(self, target: Target, topic: str, source: PayloadSource, wl: Workload,
                 first: int, step: int, count: int | None, rate: float, shared: "RunState"):
        self.target, self.topic, self.source, self.wl = target, topic, source, wl
        self.first, self.step, self.count, self.rate = first, step, count, rate
        self.shared = shared
        self.latency: dict[int, LatencyHistogram] = {}  # window -> publish latency
        self.delay: dict[int, LatencyHistogram] = {}  # window -> publish delay
        self.sent = 0
        self.sent_bytes = 0
        self.batches = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the runner
            self.error = exc
            self.shared.stop.set()

    def _run(self) -> None:
        wl, src, sh = self.wl, self.source, self.shared
        perf = time.perf_counter_ns
        linger_ns = int(wl.linger_ms * 1e6)
        interval_ns = int(1e9 / self.rate) if self.rate > 0 else 0
        if not interval_ns:
            return self._run_unthrottled()
        batch: list[Message] = []
        born: list[int] = []
        batch_bytes = 0
        k = 0
        start = perf()
        while not sh.stop.is_set():
            if self.count is not None and k >= self.count:
                break
            if self.count is None and perf() >= sh.end_ns:
                break
            now = perf()
            if interval_ns:
                intended = start + k * interval_ns
                if batch and linger_ns and born[0] + linger_ns <= intended:
                    _sleep_until(born[0] + linger_ns)
                    self._send(batch, born)
                    batch, born, batch_bytes = [], [], 0
                    now = perf()
                if intended > now:
                    _sleep_until(intended)
                    now = perf()
                if now >= sh.measure_ns:
                    hist_for(self.delay, sh.window(now)).record(now - intended)
            i = self.first + k * self.step
            value = stamp(src.payload(i), now)
            batch.append(Message(value, key=src.key(i), tag=src.tag(i)))
            born.append(now)
            batch_bytes += len(value)
            k += 1
            last = self.count is not None and k >= self.count
            full = len(batch) >= wl.batch_records or batch_bytes >= wl.batch_bytes
            lingered = not linger_ns or perf() - born[0] >= linger_ns
            if full or last or (lingered and (interval_ns or wl.batch_records == 1)):
                self._send(batch, born)
                batch, born, batch_bytes = [], [], 0
        if batch:
            self._send(batch, born)

    def _run_unthrottled(self) -> None:
        """No rate limit: every batch is sent when full (linger never fires before that),
        so each batch is built in one pass, its messages sharing the send time taken when
        the batch starts (a message's publish latency then includes the time to build the
        rest of its batch, as a producer's record age does)."""
        wl, src, sh = self.wl, self.source, self.shared
        perf = time.perf_counter_ns
        size = max(1, src.size)
        per_batch = max(1, min(wl.batch_records, -(-wl.batch_bytes // size)))
        keyed, tagged = bool(src.keys), bool(src.tags)
        k = 0
        while not sh.stop.is_set():
            if self.count is not None:
                if k >= self.count:
                    break
                m = min(per_batch, self.count - k)
            else:
                if perf() >= sh.end_ns:
                    break
                m = per_batch
            now = perf()
            ids = range(self.first + k * self.step, self.first + (k + m) * self.step,
                        self.step)
            values = stamp_all([src.payload(i) for i in ids], now)
            if keyed or tagged:
                batch = [Message(v, key=src.key(i), tag=src.tag(i))
                         for v, i in zip(values, ids)]
            else:
                batch = list(map(Message, values))
            k += m
            self._send(batch, [now] * m)

    def _send(self, batch: list[Message], born: list[int]) -> None:
        self.target.produce(self.topic, batch)
        done = time.perf_counter_ns()
        self.batches += 1
        hist = hist_for(self.latency, self.shared.window(done))
        # send times only grow within a batch: the measured messages are a suffix of it
        first = bisect.bisect_left(born, self.shared.measure_ns)
        if first < len(born):
            if born[first] == born[-1]:  # one send time for the batch (unthrottled)
                hist.record(done - born[-1], len(born) - first)
            elif len(born) - first >= BULK_RECORD:
                hist.record_many(done - np.array(born[first:], dtype=np.int64))
            else:
                for t in born[first:]:
                    hist.record(done - t)
            self.sent += len(born) - first
            self.sent_bytes += sum(len(m.value) for m in batch[first:])
        self.shared.add_progress(len(batch))


def _sleep_until(t_ns: int) -> None:
    delta = (t_ns - time.perf_counter_ns()) / 1e9
    if delta > 0:
        time.sleep(delta)


# --------------------------------------------------------------------------- the run
def run_workload(workload: Workload, target_name: str, *, base_dir: str | None = None,
                 processes: bool = False, progress: Progress | None = None,
                 evict_before_consume: bool = False, keep: bool = False,
                 after_produce: Callable[[Target], None] | None = None) -> RunResult:
    """Run ``workload`` on one engine or reference in a fresh directory; return the result.

    ``evict_before_consume`` (catch-up reads): after producing, flush, reopen the target and
    drop its files from the page cache before consumers start. ``keep`` leaves the directory
    (its path is in ``result.extra["directory"]``).
    """
    wl = workload
    directory = tempfile.mkdtemp(prefix=f"mqbench-{target_name}-", dir=base_dir)
    res = RunResult(workload=wl.name, target=target_name,
                    kind="reference" if target_name in REFERENCES else "engine", spec=wl)
    try:
        target = make_target(target_name, directory, wl)
        try:
            _run(wl, target, res, processes, progress, evict_before_consume, after_produce)
        finally:
            target.close()
    finally:
        if keep:
            res.extra["directory"] = directory
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return res


def _run(wl: Workload, target: Target, res: RunResult, processes: bool,
         progress: Progress | None, evict: bool,
         after_produce: Callable[[Target], None] | None) -> None:
    source = PayloadSource(wl)
    topics = topic_names(wl)
    for topic in topics:
        target.create_topic(topic, wl.partitionsPerTopic)
    res.config = target.describe()
    res.notes.extend(wl.header_notes())
    sh = RunState()
    planned = wl.planned_messages()
    n_prod = wl.producersPerTopic * wl.topics
    rate_each = wl.producerRate / n_prod if wl.producerRate else 0.0
    warmup_s = wl.planned_warmup_s() if planned is None else 0.0
    duration_s = wl.planned_duration_s()

    producers: list[_Producer] = []
    for ti, topic in enumerate(topics):
        for pi in range(wl.producersPerTopic):
            idx = ti * wl.producersPerTopic + pi
            count = None
            if planned is not None:
                count = planned // n_prod + (1 if idx < planned % n_prod else 0)
            producers.append(_Producer(target, topic, source, wl, idx, n_prod, count,
                                       rate_each, sh))

    reset_peak_rss()
    fsyncs0 = target.fsyncs()
    snap0 = ResourceSnapshot.take()
    peak_files, peak_maps = snap0.open_files, snap0.maps
    t0 = time.perf_counter_ns()
    sh.t0 = t0
    sh.measure_ns = t0 + int(warmup_s * 1e9)
    sh.end_ns = sh.measure_ns + int(duration_s * 1e9)

    consumers: list[Any] = []
    results: list[ConsumerStats] = []
    use_procs = processes and isinstance(target, StoreTarget)
    if processes and not use_procs:
        res.notes.append("--processes applies to engines only; this reference used threads")
    mp_state = None
    if wl.consumers_per_topic and not wl.catchup:
        mp_state = start_consumers(wl, target, sh, use_procs, consumers, results)

    threads = [threading.Thread(target=p.run, name=f"producer-{i}", daemon=True)
               for i, p in enumerate(producers)]
    for t in threads:
        t.start()
    total_hint = planned if planned is not None else None
    while any(t.is_alive() for t in threads):
        time.sleep(0.05)
        peak_files = max(peak_files, count_open_files())
        peak_maps = max(peak_maps, count_maps())
        if progress:
            if total_hint:
                frac = sh.progress / total_hint
            else:
                frac = (time.perf_counter_ns() - t0) / max(1, sh.end_ns - t0)
            progress(min(1.0, frac) * (0.7 if wl.consumers_per_topic else 1.0))
    for t in threads:
        t.join()
    t_prod_end = time.perf_counter_ns()
    errors = [p.error for p in producers if p.error]
    if errors:
        sh.stop.set()
        join_consumers(consumers, results, mp_state)
        raise errors[0]

    for topic in topics:
        for p in range(wl.partitionsPerTopic):
            sh.final_ends[(topic, p)] = target.end_position(topic, p)
    if after_produce is not None:
        after_produce(target)

    if wl.consumers_per_topic and wl.catchup:
        if evict:
            target.flush()
            target.reopen()
            evict_files(target.files())
            res.extra["evicted"] = True
        sh.measure_ns = 0  # a backlog is all measured
        consume_start = time.perf_counter_ns()
        sh.producers_done.set()
        mp_state = start_consumers(wl, target, sh, use_procs, consumers, results)
    else:
        consume_start = t0
        if mp_state is not None:
            publish_ends(mp_state, sh)
        sh.producers_done.set()
    join_consumers(consumers, results, mp_state, progress)
    t_end = time.perf_counter_ns()

    snap1 = ResourceSnapshot.take()
    res.resources = snap1.delta(snap0)
    res.resources["open_files"] = max(peak_files, snap1.open_files)
    res.resources["maps"] = max(peak_maps, snap1.maps)
    f1 = target.fsyncs()
    res.fsyncs = None if f1 is None or fsyncs0 is None else f1 - fsyncs0

    pub_w: dict[int, LatencyHistogram] = {}
    delay_w: dict[int, LatencyHistogram] = {}
    e2e_w: dict[int, LatencyHistogram] = {}
    for p in producers:
        res.produced += p.sent
        res.produced_bytes += p.sent_bytes
        res.batches += p.batches
        for w, h in p.latency.items():
            hist_for(pub_w, w).merge(h)
        for w, h in p.delay.items():
            hist_for(delay_w, w).merge(h)
    res.publish_latency = merge_windows(pub_w)
    res.publish_delay = merge_windows(delay_w)
    res.publish_s = (t_prod_end - sh.measure_ns) / 1e9 if planned is None else \
        (t_prod_end - t0) / 1e9
    missing = ahead = 0
    last = consume_start
    for st in results:
        res.consumed += st.consumed
        res.consumed_bytes += st.consumed_bytes
        for w, h in st.latency.items():
            hist_for(e2e_w, w).merge(h)
        missing += st.missing
        last = max(last, st.last_ns)
        if st.error:
            res.notes.append(f"consumer error: {st.error}")
        ahead += st.ahead_of_end
    start = consume_start if wl.catchup else max(consume_start, sh.measure_ns)
    res.consume_s = max(0.0, (last - start) / 1e9) if results else 0.0
    res.end_to_end = merge_windows(e2e_w)
    res.series = _series(pub_w, delay_w, e2e_w, sh.sample_ns / 1e9,
                         wl.subscriptionsPerTopic)
    if ahead:
        res.notes.append(f"engine anomaly: {ahead} poll(s) refused with OffsetOutOfRangeError "
                         "at an offset its own read had returned (reads ran ahead of the end "
                         "offset); retried")
    res.extra["reads_ahead_of_end"] = ahead
    if missing:
        res.notes.append(f"consumers did not drain: {missing} messages missing")
    res.extra["wall_s"] = (t_end - t0) / 1e9
    res.extra["subscriptions"] = wl.subscriptionsPerTopic
    if progress:
        progress(1.0)


def evict_files(paths: list[str]) -> int:
    """Drop the pages of ``paths`` from the page cache (``posix_fadvise DONTNEED``); pages
    still dirty or mapped by this process stay. Returns the number of files advised."""
    n = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            n += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return n


def _series(pub: dict[int, LatencyHistogram], delay: dict[int, LatencyHistogram],
            e2e: dict[int, LatencyHistogram], window_s: float,
            subscriptions: int) -> list[dict[str, Any]]:
    """Per-window rates and latency summaries (OMB's 10-second series, here 1 s windows).

    Rates count the messages whose latency was recorded in the window: published (acked)
    and consumed (per subscription, like OMB's consume rate)."""
    windows = sorted(set(pub) | set(e2e) | set(delay))
    out = []
    produced = consumed = 0
    for w in windows:
        p, d, e = pub.get(w), delay.get(w), e2e.get(w)
        produced += p.count if p else 0
        consumed += e.count if e else 0
        out.append({
            "window": w,
            "publishRate": (p.count if p else 0) / window_s,
            "consumeRate": (e.count if e else 0) / window_s,
            "backlog": max(0, produced * max(1, subscriptions) - consumed),
            "publishLatency": p.summary_ms() if p else None,
            "publishDelayLatency": d.summary_ms() if d else None,
            "endToEndLatency": e.summary_ms() if e else None,
        })
    return out

"""Consumers of a run: threads, or processes that follow the writer read-only.

:func:`consume_loop` polls its assigned partitions from their start until each reaches the
end the producers left (known once they are done) and records end-to-end latency per
stats window. It works on columns (:class:`~mqstore.bench.targets.Polled`: send stamps and
sizes as numpy arrays), so consuming costs no Python per message on an engine. :func:`start_consumers` / :func:`join_consumers` run one loop per consumer,
as threads over the run's target or, with ``processes``, as spawned processes that open the
store ``read_only`` (the one-writer contract's multi-process shape). :class:`RunState` is
what producers and consumers of one run share.
"""
from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mqstore.bench.metrics import LatencyHistogram
from mqstore.bench.targets import Polled, Target, poll_store
from mqstore.bench.workload import Workload
from mqstore.errors import OffsetOutOfRangeError

POLL_RECORDS = 500
IDLE_SLEEP_S = 0.0005
DRAIN_TIMEOUT_S = 60.0
MAX_AHEAD_RETRIES = 10_000
#: stats window for the per-interval series (OMB uses 10 s; runs here are short)
SAMPLE_NS = 1_000_000_000


def topic_names(workload: Workload) -> list[str]:
    """The topic names a workload creates: ``topic-0``, ``topic-1``, ..."""
    return [f"topic-{t}" for t in range(workload.topics)]


def hist_for(windows: dict[int, LatencyHistogram], w: int) -> LatencyHistogram:
    h = windows.get(w)
    if h is None:
        h = windows[w] = LatencyHistogram()
    return h


def merge_windows(windows: dict[int, LatencyHistogram]) -> LatencyHistogram:
    """One histogram of every window."""
    out = LatencyHistogram()
    for h in windows.values():
        out.merge(h)
    return out


class RunState:
    """State shared by the producer and consumer threads of one run."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.producers_done = threading.Event()
        self.measure_ns = 0
        self.end_ns = 0
        self.t0 = 0
        self.sample_ns = SAMPLE_NS
        self.final_ends: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self.progress = 0

    def window(self, t_ns: int) -> int:
        """The sampling window (OMB's stats interval) that ``t_ns`` falls in."""
        return max(0, (t_ns - self.t0) // self.sample_ns)

    def add_progress(self, n: int) -> None:
        with self._lock:
            self.progress += n


@dataclass
class ConsumerStats:
    """What one consumer read: counts, bytes and end-to-end latency (measured phase only)."""

    consumed: int = 0
    consumed_bytes: int = 0
    latency: dict[int, LatencyHistogram] = field(default_factory=dict)  # window -> e2e
    last_ns: int = 0
    missing: int = 0
    error: str | None = None
    #: polls refused with OffsetOutOfRangeError at a position the engine itself returned
    #: (its reads ran ahead of its end offset); retried, and reported in the run's notes
    ahead_of_end: int = 0


def consume_loop(poll: Callable[[str, int, int], Polled],
                 assignment: list[tuple[str, int, int]], done: Callable[[], bool],
                 final_end: Callable[[str, int], int], measure_ns: int,
                 stop: Callable[[], bool], deadline_s: float = DRAIN_TIMEOUT_S,
                 t0: int = 0, sample_ns: int = SAMPLE_NS) -> ConsumerStats:
    """Poll the assigned ``(topic, partition, start)`` until every partition reaches its
    final end (known once ``done()``), ``stop()`` is true, or ``deadline_s`` after done."""
    st = ConsumerStats()
    pos = {(t, p): start for t, p, start in assignment}
    start_of = dict(pos)
    finished: set[tuple[str, int]] = set()
    perf = time.perf_counter_ns
    done_at: float | None = None
    while len(finished) < len(pos) and not stop():
        progressed = False
        is_done = done()
        if is_done and done_at is None:
            done_at = time.monotonic()
        for tp, at in pos.items():
            if tp in finished:
                continue
            try:
                stamps, sizes, nxt = poll(tp[0], tp[1], at)
            except OffsetOutOfRangeError:
                if at == start_of[tp] or st.ahead_of_end >= MAX_AHEAD_RETRIES:
                    raise
                st.ahead_of_end += 1
                time.sleep(IDLE_SLEEP_S)
                continue
            if len(sizes):
                progressed = True
                pos[tp] = nxt
                now = perf()
                hist = hist_for(st.latency, max(0, (now - t0) // sample_ns))
                # a message counts when it carries no stamp or was sent after the warm-up
                counted = (stamps < 0) | (stamps >= measure_ns)
                st.consumed += int(counted.sum())
                st.consumed_bytes += int(sizes[counted].sum())
                timed = stamps[counted & (stamps >= 0)]
                if len(timed):
                    hist.record_many(now - timed)
                st.last_ns = now
            if is_done and pos[tp] >= final_end(*tp):
                finished.add(tp)
        if not progressed:
            if done_at is not None and time.monotonic() - done_at > deadline_s:
                st.missing = sum(max(0, final_end(*tp) - pos[tp]) for tp in pos
                                 if tp not in finished)
                break
            time.sleep(IDLE_SLEEP_S)
    return st


def assignments(wl: Workload, target: Target) -> list[list[tuple[str, int, int]]]:
    """One assignment per consumer: each subscription splits each topic's partitions."""
    out = []
    for topic in topic_names(wl):
        for _sub in range(wl.subscriptionsPerTopic):
            n = wl.consumerPerSubscription
            per: list[list[tuple[str, int, int]]] = [[] for _ in range(n)]
            for p in range(wl.partitionsPerTopic):
                per[p % n].append((topic, p, target.start_position(topic, p)))
            out.extend(a for a in per if a)
    return out


def _consumer_process(engine: str, directory: str, assignment, measure_ns: int, t0: int,
                      done_event, ends, ends_index, result_queue) -> None:
    """Body of a consumer process: open the store read_only and follow the writer."""
    from mqstore.bench.targets import open_engine

    st = ConsumerStats()
    try:
        store = open_engine(engine, directory, read_only=True)
        try:
            def poll(topic, partition, position):
                return poll_store(store, topic, partition, position, POLL_RECORDS)

            st = consume_loop(poll, assignment, done_event.is_set,
                              lambda t, p: ends[ends_index[(t, p)]], measure_ns, lambda: False,
                              t0=t0)
        finally:
            store.close()
    except BaseException as exc:  # reported to the parent
        st.error = _describe(exc)
    result_queue.put((st.consumed, st.consumed_bytes,
                      {w: h.to_dict() for w, h in st.latency.items()}, st.last_ns,
                      st.missing, st.error, st.ahead_of_end))


def _describe(exc: BaseException) -> str:
    """One line naming an error and where it was raised."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
    return f"{type(exc).__name__}: {exc}{where}"


def start_consumers(wl: Workload, target: Target, sh: RunState, use_procs: bool,
                     consumers: list, results: list[ConsumerStats]):
    plan = assignments(wl, target)
    if not use_procs:
        def body(assignment):
            try:
                results.append(consume_loop(
                    lambda t, p, pos: target.poll_columns(t, p, pos, POLL_RECORDS), assignment,
                    sh.producers_done.is_set, lambda t, p: sh.final_ends[(t, p)],
                    sh.measure_ns, sh.stop.is_set, t0=sh.t0, sample_ns=sh.sample_ns))
            except BaseException as exc:  # reported in the run's notes, never lost
                results.append(ConsumerStats(error=_describe(exc)))

        for a in plan:
            th = threading.Thread(target=body, args=(a,), name="consumer", daemon=True)
            th.start()
            consumers.append(th)
        return None
    ctx = multiprocessing.get_context("spawn")
    keys = [(t, p) for t in topic_names(wl) for p in range(wl.partitionsPerTopic)]
    index = {k: i for i, k in enumerate(keys)}
    ends = ctx.Array("q", len(keys), lock=False)
    for k, i in index.items():
        ends[i] = sh.final_ends.get(k, 0)
    done = ctx.Event()
    if sh.producers_done.is_set():
        done.set()
    queue = ctx.Queue()
    for a in plan:
        proc = ctx.Process(target=_consumer_process, daemon=True,
                           args=(target.name, target.directory, a, sh.measure_ns, sh.t0,
                                 done, ends, index, queue))
        proc.start()
        consumers.append(proc)
    return {"ends": ends, "index": index, "done": done, "queue": queue}


def publish_ends(mp_state: dict, sh: RunState) -> None:
    for k, i in mp_state["index"].items():
        mp_state["ends"][i] = sh.final_ends[k]
    mp_state["done"].set()


def join_consumers(consumers: list, results: list[ConsumerStats], mp_state,
                    progress: Callable[[float], None] | None = None) -> None:
    if mp_state is not None:
        mp_state["done"].set()
        for _ in consumers:
            consumed, nbytes, hist, last, missing, err, ahead = mp_state["queue"].get(
                timeout=DRAIN_TIMEOUT_S * 2)
            results.append(ConsumerStats(
                consumed, nbytes, {int(w): LatencyHistogram.from_dict(h) for w, h in hist.items()},
                last, missing, err, ahead))
        for proc in consumers:
            proc.join(timeout=10)
        return
    for th in consumers:
        while th.is_alive():
            th.join(timeout=0.1)
            if progress:
                progress(0.85)

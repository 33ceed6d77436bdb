"""GroupCommit's wake-ups: the waiters of one sync sleep on one eventfd (``durability._Group``)
and are woken by one write; a group is reused only once every wake-up written to it was
taken, so a waiter for a later sync never takes an earlier group's wake-up. Deterministic:
threads wait for states (with a deadline that only guards against hangs), never for time."""
from __future__ import annotations

import os
import random
import threading
import time

import pytest

from mqstore import durability
from mqstore.durability import GroupCommit

DEADLINE_S = 30.0
needs_eventfd = pytest.mark.skipif(not hasattr(os, "eventfd"), reason="no eventfd here")


def wait_for(predicate, what: str) -> None:
    end = time.monotonic() + DEADLINE_S
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


class GatedSync:
    """A sync that blocks until the test lets sync number ``n`` return."""

    def __init__(self) -> None:
        self.started = 0
        self._gates: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def _gate(self, n: int) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(n, threading.Event())

    def __call__(self) -> None:
        with self._lock:
            n = self.started
            self.started += 1
        self._gate(n).wait(DEADLINE_S)

    def finish(self, n: int) -> None:
        self._gate(n).set()


class Waiter(threading.Thread):
    def __init__(self, gc: GroupCommit, ticket: int, name: str | None = None):
        super().__init__(daemon=True, name=name)
        self.gc, self.ticket = gc, ticket
        self.returned = False
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.gc.wait_durable(self.ticket)
            self.returned = True
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc


@needs_eventfd
def test_a_sync_wakes_its_whole_group_with_one_eventfd_write(monkeypatch):
    sync = GatedSync()
    gc = GroupCommit(sync)
    group = [Waiter(gc, t) for t in [gc.written() for _ in range(8)]]
    wait_for(lambda: sync.started == 1 and len(gc._group) == 7, "one runner, seven asleep")
    later = [Waiter(gc, t) for t in [gc.written() for _ in range(3)]]
    wait_for(lambda: len(gc._next_group) == 3, "three waiters for the next sync")
    writes = []
    real_write = os.eventfd_write

    def counting(fd, value):
        writes.append(value)
        real_write(fd, value)

    monkeypatch.setattr(os, "eventfd_write", counting)
    sync.finish(0)
    for w in group:
        w.join(DEADLINE_S)
    assert all(w.returned for w in group)
    # one write of 1 for the next sync's runner (first: it gathers while the others
    # wake), one of 7 for the covered group
    assert writes[:2] == [1, 7]
    wait_for(lambda: sync.started == 2, "the next sync")
    sync.finish(1)
    for w in later:
        w.join(DEADLINE_S)
    assert all(w.returned for w in later) and gc.group_syncs == 2


@needs_eventfd
def test_a_group_with_a_wake_up_not_yet_taken_is_not_reused(monkeypatch):
    """A waiter registered in a group but not yet asleep when the group is woken
    (descheduled between the two): its wake-up waits in the eventfd. Once that group has
    served its sync, later syncs do not give it to their waiters (one would take the
    wake-up: a spurious wake-up, which it survives by looking again); once the slow
    waiter has taken it, the group is reused."""
    go = threading.Event()
    at_sleep = threading.Event()
    real_sleep = durability._Group.sleep

    def sleep(group):
        if threading.current_thread().name == "slow":
            at_sleep.set()
            go.wait(DEADLINE_S)
        real_sleep(group)

    monkeypatch.setattr(durability._Group, "sleep", sleep)
    sync = GatedSync()
    gc = GroupCommit(sync)
    runner = Waiter(gc, gc.written())
    wait_for(lambda: sync.started == 1, "the first sync")
    slow = Waiter(gc, gc.written(), name="slow")  # for the second sync
    at_sleep.wait(DEADLINE_S)
    held = gc._next_group
    sync.finish(0)
    runner.join(DEADLINE_S)
    # slow's wake-up (as the second sync's runner) is written, not taken
    assert held.written == 1 and not held.drained
    n = 1
    for i in range(5):  # five more syncs, each with two waiters, none of them slow
        ws = [Waiter(gc, t) for t in (gc.written(), gc.written())]
        wait_for(lambda: sync.started == n + 1, f"sync {n + 1}")
        if i == 0:
            assert gc._group is held  # slow's own sync: it is in that sync's group
        else:
            assert gc._group is not held and gc._next_group is not held
        sync.finish(n)
        n += 1
        for w in ws:
            w.join(DEADLINE_S)
        assert all(w.returned for w in ws)
    assert not held.drained and held in gc._draining
    go.set()  # slow sleeps, takes its wake-up: durable already, it returns
    slow.join(DEADLINE_S)
    assert slow.returned and held.drained
    ws = [Waiter(gc, t) for t in (gc.written(), gc.written())]
    wait_for(lambda: sync.started == n + 1, "one more sync")
    sync.finish(n)
    for w in ws:
        w.join(DEADLINE_S)
    assert all(w.returned for w in ws)
    assert held not in gc._draining or held.drained
    assert len(gc._groups) <= 4  # groups are reused, not made per sync


def _model_run(gc_factory, *, seed: int, threads: int = 8, appends: int = 120,
               slow_sleep=None) -> tuple[list[int], dict]:
    """Appenders on a model file; returns the writes acknowledged before a sync that
    started after them had finished (must be empty) and the model's state."""
    rnd = random.Random(seed)
    lock = threading.Lock()
    state = {"written": 0, "durable": 0, "syncs": 0}
    pauses = [rnd.random() < 0.3 for _ in range(4096)]

    def sync():
        with lock:
            snap = state["written"]
            n = state["syncs"]
            state["syncs"] += 1
        if pauses[n % len(pauses)]:
            time.sleep(0.0003)  # sometimes slow, so writes pile up behind it
        with lock:
            state["durable"] = max(state["durable"], snap)

    gc = gc_factory(sync)
    bad: list[int] = []

    def appender():
        for _ in range(appends):
            with lock:
                state["written"] += 1
                mine = state["written"]
                ticket = gc.written()
            gc.wait_durable(ticket)
            if state["durable"] < mine:
                bad.append(mine)

    ts = [threading.Thread(target=appender, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(DEADLINE_S * 2)
    assert not any(t.is_alive() for t in ts), "an appender was left asleep"
    state["gc"] = gc
    return bad, state


@needs_eventfd
def test_waiters_slow_to_fall_asleep_are_never_left_behind(monkeypatch):
    """Waiters randomly delayed between registering and sleeping (so wake-ups wait in the
    eventfd while later syncs run): every append returns, each covered by a sync that
    started after it, and every group ends drained."""
    rnd = random.Random(17)
    real_sleep = durability._Group.sleep
    delays = [rnd.random() < 0.2 for _ in range(1024)]
    k = iter(range(10 ** 9))

    def sleep(group):
        if delays[next(k) % len(delays)]:
            os.sched_yield()
            time.sleep(0.0002)
        real_sleep(group)

    monkeypatch.setattr(durability._Group, "sleep", sleep)
    bad, state = _model_run(GroupCommit, seed=3)
    assert bad == []
    assert state["durable"] == state["written"] == 8 * 120
    gc = state["gc"]
    assert all(g.drained and not g.sleepers for g in gc._groups)
    assert gc.group_syncs == state["syncs"] < 8 * 120


def test_without_eventfd_the_semaphore_groups_behave_the_same(monkeypatch):
    monkeypatch.setattr(durability, "_new_group", durability._LockGroup)
    bad, state = _model_run(GroupCommit, seed=5)
    assert bad == []
    assert state["durable"] == state["written"] == 8 * 120
    gc = state["gc"]
    assert all(type(g) is durability._LockGroup and g.drained for g in gc._groups)


@needs_eventfd
def test_an_explicit_flush_during_a_sync_wakes_what_it_covers_and_replaces_the_groups():
    """mark_durable covering the running sync's target wakes that sync's group and the
    next one (they look again) and puts groups no wake-up is pending for in their place;
    a waiter past the running sync then sleeps in the next group and runs the next
    sync."""
    sync = GatedSync()
    gc = GroupCommit(sync)
    t1, t2 = gc.written(), gc.written()
    runner = Waiter(gc, t1)
    wait_for(lambda: sync.started == 1, "the sync")
    first = gc._group
    w2 = Waiter(gc, t2)  # covered by the running sync
    wait_for(lambda: len(first) == 1, "a waiter in the running sync's group")
    gc.mark_durable(gc.position())  # an explicit flush covered t1 and t2
    w2.join(DEADLINE_S)
    assert w2.returned and runner.is_alive()
    # the woken group was retired; it may already serve again (w2 took its wake-up)
    assert first.drained and (gc._group is not first or not first.sleepers)
    late = Waiter(gc, gc.written())
    wait_for(lambda: len(gc._next_group) == 1, "a waiter past the running sync")
    sync.finish(0)
    runner.join(DEADLINE_S)
    wait_for(lambda: sync.started == 2, "the late waiter's sync")
    sync.finish(1)
    late.join(DEADLINE_S)
    assert runner.returned and late.returned
    assert all(g.drained for g in gc._groups)


def test_the_gathering_stops_once_every_released_appender_numbered_a_write(monkeypatch):
    """After a sync that released four appenders, the next runner yields while they
    number their next writes and stops as soon as all four have, without a last yield
    that would find nothing new."""
    sync = GatedSync()
    gc = GroupCommit(sync)
    ws = [Waiter(gc, t) for t in [gc.written() for _ in range(4)]]
    wait_for(lambda: sync.started == 1 and len(gc._group) == 3, "a group of four")
    runner = Waiter(gc, gc.written())  # waits for the next sync: it will run it
    wait_for(lambda: len(gc._next_group) == 1, "the next sync's runner asleep")
    yields = []

    def a_yield():  # two of the released appenders number a write during each yield
        yields.append((gc.written(), gc.written()))

    monkeypatch.setattr(durability, "_yield", a_yield)
    sync.finish(0)
    for w in ws:
        w.join(DEADLINE_S)
    wait_for(lambda: sync.started == 2, "the second sync")
    assert gc._released == 4 and len(yields) == 2  # four back after two yields: no third
    assert gc._target >= max(yields[-1])
    sync.finish(1)
    runner.join(DEADLINE_S)
    assert runner.returned
    for pair in yields:
        for t in pair:
            gc.wait_durable(t)  # covered by the second sync: no third one
    assert sync.started == 2


@needs_eventfd
def test_a_runner_interrupted_while_it_wakes_still_wakes_its_group(monkeypatch):
    """The runner is interrupted (KeyboardInterrupt) just after writing the next runner's
    wake-up: its group's wake-up is still written, so the covered waiters return, and the
    next sync runs; the runner itself gets the interrupt."""
    sync = GatedSync()
    gc = GroupCommit(sync)
    tickets = [gc.written() for _ in range(4)]
    runner = Waiter(gc, tickets[0], name="runner")
    wait_for(lambda: sync.started == 1, "the first sync")
    covered = [Waiter(gc, t) for t in tickets[1:]]
    wait_for(lambda: len(gc._group) == 3, "three waiters the first sync covers")
    late = Waiter(gc, gc.written())  # for the next sync
    wait_for(lambda: len(gc._next_group) == 1, "a waiter for the next sync")
    real_post = durability._Group.post
    posts = []

    def post(group, n):
        real_post(group, n)
        posts.append(n)
        if threading.current_thread().name == "runner" and len(posts) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(durability._Group, "post", post)
    sync.finish(0)
    runner.join(DEADLINE_S)
    assert isinstance(runner.error, KeyboardInterrupt)
    for w in covered:
        w.join(DEADLINE_S)
    assert all(w.returned for w in covered)
    assert posts[:2] == [1, 3]  # the next runner's wake-up, then the group's, despite it
    wait_for(lambda: sync.started == 2, "the late waiter running the next sync")
    sync.finish(1)
    late.join(DEADLINE_S)
    assert late.returned

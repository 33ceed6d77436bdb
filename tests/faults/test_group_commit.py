"""GroupCommit with a fake sync that blocks until the test releases it: who shares a sync,
who is left for the next one, who sees a failure, and that an acknowledgement always comes
from a sync that started after the write. Deterministic: the tests wait for states (with a
generous deadline that only guards against hangs), never for time."""
from __future__ import annotations

import random
import threading
import time

import pytest

from mqstore import durability
from mqstore.durability import GroupCommit

DEADLINE_S = 30.0


def wait_for(predicate, what: str) -> None:
    end = time.monotonic() + DEADLINE_S
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


class BlockingSync:
    """A sync that blocks until :meth:`finish` is called for it, then returns or raises."""

    def __init__(self) -> None:
        self.started = 0
        self.finished = 0
        self._lock = threading.Lock()
        self._gates: list[threading.Event] = []
        self._errors: list[BaseException | None] = []

    def __call__(self) -> None:
        with self._lock:
            n = self.started
            self.started += 1
            while len(self._gates) <= n:
                self._gates.append(threading.Event())
                self._errors.append(None)
            gate = self._gates[n]
        gate.wait()
        self.finished += 1
        if self._errors[n] is not None:
            raise self._errors[n]

    def finish(self, n: int, error: BaseException | None = None) -> None:
        """Let sync number ``n`` (0-based) return, or raise ``error``."""
        with self._lock:
            while len(self._gates) <= n:
                self._gates.append(threading.Event())
                self._errors.append(None)
            self._errors[n] = error
            self._gates[n].set()


class Waiter(threading.Thread):
    """A thread waiting for one ticket; records how it ended."""

    def __init__(self, gc: GroupCommit, ticket: int):
        super().__init__(daemon=True)
        self.gc, self.ticket = gc, ticket
        self.error: BaseException | None = None
        self.returned = False
        self.start()

    def run(self) -> None:
        try:
            self.gc.wait_durable(self.ticket)
            self.returned = True
        except BaseException as exc:
            self.error = exc


def sleepers(gc: GroupCommit) -> int:
    return len(gc._group) + len(gc._next_group)


def test_waiters_numbered_before_a_sync_share_it():
    sync = BlockingSync()
    gc = GroupCommit(sync)
    tickets = [gc.written() for _ in range(8)]
    waiters = [Waiter(gc, t) for t in tickets]
    wait_for(lambda: sync.started == 1 and sleepers(gc) == 7, "one runner and seven sleepers")
    assert not any(w.returned for w in waiters)
    sync.finish(0)
    for w in waiters:
        w.join(DEADLINE_S)
    assert all(w.returned and w.error is None for w in waiters)
    assert sync.started == 1 and gc.group_syncs == 1  # one sync for all eight


def test_a_write_numbered_after_the_target_waits_for_the_next_sync():
    sync = BlockingSync()
    gc = GroupCommit(sync)
    first = Waiter(gc, gc.written())
    wait_for(lambda: sync.started == 1, "the first sync")
    late = Waiter(gc, gc.written())  # written while the first sync runs
    wait_for(lambda: len(gc._next_group) == 1, "the late waiter asleep in the next group")
    sync.finish(0)
    first.join(DEADLINE_S)
    assert first.returned
    wait_for(lambda: sync.started == 2, "the late waiter's own sync")
    assert late.is_alive() and not late.returned  # the first sync did not release it
    assert gc.group_syncs == 1
    sync.finish(1)
    late.join(DEADLINE_S)
    assert late.returned and gc.group_syncs == 2


def test_waiters_not_covered_stay_asleep_while_the_covered_ones_return():
    sync = BlockingSync()
    gc = GroupCommit(sync)
    covered = [Waiter(gc, t) for t in [gc.written() for _ in range(4)]]
    wait_for(lambda: sync.started == 1 and len(gc._group) == 3, "the first group")
    later = [Waiter(gc, t) for t in [gc.written() for _ in range(4)]]
    wait_for(lambda: len(gc._next_group) == 4, "the next group asleep")
    sync.finish(0)
    for w in covered:
        w.join(DEADLINE_S)
    assert all(w.returned for w in covered)
    # one of the later ones runs the second sync; the three others sleep in its group
    wait_for(lambda: sync.started == 2 and len(gc._group) == 3, "the second group")
    assert not any(w.returned for w in later)
    sync.finish(1)
    for w in later:
        w.join(DEADLINE_S)
    assert all(w.returned for w in later)
    assert sync.started == 2


def test_a_failed_sync_raises_in_exactly_the_waiters_it_covered():
    sync = BlockingSync()
    gc = GroupCommit(sync)
    covered = [Waiter(gc, t) for t in [gc.written() for _ in range(3)]]
    wait_for(lambda: sync.started == 1 and len(gc._group) == 2, "the covered group")
    later = Waiter(gc, gc.written())
    wait_for(lambda: len(gc._next_group) == 1, "a waiter past the target")
    sync.finish(0, OSError(28, "No space left on device"))
    for w in covered:
        w.join(DEADLINE_S)
    assert all(isinstance(w.error, OSError) and not w.returned for w in covered)
    wait_for(lambda: sync.started == 2, "a new sync for the later write")
    assert later.error is None and not later.returned
    sync.finish(1)
    later.join(DEADLINE_S)
    assert later.returned and later.error is None
    # a write the failed sync was meant to cover still fails if asked again
    with pytest.raises(OSError):
        gc.wait_durable(covered[0].ticket)


def test_a_late_waiter_for_a_failed_ticket_raises_without_a_sync():
    sync = BlockingSync()
    gc = GroupCommit(sync)
    t1, t2 = gc.written(), gc.written()
    runner = Waiter(gc, t1)
    wait_for(lambda: sync.started == 1, "the sync")
    sync.finish(0, OSError("io error"))
    runner.join(DEADLINE_S)
    assert isinstance(runner.error, OSError)
    with pytest.raises(OSError, match="io error"):
        gc.wait_durable(t2)  # numbered before the failed sync started: covered by it
    assert sync.started == 1


def test_an_explicit_flush_releases_the_writes_it_covered_while_a_sync_runs():
    sync = BlockingSync()
    gc = GroupCommit(sync)
    runner = Waiter(gc, gc.written())
    wait_for(lambda: sync.started == 1, "the group sync")
    t2 = gc.written()
    late = Waiter(gc, t2)
    wait_for(lambda: len(gc._next_group) == 1, "a waiter past the running sync")
    upto = gc.position()  # a flush() syncing on its own path covers t2
    t3 = gc.written()  # and not this one
    gc.mark_durable(upto)
    late.join(DEADLINE_S)
    assert late.returned and runner.is_alive()
    after = Waiter(gc, t3)
    wait_for(lambda: len(gc._next_group) == 1, "the write numbered after the flush")
    sync.finish(0)
    runner.join(DEADLINE_S)
    wait_for(lambda: sync.started == 2, "a sync for the write after the flush")
    assert not after.returned
    sync.finish(1)
    after.join(DEADLINE_S)
    assert after.returned


def test_every_acknowledged_write_was_covered_by_a_sync_that_started_after_it():
    """Many appenders on a model file: the sync snapshots the written length when it starts
    and publishes it when it returns; every append checks, on return, that a finished sync
    had snapshotted its write."""
    rnd = random.Random(9)
    lock = threading.Lock()
    state = {"written": 0, "durable": 0, "syncs": 0}
    pauses = [rnd.random() < 0.3 for _ in range(4096)]

    def sync():
        with lock:
            snap = state["written"]
            n = state["syncs"]
            state["syncs"] += 1
        if pauses[n % len(pauses)]:
            time.sleep(0.0005)  # sometimes slow, so writes pile up behind it
        with lock:
            state["durable"] = max(state["durable"], snap)

    gc = GroupCommit(sync)
    bad = []

    def appender():
        for _ in range(150):
            with lock:
                state["written"] += 1
                mine = state["written"]
                ticket = gc.written()
            gc.wait_durable(ticket)
            if state["durable"] < mine:
                bad.append(mine)

    threads = [threading.Thread(target=appender) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []
    assert state["durable"] == state["written"] == 1200
    assert gc.group_syncs == state["syncs"] < 1200


def test_a_runner_gathers_the_appenders_it_just_released(monkeypatch):
    """The runner of the sync after a group of four yields while new tickets arrive (here:
    its own write, numbered after that sync, and one during each of the first two yields),
    so its target covers them, and stops at the first yield during which nothing was
    numbered (the fourth released appender never comes back)."""
    sync = BlockingSync()
    gc = GroupCommit(sync)
    ws = [Waiter(gc, t) for t in [gc.written() for _ in range(4)]]
    wait_for(lambda: sync.started == 1 and len(gc._group) == 3, "a group of four")
    sync.finish(0)
    for w in ws:
        w.join(DEADLINE_S)
    assert gc._released == 4
    arrived = []

    def a_yield():
        if len(arrived) < 2:
            arrived.append(gc.written())  # another appender numbers a write meanwhile
        else:
            arrived.append(None)

    monkeypatch.setattr(durability, "_yield", a_yield)
    runner = Waiter(gc, gc.written())  # numbered after the sync: one of the four back
    wait_for(lambda: sync.started == 2, "the second sync")
    assert arrived[2:] == [None]  # two yields with arrivals, then one without
    assert gc._target >= max(arrived[:2])  # the sync covers the writes numbered meanwhile
    sync.finish(1)
    runner.join(DEADLINE_S)
    for t in arrived[:2]:
        gc.wait_durable(t)  # durable already: no further sync
    assert sync.started == 2


# ----- segments: several dirty partitions share one syncfs -----

import ctypes  # noqa: E402
import errno  # noqa: E402

import mqstore  # noqa: E402
from mqstore.errors import StoreFullError  # noqa: E402

needs_syncfs = pytest.mark.skipif(not durability.FilesystemSync.available,
                                  reason="no syncfs that reports errors here")


def _dirty_all(store, partitions):
    for p in range(partitions):
        store.append("t", b"v%d" % p, partition=p)


@needs_syncfs
def test_segments_flush_of_several_partitions_is_one_syncfs(tmp_path):
    with mqstore.open(str(tmp_path / "s"), "segments") as s:
        s.create_topic("t", partitions=4)
        _dirty_all(s, 4)
        before = s.stats()["fsyncs"]
        s.flush()  # the first time log by log: the syncfs descriptor starts looking now
        assert s.stats()["fsyncs"] - before == 4 + 6  # 4 logs, the checkpoints
        _dirty_all(s, 4)
        before = s.stats()["fsyncs"]
        s.flush()
        assert s.stats()["fsyncs"] - before == 1 + 6  # one syncfs, the checkpoints
        logs = s._topics["t"]
        assert all(lg.recovery_point == 2 and not lg.has_unflushed for lg in logs)


@needs_syncfs
def test_segments_failed_syncfs_is_store_full_and_nothing_is_marked_synced(tmp_path,
                                                                           monkeypatch):
    with mqstore.open(str(tmp_path / "s"), "segments") as s:
        s.create_topic("t", partitions=3)
        _dirty_all(s, 3)
        s.flush()
        _dirty_all(s, 3)

        def full(_fd):
            ctypes.set_errno(errno.ENOSPC)
            return -1

        monkeypatch.setattr(durability, "_syncfs", full)
        with pytest.raises(StoreFullError):
            s.flush()
        logs = s._topics["t"]
        assert all(lg.recovery_point == 1 and lg.has_unflushed for lg in logs)
        monkeypatch.undo()
        s.flush()  # retried: space again
        assert all(lg.recovery_point == 2 and not lg.has_unflushed for lg in logs)


def _two_partition_batch():
    """Keyed messages that land in partitions 0 and 1 of a two-partition topic."""
    from mqstore.partitioner import partition_for_key

    keys: dict[int, bytes] = {}
    i = 0
    while len(keys) < 2:
        keys.setdefault(partition_for_key(b"k%d" % i, 2), b"k%d" % i)
        i += 1
    return [mqstore.Message(b"x", key=keys[0]), mqstore.Message(b"y", key=keys[1])]


@needs_syncfs
def test_segments_group_commit_over_partitions_is_one_syncfs_and_fails_its_appends(
        tmp_path, monkeypatch):
    """flush="sync": an append_batch writing two partitions waits for one group sync,
    which is one syncfs; when it fails the batch raises StoreFullError, nothing counts as
    synced, and the store takes appends again once the disk has room."""
    with mqstore.open(str(tmp_path / "s"), "segments", flush="sync") as s:
        s.create_topic("t", partitions=2)
        batch = _two_partition_batch()
        s.append_batch("t", batch)  # the first multi-log sync goes log by log
        real = durability._syncfs
        calls = []

        def counting(fd):
            calls.append(fd)
            return real(fd)

        monkeypatch.setattr(durability, "_syncfs", counting)
        md = s.append_batch("t", batch)
        assert len(calls) == 1 and sorted(m.partition for m in md) == [0, 1]
        logs = s._topics["t"]
        assert not any(lg.has_unflushed for lg in logs)

        def full(_fd):
            ctypes.set_errno(errno.ENOSPC)
            return -1

        monkeypatch.setattr(durability, "_syncfs", full)
        with pytest.raises(StoreFullError):
            s.append_batch("t", batch)
        assert all(lg.has_unflushed and lg.recovery_point == 2 for lg in logs)
        monkeypatch.setattr(durability, "_syncfs", counting)
        s.append_batch("t", batch)  # a new sync covers the failed writes' files too
        assert len(calls) == 2
        assert all(lg.recovery_point == 4 and not lg.has_unflushed for lg in logs)


@needs_syncfs
def test_segments_logs_on_another_filesystem_are_fsynced_on_their_own(tmp_path,
                                                                       monkeypatch):
    with mqstore.open(str(tmp_path / "s"), "segments") as s:
        s.create_topic("t", partitions=3)
        _dirty_all(s, 3)
        s.flush()
        fs = s._fs_sync
        logs = s._topics["t"]
        monkeypatch.setitem(fs._same_fs, logs[2].dir, False)  # as if mounted elsewhere
        _dirty_all(s, 3)
        before = [lg.fsyncs for lg in logs]
        s.flush()
        assert [lg.fsyncs - b for lg, b in zip(logs, before)] == [0, 0, 1]
        assert not any(lg.has_unflushed for lg in logs)


def test_segments_without_syncfs_sync_log_by_log(tmp_path, monkeypatch):
    monkeypatch.setattr(durability.FilesystemSync, "available", False)
    with mqstore.open(str(tmp_path / "s"), "segments") as s:
        s.create_topic("t", partitions=3)
        for _ in range(2):
            _dirty_all(s, 3)
            before = s.stats()["fsyncs"]
            s.flush()
            assert s.stats()["fsyncs"] - before == 3 + 6


class SleepControl:
    """Wraps ``durability._Group.sleep``: a thread named ``"interrupted"`` is interrupted
    (KeyboardInterrupt) before it sleeps, as a signal interrupts the blocking read; a
    thread named ``"slow"`` waits for :attr:`go` before it sleeps (registered, not yet
    asleep on the group)."""

    def __init__(self, monkeypatch) -> None:
        self.go = threading.Event()
        self.slow_waiting = threading.Event()
        real = durability._Group.sleep

        def sleep(group):
            name = threading.current_thread().name
            if name == "interrupted":
                raise KeyboardInterrupt
            if name == "slow":
                self.slow_waiting.set()
                self.go.wait(DEADLINE_S)
            real(group)

        monkeypatch.setattr(durability._Group, "sleep", sleep)


def test_a_waiter_interrupted_in_its_sleep_is_unlisted_and_the_others_go_on(monkeypatch):
    SleepControl(monkeypatch)
    sync = BlockingSync()
    gc = GroupCommit(sync)
    runner = Waiter(gc, gc.written())
    wait_for(lambda: sync.started == 1, "the first sync")
    other = Waiter(gc, gc.written())  # past the first sync's target
    wait_for(lambda: len(gc._next_group) == 1, "a waiter for the next sync")
    mine = gc.written()
    interrupted = Waiter.__new__(Waiter)
    threading.Thread.__init__(interrupted, daemon=True, name="interrupted")
    interrupted.gc, interrupted.ticket = gc, mine
    interrupted.error, interrupted.returned = None, False
    interrupted.start()
    interrupted.join(DEADLINE_S)
    assert isinstance(interrupted.error, KeyboardInterrupt)
    assert len(gc._next_group) == 1  # unregistered: only the other waiter is counted
    sync.finish(0)
    runner.join(DEADLINE_S)
    assert runner.returned
    wait_for(lambda: sync.started == 2, "the other waiter running the next sync")
    sync.finish(1)
    other.join(DEADLINE_S)
    assert other.returned
    gc.wait_durable(mine)  # covered by the second sync
    assert all(g.drained for g in gc._groups)  # every wake-up written was taken


def test_an_interrupted_next_runner_hands_the_sync_to_another_waiter(monkeypatch):
    """The end of a sync writes one wake-up to the next group for its runner. A waiter
    of that group interrupted before it took it unregisters; the wake-up goes to the
    other one, which runs the next sync."""
    ctl = SleepControl(monkeypatch)
    sync = BlockingSync()
    gc = GroupCommit(sync)
    w1 = Waiter(gc, gc.written())
    wait_for(lambda: sync.started == 1, "the first sync")
    w2 = Waiter.__new__(Waiter)  # registered in the next group, not yet asleep
    threading.Thread.__init__(w2, daemon=True, name="slow")
    w2.gc, w2.ticket, w2.error, w2.returned = gc, gc.written(), None, False
    w2.start()
    ctl.slow_waiting.wait(DEADLINE_S)
    nxt = gc._next_group
    with gc._lock:
        nxt.sleepers += 1  # "chosen": a second waiter of the next group
    sync.finish(0)
    w1.join(DEADLINE_S)
    assert w1.returned
    assert nxt.written == 1 and len(nxt) == 1  # one wake-up written, for the next runner
    gc._abandon(nxt)  # "chosen" is interrupted before it took it, and leaves
    assert len(nxt) == 0 and sync.started == 1
    ctl.go.set()  # w2 sleeps, takes the wake-up and runs the next sync
    wait_for(lambda: sync.started == 2, "w2 running the next sync")
    sync.finish(1)
    w2.join(DEADLINE_S)
    assert w2.returned
    assert nxt.drained


def test_an_interrupted_waiter_whose_wake_up_was_written_takes_it(monkeypatch):
    """The wake-up written for the only waiter of the next group is taken by that
    waiter when it is interrupted: the group is drained, so it can be reused."""
    sync = BlockingSync()
    gc = GroupCommit(sync)
    w1 = Waiter(gc, gc.written())
    wait_for(lambda: sync.started == 1, "the first sync")
    nxt = gc._next_group
    with gc._lock:
        nxt.sleepers += 1  # a waiter registered, interrupted before it slept
    sync.finish(0)
    w1.join(DEADLINE_S)
    assert nxt.written == 1 and len(nxt) == 0 and not nxt.drained
    gc._abandon(nxt)  # takes the wake-up (it does not block)
    assert nxt.drained
    w3 = Waiter(gc, gc.written())  # nobody else waits: it runs its own sync
    wait_for(lambda: sync.started == 2, "a new sync")
    sync.finish(1)
    w3.join(DEADLINE_S)
    assert w3.returned

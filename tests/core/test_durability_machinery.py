"""GroupCommit and PeriodicFlusher, with a counting fake sync."""
from __future__ import annotations

import threading
import time

import pytest

from mqstore.durability import GroupCommit, PeriodicFlusher


def test_group_commit_covers_every_ticket_and_shares_syncs():
    syncs = []
    lock = threading.Lock()

    def sync():
        time.sleep(0.002)  # a slow disk, so waiters pile up
        syncs.append(1)

    gc = GroupCommit(sync)
    tickets_done = []

    def appender():
        for _ in range(50):
            with lock:
                t = gc.written()
            gc.wait_durable(t)
            with lock:
                tickets_done.append(t)

    threads = [threading.Thread(target=appender) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(tickets_done)) == 400  # numbers are unique and increasing, not dense
    assert max(tickets_done) < gc.position()
    assert 0 < len(syncs) < 400
    assert gc.group_syncs == len(syncs)


def test_group_commit_propagates_errors():
    def sync():
        raise OSError("disk on fire")

    gc = GroupCommit(sync)
    t = gc.written()
    with pytest.raises(OSError, match="fire"):
        gc.wait_durable(t)
    with pytest.raises(OSError, match="fire"):
        gc.wait_durable(gc.written())


def test_mark_durable_releases_waiters_without_sync():
    calls = []
    gc = GroupCommit(lambda: calls.append(1))
    t = gc.written()
    gc.mark_durable(gc.position())
    gc.wait_durable(t)
    assert calls == []


def test_mark_durable_does_not_cover_writes_numbered_after_the_flush_began():
    calls = []
    gc = GroupCommit(lambda: calls.append(1))
    gc.written()
    upto = gc.position()  # an explicit flush takes its end here, then syncs
    late = gc.written()  # a write that lands while the flush syncs
    gc.mark_durable(upto)
    gc.wait_durable(late)  # must sync itself rather than trust the earlier flush
    assert calls == [1]


def test_a_failed_sync_does_not_poison_later_writes():
    fail = [True]

    def sync():
        if fail[0]:
            raise OSError("no space")

    gc = GroupCommit(sync)
    t = gc.written()
    with pytest.raises(OSError):
        gc.wait_durable(t)
    fail[0] = False
    gc.wait_durable(gc.written())


def test_periodic_flusher_syncs_only_when_dirty():
    calls = []
    dirty = [True]

    def sync():
        calls.append(1)
        dirty[0] = False

    f = PeriodicFlusher(sync, 5, lambda: dirty[0])
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)
    f.stop()
    f.stop()
    assert calls == [1]

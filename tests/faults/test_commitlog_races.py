"""Races in the commitlog engine's flush paths (issue 8, items 14a and 1), made
deterministic: one thread is paused inside the critical window (a ``threading.Event``
injected with monkeypatch), a second one runs the same path, and the test checks the
invariant that matters after a crash: nothing is claimed durable (by the checkpoint, by
``flushed_offset``, by an acknowledgement) before the sync that makes it so has finished.
The second thread is given a short grace period to get through; it must instead wait.
"""
from __future__ import annotations

import os
import threading

import mqstore
from mqstore.engines.commitlog import commitlog as commitlog_mod
from mqstore.engines.commitlog import consume_queue as consume_queue_mod

SMALL = {"mapped_file_size": 4096, "cq_units_per_file": 4, "hash_slots": 64,
         "index_entries": 128}
GRACE_S = 0.3  # how long the second thread may take to (wrongly) get through the window
STUCK_S = 10.0  # upper bound for a paused thread (a safety net, never reached when correct)


def _open(path, **opts):
    return mqstore.open(path, "commitlog", **{**SMALL, **opts})


class PausedDirSync:
    """Replace ``fsync_dir`` in ``module``: the first sync of a directory ending with
    ``suffix`` pauses until :attr:`release` is set; ``events`` records every finished
    sync as ("dir_synced", path)."""

    def __init__(self, monkeypatch, module, suffix, events):
        self.entered = threading.Event()
        self.release = threading.Event()
        self._paused = False
        real = module.fsync_dir

        def fsync_dir(path):
            if not self._paused and str(path).rstrip("/").endswith(suffix):
                self._paused = True
                self.entered.set()
                self.release.wait(STUCK_S)
            real(path)
            events.append(("dir_synced", str(path)))

        monkeypatch.setattr(module, "fsync_dir", fsync_dir)


def _run_both(first, second, pause):
    """Run ``first`` until it is paused, then ``second`` for a grace period, then let
    ``first`` go on; wait for both."""
    errors = []

    def guard(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
        return run

    a = threading.Thread(target=guard(first))
    a.start()
    assert pause.entered.wait(STUCK_S)
    b = threading.Thread(target=guard(second))
    b.start()
    b.join(GRACE_S)
    pause.release.set()
    a.join(STUCK_S)
    b.join(STUCK_S)
    assert not a.is_alive() and not b.is_alive()
    assert not errors, errors


def test_checkpoint_never_claims_consume_queue_units_before_their_directory_sync(
        store_path, monkeypatch):
    """Two _flush_logics at once (the ConsumeQueue flusher thread and flush()): while the
    first syncs the directory of a new ConsumeQueue file, the second must not see the
    dirty flag already cleared and write a checkpoint that covers the units in that file
    (a crash then loses them while the checkpoint says they are durable)."""
    s = _open(store_path, flush="os", dispatch="sync")
    s.create_topic("t")
    s.append_batch("t", [b"a"] * 3, partition=0)
    s.flush()  # the queue's parent directories are durable; one CQ file so far
    s.append_batch("t", [b"b"] * 3, partition=0)  # the queue's second file
    events = []
    pause = PausedDirSync(monkeypatch, consume_queue_mod, "/t/0", events)
    ck = s.checkpoint
    real_flush = ck.flush

    def checkpoint_flush():
        events.append(("checkpoint", ck.logics_msg_timestamp))
        real_flush()

    monkeypatch.setattr(ck, "flush", checkpoint_flush)
    _run_both(s._flush_logics, s._flush_logics, pause)
    kinds = [e[0] for e in events]
    assert "checkpoint" in kinds
    synced = kinds.index("dir_synced")
    assert kinds.index("checkpoint") > synced, events
    s.close()


def test_flushed_offset_never_covers_a_new_file_before_its_directory_sync(
        store_path, monkeypatch):
    """Two CommitLog flushes at once (group-commit leader, periodic flusher, flush()):
    while the first syncs the directory entry of a new CommitLog file, the second must
    not move ``flushed_offset`` into that file (an appender would be acknowledged for a
    message a crash can lose with the whole file)."""
    s = _open(store_path, flush="os", dispatch="sync")
    s.create_topic("t")
    cl = s.commitlog
    while len(cl.files) < 2:
        s.append("t", b"x" * 300, partition=0)
    events = []
    pause = PausedDirSync(monkeypatch, commitlog_mod, "/commitlog", events)

    def second():
        cl.flush()
        events.append(("flushed", cl.flushed_offset))

    _run_both(cl.flush, second, pause)
    kinds = [e[0] for e in events]
    assert kinds.index("flushed") > kinds.index("dir_synced"), events
    assert cl.flushed_offset == cl.max_offset
    s.close()


class _PausingCount(int):
    """A sync count whose addition pauses: it holds a thread inside ``fsyncs += n``."""

    def __new__(cls, entered, release):
        obj = super().__new__(cls, 1)
        obj.entered, obj.release = entered, release
        return obj

    def __radd__(self, other):
        self.entered.set()
        self.release.wait(STUCK_S)
        return int(other) + 1


def test_fsync_counter_loses_no_update_between_threads(store_path, monkeypatch):
    """stats()["fsyncs"] is added to from appenders (group commit) and the flusher
    threads: a thread paused inside the read-modify-write must not let another's update
    be overwritten."""
    s = _open(store_path, flush="os")
    before = s.stats()["fsyncs"]
    pause = type("P", (), {})()
    pause.entered, pause.release = threading.Event(), threading.Event()
    counts = iter([_PausingCount(pause.entered, pause.release), 1])
    monkeypatch.setattr(s.commitlog, "flush", lambda: next(counts, 0))
    _run_both(s._sync_commitlog, s._sync_commitlog, pause)
    assert s.stats()["fsyncs"] == before + 2
    s.close()


def test_fsync_counter_is_exact_under_many_threads(store_path, monkeypatch):
    """N threads each counting a known number of syncs: the total is exact."""
    import sys
    s = _open(store_path, flush="os")
    before = s.stats()["fsyncs"]
    monkeypatch.setattr(s.commitlog, "flush", lambda: 1)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=lambda: [s._sync_commitlog() for _ in range(500)])
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert s.stats()["fsyncs"] == before + 8 * 500
    s.close()


def test_sync_appenders_racing_flush_read_their_own_record_and_are_durable(store_path):
    """Item 1 (group commit, fixed in core), checked on this engine: with flush="sync",
    appenders racing a thread that calls store.flush() can read their own record as soon
    as append returns, and every acknowledged record ends at or below a position that a
    finished sync had covered when its append returned."""
    s = _open(store_path, flush="sync", mapped_file_size=1 << 16, cq_units_per_file=64)
    s.create_topic("t", 4)
    cl = s.commitlog
    real_flush = cl.flush
    synced = [0]
    lock = threading.Lock()

    def recording_flush():
        n = real_flush()
        with lock:  # flushed_offset once the sync returned: what it made durable
            synced[0] = max(synced[0], cl.flushed_offset)
        return n

    cl.flush = recording_flush
    done = threading.Event()
    problems = []

    def flusher():
        while not done.is_set():
            s.flush()

    def appender(p):
        for i in range(40):
            value = b"p%d-%03d" % (p, i)
            md = s.append("t", value, partition=p)
            with lock:
                durable = synced[0]
            got = s.read("t", p, md.offset, max_records=1)
            if not got or got[0].value != value:
                problems.append(("not readable", p, md.offset))
                continue
            phys, size, _ = s._queues[("t", p)].unit(md.offset)
            if phys + size > durable:
                problems.append(("acknowledged before synced", p, md.offset, phys + size,
                                 durable))

    f = threading.Thread(target=flusher)
    f.start()
    ts = [threading.Thread(target=appender, args=(p,)) for p in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    done.set()
    f.join()
    assert problems == []
    s.close()


def test_a_new_commitlog_file_is_created_only_once_the_previous_one_is_durable(
        store_path, monkeypatch):
    """Rolling twice between two flushes (flush="os", or a slow flusher) must not leave two
    new files whose directory entries are both unsynced: a power loss may then keep the
    second and lose the first, a hole in the log that recovery can only refuse. Each file
    is created once every file before it is in a synced listing of the directory."""
    from mqstore.engines.commitlog import mapped_file as mapped_file_mod

    s = _open(store_path, flush="os", dispatch="sync")
    s.create_topic("t")
    s.append("t", b"first", partition=0)
    s.flush()
    cl = s.commitlog
    synced = set(os.listdir(cl.dir))
    real_sync, real_init = commitlog_mod.fsync_dir, mapped_file_mod.MappedFile.__init__
    problems = []

    def fsync_dir(path):
        if os.path.abspath(path) == os.path.abspath(cl.dir):
            synced.clear()
            synced.update(os.listdir(cl.dir))
        real_sync(path)

    def init(self, path, *a, create=False, **k):
        if create and os.path.dirname(path) == cl.dir:
            unsynced = set(os.listdir(cl.dir)) - synced
            if unsynced:
                problems.append((os.path.basename(path), sorted(unsynced)))
        real_init(self, path, *a, create=create, **k)

    monkeypatch.setattr(commitlog_mod, "fsync_dir", fsync_dir)
    monkeypatch.setattr(mapped_file_mod.MappedFile, "__init__", init)
    while len(cl.files) < 4:
        s.append("t", b"x" * 300, partition=0)
    assert problems == []
    s.close()

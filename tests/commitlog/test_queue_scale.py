"""ConsumeQueue costs that grow with the number of queues (issue 10): what an open reads,
syncs and maps per queue, how new queues' directories are synced, and the dispatcher's
packed writes (``consume_queue.put_runs``) against ``put_array``."""
from __future__ import annotations

import os

import numpy as np
import pytest

import mqstore
from mqstore.engines.commitlog import consume_queue as cqmod
from mqstore.engines.commitlog import cq_recovery
from mqstore.engines.commitlog.consume_queue import ConsumeQueue

OPTS = {"mapped_file_size": 1 << 20, "cq_units_per_file": 300_000, "hash_slots": 64,
        "index_entries": 256}


def _store(path, partitions=20, **kw):
    s = mqstore.open(path, "commitlog", **{**OPTS, **kw})
    s.create_topic("t", partitions)
    for p in range(partitions):
        s.append("t", b"v%d" % p, partition=p)
    return s


def _count(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counted(*a, **k):
        calls.append(a)
        return real(*a, **k)
    monkeypatch.setattr(module, name, counted)
    return calls


def test_open_after_a_clean_close_syncs_no_queue_file(store_path, monkeypatch):
    _store(store_path).close()
    synced = _count(monkeypatch, os, "fdatasync")
    s = mqstore.open(store_path, "commitlog")
    assert s.read("t", 7, 0)[0].value == b"v7"
    s.close()
    cq_dir = os.path.join(store_path, "consumequeue")
    # fdatasync takes a descriptor: none of them may be a ConsumeQueue file's
    paths = set()
    for (fd,) in synced:
        try:
            paths.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    assert not [p for p in paths if p.startswith(cq_dir)]


def test_open_after_a_crash_syncs_only_the_queues_it_cut(store_path, monkeypatch):
    import shutil

    s = _store(store_path)
    s.flush()
    crashed = store_path + "-crash"
    shutil.copytree(store_path, crashed, ignore=shutil.ignore_patterns("lock"))
    s.close()
    # stale bytes past the end of queue 3's units (a unit written, then lost its message)
    qfile = os.path.join(crashed, "consumequeue", "t", "3", "%020d" % 0)
    with open(qfile, "r+b") as f:
        f.seek(20 * 5000)
        f.write(b"\x01" * 20)
    forced = []
    real = cqmod.MappedFile.force

    def force(self):
        forced.append(self.path)
        return real(self)
    monkeypatch.setattr(cqmod.MappedFile, "force", force)
    s = mqstore.open(crashed, "commitlog")
    assert [os.path.relpath(p, crashed) for p in forced if "consumequeue" in p] == [
        os.path.join("consumequeue", "t", "3", "%020d" % 0)]
    assert [s.read("t", p, 0)[0].value for p in range(20)] == [b"v%d" % p for p in range(20)]
    assert s.end_offset("t", 3) == 1
    s.close()
    with open(qfile, "rb") as f:
        f.seek(20 * 5000)
        assert f.read(20) == bytes(20)  # the stale unit was zeroed


def _resident_kib(path):
    """Rss of this process's mapping of ``path`` (/proc/self/smaps), in KiB."""
    rss, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line
                inside = head[-1] == path
            elif inside and head[:1] == ["Rss:"]:
                rss += int(head[1])
    return rss


def test_recovery_scan_leaves_an_idle_queue_unmapped(store_path, monkeypatch):
    """The scan reads with pread in growing steps: after an open, an idle queue's 6 MB
    mapping has at most the kernel's fault-around window (64 KiB: a read fault maps up to
    16 cached pages) around its one page of units resident; the scan through the mapping
    left its 80 KiB step and the 20 KiB peek of every queue resident."""
    _store(store_path, partitions=4).close()
    touched = []
    real = ConsumeQueue._read_units

    def read_units(self, i, lo, n):
        touched.append((self.queue_id, lo, n))
        return real(self, i, lo, n)
    monkeypatch.setattr(ConsumeQueue, "_read_units", read_units)
    s = mqstore.open(store_path, "commitlog")
    first = [n for q, lo, n in touched if lo == 0]
    assert first and max(first) <= max(cq_recovery.FIRST_SCAN_STEP, ConsumeQueue.PEEK_UNITS)
    for cq in s._queues.values():
        assert cq.files[0].file_size == 300_000 * 20
        assert _resident_kib(cq.files[0].path) == 0
    s.close()


def test_scan_steps_grow_and_cover_the_file():
    steps = list(cq_recovery._scan_steps(10_000, 4096))
    assert steps[0] == (0, cq_recovery.FIRST_SCAN_STEP)
    assert [n for _lo, n in steps[:5]] == [256, 512, 1024, 2048, 4096]
    assert sum(n for _lo, n in steps) == 10_000
    assert all(a[0] + a[1] == b[0] for a, b in zip(steps, steps[1:]))
    assert list(cq_recovery._scan_steps(100, 4096)) == [(0, 100)]


@pytest.mark.parametrize("end", [0, 1, 255, 256, 257, 5000, 9000])
def test_scan_finds_the_end_at_every_step_boundary(tmp_path, end):
    cq = ConsumeQueue(str(tmp_path), "t", 0, 10_000)
    if end:
        q = np.arange(end, dtype=np.int64)
        cq.put_array(q, q * 200, np.full(end, 200, dtype=np.int64), np.zeros(end, np.int64))
    else:
        cq.put(0, 0, 200, 0)
        cq.truncate_units(0)
    assert cq.scan_end() == end
    cq.close()


def test_new_queues_directories_are_synced_once_per_flush(store_path, monkeypatch):
    s = mqstore.open(store_path, "commitlog", flush="os", **OPTS)
    s.create_topic("t", 200)
    for p in range(200):
        s.append("t", b"x", partition=p)
    s.dispatcher.wait_until(s.commitlog.max_offset)
    synced = _count(monkeypatch, cqmod, "fsync_dir")
    s._flush_logics()
    dirs = [os.path.relpath(a[0], store_path) for a in synced]
    assert len(dirs) == len(set(dirs))  # each directory once
    assert os.path.join("consumequeue", "t") in dirs and "consumequeue" in dirs
    assert len([d for d in dirs if d.startswith(os.path.join("consumequeue", "t", ""))]) \
        == 200  # each new queue's own directory (its file's entry)
    synced.clear()
    s.append("t", b"y", partition=5)
    s.dispatcher.wait_until(s.commitlog.max_offset)
    s._flush_logics()
    assert synced == []  # no new file, no directory sync
    s.close()
    s = mqstore.open(store_path, "commitlog")
    assert s.end_offset("t", 5) == 2 and s.end_offset("t", 199) == 1
    s.close()


def _columns(rng, queues, n):
    qids = rng.integers(0, queues, n)
    phys = np.cumsum(rng.integers(60, 200, n)).astype(np.int64)
    sizes = rng.integers(60, 200, n).astype(np.int64)
    tags = rng.integers(-2**40, 2**40, n).astype(np.int64)
    return qids, phys, sizes, tags


@pytest.mark.parametrize("seed", range(4))
def test_put_runs_writes_what_put_array_writes(tmp_path, seed):
    """The same units through both paths, including a run that skips a queue offset (it
    goes through put_array's gap filling) and one already present (ignored)."""
    rng = np.random.default_rng(seed)
    queues = 7
    a = {q: ConsumeQueue(str(tmp_path / "a"), "t", q, 64) for q in range(queues)}
    b = {q: ConsumeQueue(str(tmp_path / "b"), "t", q, 64) for q in range(queues)}
    nxt = dict.fromkeys(range(queues), 0)
    for round_ in range(6):
        qids, phys, sizes, tags = _columns(rng, queues, int(rng.integers(1, 200)))
        qoffs = np.empty(len(qids), dtype=np.int64)
        for i, q in enumerate(qids.tolist()):
            qoffs[i] = nxt[q]
            nxt[q] += 1
        if round_ == 3:  # a gap in queue qids[0] and a unit already present
            qoffs[0] += 2
            nxt[int(qids[0])] += 2
        order = np.argsort(qids, kind="stable")
        sk = qids[order]
        starts = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1]))).tolist()
        cqmod.put_runs(qoffs, phys, sizes, tags, order, starts,
                       lambda row: a[int(qids[row])])
        for s_, e in zip(starts, starts[1:] + [len(qids)]):
            sel = order[s_:e]
            b[int(qids[sel[0]])].put_array(qoffs[sel], phys[sel], sizes[sel], tags[sel])
    for q in range(queues):
        assert a[q].max_units == b[q].max_units
        assert [a[q].unit(i) for i in range(a[q].max_units)] == \
            [b[q].unit(i) for i in range(b[q].max_units)]
        assert len(a[q].files) == len(b[q].files) > 0
        a[q].close()
        b[q].close()


def test_put_runs_with_one_group(tmp_path):
    cq = ConsumeQueue(str(tmp_path), "t", 0, 16)
    q = np.arange(40, dtype=np.int64)
    cqmod.put_runs(q, q * 100, np.full(40, 100, dtype=np.int64), np.zeros(40, np.int64),
                   None, [0], lambda row: cq)
    assert cq.max_units == 40 and len(cq.files) == 3
    assert cq.unit(39) == (3900, 100, 0)
    cq.close()

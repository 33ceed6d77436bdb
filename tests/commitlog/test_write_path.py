"""The commitlog append path (issue 9, P1-P3): the transient store pool (a run of messages of
``POOL_MIN_BYTES`` or more is encoded into one reused buffer and committed with ``pwrite``)
writes the same bytes as the encoding straight into the mapping, rolls back on a full disk
like ``write`` mode, and its flush covers the descriptor; the single ``append()`` short path
writes what a one-message ``append_batch`` writes."""
from __future__ import annotations

import os
import shutil
import time

import pytest

import mqstore
from mqstore.engines.commitlog import commitlog as cl_mod
from mqstore.engines.commitlog import mapped_file as mf_mod
from tests.faults.test_commitlog_full_disk import Disk, _fill_until_full, _values

FIXED_NS = 1_700_000_000_123 * 1_000_000


def _fixed(s):
    """Make a store's encoding deterministic: a fixed UNIQ_KEY prefix (same length)."""
    s._uniq_prefix = "0" * len(s._uniq_prefix)
    s._uniq_prefix_b = s._uniq_prefix.encode("ascii")
    return s


def _log_bytes(s) -> bytes:
    cl = s.commitlog
    out = b""
    for mf in cl.files:
        end = min(mf.file_size, cl.max_offset - mf.file_from_offset)
        out += bytes(mf.mm[:end])
    return out


def _batches():
    big = [bytes([i % 251]) * (700 + i) for i in range(60)]        # about 50 KiB: pooled
    small = [b"s%03d" % i for i in range(20)]                      # a few KiB: the mapping
    keyed = [mqstore.Message(b"k" * 900, key=b"key%d" % i, tag="tg") for i in range(40)]
    return [big, small, keyed, big[:3]]


@pytest.mark.parametrize("write_mode", ["mmap", "write"])
@pytest.mark.parametrize("file_size", [1 << 20, 40_000])
def test_pool_writes_the_bytes_the_mapping_path_writes(tmp_path, monkeypatch, write_mode,
                                                       file_size):
    """The same batches, with the pool and with every run encoded into the mapping (pool
    threshold out of reach), give identical CommitLog bytes, file rolls included."""
    monkeypatch.setattr(time, "time_ns", lambda: FIXED_NS)
    logs = []
    for pool_min in (cl_mod.POOL_MIN_BYTES, 1 << 40):
        monkeypatch.setattr(cl_mod, "POOL_MIN_BYTES", pool_min)
        path = tmp_path / f"s{pool_min}"
        s = _fixed(mqstore.open(str(path), "commitlog", flush="os", write_mode=write_mode,
                                mapped_file_size=file_size))
        s.create_topic("t", 2)
        for j, b in enumerate(_batches()):
            s.append_batch("t", b, partition=j % 2)
        s.append("t", b"one")
        logs.append(_log_bytes(s))
        got = _values(s, "t", 0) + _values(s, "t", 1)
        s.close()
        want = [m.value if isinstance(m, mqstore.Message) else m
                for j, b in enumerate(_batches()) for m in b if j % 2 == 0]
        assert got[:len(want)] == want
    assert len(logs[0]) > 100_000
    assert logs[0] == logs[1]


def test_a_large_run_goes_through_the_pool_and_a_small_one_into_the_mapping(tmp_path):
    s = mqstore.open(str(tmp_path / "s"), "commitlog", flush="os")
    s.create_topic("t")
    s.append_batch("t", [b"x" * 10] * 5, partition=0)
    mf = s.commitlog.files[-1]
    assert not mf._pwritten and len(s.commitlog._pool_buf) == 0
    s.append_batch("t", [b"y" * 1024] * 100, partition=0)
    assert mf._pwritten
    buf = s.commitlog._pool_buf
    assert len(buf) >= 100 * 1024
    s.append_batch("t", [b"z" * 1024] * 50, partition=0)
    assert s.commitlog._pool_buf is buf  # reused, not a fresh buffer per call
    # a write through the mapping after the pooled one starts at the right place
    s.append("t", b"after")
    vals = _values(s)
    assert vals == [b"x" * 10] * 5 + [b"y" * 1024] * 100 + [b"z" * 1024] * 50 + [b"after"]
    s.close()
    s = mqstore.open(str(tmp_path / "s"), "commitlog")
    assert _values(s) == vals
    s.close()


def test_a_run_larger_than_the_pool_still_goes_into_the_mapping(tmp_path, monkeypatch):
    monkeypatch.setattr(cl_mod, "POOL_MAX_BYTES", 64 << 10)
    s = mqstore.open(str(tmp_path / "s"), "commitlog", flush="os")
    s.create_topic("t")
    vals = [b"%05d" % i * 200 for i in range(100)]  # about 110 KiB
    s.append_batch("t", vals, partition=0)
    assert not s.commitlog.files[-1]._pwritten
    assert _values(s) == vals
    s.close()


def test_flush_after_a_pooled_write_syncs_the_descriptor_where_msync_is_used(
        tmp_path, monkeypatch):
    """Where the mapping is synced with msync (not Linux), a file that took a pwrite also
    gets an fdatasync: msync need not cover bytes written with pwrite."""
    monkeypatch.setattr(mf_mod, "_FDATASYNC_COVERS_MAPPINGS", False)
    s = mqstore.open(str(tmp_path / "s"), "commitlog", flush="os")
    s.create_topic("t")
    s.append_batch("t", [b"a" * 100], partition=0)
    cl_fd = s.commitlog.files[-1]._fd
    calls = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    s.flush()
    assert cl_fd not in calls  # written through the mapping only: msync
    s.append_batch("t", [b"b" * 1024] * 40, partition=0)
    s.flush()
    assert s.commitlog.files[-1]._pwritten
    assert calls.count(cl_fd) == 1
    s.close()


def test_a_pooled_batch_cut_short_by_a_full_disk_leaves_nothing(tmp_path, monkeypatch):
    """mmap mode, a pooled batch whose pwrite is cut short by ENOSPC: rolled back as in write
    mode, so neither this process, a clean restart nor a crash image sees any of it."""
    path = str(tmp_path / "s")
    # files small enough to be reserved whole: the pwrite is where the disk is found full
    disk = Disk(monkeypatch, kinds=("/commitlog/",))
    disk.pwrite_budget = 20_000  # some whole messages of the failing batch get through
    s = mqstore.open(path, "commitlog", mapped_file_size=1 << 16, cq_units_per_file=1024)
    s.create_topic("t")
    acked = _fill_until_full(s, disk, batch=60)  # 60 x ~330 B: pooled runs
    assert len(acked) == 180 and s.commitlog.files[-1]._pwritten
    crash = path + "-crash"
    shutil.copytree(path, crash, ignore=shutil.ignore_patterns("lock"))
    assert _values(s) == acked
    disk.full = False
    assert s.append("t", b"next", partition=0).offset == len(acked)
    acked.append(b"next")
    s.close()
    s = mqstore.open(path, "commitlog")
    assert _values(s) == acked
    s.close()
    s = mqstore.open(crash, "commitlog")
    assert _values(s) == acked[:-1]
    s.close()


def test_single_append_writes_what_a_one_message_batch_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "time_ns", lambda: FIXED_NS)
    logs = []
    for single in (True, False):
        s = _fixed(mqstore.open(str(tmp_path / f"s{single}"), "commitlog", flush="os",
                                mapped_file_size=4096))
        s.create_topic("t", 3)
        for i in range(40):  # several file rolls, round-robin and explicit partitions
            v = b"v%03d" % i * (i % 7 + 1)
            part = None if i % 3 else i % 3
            if single:
                s.append("t", v, partition=part)
            else:
                s.append_batch("t", [mqstore.Message(v, partition=part)]
                               if part is not None else [v])
        logs.append(_log_bytes(s))
        s.close()
    assert logs[0] == logs[1]

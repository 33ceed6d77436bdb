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


# ----- plain values from the bytes objects (mqstore._cl_write vs _purepy_cl_write) -----
from mqstore import _purepy_cl_write as ref  # noqa: E402
from mqstore import native  # noqa: E402

try:
    from mqstore import _cl_write as ext
except ImportError:  # pragma: no cover - a pure-Python install
    ext = None

needs_ext = pytest.mark.skipif(ext is None, reason="mqstore._cl_write is not built")


def _random_values(rnd, n):
    return [rnd.randbytes(rnd.choice([0, 1, 7, 100, 1024, 5000])) for _ in range(n)]


def _both(fn_name, *args):
    """(result or exception type) of the extension and of the reference."""
    out = []
    for mod in (ext, ref):
        try:
            out.append(getattr(mod, fn_name)(*args))
        except (TypeError, ValueError) as exc:
            out.append(type(exc))
    return out


@needs_ext
@pytest.mark.parametrize("seed", range(6))
def test_values_scan_and_fit_match_the_reference(seed):
    import random
    rnd = random.Random(seed)
    vals = _random_values(rnd, rnd.randrange(0, 60))
    a, b = _both("values_scan", vals, 133, rnd.choice([200, 1200, 10 ** 9]))
    assert a == b
    for first in (0, len(vals) // 2, len(vals)):
        for room in (-5, 0, 150, 4000, 10 ** 9):
            a, b = _both("values_fit", vals, first, 133, room)
            assert a == b
    assert _both("values_fit", vals, len(vals) + 1, 133, 10) == [ValueError, ValueError]
    assert _both("values_scan", vals + [bytearray(b"x")], 1, 10) == [TypeError, TypeError]
    assert _both("values_scan", iter(vals), 1, 10) == [TypeError, TypeError]
    assert _both("values_fit", [b"a", "b"], 0, 1, 100) == [TypeError, TypeError]


@needs_ext
@pytest.mark.parametrize("seed", range(6))
def test_encode_values_into_matches_the_reference(seed):
    import random
    rnd = random.Random(100 + seed)
    vals = _random_values(rnd, rnd.randrange(1, 40))
    topic, prefix = b"topic-%d" % seed, b"ABCDEF0123456789"
    overhead = 91 + 20 + len(topic) + ref.plain_props_len(len(prefix))
    total, _bad = ext.values_scan(vals, overhead, 1 << 30)
    first = rnd.randrange(0, len(vals))
    count = rnd.randrange(0, len(vals) - first + 1)
    bufs = [bytearray(total + 50), bytearray(total + 50)]
    args = (7, topic, vals, first, count, prefix, 1000 + seed, 3, 55, 1 << 33,
            1_700_000_000_000 + seed)
    n = [mod.encode_values_into(buf, *args) for mod, buf in zip((ext, ref), bufs)]
    assert n[0] == n[1] == sum(overhead + len(v) for v in vals[first:first + count])
    assert bufs[0] == bufs[1]
    # the run is what cl_encode makes of the same messages
    run = vals[first:first + count]
    want = ref.cl_encode(topic, b"".join(run),
                         [sum(map(len, run[:j])) for j in range(count)], [len(v) for v in run],
                         None, None, None, prefix, 1000 + seed, [3] * count,
                         range(55, 55 + count), None, 1 << 33, 1_700_000_000_000 + seed)
    assert bytes(bufs[0][7:7 + n[0]]) == bytes(want)
    # does not fit: ValueError from both
    if n[0]:
        small = [bytearray(n[0] + 6), bytearray(n[0] + 6)]
        assert [type(e) for e in _errors(small, args)] == [ValueError, ValueError]
    bad = (7, topic, vals, first, len(vals) + 1, prefix, 0, 3, 55, 0, 0)
    assert _both("encode_values_into", bytearray(10), *bad) == [ValueError, ValueError]
    assert _both("encode_values_into", b"read-only", *args) == [TypeError, TypeError]
    assert _both("encode_values_into", bytes(total + 50), *args) == [TypeError, TypeError]


def _errors(bufs, args):
    out = []
    for mod, buf in zip((ext, ref), bufs):
        try:
            mod.encode_values_into(buf, *args)
        except ValueError as exc:
            out.append(exc)
    return out


@needs_ext
def test_encode_one_into_matches_the_reference():
    args = (b"t", b"hello world", b"0123456789ABCDEF", 42, 2, 17, 4096, 1_700_000_000_000)
    bufs = [bytearray(400), bytearray(400)]
    n = [mod.encode_one_into(buf, 100, *args) for mod, buf in zip((ext, ref), bufs)]
    assert n[0] == n[1] > 0 and bufs[0] == bufs[1]
    assert _both("encode_one_into", bytearray(100), 0, *args) == [ValueError, ValueError]
    assert _both("encode_one_into", bytearray(400), 401, *args) == [ValueError, ValueError]
    assert _both("encode_one_into", bytearray(400), 0, b"t", bytearray(b"x"),
                 *args[2:]) == [TypeError, TypeError]
    assert _both("encode_one_into", bytearray(400), 0, b"t", b"x", b"p", 1, 1 << 40, 0, 0,
                 0) == [ValueError, ValueError]  # queue id outside int32


@pytest.mark.parametrize("file_size", [1 << 20, 30_000])
def test_plain_value_batches_write_what_the_general_path_writes(tmp_path, monkeypatch,
                                                                file_size):
    """append_batch of plain values (the values path: cl_values_fit + cl_encode_values_into)
    and the same batches through the general column path give identical CommitLog bytes."""
    monkeypatch.setattr(time, "time_ns", lambda: FIXED_NS)
    real_scan = native.cl_values_scan

    def no_scan(*_a):
        raise TypeError

    logs = []
    for short in (True, False):
        monkeypatch.setattr(native, "cl_values_scan", real_scan if short else no_scan)
        s = _fixed(mqstore.open(str(tmp_path / f"s{short}"), "commitlog", flush="os",
                                mapped_file_size=file_size))
        s.create_topic("t", 2)
        for j in range(12):
            vals = [b"%d-%d" % (j, i) * (j * 7 + i % 5) for i in range(j * 9 + 1)]
            md = s.append_batch("t", vals, partition=j % 2)
            assert md[0].partition == j % 2
        logs.append(_log_bytes(s))
        s.close()
    assert logs[0] == logs[1] and len(logs[0]) > 30_000


def test_a_too_large_plain_value_is_refused_before_anything_is_written(tmp_path):
    s = mqstore.open(str(tmp_path / "s"), "commitlog", max_message_bytes=2000)
    s.create_topic("t")
    with pytest.raises(mqstore.errors.RecordTooLargeError, match="message 2 of the batch"):
        s.append_batch("t", [b"a", b"b", b"c" * 5000], partition=0)
    assert s.end_offset("t", 0) == 0
    assert s.append_batch("t", [b"a", b"b"], partition=0)[1].offset == 1
    s.close()


@pytest.mark.parametrize("nbytes", [100, 40_000])  # into the mapping / through the pool
def test_an_encoder_that_writes_the_wrong_count_fails_the_put_and_leaves_nothing(tmp_path,
                                                                                 nbytes):
    s = mqstore.open(str(tmp_path / "s"), "commitlog", flush="os")
    s.create_topic("t")
    s.append("t", b"first")
    cl = s.commitlog
    before = cl.max_offset
    with cl.put_lock, pytest.raises(mqstore.errors.MQStoreError, match="disagree"):
        cl.put_runs_locked(1, nbytes, lambda _i, room: (1, nbytes),
                           lambda phys, first, k, ts, out, at: nbytes - 1)
    assert cl.max_offset == before
    assert s.append("t", b"second").offset == 1
    s.close()
    s = mqstore.open(str(tmp_path / "s"), "commitlog")
    assert _values(s) == [b"first", b"second"]
    s.close()


@needs_ext
@pytest.mark.parametrize("seed", [5, 11])
def test_hostile_arguments_give_the_reference_result_or_error(seed):
    """Random, often absurd arguments (positions and counts outside the buffer or the
    values, numbers outside int64, over-long topics): the C module and the reference give
    the same result or the same error type, and the C module never crashes (the run that
    found an int64 overflow in values_scan and a missing topic check before the loop)."""
    import random
    rnd = random.Random(seed)
    big = [-1, 0, 1, 2, 5, 100, 10 ** 6, 2 ** 31, 2 ** 40, -2 ** 63, 2 ** 63 - 1, 2 ** 63 - 5,
           2 ** 64]

    def ints():
        return rnd.choice(big)

    def result(mod, name, args):
        try:
            return "ok", getattr(mod, name)(*args), bytes(args[0]) if name.startswith(
                "encode") else None
        except (TypeError, ValueError, OverflowError) as exc:
            return "error", type(exc)
    for _ in range(400):
        vals = [rnd.randbytes(rnd.choice([0, 3, 50, 300])) for _ in range(rnd.randrange(0, 8))]
        size = rnd.randrange(0, 3000)
        cases = [
            ("values_fit", lambda: (vals, ints(), ints(), ints())),
            ("values_scan", lambda: (vals, ints(), ints())),
            ("encode_values_into", lambda: (
                bytearray(size), rnd.choice([0, 0, 5, ints()]),
                b"t" * rnd.choice([0, 1, 255, 256]), vals, rnd.choice([0, 1, ints()]),
                rnd.choice([0, 1, 2, len(vals), ints()]), b"P" * rnd.choice([0, 16]), ints(),
                rnd.choice([0, 3, ints()]), ints(), ints(), ints())),
            ("encode_one_into", lambda: (
                bytearray(size % 600), rnd.choice([0, 7, ints()]), b"tp",
                rnd.randbytes(rnd.choice([0, 10, 400])), b"P" * 16, ints(),
                rnd.choice([0, 3, ints()]), ints(), ints(), ints())),
        ]
        for name, make in cases:
            args = make()
            copy = (bytearray(args[0]),) + args[1:] if name.startswith("encode") else args
            assert result(ext, name, args) == result(ref, name, copy), (name, args[1:])

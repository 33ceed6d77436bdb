"""A full disk on the segments engine (issue 8, item 12).

ENOSPC is injected deterministically by replacing ``os`` functions for the duration of a
test (the engine calls them as ``os.pwritev``, ``os.ftruncate``, ``os.posix_fallocate``...);
a real small tmpfs is used only when running as root and mount is permitted.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess

import pytest

import mqstore
from mqstore.damage import TORN_TAIL
from mqstore.engines.segments import format as fmt
from mqstore.errors import StoreFullError
from tests.segments.conftest import SMALL, crash_image, segment_files


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class ShortThenFull:
    """The first ``os.pwrite`` / ``os.pwritev`` writes half of what it is given and returns
    the short count; every later one fails with ENOSPC (what a filling disk does)."""

    def __init__(self, monkeypatch):
        self.mp = monkeypatch
        self.real_pwrite = os.pwrite
        self.real_pwritev = os.pwritev
        self.calls = 0

    def __enter__(self):
        def pwritev(fd, parts, pos):
            self.calls += 1
            if self.calls > 1:
                _enospc()
            data = b"".join(parts)
            return self.real_pwrite(fd, data[: len(data) // 2], pos)

        self.mp.setattr(os, "pwritev", pwritev)
        self.mp.setattr(os, "pwrite", lambda fd, data, pos: pwritev(fd, [data], pos))
        return self

    def __exit__(self, *exc):
        self.mp.setattr(os, "pwritev", self.real_pwritev)
        self.mp.setattr(os, "pwrite", self.real_pwrite)


def _values(s):
    out, off = [], 0
    while off < s.end_offset("t", 0):
        page = s.read("t", 0, off)
        out += [r.value for r in page]
        off = page[-1].offset + 1
    return out


def _open(path, **kw):
    return mqstore.open(path, "segments", **{**SMALL, "segment_bytes": 1 << 20, **kw})


def test_enospc_on_append_raises_store_full_and_keeps_nothing(tmp_path, monkeypatch):
    path = str(tmp_path / "s")
    s = _open(path)
    s.create_topic("t")
    vals = [b"v%03d" % i for i in range(10)]
    for v in vals:
        s.append("t", v)
    (log,) = segment_files(path)
    size = os.path.getsize(log)
    with ShortThenFull(monkeypatch):
        with pytest.raises(StoreFullError) as info:
            s.append_batch("t", [b"x" * 300] * 5)
    assert info.value.errno == errno.ENOSPC
    assert os.path.getsize(log) == size  # cut back: nothing half-written
    assert s.end_offset("t", 0) == 10 and _values(s) == vals  # still readable
    assert s.append("t", b"after").offset == 10  # space freed: appends again
    s.close()
    with _open(path) as r:
        assert _values(r) == vals + [b"after"]


@pytest.mark.parametrize("how", ["crash", "close"])
def test_failed_cut_back_is_dropped_at_the_next_open(tmp_path, monkeypatch, how):
    """The cut after a failed append fails too: the partial batch is past the acknowledged
    end, so the next open must drop it (and a close must not call the shutdown clean)."""
    path = str(tmp_path / "s")
    s = _open(path)
    s.create_topic("t")
    vals = [b"v%03d" % i for i in range(10)]
    for v in vals:
        s.append("t", v)
    s.flush()
    (log,) = segment_files(path)
    size = os.path.getsize(log)
    log_fd = s._topics["t"][0].segments[-1].fd
    real_ftruncate = os.ftruncate

    def ftruncate(fd, length):  # the log cannot be cut (an I/O error, say)
        if fd == log_fd:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_ftruncate(fd, length)

    with ShortThenFull(monkeypatch):
        monkeypatch.setattr(os, "ftruncate", ftruncate)
        with pytest.raises(StoreFullError):
            s.append_batch("t", [b"x" * 300] * 5)
        monkeypatch.undo()
    assert os.path.getsize(log) > size  # the partial batch is still in the file
    assert _values(s) == vals
    if how == "crash":
        target = crash_image(s, str(tmp_path / "img"))
        os.truncate(segment_files(target)[0], os.path.getsize(log))  # as the disk holds it
    else:
        monkeypatch.setattr(os, "ftruncate", ftruncate)  # still cannot cut it at close
        s.close()
        monkeypatch.undo()
        target = path
        assert not os.path.exists(os.path.join(path, fmt.CLEAN_SHUTDOWN_FILE))
    with _open(target) as r:
        assert _values(r) == vals
        assert r.stats()["recovery"][TORN_TAIL] == 1
        assert r.append("t", b"next").offset == 10
    if how == "crash":
        s.close()


def test_next_append_cuts_a_partial_batch_left_by_a_failed_cut(tmp_path, monkeypatch):
    path = str(tmp_path / "s")
    with _open(path) as s:
        s.create_topic("t")
        s.append("t", b"a")
        with ShortThenFull(monkeypatch):
            monkeypatch.setattr(os, "ftruncate", _enospc)
            with pytest.raises(StoreFullError):
                s.append_batch("t", [b"x" * 300] * 5)
            monkeypatch.undo()
        s.append("t", b"b")
        assert _values(s) == [b"a", b"b"]
    with _open(path) as r:
        assert _values(r) == [b"a", b"b"]
        assert sum(r.stats()["recovery"].values()) == 0


def test_index_without_space_is_dropped_not_the_append(tmp_path, monkeypatch):
    """posix_fallocate of an index page fails: no SIGBUS, no failed append; the index is
    given up (its files unlinked) and rebuilt from the log at the next open."""
    path = str(tmp_path / "s")
    s = _open(path, index_interval_bytes=0)
    s.create_topic("t")
    monkeypatch.setattr(os, "posix_fallocate", _enospc)
    vals = [b"value-%04d" % i for i in range(300)]
    for v in vals:
        s.append("t", v)
    monkeypatch.undo()
    assert segment_files(path, suffix=".index") == []
    assert s.read("t", 0, 150, max_records=1)[0].value == vals[150]
    assert _values(s) == vals
    s.close()
    with _open(path, index_interval_bytes=0) as r:
        assert r.stats()["recovery"]["derived_rebuilt"] == 1
        assert r.read("t", 0, 150, max_records=1)[0].value == vals[150]
    assert mqstore.open(path, read_only=True).verify_files(path) == []


def _all_writes_fail(monkeypatch):
    for name in ("write", "pwrite", "pwritev", "writev", "posix_fallocate"):
        monkeypatch.setattr(os, name, _enospc)


def test_reopen_while_the_disk_is_full(tmp_path, monkeypatch):
    """A crash image whose indexes need a rebuild and whose checkpoints need rewriting opens
    while nothing can be written; it is readable, refuses appends with StoreFullError, and
    takes them again once space is freed."""
    path = str(tmp_path / "s")
    s = _open(path, segment_bytes=2000)
    s.create_topic("t")
    vals = [b"value-%04d" % i for i in range(200)]
    for v in vals:
        s.append("t", v)
    img = crash_image(s, str(tmp_path / "img"))
    s.close()
    for idx in segment_files(img, suffix=".index")[:2]:
        os.unlink(idx)
    _all_writes_fail(monkeypatch)
    r = _open(img, segment_bytes=2000)
    assert _values(r) == vals
    with pytest.raises(StoreFullError):
        r.append("t", b"no room")
    assert r.end_offset("t", 0) == 200
    monkeypatch.undo()
    assert r.append("t", b"room").offset == 200
    r.close()
    with _open(img, segment_bytes=2000) as again:
        assert _values(again) == vals + [b"room"]


def test_roll_on_a_full_disk_keeps_the_active_segment(tmp_path, monkeypatch):
    path = str(tmp_path / "s")
    s = _open(path, segment_bytes=1000)
    s.create_topic("t")
    s.append("t", b"x" * 800)
    real_open = os.open

    def no_new_files(p, flags, *a, **k):
        if flags & os.O_CREAT and str(p).endswith(fmt.LOG_SUFFIX):
            _enospc()
        return real_open(p, flags, *a, **k)

    monkeypatch.setattr(os, "open", no_new_files)
    with pytest.raises(StoreFullError):
        s.append("t", b"y" * 800)  # needs a roll: the new segment cannot be created
    monkeypatch.undo()
    assert len(segment_files(path)) == 1
    assert s.append("t", b"z" * 100).offset == 1  # the old segment is still the active one
    assert s.append("t", b"w" * 800).offset == 2  # and a roll works again
    s.close()
    with _open(path, segment_bytes=1000) as r:
        assert [len(v) for v in _values(r)] == [800, 100, 800]
    assert mqstore.open(path, read_only=True).verify_files(path) == []


@pytest.fixture
def small_tmpfs(tmp_path):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and mount for a real tmpfs")
    d = tmp_path / "tmpfs"
    d.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mount not permitted: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield str(d)
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_real_full_tmpfs(small_tmpfs):
    path = os.path.join(small_tmpfs, "s")
    s = mqstore.open(path, "segments", segment_bytes=256 * 1024, index_interval_bytes=256,
                     segment_index_bytes=64 * 1024)
    s.create_topic("t")
    acked = []
    with pytest.raises(StoreFullError):
        for i in range(100_000):
            batch = [b"%06d" % i + b"x" * 1000] * 4
            s.append_batch("t", batch)
            acked += batch
    assert len(acked) > 100
    assert _values(s) == acked
    s.close()  # may not manage its checkpoints: the next open recovers
    filler = os.path.join(small_tmpfs, "filler")
    with open(filler, "wb", buffering=0) as f:  # nothing at all left
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    r = mqstore.open(path, "segments", segment_bytes=256 * 1024, index_interval_bytes=256,
                     segment_index_bytes=64 * 1024)
    assert _values(r) == acked
    with pytest.raises(StoreFullError):  # (the open may have freed a page or two)
        r.append_batch("t", [b"y" * 1000] * 20)
    assert _values(r) == acked
    os.unlink(filler)
    r.append("t", b"after")
    r.close()
    with mqstore.open(path, read_only=True) as ro:
        assert _values(ro) == acked + [b"after"]


def test_create_topic_on_a_full_disk_leaves_no_topic(tmp_path, monkeypatch):
    path = str(tmp_path / "s")
    s = _open(path)
    real_open = os.open
    made = []

    def open_(p, flags, *a, **k):
        if flags & os.O_CREAT and str(p).endswith(fmt.LOG_SUFFIX):
            made.append(p)
            if len(made) > 3:
                _enospc()
        return real_open(p, flags, *a, **k)

    monkeypatch.setattr(os, "open", open_)
    with pytest.raises(StoreFullError):
        s.create_topic("big", partitions=8)
    monkeypatch.undo()
    assert s.topics() == [] and not any(n.startswith("big-") for n in os.listdir(path))
    s.create_topic("big", partitions=8)
    assert s.partitions("big") == 8
    s.close()


def test_fsync_enospc_in_flush_is_store_full_and_nothing_is_marked_synced(tmp_path, monkeypatch):
    path = str(tmp_path / "s")
    s = _open(path)
    s.create_topic("t")
    s.append("t", b"a")
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(StoreFullError):
        s.flush()
    monkeypatch.undo()
    log = s._topics["t"][0]
    assert log.recovery_point == 0 and log.has_unflushed  # retried by the next flush
    s.flush()
    assert log.recovery_point == 1 and not log.has_unflushed
    s.close()

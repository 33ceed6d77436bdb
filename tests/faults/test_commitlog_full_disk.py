"""A full disk in the commitlog engine (issue 8, item 12), one test per failure mode.

ENOSPC is injected deterministically: ``os.posix_fallocate`` (every mapped file reserves its
space before it is written, so that is where ``mmap`` mode meets a full disk) and ``os.pwrite``
(``write_mode="write"``) fail for the files of one kind, chosen by path. The files here are
smaller than a reservation chunk, so each is reserved whole when created; chunk boundaries
inside a file are tested in ``test_commitlog_reservation.py``. The last test runs a real store
on a 4 MiB tmpfs in a subprocess (root only) to show that nothing dies of SIGBUS.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import mqstore
from mqstore.errors import MQStoreError, StoreFullError

SMALL = {"mapped_file_size": 4096, "cq_units_per_file": 16, "hash_slots": 64,
         "index_entries": 128}
VALUE = b"v" * 150  # about 300 bytes as a CommitLog message: 13 per 4 KiB file


def _path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class Disk:
    """Fail the write-like calls on files whose path contains one of ``kinds`` while
    ``full`` is set; ``pwrite_budget`` lets that many bytes through first (a short write)."""

    def __init__(self, monkeypatch, kinds=("/commitlog/", "/consumequeue/", "/index/")):
        self.full = False
        self.kinds = kinds
        self.pwrite_budget = 0
        self.fallocates = 0
        real_fallocate, real_pwrite = os.posix_fallocate, os.pwrite

        def fallocate(fd, offset, length):
            if self.full and self._hit(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.fallocates += 1
            return real_fallocate(fd, offset, length)

        def pwrite(fd, data, offset):
            if self.full and self._hit(fd):
                if self.pwrite_budget <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                n = min(len(data), self.pwrite_budget)
                self.pwrite_budget -= n
                return real_pwrite(fd, bytes(memoryview(data)[:n]), offset)
            return real_pwrite(fd, data, offset)

        monkeypatch.setattr(os, "posix_fallocate", fallocate)
        monkeypatch.setattr(os, "pwrite", pwrite)

    def _hit(self, fd: int) -> bool:
        p = _path(fd)
        return any(k in p for k in self.kinds)


def _open(path, **opts):
    """Open with small files (a new store), or with the shape the store already has."""
    if os.path.exists(os.path.join(path, "mqstore.json")):
        return mqstore.open(path, "commitlog", **{k: v for k, v in opts.items()
                                                  if k not in SMALL})
    return mqstore.open(path, "commitlog", **{**SMALL, **opts})


def _values(s, topic="t", partition=0):
    out, off = [], s.start_offset(topic, partition)
    end = s.end_offset(topic, partition)
    while off < end:
        page = s.read(topic, partition, off)
        out += [r.value for r in page]
        off = page[-1].offset + 1
    return out


def _fill_until_full(s, disk, batch=3):
    """Append batches (value i.j) until StoreFullError; return the acknowledged values."""
    acked = []
    with pytest.raises(StoreFullError) as info:
        for i in range(1000):
            vals = [b"%s-%04d-%d" % (VALUE, i, j) for j in range(batch)]
            if i == 3:
                disk.full = True
            s.append_batch("t", vals, partition=0)
            acked += vals
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value, MQStoreError) and isinstance(info.value, OSError)
    return acked


def _commitlog_files(store_path):
    return sorted(os.listdir(os.path.join(store_path, "commitlog")))


@pytest.mark.parametrize("write_mode", ["mmap", "write"])
def test_a_new_commitlog_file_on_a_full_disk_is_store_full_error(store_path, monkeypatch,
                                                                 write_mode):
    """Rolling to a new CommitLog file preallocates it: a full disk fails the append
    cleanly (no sparse file left behind for a later mmap write to SIGBUS on), the store
    stays readable, takes appends again once space is freed, and a restart finds exactly
    the acknowledged messages."""
    disk = Disk(monkeypatch, kinds=("/commitlog/",))
    s = _open(store_path, write_mode=write_mode)
    s.create_topic("t")
    files_before_full = None
    acked = []
    with pytest.raises(StoreFullError):
        for i in range(100):
            if i == 3:
                disk.full = True
                files_before_full = _commitlog_files(store_path)
            s.append_batch("t", [b"%s-%04d" % (VALUE, i)] * 2, partition=0)
            acked += [b"%s-%04d" % (VALUE, i)] * 2
    assert _commitlog_files(store_path) == files_before_full  # nothing half-created
    assert _values(s) == acked
    disk.full = False
    s.append("t", b"after", partition=0)
    acked.append(b"after")
    s.close()
    s = _open(store_path)
    assert _values(s) == acked
    s.close()


def test_a_failed_batch_in_write_mode_leaves_nothing_after_a_restart(store_path, monkeypatch):
    """write_mode="write": a batch whose pwrite is cut short by ENOSPC (some whole messages
    of it reached the file) is rolled back, so neither a clean restart nor a crash image
    finds any message of it (before: 60 acknowledged, 62 after a restart)."""
    disk = Disk(monkeypatch, kinds=("/commitlog/",))
    disk.pwrite_budget = 700  # two whole messages of the failing batch get through
    s = _open(store_path, write_mode="write", mapped_file_size=1 << 16)
    s.create_topic("t")
    acked = _fill_until_full(s, disk, batch=4)
    assert len(acked) == 12
    crash_image = store_path + "-crash"
    shutil.copytree(store_path, crash_image, ignore=shutil.ignore_patterns("lock"))
    assert _values(s) == acked
    disk.full = False
    s.close()
    s = _open(store_path)
    assert _values(s) == acked
    s.close()
    s = _open(crash_image)  # abort is present: an abnormal recovery of a SIGKILL image
    assert s.recovery["abnormal"] is True
    assert _values(s) == acked
    assert s.append("t", b"after", partition=0).offset == len(acked)
    s.close()


def test_a_failed_batch_takes_appends_again_at_the_same_offset(store_path, monkeypatch):
    """After a failed batch the next append gets the offset the failed one would have had,
    and the bytes it left are gone (zeroed), not followed by stale messages."""
    disk = Disk(monkeypatch, kinds=("/commitlog/",))
    disk.pwrite_budget = 1000
    s = _open(store_path, write_mode="write", mapped_file_size=1 << 16)
    s.create_topic("t")
    acked = _fill_until_full(s, disk, batch=8)
    disk.full = False
    md = s.append("t", b"short", partition=0)
    assert md.offset == len(acked)
    s.close()
    s = _open(store_path)
    assert _values(s) == acked + [b"short"]
    s.close()


def test_a_new_consume_queue_file_on_a_full_disk_fails_the_append_not_the_dispatcher(
        store_path, monkeypatch):
    """The ConsumeQueue file a batch's units go to is created before the batch is written,
    so a full disk fails the append (nothing written) instead of stopping the dispatcher
    after the messages were acknowledged."""
    disk = Disk(monkeypatch, kinds=("/consumequeue/",))
    s = _open(store_path, mapped_file_size=1 << 16)
    s.create_topic("t")
    acked = _fill_until_full(s, disk, batch=5)
    assert len(acked) == 15  # 16 units per file: the 4th batch needs the second file
    assert _values(s) == acked
    s.dispatcher.check()
    disk.full = False
    s.append_batch("t", [b"after"] * 5, partition=0)
    acked += [b"after"] * 5
    assert _values(s) == acked
    s.close()
    s = _open(store_path)
    assert _values(s) == acked
    s.close()


@pytest.mark.parametrize("crashed", [False, True])
def test_a_new_index_file_on_a_full_disk_stalls_the_index_and_reopen_reindexes(
        store_path, monkeypatch, crashed):
    """An IndexFile is a hint: when a new one cannot be created the appends go on, the
    ConsumeQueues still fill, and the next open (after a close, or from a crash image
    taken after a flush) re-indexes what was missed."""
    disk = Disk(monkeypatch, kinds=("/index/",))
    s = _open(store_path, mapped_file_size=1 << 16, index_entries=8)
    s.create_topic("t")
    for i in range(3):
        s.append("t", b"v%d" % i, key=b"k%d" % i, partition=0)
    disk.full = True
    for i in range(3, 12):
        s.append("t", b"v%d" % i, key=b"k%d" % i, partition=0)
    assert _values(s) == [b"v%d" % i for i in range(12)]
    s.dispatcher.check()
    assert s.index.stalled
    disk.full = False
    path = store_path
    if crashed:
        s.flush()  # the checkpoint must not claim the skipped keys were indexed
        path = store_path + "-crash"
        shutil.copytree(store_path, path, ignore=shutil.ignore_patterns("lock"))
    s.close()
    s = _open(path, index_entries=8)
    for i in range(12):
        assert [r.value for r in s.lookup_key("t", b"k%d" % i)] == [b"v%d" % i]
    s.close()


def _make_sparse(path: str) -> None:
    """Rewrite ``path`` as a sparse file holding only its non-zero prefix (an older store,
    whose files were created with ftruncate only)."""
    data = open(path, "rb").read()
    end = len(data.rstrip(b"\0"))
    os.unlink(path)
    with open(path, "wb") as f:
        f.truncate(len(data))
        f.write(data[:end])
    assert os.stat(path).st_blocks * 512 < len(data)


def test_an_old_sparse_file_is_preallocated_before_its_first_write(store_path, monkeypatch):
    """A CommitLog file left sparse by an older store is preallocated before anything is
    written into it: on a full disk the append fails with StoreFullError (instead of a mmap
    write into a hole dying of SIGBUS) and nothing changes; with space it is allocated."""
    s = _open(store_path, mapped_file_size=1 << 16)
    s.create_topic("t")
    s.append("t", b"first", partition=0)
    s.close()
    last = os.path.join(store_path, "commitlog", _commitlog_files(store_path)[-1])
    _make_sparse(last)
    disk = Disk(monkeypatch, kinds=("/commitlog/",))
    disk.full = True
    s = _open(store_path, mapped_file_size=1 << 16)  # reopen while full: fine
    assert _values(s) == [b"first"]
    with pytest.raises(StoreFullError):
        s.append("t", b"second", partition=0)
    disk.full = False
    s.append("t", b"second", partition=0)
    assert os.stat(last).st_blocks * 512 >= 1 << 16
    s.close()
    s = _open(store_path)
    assert _values(s) == [b"first", b"second"]
    s.close()


class _AllFull:
    """While ``full`` is set, every call that would need new blocks fails with ENOSPC, as
    on a real full file system: ``posix_fallocate``, ``write`` / ``pwrite`` past the end of
    a file or into a sparse one. Rewriting allocated bytes still works (no copy-on-write)."""

    def __init__(self, monkeypatch):
        self.full = False
        real_fallocate, real_pwrite, real_write = os.posix_fallocate, os.pwrite, os.write

        def needs_space(fd, offset, n):
            st = os.fstat(fd)
            return offset + n > st.st_size or st.st_blocks * 512 < st.st_size

        def fallocate(fd, offset, length):
            if self.full and needs_space(fd, offset, length):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fallocate(fd, offset, length)

        def pwrite(fd, data, offset):
            if self.full and needs_space(fd, offset, len(data)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_pwrite(fd, data, offset)

        def write(fd, data):
            if self.full and needs_space(fd, os.lseek(fd, 0, os.SEEK_CUR), len(data)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        monkeypatch.setattr(os, "posix_fallocate", fallocate)
        monkeypatch.setattr(os, "pwrite", pwrite)
        monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("crashed", [False, True])
def test_reopen_while_the_disk_is_full(store_path, monkeypatch, crashed):
    """A store reopens while the disk is full (after a clean close, and from a crash image
    whose recovery needs no new file): reads work, appends raise StoreFullError."""
    s = _open(store_path, mapped_file_size=1 << 16)
    s.create_topic("t")
    s.append_batch("t", [b"a", b"b", b"c"], partition=0)
    s.commit_offset("g", "t", 0, 2)
    path = store_path
    if crashed:
        path = store_path + "-crash"
        s.flush()
        shutil.copytree(store_path, path, ignore=shutil.ignore_patterns("lock"))
    s.close()
    disk = _AllFull(monkeypatch)
    disk.full = True
    s = _open(path, mapped_file_size=1 << 16)
    assert s.recovery["abnormal"] is crashed
    assert _values(s) == [b"a", b"b", b"c"]
    assert s.committed_offset("g", "t", 0) == 2
    with pytest.raises(StoreFullError):
        s.commit_offset("g", "t", 0, 3)
    assert s.committed_offset("g", "t", 0) == 2
    disk.full = False
    s.append("t", b"d", partition=0)
    s.close()
    s = _open(path)
    assert _values(s) == [b"a", b"b", b"c", b"d"]
    s.close()


@pytest.mark.parametrize("write_mode", ["mmap", "write"])
def test_close_while_full_before_the_first_checkpoint(store_path, monkeypatch, write_mode):
    """A disk that fills up before the first checkpoint was ever written: close (which
    writes it) must not need new space (the checkpoint file is preallocated when created),
    and the reopen finds everything acknowledged."""
    s = _open(store_path, write_mode=write_mode, mapped_file_size=1 << 16,
              flush_consume_queue_interval_ms=3_600_000)
    s.create_topic("t")
    s.append("t", b"a", partition=0)  # every file this store needs exists now
    disk = _AllFull(monkeypatch)
    disk.full = True
    s.append_batch("t", [b"b", b"c"], partition=0)  # room in the mapped files already
    s.close()
    disk.full = False
    s = _open(store_path)
    assert s.recovery["abnormal"] is False
    assert _values(s) == [b"a", b"b", b"c"]
    s.close()


def test_reopen_while_full_that_must_rebuild_a_consume_queue_is_store_full_error(
        store_path, monkeypatch):
    """The documented choice: when recovery has to create a ConsumeQueue file (here all of
    them were lost) and the disk is full, the open fails with StoreFullError (no other
    error, no signal), and succeeds once space is freed."""
    s = _open(store_path, mapped_file_size=1 << 16)
    s.create_topic("t")
    s.append_batch("t", [b"a", b"b", b"c"], partition=0)
    s.close()
    shutil.rmtree(os.path.join(store_path, "consumequeue"))
    disk = _AllFull(monkeypatch)
    disk.full = True
    with pytest.raises(StoreFullError):
        _open(store_path)
    disk.full = False
    s = _open(store_path)
    assert _values(s) == [b"a", b"b", b"c"]
    s.close()


_TMPFS_CHILD = textwrap.dedent(r"""
    import errno, os, sys
    import mqstore
    from mqstore.errors import StoreFullError
    root, mode = sys.argv[1], sys.argv[2]
    opts = dict(mapped_file_size=1 << 20, cq_units_per_file=1000, hash_slots=1024,
                index_entries=4096, write_mode=mode)
    path = os.path.join(root, "store")
    s = mqstore.open(path, "commitlog", **opts)
    s.create_topic("t")
    # leave about 1.5 MiB: the first CommitLog file fits, the second does not
    with open(os.path.join(root, "filler"), "wb") as f:
        try:
            while os.statvfs(root).f_bavail * os.statvfs(root).f_frsize > 1_600_000:
                f.write(b"\xff" * 65536)
                f.flush()
        except OSError:
            pass
    acked = 0
    try:
        for i in range(100_000):
            s.append_batch("t", [b"x" * 1000] * 4, partition=0)
            acked += 4
    except StoreFullError as exc:
        assert exc.errno in (errno.ENOSPC, errno.EDQUOT), exc
    s.close()
    s = mqstore.open(path, "commitlog", **opts)   # reopen while still full
    n = s.end_offset("t", 0)
    assert n == acked, (n, acked)
    assert s.read("t", 0, n - 1)[0].value == b"x" * 1000
    s.close()
    print("acked", acked)
""")


@pytest.mark.parametrize("write_mode", ["mmap", "write"])
def test_a_real_full_tmpfs_is_store_full_error_not_sigbus(tmp_path, write_mode):
    """On a real 4 MiB tmpfs (root only): appending until the disk is full ends with
    StoreFullError, never a SIGBUS, and the store reopens while full with every
    acknowledged message."""
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        pytest.skip("mounting a tmpfs needs root on Linux")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                         capture_output=True)
    if got.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {got.stderr.decode().strip()}")
    try:
        child = subprocess.run([sys.executable, "-c", _TMPFS_CHILD, str(mnt), write_mode],
                               capture_output=True, timeout=120)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    assert child.returncode == 0, (child.returncode, child.stderr.decode()[-2000:])
    assert int(child.stdout.split()[-1]) > 0

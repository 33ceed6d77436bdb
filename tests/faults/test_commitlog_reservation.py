"""Disk space reserved in chunks ahead of the write position (commitlog engine).

Mapped files are created sparse and reserved with ``posix_fallocate`` chunk by chunk before
anything is written there (``engines/commitlog/mapped_file.py``). These tests pin down the
three promises: a store costs on disk what it holds plus a chunk per file being written; no
write ever lands outside a reserved range (which would SIGBUS on a full disk); a full disk at
a chunk boundary inside a file is a ``StoreFullError`` from the append that needs the space,
and nothing acknowledged is lost.

:class:`Space` wraps ``posix_fallocate`` / ``pwrite`` / ``ftruncate`` and remembers which
pages of each store file were allocated through them; while ``full`` it refuses any call
that needs a page not allocated yet, and :meth:`Space.assert_writes_were_reserved` checks
that every page holding data lies in an allocated range (an mmap write outside one is what
would have died of SIGBUS). The chunk sizes are made small with monkeypatch.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mqstore
from mqstore.api import Message
from mqstore.engines.commitlog import consume_queue, index_file, mapped_file
from mqstore.errors import StoreFullError

PAGE = mmap.PAGESIZE
KINDS = ("/commitlog/", "/consumequeue/", "/index/")


def _path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class Space:
    """Allocated pages per store file (see the module docstring)."""

    def __init__(self, monkeypatch, kinds=KINDS):
        self.full = False
        self.kinds = kinds
        self.calls: list[tuple[str, int, int]] = []  # posix_fallocate (path, offset, length)
        self.refused = 0
        self._alloc: dict[tuple[int, int], list[tuple[int, int]]] = {}
        real_fallocate, real_pwrite, real_ftruncate = (os.posix_fallocate, os.pwrite,
                                                       os.ftruncate)

        def fallocate(fd, offset, length):
            if self._hit(fd):
                self.calls.append((_path(fd), offset, length))
                self._check(fd, offset, offset + length)
            real_fallocate(fd, offset, length)
            self._add(fd, offset, offset + length)

        def pwrite(fd, data, offset):
            if self._hit(fd):
                self._check(fd, offset, offset + len(data))
            n = real_pwrite(fd, data, offset)
            self._add(fd, offset, offset + n)
            return n

        def ftruncate(fd, length):
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino)
            if st.st_size == 0:  # a new file (inode numbers are reused)
                self._alloc[key] = []
            real_ftruncate(fd, length)
            if key in self._alloc and length < st.st_size:
                self._alloc[key] = [(lo, min(hi, length)) for lo, hi in self._alloc[key]
                                    if lo < length]

        monkeypatch.setattr(os, "posix_fallocate", fallocate)
        monkeypatch.setattr(os, "pwrite", pwrite)
        monkeypatch.setattr(os, "ftruncate", ftruncate)

    def _hit(self, fd: int) -> bool:
        p = _path(fd)
        return any(k in p for k in self.kinds)

    def _ranges(self, fd: int) -> list[tuple[int, int]]:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if key not in self._alloc:  # existed before: what the file system says is data
            got, p = [], 0
            while p < st.st_size:
                try:
                    lo = os.lseek(fd, p, os.SEEK_DATA)
                except OSError:
                    break
                hi = os.lseek(fd, lo, os.SEEK_HOLE)
                got.append((lo // PAGE * PAGE, -(-hi // PAGE) * PAGE))
                p = hi
            self._alloc[key] = got
        return self._alloc[key]

    def _covered(self, fd: int, lo: int, hi: int) -> bool:
        lo = lo // PAGE * PAGE
        for a, b in sorted(self._ranges(fd)):
            if a <= lo < b:
                lo = b
            if lo >= hi:
                return True
        return lo >= hi

    def _check(self, fd: int, lo: int, hi: int) -> None:
        if self.full and not self._covered(fd, lo, hi):
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def _add(self, fd: int, lo: int, hi: int) -> None:
        if hi > lo:
            merged = []
            lo, hi = lo // PAGE * PAGE, -(-hi // PAGE) * PAGE
            for a, b in sorted(self._ranges(fd)):
                if b < lo or a > hi:
                    merged.append((a, b))
                else:
                    lo, hi = min(a, lo), max(b, hi)
            merged.append((lo, hi))
            st = os.fstat(fd)
            self._alloc[(st.st_dev, st.st_ino)] = merged

    def calls_on(self, kind: str) -> list[tuple[int, int]]:
        return [(off, n) for p, off, n in self.calls if kind in p]

    def assert_writes_were_reserved(self, store_path: str) -> None:
        """Every page of every store file that holds a non-zero byte was allocated (by a
        reservation or a pwrite) before: nothing was written into a hole."""
        bad = []
        for kind in ("commitlog", "consumequeue", "index"):
            for root, _dirs, names in os.walk(os.path.join(store_path, kind)):
                for name in names:
                    path = os.path.join(root, name)
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        size = os.fstat(fd).st_size
                        pages = np.zeros(-(-size // PAGE) * PAGE, dtype=np.uint8)
                        pages[:size] = np.frombuffer(os.pread(fd, size, 0), dtype=np.uint8)
                        for i in np.flatnonzero(pages.reshape(-1, PAGE).any(axis=1)).tolist():
                            if not self._covered(fd, i * PAGE, i * PAGE + 1):
                                bad.append((path, i * PAGE))
                    finally:
                        os.close(fd)
        assert not bad, f"pages written without a reservation: {bad[:5]}"


def _open(path, **opts):
    """A new store gets small IndexFiles unless told otherwise (the default one is 420 MB,
    sparse); an existing one keeps its shape."""
    if not os.path.exists(os.path.join(path, "mqstore.json")):
        opts = {"hash_slots": 1024, "index_entries": 4096, **opts}
    return mqstore.open(path, "commitlog", **{"flush": "os", **opts})


def _values(s, topic="t", partition=0):
    out, off = [], s.start_offset(topic, partition)
    end = s.end_offset(topic, partition)
    while off < end:
        page = s.read(topic, partition, off)
        out += [r.value for r in page]
        off = page[-1].offset + 1
    return out


def _settle(s) -> None:
    """Wait until the dispatcher has done everything appended so far."""
    s.dispatcher.wait_until(s.commitlog.max_offset)
    s.dispatcher.check()


def _sparse_copy(src: str, dst: str) -> None:
    """Copy only the pages that hold data (zero pages stay holes, as unwritten blocks)."""
    with open(src, "rb") as f, open(dst, "wb") as g:
        data = f.read()
        g.truncate(len(data))
        for p in range(0, len(data), PAGE):
            if any(data[p:p + PAGE]):
                g.seek(p)
                g.write(data[p:p + PAGE])


def _crash_image(store_path: str) -> str:
    image = store_path + "-crash"
    shutil.copytree(store_path, image, ignore=shutil.ignore_patterns("lock"),
                    copy_function=_sparse_copy)
    return image


def test_a_new_default_sized_store_costs_a_chunk_per_file_not_the_file_sizes(store_path):
    """Default shape (1 GiB CommitLog files, ~420 MB IndexFiles, 6 MB ConsumeQueue files):
    with a message in each of 32 queues the store holds every kind of file at its full size
    but takes well under 64 MiB of disk (before: 1.6 GB, and StoreFullError on a machine with
    a few hundred MB free)."""
    s = mqstore.open(store_path, "commitlog")
    s.create_topic("t", partitions=32)
    assert s.stats()["bytes_on_disk"] == 0
    for p in range(32):
        s.append("t", b"v%d" % p, key=b"k%d" % p, partition=p)
    _settle(s)
    s.flush()
    on_disk = s.stats()["bytes_on_disk"]
    cl = s.commitlog.files[0]
    assert os.path.getsize(cl.path) == 1 << 30
    assert os.path.getsize(s.index.files[0].path) > 400_000_000
    assert on_disk < 64 << 20, on_disk
    s.close()
    s = mqstore.open(store_path, "commitlog")  # and a reopened one writes on from there
    s.append("t", b"again", key=b"k", partition=0)
    _settle(s)
    assert s.stats()["bytes_on_disk"] < 64 << 20
    assert [r.value for r in s.lookup_key("t", b"k0")] == [b"v0"]
    s.close()


def _append_until(s, crossed, *, key=None):
    """Append one small message at a time until ``crossed()`` is true; return the count."""
    for i in range(100_000):
        if crossed():
            return i
        s.append("t", b"m%05d" % i, key=key and b"%s%05d" % (key, i), partition=0)
        _settle(s)
    raise AssertionError("never crossed")


def test_commitlog_appends_across_a_chunk_boundary_reserve_exactly_one_more_chunk(
        store_path, monkeypatch):
    """A CommitLog file reserves its first chunk when created and one more chunk, exactly
    once, when an append first ends past the reserved end."""
    monkeypatch.setattr(mapped_file, "RESERVE_CHUNK", 16 << 10)
    space = Space(monkeypatch, kinds=("/commitlog/",))
    s = _open(store_path, mapped_file_size=1 << 18, dispatch="sync")
    s.create_topic("t")
    s.append("t", b"first", partition=0)
    assert space.calls_on("/commitlog/") == [(0, 16 << 10)]
    mf = s.commitlog.files[0]
    n = _append_until(s, lambda: mf.wrote_position > 16 << 10)
    assert n > 10
    assert space.calls_on("/commitlog/") == [(0, 16 << 10), (16 << 10, 16 << 10)]
    assert mf.reserved_end == 32 << 10 and mf.reservations == 2
    _append_until(s, lambda: mf.wrote_position > 32 << 10)
    assert len(space.calls_on("/commitlog/")) == 3
    assert os.stat(mf.path).st_blocks * 512 < 1 << 18  # the rest is still a hole
    space.assert_writes_were_reserved(store_path)
    s.close()


#: a ConsumeQueue chunk: the 4,096 units recovery's scan reads at a time
CQ_CHUNK = 4096 * 20
#: what a ConsumeQueue keeps reserved past its units: the 1,024 units the scan peeks at
CQ_MARGIN = 1025 * 20


def test_consume_queue_units_across_a_chunk_boundary_reserve_exactly_one_more_chunk(
        store_path, monkeypatch):
    """A ConsumeQueue file is reserved 80 KiB (4,096 units, the block recovery's scan reads)
    at a time, always keeping the 1,024 units the scan peeks at after the last unit
    reserved too: unit 3,071 is the first whose append (not the dispatcher) reserves the
    next chunk."""
    assert consume_queue.ConsumeQueue.SCAN_CHUNK * 20 == CQ_CHUNK
    assert (consume_queue.ConsumeQueue.PEEK_UNITS + 1) * 20 == CQ_MARGIN
    space = Space(monkeypatch, kinds=("/consumequeue/",))
    s = _open(store_path, mapped_file_size=1 << 20, cq_units_per_file=20_000)
    s.create_topic("t")
    first = (CQ_CHUNK - CQ_MARGIN) // 20  # 3,071: units 0..3070 fit with the margin
    s.append_batch("t", [b"m%d" % i for i in range(first)], partition=0)
    _settle(s)
    assert space.calls_on("/consumequeue/") == [(0, CQ_CHUNK)]
    s.append("t", b"one more", partition=0)
    assert space.calls_on("/consumequeue/") == [(0, CQ_CHUNK), (CQ_CHUNK, CQ_CHUNK)]
    _settle(s)
    assert len(space.calls_on("/consumequeue/")) == 2  # the dispatcher reserved nothing
    space.assert_writes_were_reserved(store_path)
    s.close()


def test_index_entries_across_a_chunk_boundary_reserve_exactly_one_more_chunk(
        store_path, monkeypatch):
    """An IndexFile reserves its header and all its slots (written anywhere) plus the first
    chunk of entries when created, then one more chunk of entries when indexCount passes
    the reserved end."""
    monkeypatch.setattr(index_file, "RESERVE_CHUNK", 4096)
    space = Space(monkeypatch, kinds=("/index/",))
    s = _open(store_path, mapped_file_size=1 << 20, hash_slots=1024, index_entries=1000,
              dispatch="sync")
    s.create_topic("t")
    s.append("t", b"first", key=b"k", partition=0)
    f = s.index.files[0]
    table = 40 + 1024 * 4
    assert space.calls_on("/index/") == [(0, table + 4096)]
    _append_until(s, lambda: table + (f.index_count + 2) * 20 > table + 4096, key=b"k")
    assert len(space.calls_on("/index/")) == 1
    s.append("t", b"last", key=b"k-last", partition=0)
    assert space.calls_on("/index/") == [(0, table + 4096), (table + 4096, 4096)]
    assert [r.value for r in s.lookup_key("t", b"k-last")] == [b"last"]
    space.assert_writes_were_reserved(store_path)
    s.close()


@pytest.mark.parametrize("write_mode", ["mmap", "write"])
def test_a_full_disk_at_a_commitlog_chunk_boundary_is_store_full_error_and_loses_nothing(
        store_path, monkeypatch, write_mode):
    """The disk fills while a CommitLog file still has unreserved room: the append that
    needs the next chunk raises StoreFullError and writes nothing, every acknowledged
    message reads back (also from a crash image and after a restart), and the next append
    after space is freed gets the failed one's offset."""
    monkeypatch.setattr(mapped_file, "RESERVE_CHUNK", 8192)
    space = Space(monkeypatch, kinds=("/commitlog/",))
    s = _open(store_path, mapped_file_size=1 << 16, write_mode=write_mode)
    s.create_topic("t")
    acked = []
    with pytest.raises(StoreFullError):
        for i in range(1000):
            if i == 3:
                space.full = True
            batch = [b"%s-%04d-%d" % (b"v" * 150, i, j) for j in range(3)]
            s.append_batch("t", batch, partition=0)
            acked += batch
    assert len(s.commitlog.files) == 1  # inside the first file, not at a new file
    assert s.commitlog.files[0].reserved_end == 8192 and space.refused == 1
    assert _values(s) == acked
    s.flush()
    image = _crash_image(store_path)
    space.assert_writes_were_reserved(store_path)
    space.full = False
    assert s.append("t", b"after", partition=0).offset == len(acked)
    s.close()
    s = _open(store_path)
    assert _values(s) == acked + [b"after"]
    s.close()
    s = _open(image)
    assert s.recovery["abnormal"] is True
    assert _values(s) == acked
    s.close()


def test_a_full_disk_at_a_consume_queue_chunk_boundary_fails_the_append_not_the_dispatcher(
        store_path, monkeypatch):
    """The next ConsumeQueue chunk is reserved by the append before it writes anything: a
    full disk there fails that append, the dispatcher never meets it, and nothing is lost."""
    space = Space(monkeypatch, kinds=("/consumequeue/",))
    s = _open(store_path, mapped_file_size=1 << 20, cq_units_per_file=20_000)
    s.create_topic("t")
    acked = []
    with pytest.raises(StoreFullError):
        for i in range(100):
            if i == 3:
                space.full = True
            batch = [b"m%03d-%d" % (i, j) for j in range(1000)]
            s.append_batch("t", batch, partition=0)
            acked += batch
    assert len(acked) == 3000  # units 3000..3999 need the next chunk (from unit 3,071)
    _settle(s)
    assert _values(s) == acked
    space.assert_writes_were_reserved(store_path)
    space.full = False
    s.append_batch("t", [b"after"] * 1000, partition=0)
    acked += [b"after"] * 1000
    assert _values(s) == acked
    s.close()
    s = _open(store_path)
    assert _values(s) == acked
    s.close()


@pytest.mark.parametrize("crashed", [False, True])
def test_a_full_disk_at_an_index_chunk_boundary_stalls_the_index_and_reopen_reindexes(
        store_path, monkeypatch, crashed):
    """The next chunk of IndexFile entries cannot be reserved: the index stalls (what it
    had stays searchable), appends and reads go on, and the next open re-indexes."""
    monkeypatch.setattr(index_file, "RESERVE_CHUNK", 4096)
    space = Space(monkeypatch, kinds=("/index/",))
    opts = dict(mapped_file_size=1 << 20, hash_slots=64, index_entries=1000)
    s = _open(store_path, **opts)
    s.create_topic("t")
    for i in range(40):
        s.append("t", b"v%d" % i, key=b"k%d" % i, partition=0)
    _settle(s)
    space.full = True
    for i in range(40, 200):
        s.append("t", b"v%d" % i, key=b"k%d" % i, partition=0)
    _settle(s)
    assert s.index.stalled and space.refused == 1
    assert _values(s) == [b"v%d" % i for i in range(200)]
    assert [r.value for r in s.lookup_key("t", b"k3")] == [b"v3"]
    space.assert_writes_were_reserved(store_path)
    space.full = False
    path = store_path
    if crashed:
        s.flush()
        path = _crash_image(store_path)
    s.close()
    s = _open(path)
    for i in range(200):
        assert [r.value for r in s.lookup_key("t", b"k%d" % i)] == [b"v%d" % i]
    s.close()


@pytest.mark.parametrize("crashed", [False, True])
def test_a_reopened_store_reserves_from_the_recovered_write_position(store_path, monkeypatch,
                                                                      crashed):
    """After a restart a file's allocation is unknown (st_blocks says how much, not where):
    the data up to the recovered write position was written, so the first append reserves
    from that position's block on, never the whole file; on a full disk that append is a
    StoreFullError and nothing is lost."""
    monkeypatch.setattr(mapped_file, "RESERVE_CHUNK", 8192)
    s = _open(store_path, mapped_file_size=1 << 16)
    s.create_topic("t")
    s.append_batch("t", [b"x" * 1000] * 20, partition=0)
    s.flush()
    first = os.path.join(store_path, "commitlog", "0" * 20)
    assert os.stat(first).st_blocks * 512 < os.path.getsize(first)  # sparse past a chunk
    path = _crash_image(store_path) if crashed else store_path
    s.close()
    space = Space(monkeypatch, kinds=("/commitlog/",))
    space.full = True
    s = _open(path)
    assert s.recovery["abnormal"] is crashed
    mf = s.commitlog.files[-1]
    wrote = mf.wrote_position
    block = max(PAGE, os.stat(mf.path).st_blksize)
    with pytest.raises(StoreFullError):
        s.append("t", b"y" * 5000, partition=0)
    [(offset, length)] = space.calls_on("/commitlog/")
    assert offset == wrote // block * block  # not 0: the data before it is not reserved again
    assert (offset + length) % 8192 == 0 and offset + length > wrote + 5000
    assert _values(s) == [b"x" * 1000] * 20
    space.full = False
    assert s.append("t", b"y" * 5000, partition=0).offset == 20
    assert mf.reserved_end == offset + length
    space.assert_writes_were_reserved(path)
    s.close()
    s = _open(path)
    assert _values(s) == [b"x" * 1000] * 20 + [b"y" * 5000]
    s.close()


def _punch_hole(path: str, offset: int, length: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong,
                               ctypes.c_longlong]
    fd = os.open(path, os.O_RDWR)
    try:
        if libc.fallocate(fd, 0x01 | 0x02, offset, length) != 0:  # KEEP_SIZE | PUNCH_HOLE
            pytest.skip(f"cannot punch a hole here: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def test_recovery_rewrites_a_consume_queue_unit_only_after_reserving_its_page(
        store_path, monkeypatch):
    """A ConsumeQueue page lost to a hole (unit 204 straddles it: its tag is cut, units
    from 205 read as empty): recovery rewrites unit 204 below the queue's write position
    and re-dispatches the rest; the rewrite preallocates its pages first, so on a full disk
    the open is a StoreFullError (never a SIGBUS) and with space it restores every unit."""
    s = _open(store_path, mapped_file_size=1 << 20, cq_units_per_file=1000)
    s.create_topic("t")
    s.append_batch("t", [Message(b"m%d" % i, tag="a") for i in range(300)], partition=0)
    s.close()
    cq = os.path.join(store_path, "consumequeue", "t", "0", "0" * 20)
    _punch_hole(cq, PAGE, PAGE)
    space = Space(monkeypatch, kinds=("/consumequeue/",))
    space.full = True
    with pytest.raises(StoreFullError):
        _open(store_path)
    assert space.refused == 1
    space.full = False
    s = _open(store_path)
    assert _values(s) == [b"m%d" % i for i in range(300)]
    assert [r.value for r in s.read("t", 0, 204, tags=["a"])][:1] == [b"m204"]
    space.assert_writes_were_reserved(store_path)
    s.close()


_TMPFS_CHILD = textwrap.dedent(r"""
    import errno, os, sys
    import mqstore
    from mqstore.api import Message
    from mqstore.engines.commitlog import consume_queue, index_file, mapped_file
    from mqstore.errors import StoreFullError
    mapped_file.RESERVE_CHUNK = 64 << 10
    index_file.RESERVE_CHUNK = 4096
    root, mode = sys.argv[1], sys.argv[2]
    opts = dict(mapped_file_size=1 << 20, cq_units_per_file=30_000, hash_slots=1024,
                index_entries=4096, write_mode=mode)
    path = os.path.join(root, "store")
    s = mqstore.open(path, "commitlog", **opts)
    s.create_topic("t")
    with open(os.path.join(root, "filler"), "wb") as f:  # leave about 1.5 MiB
        try:
            while os.statvfs(root).f_bavail * os.statvfs(root).f_frsize > 1_600_000:
                f.write(b"\xff" * 65536)
                f.flush()
        except OSError:
            pass
    acked = 0
    try:
        for i in range(100_000):
            s.append_batch("t", [Message(b"x" * 1000, key=b"k%d" % i)] * 4, partition=0)
            acked += 4
    except StoreFullError as exc:
        assert exc.errno in (errno.ENOSPC, errno.EDQUOT), exc
    # now fill it to the last page: on tmpfs even reading a hole through a mapping needs a
    # page, so a failed append's undo must not look past what was reserved
    fd = os.open(os.path.join(root, "filler"), os.O_WRONLY | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\xff" * 4096)
    except OSError:
        pass
    os.close(fd)
    for i in range(3):
        try:
            s.append_batch("t", [Message(b"x" * 1000, key=b"again")] * 4, partition=0)
            acked += 4
        except StoreFullError:
            pass
    last = s.commitlog.files[-1]
    assert os.stat(last.path).st_blocks * 512 < last.file_size, "not at a chunk boundary"
    assert last.reservations > 1
    s.close()
    s = mqstore.open(path, "commitlog", **opts)   # reopen while still full
    n = s.end_offset("t", 0)
    assert n == acked, (n, acked)
    assert s.read("t", 0, n - 1)[0].value == b"x" * 1000
    s.close()
    print("acked", acked)
""")


@pytest.mark.parametrize("write_mode", ["mmap", "write"])
def test_a_real_full_tmpfs_at_a_chunk_boundary_is_store_full_error_not_sigbus(tmp_path,
                                                                            write_mode):
    """On a real 4 MiB tmpfs (root only), with small chunks so that the disk fills inside
    a file: appending until it is full ends with StoreFullError, never a SIGBUS, and the
    store reopens while full with every acknowledged message."""
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
                               capture_output=True, timeout=120,
                               cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                                   os.path.abspath(__file__)))))
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    assert child.returncode == 0, (child.returncode, child.stderr.decode()[-2000:])
    assert int(child.stdout.split()[-1]) > 0

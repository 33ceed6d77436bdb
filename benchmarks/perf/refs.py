"""The references the goal rows are measured against, each doing what a user of it would.

- sqlite3 (stdlib) in WAL mode with ``synchronous=OFF``: one table
  ``t(id INTEGER PRIMARY KEY, part, ts, value)``, one ``executemany`` and one transaction
  per batch of 1,000 rows (rows built inside the timing, as a user must); the full scan is
  ``SELECT id, ts, value FROM t ORDER BY id`` iterated, touching each value.
- raw files: ``os.write`` of each batch's joined values to a new file per partition.
- ``write`` + ``fdatasync`` threads, each on a file of its own (P5).
- ``os.sendfile`` of file regions (segments) and ``send`` of 1 MiB slices of a mapped file
  (commitlog) over a loopback socket (P7).
- one sequential read of a directory's files, their data regions only (``SEEK_DATA`` /
  ``SEEK_HOLE``: the commitlog preallocates sparse files), with ``preadv`` (P9).
- LMDB through py-lmdb (the ``bench`` extra): ``putmulti(append=True)`` of 1,000 8-byte
  big-endian keys per write transaction with ``sync=False`` (flush="os"'s equivalent), and
  a cursor scan touching each value. :data:`lmdb` is None when it is not installed.

Every function returns a :class:`~perf.model.Sample` of a rate (or seconds for P9).
Thread-safety: each call owns its files; none is shared between calls.
"""
from __future__ import annotations

import mmap
import os
import socket
import sqlite3
import struct
import threading
import time

from perf.model import Sample

try:
    import lmdb
except ImportError:  # the bench extra is not installed
    lmdb = None

BE64 = struct.Struct(">Q")
CHUNK = 1 << 20


# --------------------------------------------------------------------------- sqlite3
def sqlite_open(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, part INTEGER NOT NULL,"
                 " ts INTEGER NOT NULL, value BLOB NOT NULL)")
    return conn


def sqlite_append(path: str, batches: list[list[bytes]], partitions: int,
                  warm: int = 0) -> Sample:
    """Insert every batch (batch j to partition j % partitions), one transaction each; the
    first ``warm`` batches untimed. Rows/s."""
    conn = sqlite_open(path)
    try:
        sql = "INSERT INTO t (part, ts, value) VALUES (?, ?, ?)"

        def insert(j: int, batch: list[bytes]) -> None:
            part, ts = j % partitions, time.time_ns() // 1_000_000
            conn.execute("BEGIN")
            conn.executemany(sql, [(part, ts, v) for v in batch])
            conn.execute("COMMIT")

        for j in range(warm):
            insert(j, batches[j])
        t0 = time.perf_counter()
        n = 0
        for j in range(warm, len(batches)):
            insert(j, batches[j])
            n += len(batches[j])
        el = time.perf_counter() - t0
        return Sample(n / el, {"messages": n, "seconds": el})
    finally:
        conn.close()


def sqlite_fill(path: str, values: list[bytes], batch: int = 1000) -> None:
    sqlite_append(path, [values[i:i + batch] for i in range(0, len(values), batch)], 1)


def sqlite_scan(path: str, expect: int) -> Sample:
    """Full scan in id order, touching each value; rows/s."""
    conn = sqlite3.connect(path)
    try:
        t0 = time.perf_counter()
        n = nbytes = 0
        for _id, _ts, value in conn.execute("SELECT id, ts, value FROM t ORDER BY id"):
            n += 1
            nbytes += len(value)
        el = time.perf_counter() - t0
    finally:
        conn.close()
    if n != expect:
        raise AssertionError(f"sqlite scan read {n} rows, expected {expect}")
    return Sample(n / el, {"messages": n, "bytes": nbytes, "seconds": el})


# --------------------------------------------------------------------------- raw files
def raw_write(directory: str, batches: list[list[bytes]], partitions: int,
              warm: int = 0) -> Sample:
    """``os.write`` of each batch's values, joined, to new files (one per partition); the
    first ``warm`` batches untimed. Bytes/s."""
    os.makedirs(directory, exist_ok=True)
    fds = [os.open(os.path.join(directory, f"p{p}.raw"),
                   os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
           for p in range(partitions)]
    try:
        for j in range(warm):
            os.write(fds[j % partitions], b"".join(batches[j]))
        t0 = time.perf_counter()
        nbytes = 0
        for j in range(warm, len(batches)):
            data = b"".join(batches[j])
            os.write(fds[j % partitions], data)
            nbytes += len(data)
        el = time.perf_counter() - t0
        return Sample(nbytes / el, {"bytes": nbytes, "seconds": el})
    finally:
        for fd in fds:
            os.close(fd)


def fdatasync_threads(directory: str, value: bytes, threads: int, seconds: float) -> Sample:
    """``threads`` threads each doing ``os.write`` + ``os.fdatasync`` of ``value`` to a file
    of its own for ``seconds`` (what every appender pays without group commit); writes/s."""
    os.makedirs(directory, exist_ok=True)
    fds = [os.open(os.path.join(directory, f"{i}.raw"),
                   os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
           for i in range(threads)]
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def body(i: int) -> None:
        fd, write, sync = fds[i], os.write, os.fdatasync
        start.wait()
        n = 0
        while time.perf_counter() < deadline[0]:
            write(fd, value)
            sync(fd)
            n += 1
        counts[i] = n

    ths = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for t in ths:
        t.start()
    try:
        t0 = time.perf_counter()
        deadline[0] = t0 + seconds
        start.wait()
        for t in ths:
            t.join()
        el = time.perf_counter() - t0
    finally:
        for fd in fds:
            os.close(fd)
    n = sum(counts)
    return Sample(n / el, {"messages": n, "fsyncs": n, "seconds": el})


# --------------------------------------------------------------------------- sockets
def send_files(sock: socket.socket, paths: list[str], nbytes: int, *, use_mmap: bool) -> int:
    """Send the first ``nbytes`` of ``paths`` (in order): ``os.sendfile`` in 1 MiB calls,
    or ``sendall`` of 1 MiB slices of each file mapped (``use_mmap``)."""
    left = nbytes
    out = sock.fileno()
    for path in paths:
        if left <= 0:
            break
        fd = os.open(path, os.O_RDONLY)
        try:
            size = min(os.fstat(fd).st_size, left)
            if size <= 0:
                continue
            if use_mmap:
                with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as mm:
                    mv = memoryview(mm)
                    try:
                        for pos in range(0, size, CHUNK):
                            sock.sendall(mv[pos:min(size, pos + CHUNK)])
                    finally:
                        mv.release()
            else:
                pos = 0
                while pos < size:
                    pos += os.sendfile(out, fd, pos, min(CHUNK, size - pos))
            left -= size
        finally:
            os.close(fd)
    return nbytes - left


# --------------------------------------------------------------------------- files
def data_regions(fd: int, size: int) -> list[tuple[int, int]]:
    """The (start, end) data regions of a file (holes skipped), or the whole file."""
    out, pos = [], 0
    try:
        while pos < size:
            start = os.lseek(fd, pos, os.SEEK_DATA)
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, min(end, size)))
            pos = end
    except OSError:  # ENXIO: no data past pos (or SEEK_DATA unsupported: read it all)
        if not out and pos == 0:
            return [(0, size)] if size else []
    return out


def read_directory(root: str) -> Sample:
    """One sequential read of every file under ``root`` (data regions, 1 MiB ``preadv``);
    seconds (the P9 reference)."""
    paths = sorted(os.path.join(d, f) for d, _ds, fs in os.walk(root) for f in fs)
    buf = bytearray(CHUNK)
    t0 = time.perf_counter()
    nbytes = 0
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            for start, end in data_regions(fd, os.fstat(fd).st_size):
                pos = start
                while pos < end:
                    got = os.preadv(fd, [buf], pos)
                    if got <= 0:
                        break
                    pos += got
                nbytes += end - start
        finally:
            os.close(fd)
    el = time.perf_counter() - t0
    return Sample(el, {"bytes": nbytes, "files": len(paths)})


# --------------------------------------------------------------------------- LMDB
def lmdb_open(path: str):
    return lmdb.open(path, map_size=1 << 34, sync=False, metasync=False, max_dbs=0)


def lmdb_append(path: str, batches: list[list[bytes]], warm: int = 0) -> Sample:
    """``putmulti(append=True)`` of each batch under consecutive keys, one txn per batch;
    the first ``warm`` batches untimed. Puts/s."""
    env = lmdb_open(path)
    try:
        pack = BE64.pack
        key = 0

        def put(batch: list[bytes]) -> None:
            with env.begin(write=True) as txn:
                keys = map(pack, range(key, key + len(batch)))
                txn.cursor().putmulti(zip(keys, batch), append=True)

        for j in range(warm):
            put(batches[j])
            key += len(batches[j])
        n = 0
        t0 = time.perf_counter()
        for j in range(warm, len(batches)):
            put(batches[j])
            key += len(batches[j])
            n += len(batches[j])
        el = time.perf_counter() - t0
        return Sample(n / el, {"messages": n, "seconds": el})
    finally:
        env.close()


def lmdb_scan(path: str, expect: int) -> Sample:
    """A cursor over every value (``iternext(values=True)``), each value's size summed."""
    env = lmdb.open(path, readonly=True, lock=False, map_size=1 << 34)
    try:
        t0 = time.perf_counter()
        n = nbytes = 0
        with env.begin() as txn:
            for value in txn.cursor().iternext(keys=False, values=True):
                n += 1
                nbytes += len(value)
        el = time.perf_counter() - t0
    finally:
        env.close()
    if n != expect:
        raise AssertionError(f"lmdb scan read {n} values, expected {expect}")
    return Sample(n / el, {"messages": n, "bytes": nbytes, "seconds": el})

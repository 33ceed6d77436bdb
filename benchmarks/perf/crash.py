"""P9: reopen after a SIGKILL, against one sequential read of the store's files.

:func:`crash_image` runs a writer child (this file run as a script): it opens the store
with ``flush="os"``, appends ``append_batch`` es of 1,000 values until the log holds
``mib`` MiB of values, calls ``flush()``, appends an unflushed tail of 1,000 more, waits
for the commitlog dispatcher to catch up (``stats()["dispatch_lag"]``), says ``D`` on
stdout, and is killed with SIGKILL (no close, no clean-shutdown marker), as
``mqstore.torture.kill_child`` is killed by the torture loop. Each timed reopen works on
a fresh copy of that image (``cp -a --sparse=always``, then synced: :func:`copy_image`), so
every repeat recovers the same crash; the copy leaves the files in the page cache, so both
sides read a warm cache.

The timed reopen is ``mqstore.open`` plus ``end_offset`` and a read of the last record (the
log is usable); ``close`` is not timed.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import mqstore
from perf.model import Sample

TOPIC = "t"
READY_TIMEOUT_S = 60.0


def _child(path: str, engine: str, mib: float, size: int) -> None:
    store = mqstore.open(path, engine, flush="os")
    store.create_topic(TOPIC, 1)
    value = os.urandom(size)
    batch = [value] * 1000
    n = max(1, int(mib * 2**20 // size // 1000))
    for _ in range(n):
        store.append_batch(TOPIC, batch, partition=0)
    store.flush()
    store.append_batch(TOPIC, batch, partition=0)  # the unflushed tail
    deadline = time.monotonic() + 120
    while store.stats().get("dispatch_lag", 0) > 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.write(1, f"D {store.end_offset(TOPIC, 0)}\n".encode())
    while True:
        time.sleep(1)


def crash_image(path: str, engine: str, mib: float, size: int = 100) -> int:
    """Write a store of ``mib`` MiB of values at ``path`` and SIGKILL its writer; returns
    the records the writer had appended."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), path, engine,
                             str(mib), str(size)], stdout=subprocess.PIPE, env=env)
    # a writer that hangs is killed: then readline sees EOF and the row reports an error
    watchdog = threading.Timer(READY_TIMEOUT_S + 2.0 * mib, proc.kill)
    watchdog.start()
    try:
        line = proc.stdout.readline().decode().split()
        if not line or line[0] != "D":
            raise RuntimeError(f"crash writer for {engine} exited early "
                               f"(status {proc.poll()})")
        records = int(line[1])
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=READY_TIMEOUT_S)
        proc.stdout.close()
    return records


def copy_image(src: str, dst: str) -> None:
    """Copy the image and sync the copy's files: after the SIGKILL the page cache held
    the store's pages, clean up to the writer's last ``flush()``; a fresh copy is dirty
    from its first byte to its last, so the reopen's first ``fdatasync`` (recovery syncs
    what it truncated or rewrote) would write the whole store out, a cost the crash does
    not have. The sync is not timed."""
    shutil.rmtree(dst, ignore_errors=True)
    subprocess.run(["cp", "-a", "--sparse=always", src, dst], check=True)
    for root, _dirs, files in os.walk(dst):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def reopen(path: str, engine: str, expect: int) -> Sample:
    """Seconds to open the crashed store at ``path`` and read its last record."""
    t0 = time.perf_counter()
    store = mqstore.open(path, engine, flush="os")
    try:
        end = store.end_offset(TOPIC, 0)
        last = store.read(TOPIC, 0, end - 1, max_records=1)
        el = time.perf_counter() - t0
        scan = store.stats().get("recovery_scan", {})
    finally:
        store.close()
    if end < expect - 1000 or len(last) != 1:  # the unflushed tail may be lost, no more
        raise AssertionError(f"{engine} reopened with end offset {end}, wrote {expect}")
    return Sample(el, {"records": end,
                       "redispatched": scan.get("redispatched_messages") if scan else None})


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))

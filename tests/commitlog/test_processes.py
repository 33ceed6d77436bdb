"""Crash and multi-process behaviour: SIGKILL under flush="sync" + dispatch="async", a
read-only follower in another process, and the single-writer lock."""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import pytest

import mqstore

from .conftest import SMALL

WRITER = textwrap.dedent(
    """
    import sys, json, mqstore
    path, opts = sys.argv[1], json.loads(sys.argv[2])
    s = mqstore.open(path, "commitlog", flush="sync", dispatch="async", **opts)
    s.create_topic("t", partitions=3)
    print("ready", flush=True)
    i = 0
    while True:
        batch = [mqstore.Message(b"m%d-%d" % (i, j) + b"#" * (i % 200), key=b"key%d" % (i % 13),
                                 tag="even" if i % 2 == 0 else "odd") for j in range(1 + i % 3)]
        for md in s.append_batch("t", batch):
            print(md.partition, md.offset, i, flush=True)
        i += 1
    """
)


def test_sigkill_under_sync_flush_and_async_dispatch_loses_nothing_acknowledged(store_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, store_path, json.dumps(SMALL)],
                            stdout=subprocess.PIPE, text=True)
    acked: list[tuple[int, int, int]] = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while len(acked) < 600 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(tuple(map(int, line.split())))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(acked) >= 100
    assert os.path.exists(os.path.join(store_path, "abort"))  # it did not shut down cleanly
    with mqstore.open(store_path, "commitlog") as s:
        assert s.recovery["abnormal"] is True
        for p in range(3):
            got = {}
            off = s.start_offset("t", p)
            while off < s.end_offset("t", p):
                page = s.read("t", p, off)
                got.update((r.offset, r) for r in page)
                off = page[-1].offset + 1
            assert sorted(got) == list(range(len(got)))  # dense
            for part, off, i in acked:
                if part == p:
                    assert got[off].value.startswith(b"m%d-" % i)
                    assert got[off].tag == ("even" if i % 2 == 0 else "odd")
        # the rebuilt indexes agree with the log
        assert all(r.key == b"key5" for r in s.lookup_key("t", b"key5", limit=1000))
        n_key5 = len(s.lookup_key("t", b"key5", limit=10_000))
        assert n_key5 >= sum(1 for _p, _o, i in acked if i % 13 == 5)
        assert s.append("t", b"after", partition=0).offset == s.end_offset("t", 0) - 1
    assert mqstore.engines  # noqa: the store closed cleanly
    assert not os.path.exists(os.path.join(store_path, "abort"))


FOLLOWER = textwrap.dedent(
    """
    import sys, time, json, mqstore
    path, want = sys.argv[1], int(sys.argv[2])
    s = mqstore.open(path, "commitlog", read_only=True)
    seen, offset, deadline = [], 0, time.monotonic() + 30
    while len(seen) < want and time.monotonic() < deadline:
        end = s.end_offset("t", 0)  # before the read: the read scans at least this far
        page = s.read("t", 0, offset, tags=["keep"])
        for r in page:
            seen.append([r.offset, r.value.decode(), r.tag])
            offset = r.offset + 1
        if not page:
            offset = max(offset, end)  # everything below end was filtered out
            time.sleep(0.002)
    print(json.dumps(seen))
    """
)


@pytest.mark.parametrize("dispatch", ["async", "sync"])
def test_follower_process_sees_whole_messages_only(open_cl, store_path, dispatch):
    w = open_cl(flush="os", dispatch=dispatch)
    w.create_topic("t")
    w.append("t", b"first", partition=0, tag="keep")
    w.flush()
    n = 300
    reader = subprocess.Popen([sys.executable, "-c", FOLLOWER, store_path, str(n)],
                              stdout=subprocess.PIPE, text=True)
    expected = [[0, "first", "keep"]]
    off = 1
    for i in range(1, 2 * n):
        tag = "keep" if i % 2 else "drop"
        w.append("t", b"v%d" % i + b"~" * (i % 50), partition=0, tag=tag)
        if tag == "keep":
            expected.append([off, "v%d" % i + "~" * (i % 50), "keep"])
        off += 1
        if i % 40 == 0:
            time.sleep(0.005)
    out, _ = reader.communicate(timeout=60)
    seen = json.loads(out)
    assert len(seen) >= n
    assert seen == expected[:len(seen)]


def test_follower_ignores_half_written_and_dangling_units(open_cl, store_path):
    w = open_cl()
    w.create_topic("t")
    for i in range(5):
        w.append("t", b"v%d" % i, partition=0)
    w.close()
    unit0 = os.path.join(store_path, "consumequeue", "t", "0", "%020d" % 0)
    # unit 5: points past the end of the log; unit 6 would be valid-looking after it
    with open(unit0, "r+b") as f:
        f.seek(5 * 20)
        f.write(struct.pack(">qiq", 10_000, 120, 0))
    r = open_cl(read_only=True)
    assert r.end_offset("t", 0) == 5
    assert [x.value for x in r.read("t", 0, 0)] == [b"v%d" % i for i in range(5)]
    # a half-written unit: offset written, size not yet
    with open(unit0, "r+b") as f:
        f.seek(5 * 20)
        f.write(bytes(20))
        f.seek(5 * 20)
        f.write(struct.pack(">q", 4096))
    assert r.end_offset("t", 0) == 5


def test_read_only_takes_no_lock_and_refuses_writes(open_cl, store_path):
    w = open_cl()
    w.create_topic("t")
    w.append("t", b"v", partition=0)
    r = open_cl(read_only=True)
    with pytest.raises(mqstore.ReadOnlyStoreError):
        r.append("t", b"x")
    with pytest.raises(mqstore.ReadOnlyStoreError):
        r.apply_retention()
    assert r.read("t", 0, 0)[0].value == b"v"
    assert not r.stats()["recovery_scan"]  # a follower runs no recovery
    assert not any(r.stats()["recovery"].values())


def test_second_writer_gets_store_locked_error(open_cl, store_path):
    open_cl()
    code = textwrap.dedent(
        """
        import sys, mqstore
        try:
            mqstore.open(sys.argv[1], "commitlog")
        except mqstore.StoreLockedError:
            print("locked")
        """)
    out = subprocess.run([sys.executable, "-c", code, store_path], capture_output=True,
                         text=True, timeout=60).stdout
    assert out.strip() == "locked"

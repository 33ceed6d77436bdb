"""One writer per directory; a read-only follower in another process sees new data."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import mqstore

from .conftest import SMALL

FOLLOWER = textwrap.dedent(
    """
    import sys, json, mqstore
    path, opts = sys.argv[1], json.loads(sys.argv[2])
    r = mqstore.open(path, "segments", read_only=True, **opts)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "state":
            out = {}
            for t in r.topics():
                for p in range(r.partitions(t)):
                    end = r.end_offset(t, p)
                    off, vals = r.start_offset(t, p), []
                    start = off
                    while off < end:
                        page = r.read(t, p, off)
                        vals += [x.value.decode() for x in page]
                        off = page[-1].offset + 1
                    out[f"{t}-{p}"] = [start, end, vals]
            out["committed"] = r.committed_offset("g", "t", 0)
            print(json.dumps(out), flush=True)
        elif cmd[0] == "write":
            try:
                r.append("t", b"x")
            except mqstore.ReadOnlyStoreError:
                print("refused", flush=True)
    """
)


class Follower:
    def __init__(self, path, opts):
        self.proc = subprocess.Popen([sys.executable, "-c", FOLLOWER, path, json.dumps(opts)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def state(self):
        return json.loads(self.ask("state"))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)


def test_read_only_follower_in_another_process(open_segments):
    opts = {**SMALL, "segment_bytes": 1200, "retention_ms": 50_000}
    w = open_segments(**opts)
    w.create_topic("t")
    for i in range(5):
        w.append("t", b"a%d" % i, partition=0, timestamp_ms=1000 + i)
    f = Follower(w.path, opts)
    try:
        st = f.state()
        assert st["t-0"] == [0, 5, ["a%d" % i for i in range(5)]]
        # more data, enough to roll several segments, and a new topic
        for i in range(5, 120):
            w.append("t", b"a%d" % i * 3, partition=0, timestamp_ms=1000 + i)
        w.create_topic("late", partitions=2)
        w.append("late", b"hello", partition=1)
        w.commit_offset("g", "t", 0, 42)
        st = f.state()
        assert st["t-0"][1] == 120
        assert st["t-0"][2] == ["a%d" % i for i in range(5)] + \
            ["a%d" % i * 3 for i in range(5, 120)]
        assert st["late-1"] == [0, 1, ["hello"]] and st["late-0"] == [0, 0, []]
        assert st["committed"] == 42
        # retention moves the start offset under the follower
        w.apply_retention(now_ms=1000 + 80 + 50_001)
        start = w.start_offset("t", 0)
        assert start > 0
        st = f.state()
        assert st["t-0"][0] == start and st["t-0"][1] == 120
        assert f.ask("write") == "refused"
    finally:
        f.close()


def test_follower_never_sees_a_partial_batch(open_segments, tmp_path):
    w = open_segments()
    w.create_topic("t")
    w.append_batch("t", [b"one", b"two"], partition=0)
    w.flush()
    # simulate a batch half-written by the live writer: append its first bytes only
    import os
    from mqstore.engines.segments.record_batch import batch_prefix, encode_messages
    body = encode_messages([(1, None, b"three", None, None)])
    batch = batch_prefix(2, body) + body.body
    log = os.path.join(w.path, "t-0", "00000000000000000000.log")
    r = mqstore.open(w.path, "segments", read_only=True, **SMALL)
    try:
        with open(log, "ab") as fh:
            fh.write(batch[:30])
        assert r.end_offset("t", 0) == 2
        assert [x.value for x in r.read("t", 0, 0)] == [b"one", b"two"]
        with open(log, "ab") as fh:
            fh.write(batch[30:])
        assert r.end_offset("t", 0) == 3
        assert [x.value for x in r.read("t", 0, 2)] == [b"three"]
    finally:
        r.close()


def test_second_writer_gets_store_locked_error(open_segments):
    w = open_segments()
    w.create_topic("t")
    with pytest.raises(mqstore.StoreLockedError):
        mqstore.open(w.path, "segments")
    code = ("import sys, mqstore\n"
            "try:\n    mqstore.open(sys.argv[1], 'segments')\n"
            "except mqstore.StoreLockedError:\n    print('locked')\n")
    out = subprocess.run([sys.executable, "-c", code, w.path], capture_output=True, text=True)
    assert out.stdout.strip() == "locked"
    r = mqstore.open(w.path, "segments", read_only=True)
    try:
        assert r.topics() == ["t"]
        with pytest.raises(mqstore.ReadOnlyStoreError):
            r.create_topic("x")
        with pytest.raises(mqstore.ReadOnlyStoreError):
            r.commit_offset("g", "t", 0, 1)
        with pytest.raises(mqstore.ReadOnlyStoreError):
            r.apply_retention()
    finally:
        r.close()
    w.close()
    w2 = mqstore.open(w.path, "segments")  # the lock is released on close
    w2.close()


def test_read_only_open_writes_nothing(open_segments, tmp_path):
    import os
    import shutil
    w = open_segments()
    w.create_topic("t")
    w.append("t", b"v", partition=0)
    img = str(tmp_path / "img")
    w.flush()
    shutil.copytree(w.path, img)  # a crash image: recovery would be needed
    before = {os.path.join(d, n): os.path.getsize(os.path.join(d, n))
              for d, _, names in os.walk(img) for n in names}
    r = mqstore.open(img, "segments", read_only=True)
    assert r.read("t", 0, 0)[0].value == b"v"
    r.close()
    after = {os.path.join(d, n): os.path.getsize(os.path.join(d, n))
             for d, _, names in os.walk(img) for n in names}
    assert after == before


def test_read_only_open_of_a_log_without_indexes(tmp_path):
    """A Kafka log dropped in without indexes, opened read-only: nothing to rebuild (no
    writes), so the follower walks batch headers instead."""
    from mqstore.engines.segments.record_batch import batch_prefix, encode_messages
    pdir = tmp_path / "kafka" / "t-0"
    pdir.mkdir(parents=True)
    data, off = b"", 0
    for n in (3, 5, 2):
        body = encode_messages([(1000 + off + i, None, b"r%d" % (off + i), None, None)
                                for i in range(n)])
        data += batch_prefix(off, body) + body.body
        off += n
    (pdir / "00000000000000000000.log").write_bytes(data)
    r = mqstore.open(str(tmp_path / "kafka"), "segments", read_only=True)
    try:
        assert r.end_offset("t", 0) == 10
        assert [x.value for x in r.read("t", 0, 4)] == [b"r%d" % i for i in range(4, 10)]
        assert r.offset_for_time("t", 0, 1007) == 7
    finally:
        r.close()
    assert sorted(p.name for p in pdir.iterdir()) == ["00000000000000000000.log"]


LIVE_WRITER = textwrap.dedent(
    """
    import sys, json, time, mqstore
    path, opts = sys.argv[1], json.loads(sys.argv[2])
    s = mqstore.open(path, "segments", **opts)
    s.create_topic("t")
    print("ready", flush=True)
    i, deadline = 0, time.monotonic() + 1.5
    while time.monotonic() < deadline:
        if i % 7 == 0:
            s.append_batch("t", [b"%d." % (i + j) * (1 + (i + j) % 9) for j in range(5)], partition=0)
            i += 5
        else:
            s.append("t", b"%d." % i * (1 + i % 9), partition=0)
            i += 1
    s.close()
    print(i, flush=True)
    """
)


def test_follower_reads_consistently_while_the_writer_appends_and_rolls(tmp_path):
    path = str(tmp_path / "store")
    opts = {"segment_bytes": 2048, "index_interval_bytes": 128, "segment_index_bytes": 96}
    proc = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, path, json.dumps(opts)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    r = mqstore.open(path, "segments", read_only=True)
    try:
        off, reads = 0, 0
        while proc.poll() is None or off < r.end_offset("t", 0):
            end = r.end_offset("t", 0)
            assert end >= off
            if off < end:
                page = r.read("t", 0, off, max_records=50)
                assert page and page[0].offset == off
                for rec in page:
                    assert rec.value == b"%d." % rec.offset * (1 + rec.offset % 9)
                assert [x.offset for x in page] == list(range(off, off + len(page)))
                off = page[-1].offset + 1
                reads += 1
            probe = r.offset_for_time("t", 0, 0)
            assert probe in (None, 0)
        total = int(proc.stdout.readline())
        assert off == total and reads > 5
    finally:
        proc.wait(10)
        r.close()


def test_follower_uses_the_live_indexes(open_segments):
    w = open_segments(segment_bytes=1 << 20, index_interval_bytes=64)
    w.create_topic("t")
    w.append("t", b"first", partition=0, timestamp_ms=1)
    r = mqstore.open(w.path, "segments", read_only=True)
    try:
        assert r.end_offset("t", 0) == 1
        w.append("t", b"second", partition=0, timestamp_ms=2)
        for i in range(200):
            w.append("t", b"v%d" % i * 4, partition=0, timestamp_ms=10_000 + i)
        assert r.read("t", 0, 150, max_records=1)[0].value == b"v148" * 4
        assert r.offset_for_time("t", 0, 10_100) == 102
        (log,) = r._topics["t"]  # white-box: the follower's view of the active segment
        seg = log.segments[-1]
        assert seg.offset_index.entries > 10 and not seg.offset_index.sealed
        assert seg.time_index.entries > 10
    finally:
        r.close()

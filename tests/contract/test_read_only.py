"""Contract: a read-only store reads alongside a live writer and follows its appends."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

import mqstore

from .conftest import read_all, small_options


def test_reader_follows_writer_in_process(open_store, engine, store_path):
    w = open_store()
    w.create_topic("t", partitions=2)
    w.append_batch("t", [b"a%d" % i for i in range(10)], partition=0)
    r = open_store(read_only=True)
    assert r.topics() == ["t"]
    assert r.end_offset("t", 0) == 10
    assert [x.value for x in read_all(r, "t", 0)] == [b"a%d" % i for i in range(10)]
    w.append_batch("t", [b"b%d" % i for i in range(300)], partition=0)
    w.append("t", b"p1", partition=1)
    deadline = time.monotonic() + 10
    while r.end_offset("t", 0) < 310 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert r.end_offset("t", 0) == 310
    assert read_all(r, "t", 0)[-1].value == b"b299"
    assert r.read("t", 1, 0)[0].value == b"p1"


def test_reader_sees_new_topics(open_store):
    w = open_store()
    w.create_topic("t")
    r = open_store(read_only=True)
    w.create_topic("later")
    w.append("later", b"x")
    deadline = time.monotonic() + 10
    while "later" not in r.topics() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert r.topics() == ["later", "t"]
    assert r.read("later", 0, 0)[0].value == b"x"


def test_read_only_refuses_writes(open_store):
    w = open_store()
    w.create_topic("t")
    w.close()
    r = open_store(read_only=True)
    with pytest.raises(mqstore.ReadOnlyStoreError):
        r.append("t", b"v")
    with pytest.raises(mqstore.ReadOnlyStoreError):
        r.create_topic("u")
    with pytest.raises(mqstore.ReadOnlyStoreError):
        r.commit_offset("g", "t", 0, 1)


def test_read_only_on_missing_directory(engine, tmp_path):
    with pytest.raises(mqstore.ConfigError):
        mqstore.open(str(tmp_path / "absent"), engine, read_only=True)


READER = textwrap.dedent(
    """
    import sys, time, json, mqstore
    path, engine, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = mqstore.open(path, engine, read_only=True)
    seen, offset, deadline = [], 0, time.monotonic() + 30
    while len(seen) < want and time.monotonic() < deadline:
        if offset < s.end_offset("t", 0):
            for r in s.read("t", 0, offset):
                seen.append(r.value.decode())
                offset = r.offset + 1
        else:
            time.sleep(0.005)
    print(json.dumps(seen))
    """
)


def test_reader_process_follows_live_writer(open_store, engine, store_path):
    import json

    w = open_store(flush="os")
    w.create_topic("t")
    w.append("t", b"m0", partition=0)
    w.flush()
    n = 400
    reader = subprocess.Popen([sys.executable, "-c", READER, store_path, engine, str(n)],
                              stdout=subprocess.PIPE, text=True)
    for i in range(1, n):
        w.append("t", b"m%d" % i + b"-" * (i % 97), partition=0)
        if i % 50 == 0:
            time.sleep(0.01)
    out, _ = reader.communicate(timeout=60)
    seen = json.loads(out)
    assert seen == ["m0"] + ["m%d" % i + "-" * (i % 97) for i in range(1, n)]

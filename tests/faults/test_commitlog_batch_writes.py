"""The commitlog's batch-native write path and dispatcher under the damage model: the batch
dispatcher builds exactly the ConsumeQueue units and IndexFile slots and entries the
per-message dispatch builds (mixed batches: keys, tags, headers, several queues, CommitLog,
ConsumeQueue and IndexFile rolls), and a SIGKILL right after ``flush()`` reopens from the
checkpoint that flush advanced, redoes only the IndexFile keys it does not cover, and loses
nothing. Small files so that a few hundred
messages roll every kind of file; every input is seeded."""
from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import textwrap

import pytest

import mqstore
from mqstore.api import Message
from mqstore.engines.commitlog import format as fmt
from mqstore.engines.commitlog.dispatcher import Dispatcher

SMALL = {"mapped_file_size": 4096, "cq_units_per_file": 16, "hash_slots": 64,
         "index_entries": 100}


def mixed_batches(seed: int):
    """(messages, partition) of a seeded mix: plain values, keys (one non-ASCII: the slow
    key path), tags, headers, explicit timestamps, batches to one queue and spread."""
    rng = random.Random(seed)
    out = []
    for b in range(30):
        n = rng.randint(1, 12)
        if b % 3 == 0:
            msgs = [rng.randbytes(rng.randrange(0, 200)) for _ in range(n)]
        else:
            msgs = [Message(rng.randbytes(rng.randrange(0, 200)),
                            key=(b"k%d" % rng.randrange(20)) if i % 2 else
                            ("\u043a%d" % i).encode() if i % 5 == 0 else None,
                            tag=rng.choice([None, "red", "blue", "\u7ea2"]),
                            headers={"h": b"x"} if i % 4 == 1 else None,
                            timestamp_ms=1_000_000 + i if i % 3 == 0 else None)
                    for i in range(n)]
        out.append((msgs, None if b % 2 else b % 4))
    return out


def derived_files(root: str) -> dict[str, bytes]:
    """Every ConsumeQueue and IndexFile, by path relative to the store."""
    got = {}
    for sub in (fmt.CONSUMEQUEUE_DIR, fmt.INDEX_DIR):
        for dirpath, _dirs, files in os.walk(os.path.join(root, sub)):
            for f in files:
                p = os.path.join(dirpath, f)
                got[os.path.relpath(p, root)] = open(p, "rb").read()
    return got


@pytest.mark.parametrize("seed", [1, 2])
def test_batch_dispatch_equals_per_message_dispatch(tmp_path, monkeypatch, seed):
    a = str(tmp_path / "a")
    s = mqstore.open(a, "commitlog", **SMALL)
    s.create_topic("t", 4)
    s.create_topic("u", 2)
    for msgs, p in mixed_batches(seed):
        s.append_batch("t", msgs, partition=p)
        s.append("u", b"single", partition=len(msgs) % 2)
    s.close()
    assert len(os.listdir(os.path.join(a, "commitlog"))) > 3
    # b: the same CommitLog, its ConsumeQueues and IndexFiles rebuilt one message at a time
    b = str(tmp_path / "b")
    os.makedirs(b)
    for name in os.listdir(a):
        if name not in (fmt.CONSUMEQUEUE_DIR, fmt.INDEX_DIR, fmt.CHECKPOINT_FILE):
            src = os.path.join(a, name)
            (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(b, name))

    def one_at_a_time(self, mm, pos, limit):  # every message goes to _dispatch_one
        blank = limit - pos >= 8 and struct.unpack_from(">I", mm, pos + 4)[0] == fmt.BLANK_MAGIC
        return 0, pos, blank

    monkeypatch.setattr(Dispatcher, "_dispatch_block", one_at_a_time)
    s = mqstore.open(b, "commitlog", **SMALL)
    assert s.recovery["redispatched_messages"] == s.stats()["appended_records"] or \
        s.recovery["redispatched_messages"] > 0
    s.close()
    want, got = derived_files(a), derived_files(b)
    assert sorted(want) == sorted(got)
    assert len([k for k in want if k.startswith(fmt.INDEX_DIR)]) > 1  # IndexFile rolls
    for name in want:
        assert want[name] == got[name], name


CHILD = textwrap.dedent(
    """
    import os, sys, time, json, mqstore
    from mqstore.engines.commitlog import format as fmt
    fmt.CHECKPOINT_SLACK_MS = 0
    path, opts = sys.argv[1], json.loads(sys.argv[2])
    s = mqstore.open(path, "commitlog", flush="os", **opts)
    s.create_topic("t", 2)
    n = 0
    for j in range(40):
        md = s.append_batch("t", [b"v%d-%d" % (j, i) * 3 for i in range(10)], partition=j % 2)
        n += len(md)
        time.sleep(0.002)
    s.flush()
    ck = s.checkpoint
    print("F", n, ck.physic_msg_timestamp, ck.logics_msg_timestamp, ck.index_msg_timestamp,
          flush=True)
    for j in range(3):  # an unflushed tail
        s.append_batch("t", [b"tail%d" % j], partition=0)
    s.dispatcher.wait_until(s.commitlog.max_offset)
    print("D", flush=True)
    time.sleep(60)
    """
)


def test_kill_right_after_flush_reopens_from_the_advanced_checkpoint(store_path, monkeypatch):
    import json
    proc = subprocess.Popen([sys.executable, "-c", CHILD, store_path, json.dumps(SMALL)],
                            stdout=subprocess.PIPE, text=True)
    try:
        f_line = proc.stdout.readline().split()
        assert f_line and f_line[0] == "F", f_line
        assert proc.stdout.readline().strip() == "D"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    flushed, physic, logics, index = map(int, f_line[1:])
    assert physic > 0 and logics == physic and index == physic
    monkeypatch.setattr(fmt, "CHECKPOINT_SLACK_MS", 0)  # as the writer: no 3 s wait needed
    with mqstore.open(store_path, "commitlog", **SMALL) as s:
        ck = s.checkpoint
        assert s.recovery["abnormal"] is True
        assert (ck.physic_msg_timestamp, ck.logics_msg_timestamp) >= (physic, logics)
        # the scan and the re-dispatch start at a later file, not the first one
        assert s.recovery["start_offset"] > 0
        values, stamps = {}, []
        for p in range(2):
            off = 0
            while off < s.end_offset("t", p):
                page = s.read("t", p, off)
                values.update(((p, r.offset), r.value) for r in page)
                stamps += [r.timestamp_ms for r in page]  # the store timestamps
                off = page[-1].offset + 1
        # the CRC scan keeps its window, but the derived files are checked and re-dispatched
        # only from the checkpoint's durable offset (issue 9): the unflushed tail, plus the
        # last message before it (where the IndexFile says it ends); only the tail's keys
        # are redone, not those of the messages stored in the checkpoint's own millisecond
        uncovered = sum(ts >= min(physic, logics, index) for ts in stamps)
        assert 3 <= uncovered <= 3 + 20
        assert s.recovery["durable_offset"] > s.recovery["start_offset"]
        assert s.recovery["scanned_messages"] > 3 + 1
        assert 3 <= s.recovery["redispatched_messages"] <= 3 + 1
        assert s.recovery["index_entries_removed"] == 3
        for j in range(40):
            for i in range(10):
                assert values[(j % 2, (j // 2) * 10 + i)] == b"v%d-%d" % (j, i) * 3
        assert [values[(0, 200 + j)] for j in range(3)] == [b"tail%d" % j for j in range(3)]
        # the store is usable: appends go on after the recovered end
        assert s.append("t", b"after", partition=1).offset == 200

"""The batch-native read and transfer paths against a reference that walks every batch of
every segment one record at a time (the behaviour they replaced).

The store mixes single-record batches, 200-record batches, keys, headers, tags, null-ish
values and several segments, so a read crosses batch and segment boundaries wherever it
starts; every start offset is read with several ``max_records`` / ``max_bytes`` / ``tags``.
"""
from __future__ import annotations

import os
import random
import socket
import struct
import threading

import pytest

from mqstore.api import Message
from mqstore.engines.segments.record_batch import iter_records
from tests.segments.conftest import segment_files


def _fill(s, seed: int = 7) -> None:
    rng = random.Random(seed)
    s.create_topic("t")
    for i in range(60):
        kind = rng.randrange(4)
        if kind == 0:
            s.append("t", b"v%d" % i * rng.randrange(1, 40))
        elif kind == 1:
            s.append_batch("t", [bytes([i % 256]) * rng.randrange(0, 90) for _ in range(200)])
        elif kind == 2:
            s.append_batch("t", [Message(b"m%d" % j, key=b"k%d" % j,
                                         headers={"h": b"x", "e": b""} if j % 3 else None,
                                         tag=("a" if j % 2 else "b") if j % 5 else None)
                                 for j in range(rng.randrange(1, 30))], partition=0)
        else:
            s.append("t", b"", key=b"only-key", headers={"n": b"1"}, tag="a")


def _reference(path: str) -> list:
    """Every record of partition t-0 in order, decoded batch by batch from the files."""
    out = []
    for log in segment_files(path):
        data = open(log, "rb").read()
        pos = 0
        while pos + 61 <= len(data):
            size = struct.unpack_from(">i", data, pos + 8)[0] + 12
            out += list(iter_records(data[pos:pos + size]))
            pos += size
    return out


def _expected(ref, offset, max_records, max_bytes, tags):
    got, total = [], 0
    for r in ref:
        if r.offset < offset or (tags is not None and r.tag not in tags):
            continue
        if got and total + len(r.value) > max_bytes:
            break
        got.append((r.offset, r.timestamp_ms, r.key, r.value, r.headers, r.tag))
        total += len(r.value)
        if len(got) >= max_records:
            break
    return got


@pytest.fixture
def mixed(open_segments):
    s = open_segments()
    _fill(s)
    s.flush()
    return s, _reference(s.path)


@pytest.mark.parametrize("max_records, max_bytes, tags", [
    (500, 1 << 20, None), (1, 1 << 20, None), (7, 1 << 20, None), (10_000, 1 << 30, None),
    (500, 1, None), (500, 300, None), (50, 5000, ["a"]), (3, 1 << 20, ["b", "a"]),
])
def test_reads_match_the_record_at_a_time_reference(mixed, max_records, max_bytes, tags):
    s, ref = mixed
    end = s.end_offset("t", 0)
    assert len(ref) == end
    for offset in list(range(0, end, 37)) + [end - 1]:
        got = s.read("t", 0, offset, max_records=max_records, max_bytes=max_bytes, tags=tags)
        want = _expected(ref, offset, max_records, max_bytes, None if tags is None
                         else set(tags))
        assert [tuple(r)[2:] for r in got] == want, offset
        assert got.offsets.tolist() == [w[0] for w in want]
        assert got.values() == [w[3] for w in want]
        assert got.keys() == [w[2] for w in want]
        assert got.headers() == [w[4] for w in want]
        assert got.tags() == [w[5] for w in want]


def test_a_read_never_returns_the_tag_header(mixed):
    s, _ref = mixed
    for r in s.read("t", 0, 0, max_records=100_000, max_bytes=1 << 30):
        assert "mqstore.tag" not in r.headers


def _reference_transfer(path, offset, max_bytes, end):
    """(bytes, next_offset) walking every batch header from the segment's start."""
    for log in segment_files(path):
        data = open(log, "rb").read()
        pos, start, total, nxt = 0, None, 0, offset
        while pos + 61 <= len(data):
            base, length = struct.unpack_from(">qi", data, pos)
            size = length + 12
            last = base + struct.unpack_from(">i", data, pos + 23)[0]
            if start is None and last >= offset:
                start = pos
            if start is not None:
                if base >= end or (total and total + size > max_bytes):
                    break
                total += size
                nxt = last + 1
            pos += size
        if start is not None:
            return total, nxt
    return 0, offset


def _drain(sock, received):
    while True:
        got = sock.recv(1 << 20)
        if not got:
            return
        received.append(len(got))


@pytest.mark.parametrize("max_bytes", [1, 100, 700, 4096, 65536, 1 << 20])
def test_transfer_to_matches_a_walk_of_every_header(mixed, max_bytes):
    s, _ref = mixed
    end = s.end_offset("t", 0)
    a, b = socket.socketpair()
    try:
        b.setblocking(False)
        for offset in list(range(0, end, 53)) + [end - 1]:
            sent, nxt = s.transfer_to(a, "t", 0, offset, max_bytes)
            assert (sent, nxt) == _reference_transfer(s.path, offset, max_bytes, end)
            got = b""
            while len(got) < sent:
                got += b.recv(1 << 20)
    finally:
        a.close()
        b.close()


def test_transfer_to_follows_the_index_across_large_batches(open_segments):
    """1,000-record batches with an index entry each: the sparse index bounds the walk."""
    s = open_segments(segment_bytes=1 << 22, index_interval_bytes=4096,
                      segment_index_bytes=1 << 16)
    s.create_topic("t")
    for i in range(12):
        s.append_batch("t", [b"%06d" % j * 16 for j in range(1000)])
        s.append("t", b"small")
    s.flush()
    end = s.end_offset("t", 0)
    a, b = socket.socketpair()
    received = []
    reader = threading.Thread(target=_drain, args=(b, received))
    reader.start()
    total = 0
    try:
        for offset in (0, 999, 1000, 1001, 5005, end - 1):
            for max_bytes in (1, 50_000, 200_000, 1 << 20):
                sent, nxt = s.transfer_to(a, "t", 0, offset, max_bytes)
                assert (sent, nxt) == _reference_transfer(s.path, offset, max_bytes, end)
                total += sent
    finally:
        a.close()
        reader.join()
        b.close()
    assert sum(received) == total
    assert os.path.getsize(segment_files(s.path, suffix=".index")[0]) > 0

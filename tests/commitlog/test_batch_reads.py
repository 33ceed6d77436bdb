"""The commitlog read path as one gather per CommitLog file (engines/commitlog/read_batch.py):
reads that span CommitLog and ConsumeQueue files, fillers, tags (hash collisions, limits),
keys and headers of every shape, max_records / max_bytes, and the same Records from the C
gather and from the reference (``mqstore._purepy_cl_read``)."""
from __future__ import annotations

import os
import random
import socket
import struct
import threading

import numpy as np
import pytest

from mqstore import Message, Record, _purepy_cl_read, native
from mqstore.engines.commitlog import format as fmt
from mqstore.records import EMPTY_HEADERS, Records

_FILLER = fmt.CQ_UNIT.pack(0, fmt.CQ_FILLER_SIZE, 0)


@pytest.fixture(params=["native", "reference"])
def gather_impl(request, monkeypatch):
    """Run the test with the C gather, then with the reference patched in."""
    if request.param == "native":
        if native.backend != "native":
            pytest.skip("the compiled helper is not loaded")
    else:
        monkeypatch.setattr(native, "cl_gather", _purepy_cl_read.cl_gather)
    return request.param


KEYS = [None, b"plain-key", b"two keys", b"", "clé".encode(), b"\x00\xffbin", b"k\x01\x02"]
HEADERS = [None, {"h": b"v"}, {"TAGS": b"reserved name", "x\x01y": b"\x00\x01"},
           {"e": b""}]
TAGS = [None, "even", "odd", "t\x02special", "ünï"]


def _messages(n: int, seed: int = 9) -> list[Message]:
    rnd = random.Random(seed)
    return [Message(b"v%05d-" % i + bytes(rnd.randrange(256) for _ in range(rnd.randrange(300))),
                    key=rnd.choice(KEYS), headers=rnd.choice(HEADERS), tag=rnd.choice(TAGS),
                    timestamp_ms=1_700_000_000_000 + i)
            for i in range(n)]


def _expected(msgs, start=0, partition=0) -> list[Record]:
    return [Record("t", partition, i, m.timestamp_ms, m.key, m.value, m.headers or {}, m.tag)
            for i, m in enumerate(msgs) if i >= start]


def _model(expected, max_records=500, max_bytes=1 << 20, tags=None):
    """What a read returns by the API's rules: matching records while max_records and
    max_bytes allow, the first one always."""
    out, total = [], 0
    for r in expected:
        if tags is not None and r.tag not in tags:
            continue
        if out and total + len(r.value) > max_bytes:
            break
        out.append(r)
        total += len(r.value)
        if len(out) >= max_records:
            break
    return out


def _filled(open_cl, n=120, partitions=1):
    s = open_cl()
    s.create_topic("t", partitions=partitions)
    msgs = _messages(n)
    for i in range(0, n, 7):
        s.append_batch("t", msgs[i:i + 7], partition=0)
    return s, msgs


def test_reads_span_files_and_equal_the_records_written(open_cl, gather_impl):
    s, msgs = _filled(open_cl)
    assert len(s.commitlog.files) > 5  # 4 KiB CommitLog files, 16-unit ConsumeQueue files
    expected = _expected(msgs)
    for start in (0, 1, 15, 16, 17, 63, 119):
        for max_records in (1, 2, 16, 17, 500):
            got = s.read("t", 0, start, max_records=max_records)
            assert isinstance(got, Records)
            assert got == _model(expected[start:], max_records), (start, max_records)
    got = s.read("t", 0, 0)
    want = _model(expected)
    assert got.offsets.tolist() == [r.offset for r in want]
    assert got.timestamps_ms.tolist() == [r.timestamp_ms for r in want]
    assert got.values() == [r.value for r in want]
    assert bytes(got.value_buffer[got.value_offsets[3]:][:got.value_sizes[3]]) == want[3].value
    assert got.keys() == [r.key for r in want]
    assert got.headers() == [r.headers for r in want]
    assert got.tags() == [r.tag for r in want]
    assert [got[i] for i in range(len(got))] == want and list(got[5:9]) == want[5:9]


@pytest.mark.parametrize("max_bytes", [0, 1, 100, 299, 300, 1000, 5000])
def test_max_bytes_takes_the_first_record_and_stops_before_the_budget(open_cl, gather_impl,
                                                                      max_bytes):
    s, msgs = _filled(open_cl, 60)
    expected = _expected(msgs)
    for start in (0, 13, 59):
        got = s.read("t", 0, start, max_bytes=max_bytes)
        assert got == _model(expected[start:], max_bytes=max_bytes)
        assert len(got) >= 1


def test_plain_values_have_no_key_header_or_tag_columns(open_cl, gather_impl):
    s = open_cl()
    s.create_topic("t")
    s.append_batch("t", [b"a" * i for i in range(40)], partition=0)
    got = s.read("t", 0, 0)
    assert got.values() == [b"a" * i for i in range(40)]
    assert got.keys() == [None] * 40 and got.tags() == [None] * 40
    assert got.headers() == [EMPTY_HEADERS] * 40
    assert all(r.headers == {} and r.key is None and r.tag is None for r in got)
    # only UNIQ_KEY and the record CRC in the properties: just the values are copied
    assert len(got.value_buffer) == sum(range(40))


def test_plain_keys_are_columns_and_escaped_keys_decode(open_cl, gather_impl):
    s = open_cl()
    s.create_topic("t")
    s.append_batch("t", [Message(b"v%d" % i, key=b"key-%d" % i) for i in range(30)],
                   partition=0)
    got = s.read("t", 0, 0)
    assert got.keys() == [b"key-%d" % i for i in range(30)]
    s.append("t", b"bin", key=b"\xff\x00", partition=0)
    s.append("t", b"spaced", key=b"a b", partition=0)
    got = s.read("t", 0, 28)
    assert [r.key for r in got] == [b"key-28", b"key-29", b"\xff\x00", b"a b"]


def test_fillers_are_skipped_and_do_not_count(open_cl, gather_impl):
    s, msgs = _filled(open_cl, 60)
    s.read("t", 0, 59)  # the dispatcher has written every unit (reads wait for it)
    cq = s._queues[("t", 0)]
    holes = {3, 15, 16, 17, 40}
    for q in holes:
        cq._write_unit(q, _FILLER)
    expected = [r for r in _expected(msgs) if r.offset not in holes]
    for start in (0, 3, 15, 16, 18):
        for max_records in (1, 3, 500):
            got = s.read("t", 0, start, max_records=max_records)
            assert got == _model([r for r in expected if r.offset >= start], max_records)
    with_tag = [r for r in expected if r.tag == "even"]
    assert s.read("t", 0, 0, tags={"even"}) == with_tag


def test_tag_reads_recheck_collisions_under_both_limits(open_cl, gather_impl):
    """"Aa" and "BB" share a Java hash, so every unit is a candidate and the gather sees the
    big "Aa" bodies; only "BB" records count for max_records and max_bytes."""
    s = open_cl()
    s.create_topic("t")
    msgs = [Message((b"A" * 400 if i % 3 else b"b%02d" % i), tag="Aa" if i % 3 else "BB",
                    timestamp_ms=1_700_000_000_000 + i)
            for i in range(90)]
    for i in range(0, 90, 10):
        s.append_batch("t", msgs[i:i + 10], partition=0)
    expected = _expected(msgs)
    for max_records, max_bytes in ((500, 1 << 20), (4, 1 << 20), (500, 10), (500, 0),
                                   (7, 21)):
        for tags in ({"BB"}, ["Aa"], {"BB", "Aa"}, {"nope"}):
            wanted = set(tags)
            got = s.read("t", 0, 0, max_records=max_records, max_bytes=max_bytes, tags=tags)
            assert got == _model(expected, max_records, max_bytes, wanted), \
                (max_records, max_bytes, tags)
            assert all(t in wanted for t in got.tags())
    assert s.read("t", 0, 0, tags=[]) == []


def test_reads_at_the_end_and_of_other_queues(open_cl, gather_impl):
    s = open_cl()
    s.create_topic("t", partitions=3)
    for i in range(60):
        s.append("t", b"p%d-%d" % (i % 3, i), partition=i % 3)
    for p in range(3):
        got = s.read("t", p, 0)
        assert [r.value for r in got] == [b"p%d-%d" % (p, i) for i in range(p, 60, 3)]
        assert [r.partition for r in got] == [p] * 20
        assert s.read("t", p, 20) == []


def test_native_and_reference_gathers_build_equal_records(open_cl):
    if native.backend != "native":
        pytest.skip("the compiled helper is not loaded")
    s, msgs = _filled(open_cl, 150)
    real = native.cl_gather
    for start, max_records, max_bytes, tags in ((0, 500, 1 << 20, None), (5, 9, 700, None),
                                                (0, 500, 1 << 20, {"even", "ünï"}),
                                                (33, 3, 50, {"odd"})):
        a = s.read("t", 0, start, max_records=max_records, max_bytes=max_bytes, tags=tags)
        native.cl_gather = _purepy_cl_read.cl_gather
        try:
            b = s.read("t", 0, start, max_records=max_records, max_bytes=max_bytes, tags=tags)
        finally:
            native.cl_gather = real
        assert a == b and len(a)
        assert bytes(a.value_buffer) == bytes(b.value_buffer)
        assert np.array_equal(a.offsets, b.offsets)
        assert a.keys() == b.keys() and a.headers() == b.headers() and a.tags() == b.tags()


def test_a_read_owns_its_bytes(open_cl, gather_impl):
    """The output buffer is reused by the thread's next read: a Records keeps its own."""
    s, msgs = _filled(open_cl, 40)
    first = s.read("t", 0, 0, max_records=10)
    values = first.values()
    s.read("t", 0, 20)
    assert first.values() == values == [m.value for m in msgs[:10]]
    assert first.keys() == [m.key for m in msgs[:10]]


def _stored(store_path):
    """{(queue id, queue offset): message bytes} of every stored message (struct walk)."""
    out = {}
    d = os.path.join(store_path, "commitlog")
    for name in sorted(os.listdir(d)):
        data = open(os.path.join(d, name), "rb").read()
        pos = 0
        while pos + 8 <= len(data):
            total, magic = struct.unpack_from(">iI", data, pos)
            if magic != fmt.MESSAGE_MAGIC_V1:
                break
            qid, _flag, qoff = struct.unpack_from(">iiq", data, pos + 12)
            out[(qid, qoff)] = data[pos:pos + total]
            pos += total
    return out


@pytest.mark.parametrize("max_bytes", [0, 300, 1000, 1 << 20])
def test_transfer_to_sends_the_stored_messages_in_runs(open_cl, store_path, gather_impl,
                                                       max_bytes, monkeypatch):
    s = open_cl()
    s.create_topic("t", partitions=2)
    for i in range(90):  # queue 0 in runs of 5 between queue-1 messages: slices of 5
        s.append("t", b"q%d-%03d" % (i % 6 // 5, i), partition=0 if i % 6 < 5 else 1)
    s.flush()
    if gather_impl == "reference":
        monkeypatch.setattr(native, "cl_transfer_plan", _purepy_cl_read.cl_transfer_plan)
    stored = _stored(store_path)
    a, b = socket.socketpair()
    try:
        for part, count in ((0, 75), (1, 15)):
            off, got = 0, b""
            while off < count:
                before = off
                n, off = s.transfer_to(a, "t", part, off, max_bytes)
                data = b""
                while len(data) < n:
                    data += b.recv(n - len(data))
                want = b"".join(stored[(part, q)] for q in range(before, off))
                assert data == want and off > before
                if max_bytes:
                    assert n <= max(max_bytes, len(stored[(part, before)]))
                got += data
            assert off == count
            assert got == b"".join(stored[(part, q)] for q in range(count))
        assert s.transfer_to(a, "t", 0, 75, 1 << 20) == (0, 75)  # at the end: nothing
    finally:
        a.close()
        b.close()


def test_transfer_to_plans_one_slice_per_run_of_adjacent_messages(open_cl, monkeypatch):
    s = open_cl()
    s.create_topic("t", partitions=2)
    for i in range(30):
        s.append("t", b"v%d" % i, partition=0 if i % 6 < 5 else 1)
    calls = []
    a, b = socket.socketpair()
    orig = socket.socket.sendmsg
    monkeypatch.setattr(socket.socket, "sendmsg",
                        lambda self, bufs, *x: calls.append(len(bufs)) or orig(self, bufs, *x))
    try:
        sent, nxt = s.transfer_to(a, "t", 0, 0, 1 << 20)
        assert nxt == 25 and sent > 0
        files = len({f.path for f in s.commitlog.files})
        # 5 runs of 5 adjacent messages, split further only where a run crosses a file
        assert 5 <= sum(calls) <= 5 + files
    finally:
        a.close()
        b.close()


def test_reads_from_several_threads_while_appending(open_cl, gather_impl):
    """Each thread gathers into its own scratch buffer; every Records keeps its own bytes."""
    s, msgs = _filled(open_cl, 80)
    expected = _expected(msgs)
    errors: list[BaseException] = []

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(40):
                start = rnd.randrange(80)
                n = rnd.randrange(1, 81 - start)  # within the first 80 (appends go on)
                got = s.read("t", 0, start, max_records=n)
                assert got == _model(expected[start:], n)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for i in range(40):
        s.append("t", b"late-%d" % i, partition=0)
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert [r.value for r in s.read("t", 0, 80)] == [b"late-%d" % i for i in range(40)]

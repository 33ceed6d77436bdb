"""Engine-specific behaviour of SegmentsStore: batches, sendfile bytes, limits, threads,
the offline tools, and engine detection."""
from __future__ import annotations

import os
import socket
import threading

import pytest

import mqstore
from mqstore import Message
from mqstore.engines.segments import format as fmt
from mqstore.engines.segments.record_batch import batch_is_valid, iter_records, read_header
from mqstore.engines.segments.store import SegmentsStore

from .conftest import segment_files


def _batches(data: bytes):
    pos, out = 0, []
    while pos < len(data):
        h = read_header(data, pos)
        out.append(data[pos:pos + h.size])
        pos += h.size
    return out


def test_append_batch_is_one_record_batch_per_partition(open_segments):
    s = open_segments()
    s.create_topic("t", partitions=2)
    s.append_batch("t", [Message(b"a", partition=0), Message(b"b", partition=1),
                         Message(b"c", partition=0)])
    s.append("t", b"d", partition=0)
    s.close()
    batches = _batches(open(segment_files(s.path)[0], "rb").read())
    assert [read_header(b).records_count for b in batches] == [2, 1]
    assert [[r.value for r in iter_records(b)] for b in batches] == [[b"a", b"c"], [b"d"]]


def test_transfer_sends_the_bytes_on_disk(open_segments):
    s = open_segments(segment_bytes=1 << 20)
    s.create_topic("t")
    for i in range(0, 60, 3):
        s.append_batch("t", [b"m%d" % j for j in range(i, i + 3)], partition=0)
    on_disk = open(segment_files(s.path)[0], "rb").read()
    a, b = socket.socketpair()
    try:
        sent, nxt = s.transfer_to(a, "t", 0, 31, 200)
        got = b.recv(1 << 16)
    finally:
        a.close()
        b.close()
    assert sent == len(got) and 0 < sent
    batches = _batches(got)
    assert all(batch_is_valid(x) for x in batches)
    assert read_header(batches[0]).base_offset == 30  # whole batch holding offset 31
    assert nxt == read_header(batches[-1]).last_offset + 1
    assert got in on_disk
    assert sent <= 200 or len(batches) == 1


def test_transfer_to_a_non_blocking_socket(open_segments):
    s = open_segments(segment_bytes=1 << 22)
    s.create_topic("t")
    for i in range(40):
        s.append_batch("t", [b"%03d" % i * 2000] * 10, partition=0)
    a, b = socket.socketpair()
    a.setblocking(False)
    got = []
    reader = threading.Thread(target=lambda: got.append(b"".join(iter(lambda: b.recv(1 << 16), b""))))
    reader.start()
    try:
        sent, nxt = s.transfer_to(a, "t", 0, 0, 1 << 30)
    finally:
        a.close()
        reader.join(10)
        b.close()
    assert nxt == 400 and sent == len(got[0]) > 400 * 6000


def test_transfer_first_batch_even_if_larger_than_max_bytes(open_segments):
    s = open_segments()
    s.create_topic("t")
    s.append_batch("t", [b"x" * 500, b"y" * 500], partition=0)
    a, b = socket.socketpair()
    try:
        sent, nxt = s.transfer_to(a, "t", 0, 1, 10)
        got = b.recv(1 << 16)
    finally:
        a.close()
        b.close()
    assert nxt == 2 and sent == len(got) > 1000


def test_max_message_bytes_is_the_encoded_batch_size(open_segments):
    s = open_segments(max_message_bytes=200)
    s.create_topic("t")
    from mqstore.engines.segments.record_batch import encode_one
    fits = max(n for n in range(200) if encode_one(0, None, b"x" * n, None, None).size <= 200)
    s.append("t", b"x" * fits, partition=0)
    with pytest.raises(mqstore.RecordTooLargeError):
        s.append("t", b"x" * (fits + 1), partition=0)
    with pytest.raises(mqstore.RecordTooLargeError):  # many small ones in one batch
        s.append_batch("t", [b"y" * 20] * 10, partition=0)
    assert s.end_offset("t", 0) == 1
    assert os.path.getsize(segment_files(s.path)[0]) == \
        encode_one(0, None, b"x" * fits, None, None).size


def test_tag_header_cannot_be_spoofed_and_is_stripped(open_segments):
    s = open_segments()
    s.create_topic("t")
    with pytest.raises(mqstore.InvalidRecordError):
        s.append_batch("t", [Message(b"v", headers={fmt.TAG_HEADER: b"x"})])
    s.append("t", b"v", partition=0, tag="tg", headers={"h": b"1"})
    (rec,) = s.read("t", 0, 0)
    assert rec.tag == "tg" and rec.headers == {"h": b"1"}


def test_concurrent_appenders_keep_offsets_dense(open_segments):
    s = open_segments(segment_bytes=4096)
    s.create_topic("t", partitions=2)
    n_threads, per = 6, 150

    def work(t):
        for i in range(per):
            if i % 10 == 0:
                s.append_batch("t", [b"%d:%d:%d" % (t, i, j) for j in range(3)],
                               partition=t % 2)
            else:
                s.append("t", b"%d:%d" % (t, i), partition=t % 2)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for p in (0, 1):
        recs, off = [], 0
        while off < s.end_offset("t", p):
            page = s.read("t", p, off)
            recs += page
            off = page[-1].offset + 1
        assert [r.offset for r in recs] == list(range(len(recs)))
        for t in range(p, n_threads, 2):  # each thread's records in its own order
            mine = [r.value for r in recs if r.value.startswith(b"%d:" % t)]
            assert len(mine) == per + per // 10 * 2
            assert mine == sorted(mine, key=lambda v: tuple(map(int, v.split(b":")[1:])))
    assert SegmentsStore.verify_files(s.path) == []


def test_inspect_lines_like_dump_log_segments(open_segments):
    s = open_segments(index_interval_bytes=0)
    s.create_topic("t")
    s.append_batch("t", [b"a", b"b"], partition=0, )
    s.append("t", b"c", partition=0, timestamp_ms=5)
    lines = list(SegmentsStore.inspect_files(s.path, "t-0"))
    batch_lines = [ln for ln in lines if ln.startswith("baseOffset")]
    assert len(batch_lines) == 2
    assert "baseOffset: 0 lastOffset: 1 count: 2" in batch_lines[0]
    assert "position: 0" in batch_lines[0] and "isvalid: true" in batch_lines[0]
    assert "CreateTime: 5" in batch_lines[1] and "compresscodec: none" in batch_lines[1]
    assert any(ln.startswith("offset: 2 position:") for ln in lines)
    one = list(SegmentsStore.inspect_files(s.path, os.path.join("t-0", "00000000000000000000.index")))
    assert one[1].startswith("offset: 2 position: ")


def test_verify_reports_damage_without_touching_files(open_segments):
    s = open_segments(segment_bytes=1 << 20, index_interval_bytes=100)
    s.create_topic("t")
    for i in range(40):
        s.append("t", b"v%d" % i * 10, partition=0)
    s.close()
    assert SegmentsStore.verify_files(s.path) == []
    (log,) = segment_files(s.path)
    (idx,) = segment_files(s.path, suffix=".index")
    with open(idx, "r+b") as f:
        f.write(fmt.OFFSET_INDEX_ENTRY.pack(3, 7))  # points inside a batch
    with open(log, "r+b") as f:
        f.seek(500)
        f.write(b"\x00\x01")
    before = open(log, "rb").read()
    damage = SegmentsStore.verify_files(s.path)
    assert any(d.path == log for d in damage)
    assert any(d.path == idx and "does not point at a batch" in d.problem for d in damage)
    assert open(log, "rb").read() == before


def test_engine_is_detected_and_other_engines_are_refused(open_segments, tmp_path):
    s = open_segments()
    s.create_topic("t")
    s.close()
    assert SegmentsStore.looks_like(s.path)
    assert not SegmentsStore.looks_like(str(tmp_path))
    os.unlink(os.path.join(s.path, "mqstore.json"))  # a bare Kafka log dir
    assert SegmentsStore.looks_like(s.path)
    with mqstore.open(s.path) as again:
        assert again.engine_name == "segments" and again.topics() == ["t"]


def test_shape_option_conflict_is_refused(open_segments):
    s = open_segments(segment_index_bytes=4096)
    s.close()
    with pytest.raises(mqstore.ConfigError):
        mqstore.open(s.path, "segments", segment_index_bytes=8192)


def test_bad_option_values_are_refused(tmp_path):
    for bad in ({"segment_bytes": 10}, {"segment_index_bytes": 3}, {"retention_ms": -2},
                {"segment_ms": 0}, {"no_such_option": 1}):
        with pytest.raises(mqstore.ConfigError):
            mqstore.open(str(tmp_path / "x"), "segments", **bad)


def test_consumer_offsets_topic_is_internal(open_segments):
    s = open_segments()
    s.create_topic("t")
    s.commit_offset("g/with/slashes", "t", 0, 7)
    assert s.committed_offset("g/with/slashes", "t", 0) == 7
    assert s.topics() == ["t"]
    with pytest.raises(mqstore.InvalidTopicError):
        s.create_topic("__consumer_offsets")
    with pytest.raises(mqstore.InvalidTopicError):
        s.append("__consumer_offsets", b"x")
    recs = s.read("__consumer_offsets", 0, 0)
    assert [(r.key, r.value) for r in recs] == [(b"g/with/slashes/t/0", b"7")]
    assert s.stats()["partitions"] == 1


def test_stats_counters(open_segments):
    s = open_segments(segment_bytes=2000)
    s.create_topic("t", partitions=3)
    s.append_batch("t", [b"x" * 100] * 30, partition=1)
    for i in range(30):
        s.append("t", b"y" * 100, partition=2)
    st = s.stats()
    assert st["appended_records"] == 60
    assert st["partitions"] == 3
    assert st["segments"] == len(segment_files(s.path, "t", 0)) + \
        len(segment_files(s.path, "t", 1)) + len(segment_files(s.path, "t", 2))
    assert st["appended_bytes"] == st["log_bytes"]

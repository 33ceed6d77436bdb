"""Index cadence, preallocation and trimming, rolls, and lookups through the indexes."""
from __future__ import annotations

import os
import struct

from mqstore.engines.segments import format as fmt

from .conftest import segment_files


def _entries(path, entry):
    data = open(path, "rb").read()
    out = []
    for i in range(len(data) // entry.size):
        e = entry.unpack_from(data, i * entry.size)
        if not any(e):
            break
        out.append(e)
    return out


def _batch_positions(log_path):
    data = open(log_path, "rb").read()
    pos, out = 0, []
    while pos < len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        lod = struct.unpack_from(">i", data, pos + 23)[0]
        out.append((pos, base, base + lod, length + 12))
        pos += length + 12
    return out


def _expected_offset_entries(batches, interval):
    last_indexed, out = 0, []
    for pos, _base, last, _size in batches:
        if pos - last_indexed > interval:
            out.append((last, pos))
            last_indexed = pos
    return out


def test_index_cadence_matches_kafka(open_segments):
    s = open_segments(index_interval_bytes=300, segment_bytes=1 << 20)
    s.create_topic("t")
    for i in range(60):
        s.append("t", b"x" * (i % 7 * 20), partition=0, timestamp_ms=1000 + i)
    s.close()
    log = segment_files(s.path)[0]
    batches = _batch_positions(log)
    want = _expected_offset_entries(batches, 300)
    got = [(rel, pos) for rel, pos in _entries(log[:-4] + ".index", fmt.OFFSET_INDEX_ENTRY)]
    assert got == want and len(want) > 5
    assert batches[0][0] not in [p for _, p in got]  # the first batch is never indexed
    # time entries: with growing timestamps, one per offset entry plus the final one
    times = _entries(log[:-4] + ".timeindex", fmt.TIME_INDEX_ENTRY)
    assert [off for _, off in times[:-1]] == [off for off, _ in want]
    assert times[-1] == (1059, 59)


def test_interval_zero_indexes_every_batch_after_the_first(open_segments):
    s = open_segments(index_interval_bytes=0, segment_bytes=1 << 20)
    s.create_topic("t")
    s.append_batch("t", [b"a", b"b"], partition=0)
    for i in range(9):
        s.append("t", b"v", partition=0)
    s.close()
    idx = segment_files(s.path, suffix=".index")[0]
    assert [rel for rel, _ in _entries(idx, fmt.OFFSET_INDEX_ENTRY)] == list(range(2, 11))


def test_time_entries_only_when_timestamp_grows(open_segments):
    s = open_segments(index_interval_bytes=0, segment_bytes=1 << 20)
    s.create_topic("t")
    for ts in [100, 200, 150, 200, 300, 250, 250, 400]:
        s.append("t", b"v", partition=0, timestamp_ms=ts)
    s.close()
    tidx = segment_files(s.path, suffix=".timeindex")[0]
    assert _entries(tidx, fmt.TIME_INDEX_ENTRY) == [(200, 1), (300, 4), (400, 7)]


def test_indexes_preallocated_while_active_and_trimmed_on_roll_and_close(open_segments):
    s = open_segments(segment_bytes=4000, index_interval_bytes=100, segment_index_bytes=1200)
    s.create_topic("t")
    for i in range(80):
        s.append("t", b"%03d" % i * 30, partition=0)
    idx = segment_files(s.path, suffix=".index")
    tidx = segment_files(s.path, suffix=".timeindex")
    assert len(idx) >= 3
    # sealed segments: trimmed to their entries
    for p in idx[:-1]:
        assert os.path.getsize(p) == len(_entries(p, fmt.OFFSET_INDEX_ENTRY)) * 8 > 0
    for p in tidx[:-1]:
        assert os.path.getsize(p) == len(_entries(p, fmt.TIME_INDEX_ENTRY)) * 12 > 0
    # the active segment: preallocated (rounded down to whole entries)
    assert os.path.getsize(idx[-1]) == 1200 // 8 * 8
    assert os.path.getsize(tidx[-1]) == 1200 // 12 * 12
    s.close()
    assert os.path.getsize(idx[-1]) == len(_entries(idx[-1], fmt.OFFSET_INDEX_ENTRY)) * 8
    # reopening grows the active segment's indexes back and appending continues
    s2 = open_segments(segment_bytes=4000, index_interval_bytes=100, segment_index_bytes=1200)
    assert os.path.getsize(idx[-1]) == 1200 // 8 * 8
    s2.append("t", b"more", partition=0)
    assert s2.read("t", 0, 80)[0].value == b"more"


def test_segments_roll_at_segment_bytes_and_are_named_by_base_offset(open_segments):
    s = open_segments(segment_bytes=2000)
    s.create_topic("t")
    for i in range(100):
        s.append("t", b"v" * 50, partition=0)
    logs = segment_files(s.path)
    assert len(logs) > 3
    for p in logs:
        name = os.path.basename(p)
        assert len(name) == 24 and name[:20].isdigit()
        assert os.path.getsize(p) <= 2000
        first = _batch_positions(p)[0]
        assert first[1] == int(name[:20])  # base offset = first offset in the segment
    assert [r.offset for r in s.read("t", 0, 0, max_records=1000)] == list(range(100))


def test_roll_when_index_is_full(open_segments):
    s = open_segments(segment_bytes=1 << 20, index_interval_bytes=0, segment_index_bytes=48)
    s.create_topic("t")
    for i in range(40):
        s.append("t", b"v", partition=0)
    logs = segment_files(s.path)
    assert len(logs) > 1  # 48 bytes = 6 offset entries / 4 time entries per segment
    assert s.stats()["segments"] == len(logs)
    assert [r.offset for r in s.read("t", 0, 0, max_records=100)] == list(range(40))


def test_roll_by_segment_ms(open_segments):
    s = open_segments(segment_ms=1000, segment_bytes=1 << 20)
    s.create_topic("t")
    s.append("t", b"a", partition=0, timestamp_ms=10_000)
    s.append("t", b"b", partition=0, timestamp_ms=10_900)
    s.append("t", b"c", partition=0, timestamp_ms=11_001)  # > 1000 ms after the first batch
    assert [os.path.basename(p)[:20] for p in segment_files(s.path)] == [
        "00000000000000000000", "00000000000000000002"]


def test_lookups_from_every_offset_across_segments(open_segments):
    s = open_segments(segment_bytes=3000, index_interval_bytes=200)
    s.create_topic("t")
    vals = [b"%04d" % i * (1 + i % 9) for i in range(300)]
    for i in range(0, 300, 3):
        s.append_batch("t", vals[i:i + 3], partition=0)
    assert len(segment_files(s.path)) > 3
    for off in range(0, 300, 7):
        got = s.read("t", 0, off, max_records=4)
        assert [r.offset for r in got] == list(range(off, min(off + 4, 300)))
        assert [r.value for r in got] == vals[off:off + 4]


def test_offset_for_time_uses_time_index_across_segments(open_segments):
    s = open_segments(segment_bytes=2500, index_interval_bytes=150)
    s.create_topic("t")
    for i in range(200):
        s.append("t", b"v%d" % i * 5, partition=0, timestamp_ms=1_000_000 + 10 * i)
    assert len(segment_files(s.path)) > 3
    for i in (0, 1, 57, 58, 123, 199):
        assert s.offset_for_time("t", 0, 1_000_000 + 10 * i) == i
        assert s.offset_for_time("t", 0, 1_000_000 + 10 * i - 5) == i
    assert s.offset_for_time("t", 0, 1_000_000 + 10 * 199 + 1) is None
    s.close()
    s2 = open_segments(segment_bytes=2500, index_interval_bytes=150)
    assert s2.offset_for_time("t", 0, 1_000_000 + 10 * 123) == 123


def test_offset_for_time_with_out_of_order_timestamps(open_segments):
    s = open_segments(index_interval_bytes=0)
    s.create_topic("t")
    for ts in [500, 100, 900, 300, 1000]:
        s.append("t", b"v", partition=0, timestamp_ms=ts)
    assert s.offset_for_time("t", 0, 200) == 0   # 500 >= 200 comes first
    assert s.offset_for_time("t", 0, 600) == 2
    assert s.offset_for_time("t", 0, 950) == 4


def test_batch_larger_than_segment_bytes_gets_its_own_segment(open_segments):
    s = open_segments(segment_bytes=1000)
    s.create_topic("t")
    s.append("t", b"small", partition=0)
    s.append_batch("t", [b"x" * 900, b"y" * 900], partition=0)
    s.append("t", b"after", partition=0)
    logs = segment_files(s.path)
    assert [os.path.basename(p)[:20] for p in logs] == [
        "00000000000000000000", "00000000000000000001", "00000000000000000003"]
    assert os.path.getsize(logs[1]) > 1000
    assert [r.value for r in s.read("t", 0, 0)] == [b"small", b"x" * 900, b"y" * 900, b"after"]

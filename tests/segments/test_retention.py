"""Retention: whole segments, oldest first, never the active one; log start offset."""
from __future__ import annotations

import os

import pytest

import mqstore
from mqstore.engines.segments import format as fmt

from .conftest import segment_files


def _fill(s, n, ts0=1_000_000, step=1000, size=100):
    s.create_topic("t")
    for i in range(n):
        s.append("t", b"%04d" % i * (size // 4), partition=0, timestamp_ms=ts0 + i * step)


def _sizes(path):
    return [os.path.getsize(p) for p in segment_files(path)]


def test_retention_ms_by_largest_timestamp(open_segments):
    s = open_segments(segment_bytes=1500, retention_ms=10_000)
    _fill(s, 60)
    logs = segment_files(s.path)
    assert len(logs) > 4
    bases = [int(os.path.basename(p)[:20]) for p in logs]
    # now = the last timestamp of segment 2 + retention + 1: segments 0-2 are older
    last_of_seg2 = bases[3] - 1
    now = 1_000_000 + last_of_seg2 * 1000 + 10_001
    sizes = _sizes(s.path)
    freed = s.apply_retention(now_ms=now)
    assert freed == sum(sizes[:3])
    assert segment_files(s.path) == logs[3:]
    assert s.start_offset("t", 0) == bases[3]
    with pytest.raises(mqstore.OffsetOutOfRangeError):
        s.read("t", 0, bases[3] - 1)
    assert s.read("t", 0, bases[3])[0].offset == bases[3]
    assert s.apply_retention(now_ms=now) == 0


def test_retention_never_deletes_the_active_segment(open_segments):
    s = open_segments(segment_bytes=1500, retention_ms=1)
    _fill(s, 60)
    logs = segment_files(s.path)
    s.apply_retention(now_ms=10**13)
    assert segment_files(s.path) == logs[-1:]
    assert s.start_offset("t", 0) == int(os.path.basename(logs[-1])[:20])
    assert s.end_offset("t", 0) == 60
    assert s.append("t", b"x", partition=0).offset == 60


def test_retention_bytes_keeps_the_partition_at_or_above_the_limit(open_segments):
    s = open_segments(segment_bytes=1500, retention_ms=-1, retention_bytes=3000)
    _fill(s, 60)
    sizes = _sizes(s.path)
    total = sum(sizes)
    freed = s.apply_retention(now_ms=10**13)
    remaining = total - freed
    assert remaining >= 3000
    assert remaining - _sizes(s.path)[0] < 3000  # one more segment would go below the limit
    assert sum(_sizes(s.path)) == remaining


def test_unlimited_retention_deletes_nothing(open_segments):
    s = open_segments(segment_bytes=1500, retention_ms=-1, retention_bytes=-1)
    _fill(s, 60)
    assert s.apply_retention(now_ms=10**15) == 0
    assert s.start_offset("t", 0) == 0


def test_log_start_offset_survives_reopen_and_crash(open_segments, tmp_path):
    s = open_segments(segment_bytes=1500, retention_ms=10_000)
    _fill(s, 60)
    s.apply_retention(now_ms=10**13)
    start = s.start_offset("t", 0)
    assert start > 0
    ck = open(os.path.join(s.path, fmt.LOG_START_OFFSET_CHECKPOINT)).read().split("\n")
    assert f"t 0 {start}" in ck
    s.close()
    r = open_segments(s.path, segment_bytes=1500)
    assert r.start_offset("t", 0) == start
    assert r.read("t", 0, start)[0].offset == start


def test_committed_offsets_are_kept_by_retention(open_segments):
    s = open_segments(segment_bytes=1500, retention_ms=1)
    _fill(s, 30)
    for i in range(200):
        s.commit_offset("g", "t", 0, i)
    s.apply_retention(now_ms=10**13)
    s.close()
    r = open_segments(s.path, segment_bytes=1500)
    assert r.committed_offset("g", "t", 0) == 199
    assert "__consumer_offsets" not in r.topics()

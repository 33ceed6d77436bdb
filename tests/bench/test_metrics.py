"""The HdrHistogram-like recorder and the resource counters."""
from __future__ import annotations

import os
import random

import pytest

from mqstore.bench.metrics import (LatencyHistogram, ResourceSnapshot, bucket_index,
                                   bucket_range, read_proc_io)


def test_buckets_cover_every_value_once():
    for v in list(range(0, 5000)) + [random.Random(1).randrange(1 << 40) for _ in range(2000)]:
        lo, hi = bucket_range(bucket_index(v))
        assert lo <= v <= hi
        assert (hi - lo + 1) <= max(1, v // 1024 + 1)  # relative precision ~ 1/1024


def test_record_many_equals_recording_each_value():
    import numpy as np

    rng = random.Random(5)
    values = ([0, 1, 2047, 2048, 2049, 4095, 4096, (1 << 62) + 12345, -7]
              + [2 ** e - 1 for e in range(1, 63)] + [2 ** e for e in range(63)]
              + [int(rng.lognormvariate(12, 3)) for _ in range(5000)])
    one, many = LatencyHistogram(), LatencyHistogram()
    one.record(123456)
    many.record(123456)
    for v in values:
        one.record(v)
    many.record_many(np.array(values, dtype=np.int64))
    many.record_many(np.array([], dtype=np.int64))
    assert (many.counts, many.count, many.total, many.min, many.max) == \
        (one.counts, one.count, one.total, one.min, one.max)


def test_percentiles_match_exact_values_within_precision():
    rng = random.Random(3)
    values = [int(rng.lognormvariate(12, 1.5)) for _ in range(20000)]
    h = LatencyHistogram()
    for v in values:
        h.record(v)
    values.sort()
    for p in (50, 95, 99, 99.9):
        exact = values[max(0, int(p / 100 * len(values) + 0.5) - 1)]
        assert abs(h.percentile(p) - exact) <= exact / 1024 + 1
    assert h.percentile(100) == values[-1] == h.max
    assert h.min == values[0] and h.count == len(values)
    assert h.mean == pytest.approx(sum(values) / len(values))


def test_merge_equals_recording_everything():
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i in range(1, 3000):
        (a if i % 2 else b).record(i * 37)
        both.record(i * 37)
    a.merge(b)
    assert a.counts == both.counts and (a.min, a.max, a.count) == (both.min, both.max, both.count)
    assert LatencyHistogram.from_dict(a.to_dict()).counts == a.counts


def test_summary_is_in_milliseconds():
    h = LatencyHistogram()
    h.record(2_000_000)
    s = h.summary_ms()
    assert s["p50"] == pytest.approx(2.0, rel=1e-3) and s["max"] == 2.0
    assert set(s) == {"avg", "p50", "p75", "p95", "p99", "p99.9", "p99.99", "max"}
    assert LatencyHistogram().percentile(99) == 0


def test_resource_snapshot_sees_written_bytes(tmp_path):
    if "write_bytes" not in read_proc_io():
        pytest.skip("/proc/self/io is not available here")
    s0 = ResourceSnapshot.take()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    os.write(fd, b"x" * (256 * 1024))
    os.fsync(fd)
    d = ResourceSnapshot.take().delta(s0)
    os.close(fd)
    assert d["disk_write_bytes"] >= 256 * 1024
    assert d["open_files"] > 0 and d["maps"] > 0 and d["rss_peak_kb"] > 0
    assert d["cpu_user_s"] >= 0 and d["wall_s"] > 0

"""Kafka index lookups: floor search on a full 10 MiB ``.index`` and a ``.timeindex``.

    python -m pytest benchmarks/test_native_bench_index.py --benchmark-enable \
        --benchmark-group-by=func --benchmark-columns=min,median,ops

Compares the C helper (warm section + bisection over the mapped bytes) with the
pure-Python reference (the same bisection with struct.unpack_from), for tail lookups (the
warm section: consumers and appends) and lookups spread over the whole index (catch-up
reads). Each test does 1000 lookups.
"""
from __future__ import annotations

import random

import numpy as np
import pytest

from mqstore import _purepy, native

ENTRIES = (10 << 20) // 8  # Kafka's default segment.index.bytes, full


@pytest.fixture(scope="module")
def offset_index_bytes():
    arr = np.empty(ENTRIES, dtype=[("relative_offset", ">i4"), ("position", ">i4")])
    arr["relative_offset"] = np.arange(ENTRIES, dtype=np.int64) * 3
    arr["position"] = np.arange(ENTRIES, dtype=np.int64) * 4096 % (1 << 30)
    return arr.tobytes()


@pytest.fixture(scope="module")
def time_index_bytes():
    n = (10 << 20) // 12
    arr = np.empty(n, dtype=[("timestamp", ">i8"), ("relative_offset", ">i4")])
    arr["timestamp"] = 1_700_000_000_000 + np.arange(n, dtype=np.int64) * 7
    arr["relative_offset"] = np.arange(n, dtype=np.int32)
    return arr.tobytes()


IMPLS = [pytest.param(native, id=f"mqstore-{native.backend}"),
         pytest.param(_purepy, id="python-reference")]


def _targets(kind: str, top: int) -> list[int]:
    rng = random.Random(7)
    if kind == "tail":
        return [top - rng.randrange(0, 1000) for _ in range(1000)]
    return [rng.randrange(0, top) for _ in range(1000)]


@pytest.mark.parametrize("kind", ["tail", "spread"])
@pytest.mark.parametrize("impl", IMPLS)
def test_offset_index_lookup(benchmark, impl, kind, offset_index_bytes):
    targets = _targets(kind, ENTRIES * 3)
    benchmark.group = f"offset index lookup x1000 ({kind})"
    floor = impl.offset_index_floor
    buf = memoryview(offset_index_bytes)

    def lookups():
        return [floor(buf, ENTRIES, t) for t in targets]

    slots = benchmark(lookups)
    assert slots == [min(t // 3, ENTRIES - 1) for t in targets]


@pytest.mark.parametrize("impl", IMPLS)
def test_time_index_lookup(benchmark, impl, time_index_bytes):
    n = len(time_index_bytes) // 12
    targets = [1_700_000_000_000 + 7 * t for t in _targets("spread", n)]
    benchmark.group = "time index lookup x1000 (spread)"
    floor = impl.time_index_floor
    buf = memoryview(time_index_bytes)
    slots = benchmark(lambda: [floor(buf, n, t) for t in targets])
    assert slots == [(t - 1_700_000_000_000) // 7 for t in targets]

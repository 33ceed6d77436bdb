"""Micro-benchmarks of the Store operations, engines side by side (pytest-benchmark).

Each benchmark is parametrised over every registered engine and grouped by workload, so one
table shows both engines per operation. In the normal test run they execute once, untimed
(``--benchmark-disable`` in addopts); time them explicitly with::

    python -m pytest benchmarks/test_store_ops.py --benchmark-enable --benchmark-group-by=group

Stores use small preallocated files (the same options in both modes) so set-up stays cheap.
"""
from __future__ import annotations

import itertools
import random

import pytest

import mqstore
from mqstore.api import Message

ENGINES = mqstore.engines()
SMALL = {"commitlog": {"mapped_file_size": 16 << 20, "hash_slots": 4096,
                       "index_entries": 65536, "cq_units_per_file": 65536},
         "segments": {"segment_bytes": 16 << 20, "segment_index_bytes": 1 << 20}}
PREFILL = 2000
VALUE = bytes(random.Random(1).randbytes(100))


def _open(engine, tmp_path, **extra):
    try:
        mqstore.registry.load(engine)
    except mqstore.ConfigError as exc:
        pytest.skip(str(exc))
    return mqstore.open(tmp_path / engine, engine=engine, **SMALL.get(engine, {}), **extra)


@pytest.fixture
def filled(request, tmp_path):
    """A store with topic ``t`` (4 partitions) holding PREFILL keyed 100-byte records."""
    store = _open(request.param, tmp_path)
    store.create_topic("t", 4)
    for start in range(0, PREFILL, 100):
        store.append_batch("t", [Message(VALUE, key=b"key-%d" % i, tag="A" if i % 10 else "B")
                                 for i in range(start, start + 100)])
    yield store
    store.close()


def _info(benchmark, store, workload):
    benchmark.group = workload
    benchmark.extra_info.update(engine=store.engine_name, flush=store.config.flush.mode,
                                crc_backend=mqstore.native.backend)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_append_100b(benchmark, engine_name, tmp_path):
    store = _open(engine_name, tmp_path)
    store.create_topic("t", 1)
    _info(benchmark, store, "append 1 x 100 B")
    md = benchmark(store.append, "t", VALUE)
    assert md.offset >= 0
    store.close()


@pytest.mark.parametrize("engine_name", ENGINES)
def test_append_batch_64x100b(benchmark, engine_name, tmp_path):
    store = _open(engine_name, tmp_path)
    store.create_topic("t", 1)
    batch = [VALUE] * 64
    _info(benchmark, store, "append_batch 64 x 100 B")
    mds = benchmark(store.append_batch, "t", batch)
    assert len(mds) == 64
    store.close()


@pytest.mark.parametrize("filled", ENGINES, indirect=True)
def test_read_500(benchmark, filled):
    _info(benchmark, filled, "read 500 records")
    recs = benchmark(filled.read, "t", 0, 0, max_records=500)
    assert len(recs) == 500


@pytest.mark.parametrize("filled", ENGINES, indirect=True)
def test_read_random_offset(benchmark, filled):
    """Index lookup: position a read at a random offset (offset index / ConsumeQueue)."""
    _info(benchmark, filled, "index lookup: read 1 at a random offset")
    end = filled.end_offset("t", 1)
    offsets = itertools.cycle(random.Random(2).sample(range(end), 50))
    recs = benchmark(lambda: filled.read("t", 1, next(offsets), max_records=1))
    assert len(recs) == 1


@pytest.mark.parametrize("filled", ENGINES, indirect=True)
def test_offset_for_time(benchmark, filled):
    _info(benchmark, filled, "time index lookup")
    first = filled.read("t", 2, 0, max_records=1)[0].timestamp_ms
    assert benchmark(filled.offset_for_time, "t", 2, first) == 0


@pytest.mark.parametrize("filled", ENGINES, indirect=True)
def test_lookup_key(benchmark, filled):
    _info(benchmark, filled, "key lookup")
    keys = itertools.cycle([b"key-%d" % i for i in random.Random(3).sample(range(PREFILL), 50)])
    found = benchmark(lambda: filled.lookup_key("t", next(keys), limit=1))
    assert len(found) == 1


@pytest.mark.parametrize("filled", ENGINES, indirect=True)
def test_read_tag_filter(benchmark, filled):
    _info(benchmark, filled, "read with a 10% tag filter")
    recs = benchmark(filled.read, "t", 3, 0, max_records=500, tags={"B"})
    assert recs and all(r.tag == "B" for r in recs)

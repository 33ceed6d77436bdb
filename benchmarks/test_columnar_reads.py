"""Micro-benchmarks of the columnar reads (``Store.read`` returns a lazy ``Records``).

Per engine, three ways to consume the same 500-record read of 100 B values:

- ``offsets``: the read plus its columns only (``offsets``, ``value_buffer``,
  ``value_sizes``): no per-record Python at all;
- ``values()``: the read plus one ``bytes`` per value (a list built in C loops);
- ``iterate``: the read plus a ``Record`` per record, touching ``.value``.

In the normal test run they execute once, untimed (``--benchmark-disable`` in addopts), and
check what they read; time them explicitly with::

    python -m pytest benchmarks/test_columnar_reads.py --benchmark-enable \\
        --benchmark-group-by=group
"""
from __future__ import annotations

import random

import pytest

import mqstore

ENGINES = mqstore.engines()
SMALL = {"commitlog": {"mapped_file_size": 16 << 20, "hash_slots": 4096,
                       "index_entries": 65536, "cq_units_per_file": 65536},
         "segments": {"segment_bytes": 16 << 20, "segment_index_bytes": 1 << 20}}
COUNT = 500
VALUES = [random.Random(i).randbytes(100) for i in range(COUNT)]


@pytest.fixture(params=ENGINES)
def store(request, tmp_path):
    """A store with topic ``t`` (1 partition) holding COUNT 100-byte records."""
    try:
        mqstore.registry.load(request.param)
    except mqstore.ConfigError as exc:
        pytest.skip(str(exc))
    s = mqstore.open(tmp_path / request.param, engine=request.param,
                     **SMALL.get(request.param, {}))
    s.create_topic("t", 1)
    s.append_batch("t", VALUES, partition=0)
    yield s
    s.close()


def _info(benchmark, store, workload):
    benchmark.group = workload
    benchmark.extra_info.update(engine=store.engine_name, native=mqstore.native.backend)


def test_read_offsets(benchmark, store):
    _info(benchmark, store, f"read {COUNT} + offsets/value_buffer (columnar)")

    def run():
        recs = store.read("t", 0, 0, max_records=COUNT)
        return recs.offsets, recs.value_buffer, recs.value_sizes

    offsets, buf, sizes = benchmark(run)
    assert offsets.tolist() == list(range(COUNT))
    assert int(sizes.sum()) == 100 * COUNT and len(buf) >= 100 * COUNT


def test_read_values(benchmark, store):
    _info(benchmark, store, f"read {COUNT} + values()")
    got = benchmark(lambda: store.read("t", 0, 0, max_records=COUNT).values())
    assert got == VALUES


def test_read_iterate(benchmark, store):
    _info(benchmark, store, f"read {COUNT} + iterate Records (.value)")

    def run():
        return [r.value for r in store.read("t", 0, 0, max_records=COUNT)]

    assert benchmark(run) == VALUES

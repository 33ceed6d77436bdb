"""Per-record hot loops moved to C: Kafka record decoding and RocketMQ dispatch fields.

    python -m pytest benchmarks/test_native_bench_records.py --benchmark-enable \\
        --benchmark-group-by=group --benchmark-columns=min,median,ops

Each group puts the engine's own Python loop (skipped if the engine module is not there)
beside the same work done through ``mqstore.native`` (C returns positions, Python slices),
producing identical results.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from mqstore import native

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "native"))
from nativelogs import rocketmq_message

try:
    from mqstore.engines.segments import format as seg_fmt
    from mqstore.engines.segments import record_batch
except ImportError:  # pragma: no cover - the engine is not installed
    record_batch = None
try:
    from mqstore.engines.commitlog import message as msgcodec
except ImportError:  # pragma: no cover
    msgcodec = None

needs_segments = pytest.mark.skipif(record_batch is None, reason="segments engine missing")
needs_commitlog = pytest.mark.skipif(msgcodec is None, reason="commitlog engine missing")
needs_native = pytest.mark.skipif(native.backend != "native",
                                  reason="the C path only pays off with the compiled helper")


@pytest.fixture(scope="module")
def kafka_batch_100():
    msgs = [(1_700_000_000_000 + i, b"key-%d" % i, b"v" * 100, None,
             "TagA" if i % 2 else None) for i in range(100)]
    body = record_batch.encode_messages(msgs)
    batch = bytes(record_batch.batch_prefix(0, body) + body.body)
    return batch, seg_fmt.BATCH_HEADER.unpack_from(batch, 0)


@needs_segments
@pytest.mark.parametrize("path", ["reference", "native"])
def test_decode_100_records(benchmark, kafka_batch_100, path, monkeypatch):
    """``record_batch.decode_records`` (tuples, for tools and lookups) on the read path's
    batch decoder: the reference (mqstore/_purepy_batches.py) beside the C one."""
    if path == "native" and native.backend != "native":
        pytest.skip("the C path only pays off with the compiled helper")
    batch, h = kafka_batch_100
    benchmark.group = "decode a batch of 100 records (key, 100 B value, tag on half)"
    expected = record_batch.decode_records(batch, h)
    monkeypatch.setattr(record_batch, "_NATIVE_RECORDS", path == "native")
    assert benchmark(record_batch.decode_records, batch, h) == expected


@pytest.fixture(scope="module")
def segments_store(tmp_path_factory):
    """A segments store of 20 batches of 1,000 x 100 B values (offsets 0..19,999)."""
    import mqstore

    s = mqstore.open(str(tmp_path_factory.mktemp("bench") / "s"), "segments", flush="os")
    s.create_topic("t")
    for _ in range(20):
        s.append_batch("t", [bytes([i % 251]) * 100 for i in range(1000)])
    yield s
    s.close()


@needs_segments
@pytest.mark.parametrize("access", ["columnar", "records"])
def test_read_500_records(benchmark, segments_store, access):
    """One ``read()`` of 500 records (one native decode call): columnar access
    (``offsets`` + ``value_buffer``) beside iterating ``Record`` objects touching
    ``.value``."""
    benchmark.group = "segments read() of 500 x 100 B records"

    def columnar():
        r = segments_store.read("t", 0, 1000)
        return int(r.offsets[-1]), len(r.value_buffer)

    def records():
        n = 0
        for rec in segments_store.read("t", 0, 1000):
            n += len(rec.value)
        return n

    got = benchmark(columnar if access == "columnar" else records)
    assert got == ((1499, len(segments_store.read("t", 0, 1000).value_buffer))
                   if access == "columnar" else 500 * 100)


@pytest.fixture(scope="module")
def commitlog_block():
    out = bytearray()
    for i in range(2000):
        props = b"TAGS\x01TagA\x02KEYS\x01order-%d\x02UNIQ_KEY\x01%032X\x02" % (i, i)
        out += rocketmq_message(i % 4, i // 4, len(out), b"v" * 100, topic=b"orders",
                                properties=props)
    return bytes(out)




def _engine_dispatch(buf: bytes) -> list[tuple]:
    out, pos = [], 0
    while pos + 8 <= len(buf):
        d = msgcodec.dispatch_fields(buf, pos)
        out.append((d.queue_id, d.queue_offset, d.physical_offset, d.size, d.store_timestamp,
                     d.topic, d.tag, d.keys_text, d.uniq_key))
        pos += d.size
    return out


def _native_dispatch(buf: bytes) -> list[tuple]:
    def text(p, n):
        return None if p < 0 else buf[p:p + n].decode("utf-8", "replace")

    scan = native.dispatch_fields(buf, 0, len(buf))
    return [(qid, qoff, phys, size, ts, text(tp, tl), text(gp, gl), text(kp, kl), text(up, ul))
            for _pos, size, qid, qoff, phys, ts, tp, tl, gp, gl, kp, kl, up, ul
            in scan.fields.tolist()]


@needs_commitlog
@pytest.mark.parametrize("path", ["engine-python", "native"])
def test_dispatch_2000_messages(benchmark, commitlog_block, path):
    if path == "native" and native.backend != "native":
        pytest.skip("the C path only pays off with the compiled helper")
    benchmark.group = "dispatch fields of 2000 CommitLog messages"
    fn = _engine_dispatch if path == "engine-python" else _native_dispatch
    result = benchmark(fn, commitlog_block)
    assert result == _engine_dispatch(commitlog_block)


def _native_encode_values(values, ts):
    """The segments append_batch fast path (header + records + CRC) through the C encoder."""
    n = len(values)
    body = record_batch._pack_crc_header(0, n - 1, ts, ts, -1, -1, -1, n) + \
        native.encode_value_records(values)
    return body, native.crc32c(body)


@needs_segments
@pytest.mark.parametrize("path", ["engine-python", "native"])
def test_encode_100_values(benchmark, path):
    if path == "native" and native.backend != "native":
        pytest.skip("the C path only pays off with the compiled helper")
    values = [b"v" * 100] * 100
    benchmark.group = "encode a batch body of 100 plain 100 B values"
    if path == "engine-python":
        body = benchmark(record_batch.encode_values, values, 1_700_000_000_000)
        assert body.body == _native_encode_values(values, 1_700_000_000_000)[0]
    else:
        body, crc = benchmark(_native_encode_values, values, 1_700_000_000_000)
        assert (body, crc) == (record_batch.encode_values(values, 1_700_000_000_000).body,
                               record_batch.encode_values(values, 1_700_000_000_000).crc)


try:
    from mqstore.engines.commitlog.index_file import IndexFile
except ImportError:  # pragma: no cover
    IndexFile = None

needs_index_file = pytest.mark.skipif(IndexFile is None, reason="commitlog engine missing")


def _index_key_hashes(keys):
    """RocketMQ's indexKeyHashMethod for a run of keys: abs(hashCode), MIN_VALUE -> 0."""
    h = np.abs(native.java_string_hashes(keys))
    h[h == 1 << 31] = 0
    return h


@needs_index_file
@pytest.mark.parametrize("path", ["engine-python", "native"])
def test_index_put_2000_keys(benchmark, tmp_path, path):
    if path == "native" and native.backend != "native":
        pytest.skip("the C path only pays off with the compiled helper")
    benchmark.group = "IndexFile: put 2000 keys (hash + chain insert)"
    keys = [f"orders#{i:032X}" for i in range(2000)]
    phys = list(range(0, 2000 * 200, 200))
    stamps = [1_700_000_000_000 + i for i in range(2000)]
    files = []

    def setup():
        f = IndexFile(str(tmp_path / f"idx{len(files)}"), 5003, 4000, create=True)
        files.append(f)
        return (f,), {}

    def engine(f):
        for k, p, t in zip(keys, phys, stamps):
            f.put_key(k, p, t, header=False)
        f.write_header()

    def via_native(f):
        got = native.index_put_keys(f.mm, f.hash_slots, f.index_entries,
                                    (f.index_count, f.hash_slot_count, f.begin_timestamp,
                                     f.begin_phy_offset),
                                    _index_key_hashes(keys), phys, stamps)
        (f.index_count, f.hash_slot_count, f.begin_timestamp, f.begin_phy_offset) = got[1:]
        f.end_phy_offset, f.end_timestamp = phys[got.put - 1], stamps[got.put - 1]
        f.write_header()

    benchmark.pedantic(engine if path == "engine-python" else via_native, setup=setup,
                       rounds=5)
    last = files[-1]
    assert last.index_count == 2001
    assert last.select(keys[7], 0, 1 << 62, 10) == [phys[7]]
    for f in files:
        f.close()

"""Log scans on both backends: Kafka batches, RocketMQ messages, ConsumeQueue tag hashes.

Recovery cases are named after LevelDB's log_test.cc failure modes. The hypothesis
properties at the end check native == python on valid, truncated, bit-flipped and random
logs, with every native call on a buffer that ends at an inaccessible page.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nativelogs import (
    NATIVE_MISSING,
    consume_queue,
    guarded_view,
    kafka_batch,
    kafka_log,
    rocketmq_log,
    rocketmq_message,
)

from mqstore import _purepy, native
from mqstore.errors import BufferRangeError

SCAN_OK, SCAN_TORN, SCAN_CORRUPT, SCAN_BLANK, SCAN_ZERO = 0, 1, 2, 3, 4
FIXTURES = Path(__file__).parents[2] / ".." / "shared" / "fixtures"


def rows(scan):
    return [list(map(int, col)) for col in scan[2:]]


def same(a, b):
    assert type(a) is type(b)
    assert (a.valid_end, a.status) == (b.valid_end, b.status)
    assert rows(a) == rows(b)
    for col in a[2:]:
        assert col.dtype == np.int64


# ----- Kafka batches -----
def test_scan_batches_reports_every_batch_of_a_valid_log(impl):
    log = kafka_log(6, records_per_batch=3)
    scan = impl.scan_batches(log, 0, len(log))
    assert (scan.valid_end, scan.status) == (len(log), SCAN_OK)
    assert list(scan.base_offsets) == [0, 3, 6, 9, 12, 15]
    assert list(scan.last_offsets) == [2, 5, 8, 11, 14, 17]
    assert list(scan.max_timestamps) == [1_700_000_000_000 + b + 2 for b in range(6)]
    assert int(scan.positions[0]) == 0 and list(np.cumsum(scan.sizes)[:-1]) == \
        list(scan.positions[1:])


def test_scan_batches_of_a_real_broker_capture(impl):
    path = FIXTURES / "kafka-broker-batches-v2.bin"
    if not path.exists():
        pytest.skip(f"shared fixture {path} is absent")
    data = path.read_bytes()
    scan = impl.scan_batches(data, 0, len(data))
    assert (scan.valid_end, scan.status) == (299, SCAN_OK)
    assert list(scan.positions) == [0, 71, 147, 218]
    assert list(scan.sizes) == [71, 76, 71, 81]
    assert list(scan.base_offsets) == [0, 1, 3, 0]
    assert list(scan.last_offsets) == [0, 2, 3, 0]


def test_scan_batches_from_a_position_up_to_an_end(impl):
    log = kafka_log(5)
    full = impl.scan_batches(log, 0, len(log))
    p1, p4 = int(full.positions[1]), int(full.positions[4])
    part = impl.scan_batches(log, p1, p4)
    assert (part.valid_end, part.status) == (p4, SCAN_OK)
    assert list(part.positions) == list(full.positions[1:4])


def test_TruncatedTrailingRecordIsIgnored(impl):
    log = kafka_log(4)
    good = impl.scan_batches(log, 0, len(log))
    last = int(good.positions[-1])
    for cut in (last + 1, last + 30, last + 61, len(log) - 1):
        scan = impl.scan_batches(log[:cut], 0, cut)
        assert (scan.valid_end, scan.status) == (last, SCAN_TORN), cut
        assert len(scan.positions) == 3


def test_BadLengthAtEndIsIgnored(impl):
    log = kafka_log(2)
    second = impl.scan_batches(log, 0, len(log)).positions[1]
    damaged = bytearray(log)
    struct.pack_into(">i", damaged, int(second) + 8, 10_000)  # runs past the end
    scan = impl.scan_batches(bytes(damaged), 0, len(damaged))
    assert (scan.valid_end, scan.status) == (int(second), SCAN_TORN)


def test_BadLength(impl):
    log = bytearray(kafka_log(3))
    struct.pack_into(">i", log, 8, 48)  # batchLength below the 49-byte minimum
    scan = impl.scan_batches(bytes(log), 0, len(log))
    assert (scan.valid_end, scan.status, len(scan.positions)) == (0, SCAN_CORRUPT, 0)


def test_BadMagic(impl):
    log = bytearray(kafka_log(3))
    second = len(kafka_batch(0, [b"x" * 20] * 3))
    log[second + 16] = 1
    scan = impl.scan_batches(bytes(log), 0, len(log))
    assert (scan.valid_end, scan.status) == (second, SCAN_CORRUPT)


def test_ChecksumMismatch(impl):
    log = bytearray(kafka_log(3))
    log[-5] ^= 0x40  # a value byte of the last batch
    scan = impl.scan_batches(bytes(log), 0, len(log))
    assert scan.status == SCAN_CORRUPT and len(scan.positions) == 2


def test_last_offset_outside_int64_is_corrupt(impl):
    batch = kafka_batch((1 << 63) - 1, [b"a", b"b"])  # baseOffset + 1 overflows
    scan = impl.scan_batches(batch, 0, len(batch))
    assert (scan.valid_end, scan.status) == (0, SCAN_CORRUPT)


def test_many_batches_fill_more_than_one_output_chunk(impl):
    log = kafka_log(5000, records_per_batch=1, value_size=1)
    scan = impl.scan_batches(log, 0, len(log))
    assert (scan.valid_end, scan.status, len(scan.positions)) == (len(log), SCAN_OK, 5000)
    assert list(scan.base_offsets) == list(range(5000))


def test_scan_window_outside_the_buffer_is_a_range_error(impl):
    log = kafka_log(1)
    for f in (impl.scan_batches, impl.scan_commitlog):
        with pytest.raises(BufferRangeError):
            f(log, -1, len(log))
        with pytest.raises(BufferRangeError):
            f(log, 0, len(log) + 1)
    with pytest.raises(BufferRangeError):
        impl.find_batch(log, 0, len(log) + 1, 0)


def test_empty_and_inverted_windows(impl):
    log = kafka_log(1)
    for f in (impl.scan_batches, impl.scan_commitlog):
        for pos, end in ((0, 0), (10, 5), (len(log), len(log))):
            scan = f(log, pos, end)
            assert (scan.valid_end, scan.status, len(scan.positions)) == (pos, SCAN_OK, 0)


def test_find_batch_walks_headers_to_the_batch_holding_an_offset(impl):
    log = kafka_log(5, records_per_batch=4)  # offsets 0-19
    positions = list(impl.scan_batches(log, 0, len(log)).positions)
    for target, expected in ((0, 0), (3, 0), (4, 1), (11, 2), (19, 4)):
        assert impl.find_batch(log, 0, len(log), target) == positions[expected]
    assert impl.find_batch(log, 0, len(log), 20) == -1
    assert impl.find_batch(log, int(positions[2]), len(log), 0) == positions[2]
    assert impl.find_batch(log[:-1], 0, len(log) - 1, 19) == -1  # torn header stops it


# ----- RocketMQ CommitLog -----
def test_scan_commitlog_collects_the_units_to_dispatch(impl):
    log = rocketmq_log(7, queues=3)
    scan = impl.scan_commitlog(log, 0, len(log))
    assert (scan.valid_end, scan.status) == (len(log), SCAN_OK)
    assert list(scan.queue_ids) == [0, 1, 2, 0, 1, 2, 0]
    assert list(scan.queue_offsets) == [0, 0, 0, 1, 1, 1, 2]
    assert list(scan.store_timestamps) == [1_700_000_000_000 + i for i in range(7)]
    assert int(scan.sizes.sum()) == len(log)


def test_scan_commitlog_stops_at_the_blank_marker_and_zero_fill(impl):
    full = rocketmq_log(3, blank_to=2000)
    scan = impl.scan_commitlog(full, 0, len(full))
    assert (scan.status, len(scan.positions)) == (SCAN_BLANK, 3)
    prealloc = rocketmq_log(3) + bytes(500)
    scan = impl.scan_commitlog(prealloc, 0, len(prealloc))
    assert (scan.valid_end, scan.status) == (len(prealloc) - 500, SCAN_ZERO)
    short_zero = rocketmq_log(1) + bytes(5)
    assert impl.scan_commitlog(short_zero, 0, len(short_zero)).status == SCAN_ZERO


def test_commitlog_TruncatedTrailingRecordIsIgnored(impl):
    log = rocketmq_log(3)
    last = len(log) - len(rocketmq_message(2, 0, 0, bytes([2]) * 30))
    for cut in (last + 4, last + 8, last + 91, len(log) - 1):  # (3 bytes would be zeros)
        scan = impl.scan_commitlog(log[:cut], 0, cut)
        assert (scan.valid_end, scan.status) == (last, SCAN_TORN), cut


def test_commitlog_ChecksumMismatch_and_BadLength(impl):
    msg = rocketmq_message(0, 0, 0, b"hello world")
    bad_crc = bytearray(msg)
    bad_crc[88] ^= 1  # a body byte
    assert impl.scan_commitlog(bytes(bad_crc), 0, len(msg)).status == SCAN_CORRUPT
    bad_len = bytearray(msg)
    struct.pack_into(">i", bad_len, 84, len(b"hello world") + 1)  # body length off by one
    assert impl.scan_commitlog(bytes(bad_len), 0, len(msg)).status == SCAN_CORRUPT
    bad_magic = bytearray(msg)
    bad_magic[7] ^= 1
    assert impl.scan_commitlog(bytes(bad_magic), 0, len(msg)).status == SCAN_CORRUPT
    small = bytearray(msg)
    struct.pack_into(">i", small, 0, 90)
    assert impl.scan_commitlog(bytes(small), 0, len(msg)).status == SCAN_CORRUPT


# ----- ConsumeQueue -----
def test_cq_tag_scan_finds_the_units_with_wanted_tags(impl):
    hashes = [0, 5, -7, 5, 99, 0, -7, 1 << 40]
    cq = consume_queue(hashes)
    assert list(impl.cq_tag_scan(cq, 0, 8, [5])) == [1, 3]
    assert list(impl.cq_tag_scan(cq, 2, 6, {-7, 1 << 40})) == [0, 4, 5]
    assert list(impl.cq_tag_scan(cq, 0, 8, [])) == []
    assert list(impl.cq_tag_scan(cq, 0, 0, [5])) == []
    many = list(range(100, 120)) + [5, -7]  # more than the linear-search threshold
    assert list(impl.cq_tag_scan(cq, 0, 8, many)) == [1, 2, 3, 6]
    assert impl.cq_tag_scan(cq, 0, 8, [5]).dtype == np.int64


def test_cq_tag_scan_out_of_range_is_a_range_error(impl):
    cq = consume_queue([1, 2, 3])
    with pytest.raises(BufferRangeError):
        impl.cq_tag_scan(cq, 1, 3, [1])
    with pytest.raises(BufferRangeError):
        impl.cq_tag_scan(cq, -1, 2, [1])


# ----- native == python -----
needs_native = pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
PROPS = settings(max_examples=60, deadline=None)


def both(name, buf, *args):
    """Call the reference and the C helper (on a guarded copy); same result or same error."""
    try:
        expected = getattr(_purepy, name)(buf, *args)
    except Exception as exc:  # noqa: BLE001 - the error type must match
        with pytest.raises(type(exc)):
            getattr(native, name)(guarded_view(bytes(buf)), *args)
        return None
    got = getattr(native, name)(guarded_view(bytes(buf)), *args)
    if isinstance(expected, tuple):
        same(got, expected)
    elif isinstance(expected, np.ndarray):
        assert got.dtype == expected.dtype and list(got) == list(expected)
    else:
        assert got == expected
    return got


def damage(log: bytes, data) -> bytes:
    buf = bytearray(log)
    for _ in range(data.draw(st.integers(0, 3))):
        if buf:
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(buf)))
    return bytes(buf[:cut]) if data.draw(st.booleans()) else bytes(buf)


@needs_native
@PROPS
@given(data=st.data(), n=st.integers(0, 6), per=st.integers(1, 4),
       base=st.sampled_from([0, 7, (1 << 62), (1 << 63) - 3]))
def test_kafka_scans_native_equals_python_on_damaged_logs(data, n, per, base):
    log = damage(kafka_log(n, records_per_batch=per, value_size=5, base_offset=base), data)
    pos = data.draw(st.integers(0, len(log)))
    end = data.draw(st.integers(pos, len(log)))
    both("scan_batches", log, 0, len(log))
    both("scan_batches", log, pos, end)
    target = data.draw(st.integers(-(1 << 64), 1 << 64) | st.integers(0, base + n * per + 2))
    both("find_batch", log, 0, len(log), target)
    both("find_batch", log, pos, end, target)


@needs_native
@PROPS
@given(data=st.data(), n=st.integers(0, 6), blank=st.booleans())
def test_commitlog_scan_native_equals_python_on_damaged_logs(data, n, blank):
    log = rocketmq_log(n, queues=2, body_size=data.draw(st.integers(0, 40)))
    if blank:
        log += struct.pack(">iI", 64, 0xCBD43194) + bytes(56)
    log = damage(log, data)
    pos = data.draw(st.integers(0, len(log)))
    both("scan_commitlog", log, 0, len(log))
    both("scan_commitlog", log, pos, len(log))


@needs_native
@PROPS
@given(buf=st.binary(max_size=600), pos=st.integers(-3, 700), end=st.integers(-3, 700),
       target=st.integers(-(1 << 63), (1 << 63) - 1))
def test_random_bytes_native_equals_python(buf, pos, end, target):
    both("scan_batches", buf, pos, end)
    both("scan_commitlog", buf, pos, end)
    both("find_batch", buf, pos, end, target)


@needs_native
@PROPS
@given(hashes=st.lists(st.integers(-(1 << 63), (1 << 63) - 1) | st.integers(-3, 3),
                       max_size=80),
       wanted=st.lists(st.integers(-3, 3), max_size=12), start=st.integers(-2, 90),
       count=st.integers(-2, 90), extra=st.binary(max_size=19))
def test_cq_tag_scan_native_equals_python(hashes, wanted, start, count, extra):
    both("cq_tag_scan", consume_queue(hashes) + extra, start, count, wanted)


def test_a_range_error_does_not_keep_an_mmap_open(impl, tmp_path):
    """The traceback of a BufferRangeError must not hold the buffer: the caller can still
    close its mmap while it keeps the exception."""
    import mmap

    path = tmp_path / "log"
    path.write_bytes(kafka_log(2))
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0)
        calls = [lambda: impl.scan_batches(mm, 0, len(mm) + 1),
                 lambda: impl.scan_commitlog(mm, 0, len(mm) + 1),
                 lambda: impl.find_batch(mm, 0, len(mm) + 1, 0),
                 lambda: impl.offset_index_floor(mm, len(mm), 0),
                 lambda: impl.cq_tag_scan(mm, 0, len(mm), [1]),
                 lambda: impl.decode_records(mm, 0, len(mm) + 1, 1),
                 lambda: impl.dispatch_fields(mm, 0, len(mm) + 1)]
        kept = []
        for call in calls:
            with pytest.raises(BufferRangeError) as info:
                call()
            kept.append(info.value)
        mm.close()  # BufferError if a kept traceback still exported the mapping
    assert all(e.__traceback__ is not None for e in kept)

"""Reads check CRCs (issue 8, item 9): a flipped byte in a stored batch is never returned.

The damage is made in a cleanly closed store (or below the recovery point), where the open
trusts the segment and does not re-validate it: the read path is what must notice.
"""
from __future__ import annotations

import os
import struct

import pytest

import mqstore
from mqstore.errors import CorruptRecordError
from tests.segments.conftest import SMALL, segment_files

NEEDLE = b"precious-value-0123456789abcdef"


@pytest.fixture
def damaged_store(tmp_path):
    """A closed store of 3 segments; one byte of NEEDLE (offset 37, the middle segment)
    flipped. Returns (path, log file, batch position)."""
    path = str(tmp_path / "store")
    with mqstore.open(path, "segments", **{**SMALL, "segment_bytes": 2000}) as s:
        s.create_topic("t")
        for i in range(90):
            s.append("t", NEEDLE if i == 37 else b"filler-%05d" % i, key=b"k%d" % i,
                     timestamp_ms=1_000_000 + i)
    for log in segment_files(path):
        data = open(log, "rb").read()
        at = data.find(NEEDLE)
        if at >= 0:
            with open(log, "r+b") as f:
                f.seek(at + 5)
                f.write(b"X")
            pos = 0
            while True:
                size = struct.unpack_from(">i", data, pos + 8)[0] + 12
                if pos <= at < pos + size:
                    return path, log, pos
                pos += size
    raise AssertionError("needle not found")


def _open(path, **kw):
    return mqstore.open(path, "segments", **{**SMALL, "segment_bytes": 2000, **kw})


def test_flipped_value_byte_raises_on_read(damaged_store):
    path, log, pos = damaged_store
    with _open(path) as s:
        assert s.read("t", 0, 36, max_records=1)[0].value == b"filler-00036"
        for start in (0, 30, 37):
            with pytest.raises(CorruptRecordError) as info:
                out, off = [], start
                while off < 90:
                    page = s.read("t", 0, off)
                    out += page
                    off = page[-1].offset + 1
            assert info.value.path == log and info.value.position == pos
        assert s.read("t", 0, 38, max_records=1)[0].value == b"filler-00038"


def test_lookups_that_decode_check_crcs(damaged_store):
    path, _log, _pos = damaged_store
    with _open(path) as s:
        with pytest.raises(CorruptRecordError):
            s.lookup_key("t", b"k37")
        with pytest.raises(CorruptRecordError):
            s.offset_for_time("t", 0, 1_000_037)
        assert s.offset_for_time("t", 0, 1_000_050) == 50


def test_check_crcs_false_returns_the_bytes(damaged_store):
    path, _log, _pos = damaged_store
    with _open(path, check_crcs=False) as s:
        (rec,) = s.read("t", 0, 37, max_records=1)
        assert rec.value != NEEDLE and len(rec.value) == len(NEEDLE)


def test_malformed_header_in_a_trusted_segment_raises_instead_of_ending_the_read(tmp_path):
    """A flipped magic byte in a segment the open trusts: the read must not just stop."""
    path = str(tmp_path / "store")
    with _open(path) as s:
        s.create_topic("t")
        for i in range(90):
            s.append("t", b"value-%05d" % i)
    log = segment_files(path)[1]
    data = open(log, "rb").read()
    size0 = struct.unpack_from(">i", data, 8)[0] + 12
    with open(log, "r+b") as f:  # batch 1 of the middle segment: magic 2 -> 3
        f.seek(size0 + 16)
        f.write(b"\x03")
    base = int(os.path.basename(log)[:20])
    with _open(path) as s:
        with pytest.raises(CorruptRecordError) as info:
            s.read("t", 0, base, max_records=1000)
        assert info.value.path == log


def _ninety_records(tmp_path):
    """A closed store of 90 single-record batches (timestamps 1,000 + offset) over several
    segments: ``(store path, the second segment's .log, its base offset)``."""
    path = str(tmp_path / "store")
    with _open(path) as s:
        s.create_topic("t")
        for i in range(90):
            s.append("t", b"value-%05d" % i, timestamp_ms=1_000 + i)
    log = segment_files(path)[1]
    return path, log, int(os.path.basename(log)[:20])


def _set_base_offset(log, batch_no, value):
    data = open(log, "rb").read()
    pos = 0
    for _ in range(batch_no):
        pos += struct.unpack_from(">i", data, pos + 8)[0] + 12
    with open(log, "r+b") as f:
        f.seek(pos)
        f.write(struct.pack(">q", value))
    return pos


def test_flipped_base_offset_is_never_returned(tmp_path):
    """baseOffset is outside the CRC: the offset chain must catch it, at open for the first
    batch of a segment, on read for any other."""
    path, log, base = _ninety_records(tmp_path)
    pos = _set_base_offset(log, 3, base + 3 + 2)  # a middle batch now claims other offsets
    with _open(path) as s:
        with pytest.raises(CorruptRecordError) as info:
            s.read("t", 0, base, max_records=1000)
        assert (info.value.path, info.value.position) == (log, pos)
    _set_base_offset(log, 3, base + 3)
    _set_base_offset(log, 0, base + 1)  # the first batch of a trusted segment
    with pytest.raises(CorruptRecordError) as info:
        _open(path)
    assert info.value.path == log and info.value.position == 0
    (d,) = mqstore.open(path, read_only=True).verify_files(path)
    assert d.kind == "corruption" and d.first_offset == base


@pytest.mark.parametrize("new_base", [lambda base: base + 3 + (30 << 24),
                                      lambda base: base + 4])
def test_read_starting_at_a_batch_with_a_damaged_base_offset_raises(tmp_path, new_base):
    """Fuzz finding segments:fuzz-clean:4243.494: a byte set inside a middle batch's
    baseOffset of a clean store; a read *starting* at that batch's offsets returned [] (the
    located batch claimed later offsets), and offset_for_time could return an offset that was
    never written. The chain check covered only batches after the first one read."""
    path, log, base = _ninety_records(tmp_path)
    pos = _set_base_offset(log, 3, new_base(base))
    with _open(path) as s:
        with pytest.raises(CorruptRecordError) as info:
            s.read("t", 0, base + 3)
        assert (info.value.path, info.value.position) == (log, pos)
        with pytest.raises(CorruptRecordError):
            s.offset_for_time("t", 0, 1_000 + base + 3)
        recs = s.read("t", 0, base, max_records=3)  # before the damage: still readable
        assert [r.offset for r in recs] == [base, base + 1, base + 2]


def test_read_past_a_batch_with_a_damaged_length_raises(tmp_path):
    """Fuzz finding segments:fuzz-clean:4247.688: a bit flip in a middle batch's batchLength
    (outside the CRC's reach for the walk) of a clean store; a read starting at the offset
    after that batch returned [] (the header walk met garbage and gave up) instead of
    raising, so the records after it were lost without a report."""
    path, log, base = _ninety_records(tmp_path)
    data = bytearray(open(log, "rb").read())
    pos = 0
    for _ in range(3):
        pos += struct.unpack_from(">i", data, pos + 8)[0] + 12
    data[pos + 11] ^= 0x40  # the low byte of batch 3's batchLength
    open(log, "wb").write(bytes(data))
    with _open(path) as s:
        for offset in (base + 3, base + 4):
            with pytest.raises(CorruptRecordError) as info:
                s.read("t", 0, offset)
            assert info.value.path == log
        assert [r.offset for r in s.read("t", 0, base, max_records=3)] == [base, base + 1,
                                                                            base + 2]


def test_read_at_a_batch_whose_length_runs_past_the_end_raises(tmp_path):
    """Fuzz finding segments:fuzz-clean:4248.790: the high byte of the first batch's
    batchLength changed in a clean store, so the batch seemed to run past the end of the
    log (a torn tail's shape, but inside the part the segment holds); read(0) returned []."""
    path, log, base = _ninety_records(tmp_path)
    data = bytearray(open(log, "rb").read())
    data[8] = 0x01  # batchLength now ~16 MiB
    open(log, "wb").write(bytes(data))
    try:
        s = _open(path)
    except CorruptRecordError:
        return  # reported by the open: allowed
    with s:
        with pytest.raises(CorruptRecordError) as info:
            s.read("t", 0, base)
        assert info.value.path == log

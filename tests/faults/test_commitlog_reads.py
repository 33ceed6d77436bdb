"""Commitlog reads check what they return (issue 8, item 9): CRCs by default, every length
against TOTALSIZE, the message against its ConsumeQueue unit; skipped offsets are gaps."""
from __future__ import annotations

import os

import pytest

import mqstore
from tests.faults.test_commitlog_recovery import fill, flip, messages, open_cl, read_all

__all__ = ["open_cl"]  # the fixture


def _damage_while_open(store_path, index, where):
    """Flip a byte of message ``index`` through the file (the store's mapping sees it)."""
    path, pos, total = messages(store_path)[index]
    flip(path, pos + (where if where >= 0 else total + where))


@pytest.mark.parametrize("check_crcs", [True, False])
def test_flipped_body_length_bit_raises_corrupt_record_error(open_cl, store_path, check_crcs):
    """Lengths are bounds-checked against TOTALSIZE whether or not CRCs are checked."""
    fill(open_cl, 30)
    s = open_cl(check_crcs=check_crcs)
    _damage_while_open(store_path, 7, 84 + 1)  # BODYLENGTH's second byte: huge length
    with pytest.raises(mqstore.CorruptRecordError, match="body length"):
        s.read("t", 0, 7)
    assert [r.value for r in s.read("t", 0, 8, max_records=1)] == [b"value-0008"]


def test_flipped_value_byte_raises_on_read(open_cl, store_path):
    fill(open_cl, 30)
    s = open_cl()
    _damage_while_open(store_path, 7, 84 + 4 + 3)
    with pytest.raises(mqstore.CorruptRecordError, match="CRC"):
        s.read("t", 0, 7)
    with pytest.raises(mqstore.CorruptRecordError):
        s.read("t", 0, 0)  # the page that contains it


def test_flipped_properties_byte_raises_on_read(open_cl, store_path):
    fill(open_cl, 30)
    s = open_cl()
    _damage_while_open(store_path, 9, -25)  # inside the properties
    with pytest.raises(mqstore.CorruptRecordError, match="CRC"):
        s.read("t", 0, 9)
    assert s.lookup_key("t", b"key-9") == []  # never returned through the index either


def test_check_crcs_false_returns_the_bytes_as_stored(open_cl, store_path):
    fill(open_cl, 30)
    s = open_cl(check_crcs=False)
    _damage_while_open(store_path, 7, 84 + 4 + 3)
    (rec,) = s.read("t", 0, 7, max_records=1)
    assert rec.value != b"value-0007" and len(rec.value) == 10


def test_damage_in_an_old_file_is_found_by_the_read(open_cl, store_path):
    """The open validates only its recovery window (RocketMQ's last three files); a
    damaged message further back is reported when it is read."""
    fill(open_cl, 300)
    assert len(os.listdir(os.path.join(store_path, "commitlog"))) > 5
    path, pos, _ = messages(store_path)[2]
    flip(path, pos + 84 + 4 + 1)
    s = open_cl()
    with pytest.raises(mqstore.CorruptRecordError) as info:
        read_all(s)
    assert info.value.path == path and info.value.position == pos


def test_skipped_offsets_read_as_gaps(open_cl, store_path):
    fill(open_cl, 40)
    path, pos, _ = messages(store_path)[-10]
    flip(path, pos + 84 + 4 + 1)
    s = open_cl(on_corruption="skip")
    recs = s.read("t", 0, 29, max_records=3)
    assert [r.offset for r in recs] == [29, 31, 32]  # 30 was skipped
    assert s.read("t", 0, 30, max_records=1)[0].offset == 31
    assert s.end_offset("t", 0) == 40
    evens = [r.value for r in s.read("t", 0, 0, max_records=100, tags={"even"})]
    assert evens == [b"value-%04d" % i for i in range(0, 40, 2) if i != 30]

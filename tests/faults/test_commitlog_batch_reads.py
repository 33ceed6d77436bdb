"""Damage inside one batch-native commitlog read (issue 9 on top of issue 8's rules): a
flipped byte in one message of a 500-message read raises CorruptRecordError naming that
message's file and position, with the same text from the C gather and the reference; the
messages before it still read, and a read that stops before it never sees it."""
from __future__ import annotations

import struct

import pytest

import mqstore
from mqstore import _purepy_cl_read, native
from tests.faults.test_commitlog_recovery import flip, messages, open_cl

__all__ = ["open_cl"]  # the fixture

N = 500
DAMAGED = 321


def _fill(open_cl, n=N):
    s = open_cl()
    s.create_topic("t")
    for i in range(0, n, 50):
        s.append_batch("t", [mqstore.Message(b"value-%04d" % j, key=b"key-%d" % j,
                                             tag="even" if j % 2 == 0 else "odd")
                             for j in range(i, min(n, i + 50))], partition=0)
    s.close()


def _error(s, *args, **kw):
    with pytest.raises(mqstore.CorruptRecordError) as info:
        s.read("t", 0, *args, **kw)
    return str(info.value), info.value.path, info.value.position


def _both_gathers(s, *args, **kw):
    """The error of the same read with the C gather and with the reference."""
    got = [_error(s, *args, **kw)]
    real = native.cl_gather
    native.cl_gather = _purepy_cl_read.cl_gather
    try:
        got.append(_error(s, *args, **kw))
    finally:
        native.cl_gather = real
    assert got[0] == got[1]
    return got[0]


# where in message DAMAGED (from its start, or from its end when negative), what it breaks
DAMAGE = [
    (0, "TOTALSIZE"),  # the message no longer fits the unit / the file
    (12 + 3, "queue id"),
    (20 + 7, "queue offset"),
    (84 + 1, "body length"),
    (84 + 4 + 5, "a body byte"),
    (-25, "a properties byte"),
    (None, "properties length"),
    (-5, "a __CRC32# digit"),
]


@pytest.mark.parametrize("where, what", DAMAGE, ids=[w for _p, w in DAMAGE])
def test_a_flipped_byte_in_a_500_message_read_names_file_and_position(open_cl, store_path,
                                                                      where, what):
    _fill(open_cl)
    path, pos, total = messages(store_path)[DAMAGED]
    if where is None:
        at = _props_length_position(path, pos, total)
    else:
        at = pos + (where if where >= 0 else total + where)
    flip(path, at)
    s = open_cl()
    text, epath, eposition = _both_gathers(s, 0, max_records=N)
    assert (epath, eposition) == (path, pos), text
    assert f"t/0@{DAMAGED}" in text or "ConsumeQueue unit t/0@%d" % DAMAGED in text
    # everything before it reads; a read that stops before it does not see it
    assert [r.offset for r in s.read("t", 0, 0, max_records=DAMAGED)] == list(range(DAMAGED))
    assert len(s.read("t", 0, DAMAGED + 1, max_records=N)) == N - DAMAGED - 1
    assert _both_gathers(s, 100, max_records=N)[1:] == (path, pos)  # a read from elsewhere
    with pytest.raises(mqstore.CorruptRecordError):
        s.read("t", 0, DAMAGED, tags={"odd"})  # DAMAGED is odd: a tag candidate


def _props_length_position(path, pos, total):
    data = open(path, "rb").read()[pos:pos + total]
    body_len = struct.unpack_from(">i", data, 84)[0]
    p = 88 + body_len
    p += 1 + data[p]
    return pos + p + 1  # the low byte of PROPERTIES length


def test_the_damaged_message_is_skipped_by_a_tag_read_that_cannot_match_it(open_cl,
                                                                           store_path):
    _fill(open_cl)
    path, pos, _ = messages(store_path)[DAMAGED]
    flip(path, pos + 84 + 4 + 5)
    s = open_cl()
    evens = s.read("t", 0, 0, max_records=N, tags={"even"})  # DAMAGED is odd: not a candidate
    assert [r.offset for r in evens] == list(range(0, N, 2))


def test_check_crcs_false_returns_the_damaged_value_from_the_gather(open_cl, store_path):
    _fill(open_cl)
    path, pos, _ = messages(store_path)[DAMAGED]
    flip(path, pos + 84 + 4 + 5)
    s = open_cl(check_crcs=False)
    got = s.read("t", 0, 0, max_records=N)
    assert len(got) == N
    assert got[DAMAGED].value != b"value-%04d" % DAMAGED and len(got[DAMAGED].value) == 10
    assert got[DAMAGED].key == b"key-%d" % DAMAGED


def test_a_consume_queue_unit_naming_another_size_is_reported(open_cl, store_path):
    _fill(open_cl)
    s = open_cl()
    s.read("t", 0, N - 1)
    cq = s._queues[("t", 0)]
    phys, size, tag_hash = cq.unit(DAMAGED)
    cq._write_unit(DAMAGED, struct.pack(">qiq", phys, size + 1, tag_hash))
    text, path, position = _both_gathers(s, 0, max_records=N)
    path_want, pos_want, _ = messages(store_path)[DAMAGED]
    assert (path, position) == (path_want, pos_want)
    assert text.startswith(f"ConsumeQueue unit t/0@{DAMAGED} points at a message of size "
                           f"{size}, queue 0, queue offset {DAMAGED}; expected size {size + 1}")

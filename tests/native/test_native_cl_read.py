"""The commitlog read gather (``cl_gather``) on both backends: what it copies and reports for
sound messages, where and why it stops on damaged or foreign ones, and that the C build and
the reference give the same result for any bytes."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nativelogs import NATIVE_MISSING, guarded_view, rocketmq_message

from mqstore import _purepy_cl_read, native
from mqstore.errors import BufferRangeError

OK, LIMIT, CORRUPT, MISMATCH, FULL, FOREIGN, OTHER_FILE = 0, 1, 2, 3, 5, 6, 7
HAS_HEADERS, KEY_PLAIN, TAG_PLAIN, HAS_KEY, HAS_TAG, KEY_OTHER = 1, 2, 4, 8, 16, 32
BIG = 1 << 40


def signed(msg: bytes) -> bytes:
    """``msg`` with the __CRC32# record CRC appended (RocketMQ enabledAppendPropCRC): 20 more
    bytes of TOTALSIZE and PROPERTIES, and the CRC of everything before the property."""
    out = bytearray(msg)
    plen = _props_len(msg)
    struct.pack_into(">i", out, 0, len(msg) + 20)
    struct.pack_into(">h", out, len(msg) - 2 - plen, plen + 20)
    crc = zlib.crc32(out) & 0x7FFFFFFF
    return bytes(out) + b"__CRC32#\x01" + (b"%d" % crc)[::-1].ljust(10, b"0") + b"\x02"


def _props_len(msg: bytes) -> int:
    """The PROPERTIES length of a V1 IPv4 message (walked from the body length)."""
    body_len = struct.unpack_from(">i", msg, 84)[0]
    p = 88 + body_len
    p += 1 + msg[p]
    return struct.unpack_from(">h", msg, p)[0]


def log_of(msgs: list[tuple[int, bytes, bytes]], queue_id: int = 3, pad: int = 0):
    """A CommitLog file holding ``(queue offset, body, properties)`` messages (signed), and
    the ConsumeQueue units pointing at them (one a queue offset from ``msgs[0]``'s)."""
    out = bytearray(b"\x00" * pad)
    units = bytearray()
    for qoff, body, props in msgs:
        m = signed(rocketmq_message(queue_id, qoff, len(out), body, properties=props))
        units += struct.pack(">qiq", len(out), len(m), 0)
        out += m
    return bytes(out), bytes(units)


FILLER = struct.pack(">qiq", 0, 0x7FFFFFFF, 0)


def gather(impl, buf, units, *, first=0, n=None, select=None, start=0, q0=10, queue_id=3,
           check_crcs=True, crc_required_from=BIG, taken=0, taken_bytes=0, max_bytes=BIG,
           rows_cap=100, out=None, out_pos=0, limit=None, file_from=0):
    """One cl_gather call with the defaults of a plain read of ``log_of`` data."""
    mod = native if impl is native else _purepy_cl_read
    if out is None:
        out = np.zeros(len(buf) + out_pos, dtype=np.uint8)
    if n is None:
        n = len(units) // 20 - first
    got = mod.cl_gather(units, first, n, select, start, q0, buf,
                        len(buf) if limit is None else limit, file_from, queue_id, check_crcs,
                        crc_required_from, taken, taken_bytes, max_bytes, rows_cap, out,
                        out_pos)
    return got, out


def stop(got):
    """(status, where the walk stopped, messages gathered)."""
    return got.status, got.next, got.rows.shape[1]


@pytest.fixture(params=["native", "python"])
def impl(request):
    if request.param == "native":
        if native.backend != "native":
            pytest.skip(NATIVE_MISSING)
        return native
    return _purepy_cl_read


MSGS = [(10, b"plain", b"UNIQ_KEY\x01AB01\x02"),
        (11, b"tagged", b"TAGS\x01even\x02KEYS\x01k-1\x02UNIQ_KEY\x01AB02\x02"),
        (12, b"", b"KEYS\x01\x03AAE=\x02h\x01v\x02"),
        (13, b"x" * 300, b"TAGS\x01\x03dGFn\x02TAGS\x01last\x02KEYS\x01caf\xc3\xa9\x02"),
        (14, b"nothing", b"")]


def test_sound_messages_are_copied_with_their_property_places(impl):
    buf, units = log_of(MSGS, pad=7)
    got, out = gather(impl, buf, units, file_from=0)
    assert stop(got) == (OK, 5, 5)
    assert got.rows.shape == (11, 5) and got.rows.dtype == np.int64
    data = out.tobytes()
    cols = got.rows.tolist()
    assert cols[0] == [10, 11, 12, 13, 14]  # queue offsets
    assert [data[p:p + n] for p, n in zip(cols[1], cols[2])] == [b for _q, b, _p in MSGS]
    assert cols[3] == [1_700_000_000_000 - 1] * 5  # born timestamps
    # properties are kept for the messages with something to decode later
    assert [None if n < 0 else data[p:p + n] for p, n in zip(cols[4], cols[5])] == \
        [None, *[p for _q, _b, p in MSGS[1:4]], None]
    tags = [None if n < 0 else data[p:p + n] for p, n in zip(cols[6], cols[7])]
    keys = [None if n < 0 else data[p:p + n] for p, n in zip(cols[8], cols[9])]
    assert tags == [None, b"even", None, b"last", None]  # the last TAGS wins
    assert keys == [None, b"k-1", b"\x03AAE=", "café".encode(), None]
    assert cols[10] == [0, HAS_KEY | KEY_PLAIN | HAS_TAG | TAG_PLAIN,
                        HAS_HEADERS | HAS_KEY | KEY_OTHER, HAS_TAG | TAG_PLAIN | HAS_KEY |
                        KEY_OTHER, 0]
    assert got.flags == HAS_HEADERS | HAS_KEY | KEY_PLAIN | KEY_OTHER | HAS_TAG | TAG_PLAIN
    assert got.out_end == sum(len(b) for _q, b, _p in MSGS) + sum(len(p) for _q, _b, p in
                                                                  MSGS[1:4])
    assert got.taken_bytes == sum(len(b) for _q, b, _p in MSGS)
    assert (got.stop_phys, got.stop_queue_offset) == (7 + sum(
        struct.unpack_from(">i", units, 20 * i + 8)[0] for i in range(4)), 14)


def test_fillers_selection_rows_cap_and_a_start_index(impl):
    buf, units = log_of(MSGS)
    with_fillers = FILLER + units[:40] + FILLER + FILLER + units[40:]
    got, _ = gather(impl, buf, with_fillers, q0=9)  # unit r has queue offset 9 + r
    assert stop(got) == (MISMATCH, 5, 2)  # units 3 and 4 took queue offsets 12 and 13
    bad = bytearray(with_fillers)
    struct.pack_into(">i", bad, 8, 0)  # not a filler any more: a unit of size 0
    got, _ = gather(impl, buf, bytes(bad), q0=9)
    assert stop(got) == (MISMATCH, 0, 0)
    got, _ = gather(impl, buf, FILLER + units, q0=9)
    assert stop(got) == (OK, 6, 5) and got.rows[0].tolist() == [10, 11, 12, 13, 14]
    got, _ = gather(impl, buf, units, select=np.array([1, 3, 4]))
    assert stop(got) == (OK, 3, 3) and got.rows[0].tolist() == [11, 13, 14]
    got, _ = gather(impl, buf, units, select=np.array([1, 3, 4]), start=1, rows_cap=1)
    assert stop(got) == (OK, 2, 1) and got.rows[0].tolist() == [13]
    got, _ = gather(impl, buf, units, first=2, n=2, q0=12)
    assert stop(got) == (OK, 2, 2) and got.rows[0].tolist() == [12, 13]
    got, _ = gather(impl, buf, units, rows_cap=0)
    assert stop(got) == (OK, 0, 0)


def test_units_outside_the_file_stop_the_walk(impl):
    buf, units = log_of(MSGS)
    got, _ = gather(impl, buf, units, file_from=1000, limit=len(buf))
    assert stop(got) == (OTHER_FILE, 0, 0) and got.stop_phys == 0
    second = struct.unpack_from(">q", units, 20)[0]
    got, _ = gather(impl, buf[second:], units, file_from=second)
    assert stop(got) == (OTHER_FILE, 0, 0)
    got, _ = gather(impl, buf[second:], units, start=1, file_from=second)
    assert stop(got) == (OK, 5, 4)
    got, _ = gather(impl, b"", units, limit=0)  # no file yet
    assert (stop(got), got.stop_size) == ((OTHER_FILE, 0, 0), len(units) and
                                          struct.unpack_from(">i", units, 8)[0])


def test_parse_properties_skips_pairs_without_a_name_or_separator():
    raw = b"\x01v\x02TAGS\x02KEYS\x01a\x01b\x02__CRC32#\x01x\x02UNIQ_KEY\x01u"
    assert _purepy_cl_read.parse_properties(raw, 100) == (-1, -1, 113, 3, HAS_KEY | KEY_PLAIN)
    assert _purepy_cl_read.parse_properties(b"", 0) == (-1, -1, -1, -1, 0)
    assert _purepy_cl_read.parse_properties(b"name\x01\x02", 0)[4] == HAS_HEADERS


def _damaged(offset_in_msg: int, value: bytes, index: int = 2):
    buf, units = log_of(MSGS)
    data = bytearray(buf)
    pos, size = struct.unpack_from(">qi", units, 20 * index)
    at = pos + (offset_in_msg if offset_in_msg >= 0 else size + offset_in_msg)
    data[at:at + len(value)] = value
    return bytes(data), units


@pytest.mark.parametrize("where, value, status", [
    (0, struct.pack(">i", 90), FOREIGN),  # TOTALSIZE below the minimum: the reader decides
    (0, struct.pack(">i", 1 << 30), FOREIGN),  # past the file
    (4, struct.pack(">I", 0xDAA320AB), FOREIGN),  # V2 magic
    (36, struct.pack(">i", 0x10), FOREIGN),  # IPv6 born host
    (84, struct.pack(">i", 1 << 20), CORRUPT),  # body length
    (84, struct.pack(">i", -1), CORRUPT),
    (-22, struct.pack(">h", 3), CORRUPT),  # properties length (2 bytes before the CRC)
    (-23 - len(MSGS[2][2]), b"\x7f", CORRUPT),  # topic length
    (-5, b"9", CORRUPT),  # a __CRC32# digit
    (-21, b"_", CORRUPT),  # a property byte under the record CRC
    (12, struct.pack(">i", 4), MISMATCH),  # queue id
    (20, struct.pack(">q", 99), CORRUPT),  # queue offset: under the record CRC
])
def test_a_damaged_message_stops_the_gather_before_it(impl, where, value, status):
    buf, units = _damaged(where, value)
    got, _ = gather(impl, buf, units, check_crcs=status != MISMATCH)
    assert stop(got) == (status, 2, 2)
    assert got.rows.shape == (11, 2)
    assert (got.stop_phys, got.stop_size, got.stop_queue_offset) == (
        *struct.unpack_from(">qi", units, 40), 12)


def test_unit_mismatches_and_crc_rules(impl):
    buf, units = log_of(MSGS)
    bad = bytearray(units)
    struct.pack_into(">i", bad, 28, struct.unpack_from(">i", units, 28)[0] + 1)  # unit 1 size
    assert stop(gather(impl, buf, bytes(bad))[0]) == (MISMATCH, 1, 1)
    assert stop(gather(impl, buf, units, q0=11)[0]) == (MISMATCH, 0, 0)
    assert stop(gather(impl, buf, units, queue_id=4)[0]) == (MISMATCH, 0, 0)
    # a flipped body byte: found by the record CRC, returned as stored without CRC checks
    data = bytearray(buf)
    data[struct.unpack_from(">q", units, 20)[0] + 88] ^= 1
    assert stop(gather(impl, bytes(data), units)[0]) == (CORRUPT, 1, 1)
    got, out = gather(impl, bytes(data), units, check_crcs=False)
    assert got.status == OK and out[got.rows[1, 1]] == ord("t") ^ 1


def test_unsigned_messages_use_the_body_crc_unless_a_record_crc_is_required(impl):
    m0 = rocketmq_message(3, 10, 0, b"body-0", properties=b"")
    m1 = rocketmq_message(3, 11, len(m0), b"body-1", properties=b"TAGS\x01a\x02")
    buf = m0 + m1
    units = struct.pack(">qiqqiq", 0, len(m0), 0, len(m0), len(m1), 0)
    assert stop(gather(impl, buf, units)[0]) == (OK, 2, 2)
    assert stop(gather(impl, buf, units, crc_required_from=len(m0))[0]) == (CORRUPT, 1, 1)
    assert stop(gather(impl, buf, units, crc_required_from=len(m0), check_crcs=False)[0]) == \
        (OK, 2, 2)
    data = bytearray(buf)
    data[len(m0) + 88] ^= 1  # m1's body: its body CRC no longer matches
    assert stop(gather(impl, bytes(data), units)[0]) == (CORRUPT, 1, 1)


def test_max_bytes_always_takes_the_first_message_of_a_read(impl):
    buf, units = log_of(MSGS)
    assert stop(gather(impl, buf, units, max_bytes=0)[0]) == (LIMIT, 1, 1)
    assert stop(gather(impl, buf, units, max_bytes=0, taken=1)[0]) == (LIMIT, 0, 0)
    # 5 + 6 + 0 bytes fit in 11, the 300-byte body does not
    assert stop(gather(impl, buf, units, max_bytes=11)[0]) == (LIMIT, 3, 3)
    # the read's first message is taken whatever the budget, then 1 + 5 + 6 > 11
    assert stop(gather(impl, buf, units, max_bytes=11, taken_bytes=1)[0]) == (LIMIT, 1, 1)
    got = gather(impl, buf, units, max_bytes=318)[0]
    assert stop(got) == (OK, 5, 5) and got.taken_bytes == 318


def test_a_full_output_stops_before_the_message_and_resumes(impl):
    buf, units = log_of(MSGS)
    # room is needed for body and properties, though only a message with a key, tag or
    # header keeps its properties
    got, _ = gather(impl, buf, units, out=np.zeros(22, dtype=np.uint8), out_pos=4)
    assert stop(got) == (FULL, 0, 0)
    got, _ = gather(impl, buf, units, out=np.zeros(23, dtype=np.uint8), out_pos=4)
    assert stop(got) == (FULL, 1, 1) and got.out_end == 4 + 5
    out = np.zeros(4000, dtype=np.uint8)
    got, _ = gather(impl, buf, units, out=out, out_pos=got.out_end, start=1, taken=1)
    assert stop(got) == (OK, 5, 4)
    assert got.rows[1, 0] == 9  # positions continue in the output


def test_bad_arguments_raise_typed_errors(impl):
    buf, units = log_of(MSGS)
    with pytest.raises(BufferRangeError):
        gather(impl, buf, units, limit=len(buf) + 1)
    with pytest.raises(BufferRangeError):
        gather(impl, buf, units, out=np.zeros(10, np.uint8), out_pos=11)
    with pytest.raises(BufferRangeError):
        gather(impl, buf, units, first=1, n=5)
    with pytest.raises(ValueError):
        gather(impl, buf, units, start=6)
    with pytest.raises(ValueError):
        gather(impl, buf, units, select=np.array([0, 5]))
    with pytest.raises(ValueError):
        gather(impl, buf, units, rows_cap=-1)
    got, _ = gather(impl, buf, b"", n=0)
    assert stop(got) == (OK, 0, 0) and got.rows.shape == (11, 0)


def test_units_past_the_file_end_are_corrupt(impl):
    buf, units = log_of(MSGS)
    bad = bytearray(units)
    struct.pack_into(">q", bad, 20, len(buf) - 90)  # unit 1 near the end of the file
    assert stop(gather(impl, buf, bytes(bad))[0]) == (CORRUPT, 1, 1)
    last = struct.unpack_from(">q", units, 80)[0]
    assert stop(gather(impl, buf, units, limit=last + 10)[0]) == (CORRUPT, 4, 4)
    assert stop(gather(impl, buf, units, limit=last + 95)[0]) == (FOREIGN, 4, 4)


def test_the_last_message_may_end_at_the_end_of_a_guarded_buffer(impl):
    buf, units = log_of(MSGS)
    got, _ = gather(impl, guarded_view(buf), units)
    assert stop(got) == (OK, 5, 5)
    got, _ = gather(impl, guarded_view(units), units)  # the units' own buffer guarded too
    cut = guarded_view(buf[:-1])  # the last message loses its last byte
    assert stop(gather(impl, cut, guarded_view(units))[0]) == (FOREIGN, 4, 4)


def _both(buf, units, **kw):
    if native.backend != "native":
        pytest.skip(NATIVE_MISSING)
    a, out_a = gather(native, buf, units, **kw)
    b, out_b = gather(_purepy_cl_read, buf, units, **kw)
    assert a[:-1] == b[:-1]
    assert a.rows.tolist() == b.rows.tolist()
    assert out_a.tobytes() == out_b.tobytes()


@settings(max_examples=300, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), max_size=4),
       unit_flips=st.lists(st.tuples(st.integers(0, 99), st.integers(1, 255)), max_size=2),
       check_crcs=st.booleans(), max_bytes=st.sampled_from([0, 11, 300, BIG]),
       crc_required=st.booleans(), rows_cap=st.sampled_from([0, 2, 100]))
def test_native_and_reference_agree_on_damaged_bytes(flips, unit_flips, check_crcs, max_bytes,
                                                     crc_required, rows_cap):
    buf, units = log_of(MSGS)
    data, u = bytearray(buf), bytearray(units)
    for at, x in flips:
        data[at % len(data)] ^= x
    for at, x in unit_flips:
        u[at] ^= x
    _both(bytes(data), bytes(u), check_crcs=check_crcs, max_bytes=max_bytes,
          crc_required_from=0 if crc_required else BIG, rows_cap=rows_cap)


@settings(max_examples=200, deadline=None)
@given(props=st.lists(st.binary(max_size=12), max_size=6), body=st.binary(max_size=40))
def test_native_and_reference_agree_on_any_properties(props, body):
    raw = b"\x02".join(props)
    buf, units = log_of([(10, body, raw), (11, body, b"TAGS\x01" + raw)])
    _both(buf, units)


@pytest.mark.parametrize("body_len", [0, 1, 15, 16, 17, 63, 64, 65, 100, 127, 128, 129, 255,
                                      256, 1000, 4093])
def test_crcs_of_every_length_are_checked(impl, body_len):
    """The CRC folds 16-byte blocks and finishes with a table: any length must agree with
    zlib (a good message passes, one flipped bit anywhere under the CRC fails)."""
    body = bytes((i * 7 + body_len) & 0xFF for i in range(body_len))
    buf, units = log_of([(10, body, b"UNIQ_KEY\x01U\x02")])
    assert stop(gather(impl, buf, units)[0]) == (OK, 1, 1)
    for at in {0 + 8, 88 + body_len // 2, len(buf) - 21}:
        data = bytearray(buf)
        data[at] ^= 0x10
        assert gather(impl, bytes(data), units)[0].status in (CORRUPT, MISMATCH)


# ----- cl_transfer_plan -----
def plan(impl, units, *, first=0, n=None, start=0, file_from=0, limit=1 << 20,
         max_bytes=BIG, total=0, have=0, cap=16):
    mod = native if impl is native else _purepy_cl_read
    if n is None:
        n = len(units) // 20 - first
    return mod.cl_transfer_plan(units, first, n, start, file_from, limit, max_bytes, total,
                                have, cap)


def _units(*pairs):
    return b"".join(struct.pack(">qiq", p, s, 0) for p, s in pairs)


def test_transfer_plan_joins_adjacent_messages(impl):
    units = _units((0, 100), (100, 50), (300, 10), (310, 5))
    got = plan(impl, units)
    assert (got.status, got.next, got.total, got.have) == (OK, 4, 165, 1)
    assert got.slices.tolist() == [[0, 150], [300, 315]]
    got = plan(impl, FILLER + units[:20] + FILLER + units[20:], file_from=0)
    assert got.slices.tolist() == [[0, 150], [300, 315]] and got.next == 6


def test_transfer_plan_limits(impl):
    units = _units((0, 100), (100, 50), (150, 10))
    got = plan(impl, units, max_bytes=0)  # the first message always goes
    assert (got.status, got.next, got.total, got.slices.tolist()) == (LIMIT, 1, 100, [[0, 100]])
    assert (got.stop_phys, got.stop_size) == (100, 50)
    got = plan(impl, units, max_bytes=150)
    assert (got.status, got.next, got.slices.tolist()) == (LIMIT, 2, [[0, 150]])
    got = plan(impl, units, max_bytes=0, have=1, total=5)
    assert (got.status, got.next, got.total, got.slices.tolist()) == (LIMIT, 0, 5, [])
    got = plan(impl, units, cap=1, file_from=0)
    assert (got.status, got.next) == (OK, 3)  # adjacent: one slice is enough
    got = plan(impl, _units((0, 10), (20, 10), (40, 10)), cap=2)
    assert (got.status, got.next, got.slices.tolist()) == (FULL, 2, [[0, 10], [20, 30]])


def test_transfer_plan_stops_at_other_files_and_clamps(impl):
    units = _units((1000, 100), (1100, 100), (5000, 10))
    got = plan(impl, units, file_from=1000, limit=150)  # the second ends past the file
    assert (got.status, got.next, got.slices.tolist()) == (OTHER_FILE, 2, [[0, 150]])
    got = plan(impl, units, file_from=1000, limit=4000)
    assert (got.status, got.next, got.stop_phys) == (OTHER_FILE, 2, 5000)
    got = plan(impl, units, start=2, file_from=4096, limit=4096)
    assert (got.status, got.slices.tolist()) == (OK, [[904, 914]])
    got = plan(impl, _units((10, -5), (10, 3)))  # a negative size sends nothing
    assert got.slices.tolist() == [[10, 13]] and got.total == -2
    with pytest.raises(BufferRangeError):
        plan(impl, units, first=1, n=3)
    with pytest.raises(BufferRangeError):
        plan(impl, units, limit=-1)
    with pytest.raises(ValueError):
        plan(impl, units, start=4)
    with pytest.raises(ValueError):
        plan(impl, units, cap=-1)


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(-5, 3000), st.sampled_from(
           [-3, 0, 1, 50, 100, 0x7FFFFFFF])), max_size=12),
       file_from=st.sampled_from([0, 100, 1000]), limit=st.sampled_from([0, 500, 2000]),
       max_bytes=st.sampled_from([0, 120, BIG]), start=st.integers(0, 3),
       cap=st.sampled_from([0, 1, 3, 16]), have=st.integers(0, 1))
def test_transfer_plan_native_and_reference_agree(pairs, file_from, limit, max_bytes, start,
                                                  cap, have):
    if native.backend != "native":
        pytest.skip(NATIVE_MISSING)
    units = _units(*pairs)
    start = min(start, len(pairs))
    a = plan(native, units, start=start, file_from=file_from, limit=limit,
             max_bytes=max_bytes, cap=cap, have=have, total=have * 7)
    b = plan(_purepy_cl_read, units, start=start, file_from=file_from, limit=limit,
             max_bytes=max_bytes, cap=cap, have=have, total=have * 7)
    assert a[:-1] == b[:-1] and a.slices.tolist() == b.slices.tolist()

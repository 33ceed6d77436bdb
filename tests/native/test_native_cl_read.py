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

OK, LIMIT, CORRUPT, MISMATCH, FULL, FOREIGN = 0, 1, 2, 3, 5, 6
HAS_HEADERS, KEY_PLAIN, TAG_PLAIN = 1, 2, 4
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
    the unit columns (positions, sizes, queue offsets) pointing at them."""
    out = bytearray(b"\x00" * pad)
    positions, sizes, qoffs = [], [], []
    for qoff, body, props in msgs:
        m = signed(rocketmq_message(queue_id, qoff, len(out), body, properties=props))
        positions.append(len(out))
        sizes.append(len(m))
        qoffs.append(qoff)
        out += m
    return bytes(out), np.array(positions), np.array(sizes), np.array(qoffs)


def gather(impl, buf, positions, sizes, qoffs, *, queue_id=3, check_crcs=True,
           crc_required_pos=BIG, taken=0, taken_bytes=0, max_bytes=BIG, out=None, out_pos=0,
           limit=None):
    mod = native if impl is native else _purepy_cl_read
    if out is None:
        out = np.zeros(int(sizes.clip(0).sum()) + out_pos, dtype=np.uint8)
    got = mod.cl_gather(buf, len(buf) if limit is None else limit, positions, sizes, qoffs,
                        queue_id, check_crcs, crc_required_pos, taken, taken_bytes, max_bytes,
                        out, out_pos)
    return got, out


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
    buf, pos, sizes, qoffs = log_of(MSGS, pad=7)
    got, out = gather(impl, buf, pos, sizes, qoffs)
    assert (got.status, got.count) == (OK, 5)
    assert got.rows.shape == (10, 5) and got.rows.dtype == np.int64
    data = out.tobytes()
    cols = got.rows.tolist()
    assert [data[p:p + n] for p, n in zip(cols[0], cols[1])] == [b for _q, b, _p in MSGS]
    assert cols[2] == [1_700_000_000_000 - 1] * 5  # born timestamps
    assert [data[p:p + n] for p, n in zip(cols[3], cols[4])] == [p for _q, _b, p in MSGS]
    tags = [None if n < 0 else data[p:p + n] for p, n in zip(cols[5], cols[6])]
    keys = [None if n < 0 else data[p:p + n] for p, n in zip(cols[7], cols[8])]
    assert tags == [None, b"even", None, b"last", None]  # the last TAGS wins
    assert keys == [None, b"k-1", b"\x03AAE=", "café".encode(), None]
    assert cols[9] == [0, KEY_PLAIN | TAG_PLAIN, HAS_HEADERS, TAG_PLAIN, 0]
    assert got.out_end == sum(len(b) + len(p) for _q, b, p in MSGS)


def test_parse_properties_skips_pairs_without_a_name_or_separator():
    raw = b"\x01v\x02TAGS\x02KEYS\x01a\x01b\x02__CRC32#\x01x\x02UNIQ_KEY\x01u"
    assert _purepy_cl_read.parse_properties(raw, 100) == (-1, -1, 113, 3, KEY_PLAIN)
    assert _purepy_cl_read.parse_properties(b"", 0) == (-1, -1, -1, -1, 0)
    assert _purepy_cl_read.parse_properties(b"name\x01\x02", 0)[4] == HAS_HEADERS


def _damaged(offset_in_msg: int, value: bytes, index: int = 2):
    buf, pos, sizes, qoffs = log_of(MSGS)
    data = bytearray(buf)
    at = int(pos[index]) + (offset_in_msg if offset_in_msg >= 0 else int(sizes[index])
                            + offset_in_msg)
    data[at:at + len(value)] = value
    return bytes(data), pos, sizes, qoffs


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
    buf, pos, sizes, qoffs = _damaged(where, value)
    got, _ = gather(impl, buf, pos, sizes, qoffs, check_crcs=status != MISMATCH)
    assert (got.status, got.count) == (status, 2)
    assert got.rows.shape == (10, 2)


def test_unit_mismatches_and_crc_rules(impl):
    buf, pos, sizes, qoffs = log_of(MSGS)
    bad = sizes.copy()
    bad[1] += 1
    assert gather(impl, buf, pos, bad, qoffs)[0][:2] == (MISMATCH, 1)
    bad = qoffs.copy()
    bad[3] = 0
    assert gather(impl, buf, pos, sizes, bad)[0][:2] == (MISMATCH, 3)
    assert gather(impl, buf, pos, sizes, qoffs, queue_id=4)[0][:2] == (MISMATCH, 0)
    # a flipped body byte: found by the record CRC, returned as stored without CRC checks
    data = bytearray(buf)
    data[int(pos[1]) + 88] ^= 1
    assert gather(impl, bytes(data), pos, sizes, qoffs)[0][:2] == (CORRUPT, 1)
    got, out = gather(impl, bytes(data), pos, sizes, qoffs, check_crcs=False)
    assert got.status == OK and out[got.rows[0, 1]] == ord("t") ^ 1


def test_unsigned_messages_use_the_body_crc_unless_a_record_crc_is_required(impl):
    m0 = rocketmq_message(3, 0, 0, b"body-0", properties=b"")
    m1 = rocketmq_message(3, 1, len(m0), b"body-1", properties=b"TAGS\x01a\x02")
    buf = m0 + m1
    pos, sizes, qoffs = np.array([0, len(m0)]), np.array([len(m0), len(m1)]), np.array([0, 1])
    assert gather(impl, buf, pos, sizes, qoffs)[0][:2] == (OK, 2)
    assert gather(impl, buf, pos, sizes, qoffs, crc_required_pos=len(m0))[0][:2] == (CORRUPT, 1)
    assert gather(impl, buf, pos, sizes, qoffs, crc_required_pos=len(m0),
                  check_crcs=False)[0][:2] == (OK, 2)
    data = bytearray(buf)
    data[len(m0) + 88] ^= 1  # m1's body: its body CRC no longer matches
    assert gather(impl, bytes(data), pos, sizes, qoffs)[0][:2] == (CORRUPT, 1)


def test_max_bytes_always_takes_the_first_message_of_a_read(impl):
    buf, pos, sizes, qoffs = log_of(MSGS)
    assert gather(impl, buf, pos, sizes, qoffs, max_bytes=0)[0][:2] == (LIMIT, 1)
    assert gather(impl, buf, pos, sizes, qoffs, max_bytes=0, taken=1)[0][:2] == (LIMIT, 0)
    # 5 + 6 + 0 bytes fit in 11, the 300-byte body does not
    assert gather(impl, buf, pos, sizes, qoffs, max_bytes=11)[0][:2] == (LIMIT, 3)
    # the read's first message is taken whatever the budget, then 1 + 5 + 6 > 11
    assert gather(impl, buf, pos, sizes, qoffs, max_bytes=11, taken_bytes=1)[0][:2] == (LIMIT, 1)
    assert gather(impl, buf, pos, sizes, qoffs, max_bytes=318)[0][:2] == (OK, 5)


def test_a_full_output_stops_before_the_message_and_resumes(impl):
    buf, pos, sizes, qoffs = log_of(MSGS)
    out = np.zeros(30, dtype=np.uint8)
    got, _ = gather(impl, buf, pos, sizes, qoffs, out=out, out_pos=4)
    assert (got.status, got.count, got.out_end) == (FULL, 1, 4 + 5 + len(MSGS[0][2]))
    got, _ = gather(impl, buf, pos[1:], sizes[1:], qoffs[1:], out=np.zeros(4000, np.uint8),
                    out_pos=got.out_end, taken=1)
    assert (got.status, got.count) == (OK, 4)
    assert got.rows[0, 0] == 4 + 5 + len(MSGS[0][2])  # positions continue in the output


def test_positions_outside_the_file_are_corrupt_and_bad_windows_raise(impl):
    buf, pos, sizes, qoffs = log_of(MSGS)
    for bad in (-1, len(buf) - 90, 1 << 40):
        p = pos.copy()
        p[1] = bad
        assert gather(impl, buf, p, sizes, qoffs)[0][:2] == (CORRUPT, 1)
    # limit below the buffer: a message that runs past it is the reader's to judge
    assert gather(impl, buf, pos, sizes, qoffs, limit=int(pos[4]) + 10)[0][:2] == (CORRUPT, 4)
    assert gather(impl, buf, pos, sizes, qoffs, limit=int(pos[4]) + 95)[0][:2] == (FOREIGN, 4)
    with pytest.raises(BufferRangeError):
        gather(impl, buf, pos, sizes, qoffs, limit=len(buf) + 1)
    with pytest.raises(BufferRangeError):
        gather(impl, buf, pos, sizes, qoffs, out=np.zeros(10, np.uint8), out_pos=11)
    with pytest.raises(ValueError):
        gather(impl, buf, pos, sizes[:2], qoffs)
    empty = np.empty(0, dtype=np.int64)
    got, _ = gather(impl, buf, empty, empty, empty)
    assert (got.status, got.count, got.out_end, got.rows.shape) == (OK, 0, 0, (10, 0))


def test_the_last_message_may_end_at_the_end_of_a_guarded_buffer(impl):
    buf, pos, sizes, qoffs = log_of(MSGS)
    got, out = gather(impl, guarded_view(buf), pos, sizes, qoffs)
    assert (got.status, got.count) == (OK, 5)
    cut = guarded_view(buf[:-1])  # the last message loses its last byte
    assert gather(impl, cut, pos, sizes, qoffs)[0][:2] == (FOREIGN, 4)


def _both(buf, pos, sizes, qoffs, **kw):
    if native.backend != "native":
        pytest.skip(NATIVE_MISSING)
    a, out_a = gather(native, buf, pos, sizes, qoffs, **kw)
    b, out_b = gather(_purepy_cl_read, buf, pos, sizes, qoffs, **kw)
    assert (a.status, a.count, a.out_end) == (b.status, b.count, b.out_end)
    assert a.rows.tolist() == b.rows.tolist()
    assert out_a.tobytes() == out_b.tobytes()


@settings(max_examples=300, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), max_size=4),
       check_crcs=st.booleans(), max_bytes=st.sampled_from([0, 11, 300, BIG]),
       crc_required=st.booleans())
def test_native_and_reference_agree_on_damaged_bytes(flips, check_crcs, max_bytes,
                                                     crc_required):
    buf, pos, sizes, qoffs = log_of(MSGS)
    data = bytearray(buf)
    for at, x in flips:
        data[at % len(data)] ^= x
    _both(bytes(data), pos, sizes, qoffs, check_crcs=check_crcs, max_bytes=max_bytes,
          crc_required_pos=0 if crc_required else BIG)


@settings(max_examples=200, deadline=None)
@given(props=st.lists(st.binary(max_size=12), max_size=6),
       body=st.binary(max_size=40))
def test_native_and_reference_agree_on_any_properties(props, body):
    raw = b"\x02".join(props)
    buf, pos, sizes, qoffs = log_of([(0, body, raw), (1, body, b"TAGS\x01" + raw)])
    _both(buf, pos, sizes, qoffs)

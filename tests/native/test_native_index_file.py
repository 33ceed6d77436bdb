"""RocketMQ IndexFile inserts (``index_put_keys``) on both backends."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nativelogs import NATIVE_MISSING

from mqstore import _purepy, native
from mqstore.errors import BufferRangeError


def empty_file(slots: int, entries: int) -> bytearray:
    return bytearray(40 + slots * 4 + entries * 20)


def chain(buf, slots: int, h: int) -> list[int]:
    """Commitlog offsets on the chain of hash ``h``, newest first (IndexFile.selectPhyOffset)."""
    out = []
    n = struct.unpack_from(">i", buf, 40 + (h % slots) * 4)[0]
    while n > 0:
        eh, phy, _diff, prev = struct.unpack_from(">iqii", buf, 40 + slots * 4 + n * 20)
        if eh == h:
            out.append(phy)
        n = prev
    return out


def test_keys_chain_through_their_slots(impl):
    buf = empty_file(4, 20)
    got = impl.index_put_keys(buf, 4, 20, (1, 0, 0, 0), [5, 9, 5, 2, 13],
                              [100, 200, 300, 400, 500], [10_000, 11_000, 12_500, 13_000, 99_000])
    assert got == (5, 6, 2, 10_000, 100)  # two chains: slot 1 (5, 9, 5, 13), slot 2 (2)
    assert chain(buf, 4, 5) == [300, 100] and chain(buf, 4, 9) == [200]
    assert chain(buf, 4, 13) == [500] and chain(buf, 4, 2) == [400]
    diffs = [struct.unpack_from(">iqii", buf, 40 + 16 + n * 20)[2] for n in range(1, 6)]
    assert diffs == [0, 1, 2, 3, 89]  # seconds since the first entry's timestamp


def test_stops_when_the_file_is_full_and_keeps_the_begin_fields(impl):
    buf = empty_file(3, 4)  # entries 1..3 usable
    got = impl.index_put_keys(buf, 3, 4, (2, 1, 5_000, 7), [1, 2, 3], [8, 9, 10],
                              [6_000, 9_000, 9_999])
    assert got == (2, 4, 3, 5_000, 7)


def test_a_stale_slot_pointing_past_the_count_starts_a_new_chain(impl):
    buf = empty_file(2, 10)
    struct.pack_into(">i", buf, 40, 7)  # slot 0 -> entry 7, beyond indexCount
    got = impl.index_put_keys(buf, 2, 10, (1, 0, 0, 0), [4], [1], [1])
    assert got.hash_slot_count == 1
    assert struct.unpack_from(">iqii", buf, 40 + 8 + 20)[3] == 0


def test_bad_arguments(impl):
    with pytest.raises(BufferRangeError):
        impl.index_put_keys(bytearray(100), 10, 10, (1, 0, 0, 0), [1], [1], [1])
    with pytest.raises(ValueError):
        impl.index_put_keys(empty_file(2, 2), 0, 2, (1, 0, 0, 0), [1], [1], [1])
    with pytest.raises(ValueError):
        impl.index_put_keys(empty_file(2, 4), 2, 4, (1, 0, 0, 0), [1 << 40], [1], [1])
    with pytest.raises(ValueError):
        impl.index_put_keys(empty_file(2, 4), 2, 4, (1, 0, 0, 0), [1, 2], [1], [1])
    with pytest.raises(TypeError):
        impl.index_put_keys(bytes(empty_file(2, 4)), 2, 4, (1, 0, 0, 0), [1], [1], [1])


def test_same_bytes_as_the_engines_index_file(tmp_path):
    try:
        from mqstore.engines.commitlog.index_file import IndexFile, key_hash
    except ImportError:
        pytest.skip("the commitlog engine is not installed")
    slots, entries = 11, 40
    f = IndexFile(str(tmp_path / "idx"), slots, entries, create=True)
    keys = [f"orders#k{i % 13}" for i in range(45)]
    for i, k in enumerate(keys):
        f.put_key(k, 1000 + i, 1_700_000_000_000 + 700 * i)
    f.mm.flush()
    engine_bytes = bytes(f.mm[40:])
    mine = bytearray(40 + slots * 4 + entries * 20)
    got = native.index_put_keys(mine, slots, entries, (1, 0, 0, 0), [key_hash(k) for k in keys],
                                [1000 + i for i in range(45)],
                                [1_700_000_000_000 + 700 * i for i in range(45)])
    assert bytes(mine[40:]) == engine_bytes
    assert (got.index_count, got.hash_slot_count, got.begin_timestamp, got.begin_phy_offset) == \
        (f.index_count, f.hash_slot_count, f.begin_timestamp, f.begin_phy_offset)
    f.close()


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
@settings(max_examples=60, deadline=None)
@given(slots=st.integers(1, 9), entries=st.integers(0, 30),
       state=st.tuples(st.integers(-1, 31), st.integers(0, 9), st.integers(-5, 10**13),
                       st.integers(0, 10**9)),
       keys=st.lists(st.tuples(st.integers(-(1 << 31), (1 << 31) - 1),
                               st.integers(-(1 << 63), (1 << 63) - 1),
                               st.integers(-(1 << 62), 1 << 62)), max_size=40),
       garbage=st.binary(min_size=0, max_size=64))
def test_native_equals_python(slots, entries, state, keys, garbage):
    size = 40 + slots * 4 + entries * 20
    start = (garbage * (size // max(len(garbage), 1) + 1))[:size] if garbage else bytes(size)
    a, b = bytearray(start), bytearray(start)
    cols = [list(c) for c in zip(*keys)] or [[], [], []]
    assert native.index_put_keys(a, slots, entries, state, *cols) == \
        _purepy.index_put_keys(b, slots, entries, state, *cols)
    assert a == b


# ----- index_truncate_from -----
def test_truncation_undoes_the_puts_exactly(impl):
    slots, entries = 5, 40
    buf = empty_file(slots, entries)
    first = impl.index_put_keys(buf, slots, entries, (1, 0, 0, 0), [3, 8, 4, 13],
                                [10, 20, 30, 40], [1_000, 2_000, 3_000, 4_000])
    snapshot = bytes(buf)
    second = impl.index_put_keys(buf, slots, entries, first[1:], [8, 1, 3, 23, 0],
                                 [50, 60, 70, 80, 90], [5_000] * 5)
    assert second.put == 5
    got = impl.index_truncate_from(buf, slots, entries, second[1:3], 50)
    assert got == (5, first.index_count, first.hash_slot_count, 40)
    assert bytes(buf) == snapshot
    assert impl.index_truncate_from(buf, slots, entries, got[1:3], 0) == (4, 1, 0, -1)
    assert bytes(buf) == bytes(empty_file(slots, entries))


def test_truncation_of_nothing(impl):
    buf = empty_file(3, 10)
    impl.index_put_keys(buf, 3, 10, (1, 0, 0, 0), [1, 2], [5, 6], [1, 1])
    assert impl.index_truncate_from(buf, 3, 10, (3, 2), 7) == (0, 3, 2, 6)
    with pytest.raises(BufferRangeError):
        impl.index_truncate_from(bytearray(50), 3, 10, (3, 2), 0)


def test_truncation_matches_the_engines_index_file(tmp_path):
    try:
        from mqstore.engines.commitlog.index_file import IndexFile
    except ImportError:
        pytest.skip("the commitlog engine is not installed")
    slots, entries = 7, 60
    f = IndexFile(str(tmp_path / "idx"), slots, entries, create=True)
    for i in range(50):
        f.put_key(f"t#k{i % 9}", 100 * i, 1_700_000_000_000 + i)
    before = bytearray(f.mm[:])
    state = (f.index_count, f.hash_slot_count)
    f.truncate_from(2_000, lambda _off: 0)
    got = native.index_truncate_from(before, slots, entries, state, 2_000)
    assert bytes(before[40:]) == bytes(f.mm[40:])
    assert (got.removed, got.index_count, got.hash_slot_count, got.last_phy_offset) == \
        (30, f.index_count, f.hash_slot_count, f.end_phy_offset)
    f.close()


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
@settings(max_examples=60, deadline=None)
@given(slots=st.integers(1, 9), entries=st.integers(0, 30),
       state=st.tuples(st.integers(-2, 40), st.integers(-3, 9)),
       phy=st.integers(-(1 << 63), (1 << 63) - 1) | st.integers(-5, 5),
       garbage=st.binary(min_size=1, max_size=64))
def test_truncate_native_equals_python_on_garbage(slots, entries, state, phy, garbage):
    size = 40 + slots * 4 + entries * 20
    start = (garbage * (size // len(garbage) + 1))[:size]
    a, b = bytearray(start), bytearray(start)
    assert native.index_truncate_from(a, slots, entries, state, phy) == \
        _purepy.index_truncate_from(b, slots, entries, state, phy)
    assert a == b

"""Kafka .index / .timeindex floor searches on both backends, including Kafka's warm section."""
from __future__ import annotations

import bisect
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nativelogs import NATIVE_MISSING, guarded_view, offset_index, time_index

from mqstore import _purepy, native
from mqstore.errors import BufferRangeError

WARM_OFFSET_ENTRIES = 8192 // 8  # Kafka AbstractIndex.warmEntries()
WARM_TIME_ENTRIES = 8192 // 12


def floor(keys, target):
    return bisect.bisect_right(keys, target) - 1


@pytest.mark.parametrize("n", [1, 2, 5, WARM_OFFSET_ENTRIES, WARM_OFFSET_ENTRIES + 1,
                               WARM_OFFSET_ENTRIES + 2, 3000])
def test_offset_index_floor_on_sorted_entries(impl, n):
    keys = [3 * i + 1 for i in range(n)]
    buf = offset_index(keys)
    for target in {-(1 << 40), -1, 0, 1, 2, keys[-1], keys[-1] + 5, 1 << 40,
                   keys[n // 2], keys[n // 2] - 1, keys[max(0, n - 2 - WARM_OFFSET_ENTRIES)],
                   keys[max(0, n - 1 - WARM_OFFSET_ENTRIES)]}:
        assert impl.offset_index_floor(buf, n, target) == floor(keys, target), target


@pytest.mark.parametrize("n", [1, 3, WARM_TIME_ENTRIES, WARM_TIME_ENTRIES + 1, 2000])
def test_time_index_floor_on_sorted_entries(impl, n):
    keys = [1_700_000_000_000 + 10 * i for i in range(n)]
    buf = time_index(keys)
    for target in {-(1 << 70), 0, keys[0], keys[0] - 1, keys[-1], keys[-1] + 1, 1 << 70,
                   keys[n // 3] + 5, keys[max(0, n - 1 - WARM_TIME_ENTRIES)]}:
        assert impl.time_index_floor(buf, n, target) == floor(keys, target), target


def test_floor_searches_only_the_first_n_entries_of_a_preallocated_file(impl):
    buf = offset_index([0, 10, 20]) + bytes(8 * 100)  # zero entries after the used ones
    assert impl.offset_index_floor(buf, 3, 15) == 1
    assert impl.offset_index_floor(buf, 3, 10**6) == 2
    tbuf = time_index([5, 6, 7]) + bytes(12 * 50)
    assert impl.time_index_floor(tbuf, 3, 100) == 2


def test_no_entries_gives_minus_one(impl):
    assert impl.offset_index_floor(b"", 0, 5) == -1
    assert impl.offset_index_floor(b"", -3, 5) == -1
    assert impl.time_index_floor(b"", 0, 5) == -1


def test_more_entries_than_the_buffer_holds_is_a_range_error(impl):
    with pytest.raises(BufferRangeError):
        impl.offset_index_floor(offset_index([1, 2]), 3, 5)
    with pytest.raises(BufferRangeError):
        impl.time_index_floor(time_index([1, 2]) + b"\x00" * 11, 3, 5)


def test_unaligned_and_mmap_like_buffers(impl, guarded):
    keys = list(range(0, 5000, 5))
    raw = offset_index(keys)
    view = memoryview(b"\x01" + raw)[1:]
    assert impl.offset_index_floor(view, len(keys), 2502) == 500
    assert impl.offset_index_floor(guarded(raw), len(keys), 10**9) == len(keys) - 1


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
@settings(max_examples=80, deadline=None)
@given(keys=st.lists(st.integers(-(1 << 31), (1 << 31) - 1), min_size=0, max_size=1200),
       target=st.integers(-(1 << 33), 1 << 33), sort=st.booleans())
def test_offset_floor_native_equals_python_sorted_or_damaged(keys, target, sort):
    if sort:
        keys.sort()
    buf = guarded_view(offset_index(keys))
    assert native.offset_index_floor(buf, len(keys), target) == \
        _purepy.offset_index_floor(buf, len(keys), target)


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
@settings(max_examples=80, deadline=None)
@given(keys=st.lists(st.integers(-(1 << 63), (1 << 63) - 1), min_size=0, max_size=900),
       target=st.integers(-(1 << 65), 1 << 65), sort=st.booleans())
def test_time_floor_native_equals_python_sorted_or_damaged(keys, target, sort):
    if sort:
        keys.sort()
    buf = guarded_view(time_index(keys))
    assert native.time_index_floor(buf, len(keys), target) == \
        _purepy.time_index_floor(buf, len(keys), target)


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=400), n=st.integers(-2, 60), target=st.integers(-99, 99))
def test_random_bytes_native_equals_python(data, n, target):
    for f in ("offset_index_floor", "time_index_floor"):
        try:
            expected = getattr(_purepy, f)(data, n, target)
        except BufferRangeError:
            with pytest.raises(BufferRangeError):
                getattr(native, f)(guarded_view(data), n, target)
        else:
            assert getattr(native, f)(guarded_view(data), n, target) == expected


def test_entry_layout_is_big_endian(impl):
    buf = struct.pack(">ii", 1, 0) + struct.pack(">ii", 256, 4096)
    assert impl.offset_index_floor(buf, 2, 255) == 0
    assert impl.offset_index_floor(buf, 2, 256) == 1

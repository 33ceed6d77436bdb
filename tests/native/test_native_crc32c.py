"""CRC-32C on both backends: check values, iSCSI vectors, buffer kinds, chunking, parity."""
from __future__ import annotations

import mmap
import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nativelogs import NATIVE_MISSING

from mqstore import _purepy, native

# RFC 3720 (iSCSI) appendix B.4 test vectors, and the standard "123456789" check value
VECTORS = [
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b"", 0),
]


@pytest.mark.parametrize(("data", "expected"), VECTORS)
def test_check_values_and_iscsi_vectors(impl, data, expected):
    assert impl.crc32c(data) == expected


def test_accepts_every_buffer_kind_without_changing_the_result(impl):
    data = b"123456789"
    assert impl.crc32c(bytearray(data)) == 0xE3069283
    assert impl.crc32c(memoryview(data)) == 0xE3069283
    assert impl.crc32c(memoryview(b"xx" + data + b"yy")[2:-2]) == 0xE3069283
    import numpy as np

    assert impl.crc32c(np.frombuffer(data, dtype=np.uint8)) == 0xE3069283


def test_odd_lengths_and_unaligned_views_match_the_reference(impl):
    blob = bytes((i * 131 + 7) & 0xFF for i in range(2 * 3 * 256 + 40))
    for start in range(9):
        for length in (0, 1, 3, 7, 8, 9, 15, 16, 17, 255, 767, 768, 769, 1000, 1500):
            view = memoryview(blob)[start:start + length]
            assert impl.crc32c(view) == zlib_free_reference(bytes(view)), (start, length)


def zlib_free_reference(data: bytes) -> int:
    """A bit-at-a-time CRC-32C, independent of both backends' table code."""
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


def test_chunked_updates_equal_one_pass(impl):
    data = bytes(range(256)) * 5
    for cut in (0, 1, 5, 8, 300, 1279, 1280):
        assert impl.crc32c(data[cut:], impl.crc32c(data[:cut])) == impl.crc32c(data)
    crc = 0
    for i in range(0, len(data), 97):
        crc = impl.crc32c(data[i:i + 97], crc)
    assert crc == impl.crc32c(data)


def test_crc_argument_is_taken_modulo_2_32(impl):
    assert impl.crc32c(b"abc", 5 + (1 << 32)) == impl.crc32c(b"abc", 5)


def test_mmap_slices(impl, tmp_path):
    path = tmp_path / "f"
    data = bytes((i * 7) & 0xFF for i in range(20_000))
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        for a, b in ((0, 20_000), (1, 19_999), (4093, 8195), (777, 778)):
            assert impl.crc32c(view[a:b]) == _purepy.crc32c(data[a:b])
        view.release()


def test_rejects_what_is_not_a_buffer(impl):
    with pytest.raises(TypeError):
        impl.crc32c("123456789")


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=3000), start=st.integers(0, 15), crc=st.integers(0, 2**32 - 1))
def test_native_equals_python_on_random_data(data, start, crc):
    from nativelogs import guarded_view

    view = memoryview(data)[start:]
    expected = _purepy.crc32c(view, crc)
    assert native.crc32c(view, crc) == expected
    assert native.crc32c(guarded_view(bytes(view)), crc) == expected


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
def test_hardware_and_table_paths_agree_on_long_buffers():
    from mqstore._native import (  # the table path is not exported by mqstore.native
        ffi,
        lib,
    )

    blob = os.urandom(3 * 8192 * 2 + 3 * 256 + 13)
    for start in (0, 1, 3, 7):
        for length in (3 * 8192 - 1, 3 * 8192, 3 * 8192 + 1, 3 * 256 * 5 + 11,
                       len(blob) - start):
            view = memoryview(blob)[start:start + length]
            p = ffi.from_buffer("uint8_t[]", view)
            assert native.crc32c(view) == lib.mq_crc32c_software(0, p, len(p)), (start, length)


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
def test_body_crc32_matches_zlib():
    from mqstore._native import ffi, lib

    blob = os.urandom(5000)
    for start, length in ((0, 0), (1, 7), (3, 4096), (5, 4995)):
        view = memoryview(blob)[start:start + length]
        p = ffi.from_buffer("uint8_t[]", view)
        assert lib.mq_crc32(0, p, len(p)) == zlib.crc32(view)


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
@pytest.mark.parametrize("force_software", [0, 1])
def test_body_crc32_folded_and_table_paths_match_zlib(force_software):
    """mq_crc32 folds 16-byte blocks with PCLMULQDQ from 64 bytes on (where the CPU has
    it); every length and alignment around the block edges, continued from any CRC, gives
    zlib's result on both paths (mq_init(1) selects the tables only)."""
    import random

    from mqstore._native import ffi, lib

    lib.mq_init(force_software)
    try:
        rng = random.Random(20261201)
        blob = os.urandom(9000)
        lengths = list(range(0, 200)) + [255, 256, 257, 4095, 4096, 4097, 8999 - 64]
        for length in lengths:
            start = rng.randrange(0, 64)
            seed = rng.randrange(0, 2**32)
            view = memoryview(blob)[start:start + length]
            p = ffi.from_buffer("uint8_t[]", view)
            assert lib.mq_crc32(seed, p, len(p)) == zlib.crc32(view, seed), (start, length)
    finally:
        lib.mq_init(1 if native.crc32c_hardware is False else 0)

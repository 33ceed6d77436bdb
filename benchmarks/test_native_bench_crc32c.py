"""CRC-32C throughput: mqstore.native.crc32c against the crc32c package and zlib.crc32.

Timed runs (the suite's addopts disable timing; these run once untimed there)::

    python -m pytest benchmarks/test_native_bench_crc32c.py --benchmark-enable \
        --benchmark-group-by=param:size --benchmark-columns=min,median,ops

The issue's goal: mqstore >= 0.8x the crc32c package on buffers of 64 KiB and more.
zlib.crc32 is another polynomial (CRC-32), shown as the stdlib reference point.
"""
from __future__ import annotations

import zlib

import pytest

from mqstore import native

try:
    import crc32c as crc32c_pkg  # the `bench` extra (ICRAR's crc32c package)
except ImportError:  # pragma: no cover - depends on the environment
    crc32c_pkg = None

SIZES = [
    pytest.param(100, id="100B"),
    pytest.param(4 << 10, id="4KiB"),
    pytest.param(64 << 10, id="64KiB"),
    # 16 MiB takes ~1.6 s on the pure-Python fallback: slow there, instant on the C path
    pytest.param(16 << 20, id="16MiB",
                 marks=[pytest.mark.slow] if native.backend == "python" else []),
]


def _functions():
    yield pytest.param(native.crc32c, id=f"mqstore-{native.backend}")
    yield pytest.param(
        crc32c_pkg.crc32c if crc32c_pkg else None, id="crc32c-package",
        marks=pytest.mark.skipif(crc32c_pkg is None,
                                 reason="the crc32c package is not installed (pip install "
                                        "-e '.[bench]')"))
    yield pytest.param(zlib.crc32, id="zlib-crc32")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("crc_function", list(_functions()))
def test_crc_throughput(benchmark, crc_function, size):
    data = bytes(((i * 2654435761) >> 24) & 0xFF for i in range(min(size, 1 << 16)))
    data = (data * (size // len(data) + 1))[:size]
    benchmark.group = f"crc {size} bytes"
    benchmark.extra_info["bytes"] = size
    result = benchmark(crc_function, data)
    if crc_function is native.crc32c and crc32c_pkg is not None:
        assert result == crc32c_pkg.crc32c(data)

"""Recovery rescan of a Kafka log against one plain sequential read of the same file.

The rescan is what segment recovery does: read the ``.log`` in chunks and validate every
batch (size, magic, CRC-32C) with ``mqstore.native.scan_batches``, carrying a partial batch
over to the next chunk. The baseline reads the same file with the same chunk size and does
nothing else. The log size is ``MQSTORE_BENCH_LOG_BYTES`` (default 4 MiB so the normal test
run stays quick; the issue's figure is for 1 GiB)::

    MQSTORE_BENCH_LOG_BYTES=1073741824 python -m pytest benchmarks/test_native_bench_rescan.py \
        --benchmark-enable --benchmark-columns=min,median,mean --benchmark-min-rounds=5

Goal: rescan <= 2x the plain read (both from the page cache: the file was just written).
The file is written to a temporary directory and deleted afterwards (check free space for
1 GiB first: ``df -h $TMPDIR``).
"""
from __future__ import annotations

import mmap
import os
import struct
import sys
from pathlib import Path

import pytest

from mqstore import native

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "native"))
from nativelogs import kafka_batch

LOG_BYTES = int(os.environ.get("MQSTORE_BENCH_LOG_BYTES", str(4 << 20)))
CHUNK = 8 << 20
RECORDS_PER_BATCH = 16
VALUE_BYTES = 1000  # ~16 KiB producer batches


@pytest.fixture(scope="module")
def log_file(tmp_path_factory):
    """A valid log of about LOG_BYTES: one batch template with rewritten base offsets (the
    CRC does not cover the base offset, so every copy stays valid)."""
    template = bytearray(kafka_batch(0, [bytes([i]) * VALUE_BYTES for i in
                                         range(RECORDS_PER_BATCH)]))
    n_batches = max(1, LOG_BYTES // len(template))
    path = tmp_path_factory.mktemp("rescan") / "00000000000000000000.log"
    per_write = max(1, CHUNK // len(template))
    with open(path, "wb") as f:
        for first in range(0, n_batches, per_write):
            out = bytearray()
            for b in range(first, min(n_batches, first + per_write)):
                struct.pack_into(">q", template, 0, b * RECORDS_PER_BATCH)
                out += template
            f.write(out)
    yield path, n_batches
    path.unlink()


def plain_read(path: Path) -> int:
    """Read the whole file sequentially into one reused buffer; returns the bytes read."""
    buf = bytearray(CHUNK)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total


def rescan(path: Path) -> tuple[int, int, int]:
    """Validate every batch, chunk by chunk; returns (valid bytes, batches, status)."""
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    have = valid = batches = 0
    status = native.SCAN_OK
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(mv[have:])
            end = have + n
            scan = native.scan_batches(mv, 0, end)
            batches += len(scan.positions)
            valid += scan.valid_end
            status = scan.status
            if n == 0 or status == native.SCAN_CORRUPT:
                break
            if status == native.SCAN_TORN and scan.valid_end == 0 and end == len(buf):
                buf.extend(bytes(len(buf)))  # one batch larger than the buffer: grow it
                mv.release()
                mv = memoryview(buf)
            rest = end - scan.valid_end
            mv[:rest] = mv[scan.valid_end:end]
            have = rest
    mv.release()
    return valid, batches, status


def mmap_rescan(path: Path) -> tuple[int, int, int]:
    """The same validation over one mapping of the whole file."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if hasattr(mm, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL"):
            mm.madvise(mmap.MADV_SEQUENTIAL)
        scan = native.scan_batches(mm, 0, len(mm))
        result = scan.valid_end, len(scan.positions), scan.status
        del scan
    return result


# the pure-Python CRC-32C does ~10 MB/s: the rescans are slow on the fallback
slow_on_fallback = pytest.mark.skipif(False, reason="") if native.backend == "native" \
    else pytest.mark.slow


def test_plain_sequential_read(benchmark, log_file):
    path, _ = log_file
    benchmark.group = f"rescan {path.stat().st_size >> 20} MiB log"
    assert benchmark(plain_read, path) == path.stat().st_size


@slow_on_fallback
@pytest.mark.parametrize("scan", [rescan, mmap_rescan], ids=["chunked-read", "mmap"])
def test_recovery_rescan(benchmark, log_file, scan):
    path, n_batches = log_file
    benchmark.group = f"rescan {path.stat().st_size >> 20} MiB log"
    benchmark.extra_info["backend"] = native.backend
    assert benchmark(scan, path) == (path.stat().st_size, n_batches, native.SCAN_OK)

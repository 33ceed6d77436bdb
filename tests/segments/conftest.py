"""Helpers for the segments engine tests: small stores and crash images."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import mqstore

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"
SMALL = {"segment_bytes": 16 * 1024, "index_interval_bytes": 512, "segment_index_bytes": 4096}


@pytest.fixture
def open_segments(tmp_path):
    """``open_segments(path=None, **options)``: a segments store with small files, closed at
    the end of the test."""
    opened = []

    def _open(path=None, **options):
        s = mqstore.open(path or str(tmp_path / "store"), "segments", **{**SMALL, **options})
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()


def crash_image(store, dst: str) -> str:
    """Copy an open store's directory as a crash would leave it: no clean-shutdown marker,
    active indexes still preallocated. ``store.flush()`` first so the data is on disk."""
    store.flush()
    shutil.copytree(store.path, dst)
    return dst


def segment_files(path: str, topic: str = "t", partition: int = 0, suffix: str = ".log"):
    d = os.path.join(path, f"{topic}-{partition}")
    return sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(suffix))


def set_recovery_point(root: str, offset: int, topic: str = "t", partition: int = 0) -> None:
    """Rewrite the recovery-point checkpoint of a crash image so that offsets from
    ``offset`` on count as written after the last sync (where a crash may tear them)."""
    from mqstore.engines.segments import format as fmt
    from mqstore.engines.segments.checkpoint import read_checkpoint, write_checkpoint

    path = os.path.join(root, fmt.RECOVERY_POINT_CHECKPOINT)
    entries = read_checkpoint(path)
    entries[(topic, partition)] = offset
    write_checkpoint(path, entries)

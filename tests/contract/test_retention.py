"""Contract: retention deletes whole files, oldest first, never the active one; offsets
below the new start offset are out of range and everything above stays readable."""
from __future__ import annotations

import pytest

import mqstore

from .conftest import read_all

DAY_MS = 24 * 3600 * 1000


def _fill(store, n=400):
    store.create_topic("t")
    vals = [(b"%04d" % i) * 50 for i in range(n)]
    for i in range(0, n, 20):
        store.append_batch("t", vals[i:i + 20], partition=0)
    return vals


def test_nothing_expires_now(store):
    _fill(store)
    assert store.apply_retention() == 0
    assert store.start_offset("t", 0) == 0


def test_time_retention_deletes_old_files_but_not_the_active_one(store):
    vals = _fill(store)
    before = store.stats()["bytes_on_disk"]
    deleted = store.apply_retention(now_ms=mqstore.api.now_ms() + 365 * DAY_MS)
    assert deleted > 0
    assert store.stats()["bytes_on_disk"] < before
    start = store.start_offset("t", 0)
    end = store.end_offset("t", 0)
    assert 0 < start < end == len(vals)
    assert [r.value for r in read_all(store, "t", 0, start)] == vals[start:]
    with pytest.raises(mqstore.OffsetOutOfRangeError):
        store.read("t", 0, start - 1)
    # appends continue after retention
    assert store.append("t", b"new", partition=0).offset == len(vals)
    # a second pass has nothing more to delete but the active file is kept
    assert store.apply_retention(now_ms=mqstore.api.now_ms() + 365 * DAY_MS) >= 0
    assert store.read("t", 0, len(vals))[0].value == b"new"


def test_retention_survives_reopen(open_store):
    s = open_store()
    vals = _fill(s)
    s.apply_retention(now_ms=mqstore.api.now_ms() + 365 * DAY_MS)
    start = s.start_offset("t", 0)
    s.close()
    s2 = open_store()
    assert s2.start_offset("t", 0) == start
    assert s2.end_offset("t", 0) == len(vals)
    assert s2.read("t", 0, start)[0].value == vals[start]

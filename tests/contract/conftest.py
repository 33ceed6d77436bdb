"""Fixtures of the conformance suite: every test runs once per registered engine.

``SMALL`` gives each engine small file sizes so that rolls, retention and recovery happen with
little data. These options only size files; no rule of the contract is special-cased per
engine. An engine not listed here runs with its defaults.
"""
from __future__ import annotations

import pytest

import mqstore

SMALL: dict[str, dict] = {
    "segments": {"segment_bytes": 16 * 1024, "index_interval_bytes": 512,
                 "segment_index_bytes": 4096},
    "commitlog": {"mapped_file_size": 16 * 1024, "cq_units_per_file": 100,
                  "hash_slots": 64, "index_entries": 256},
}


def small_options(engine: str) -> dict:
    """File-size options that keep the engine's files small."""
    return dict(SMALL.get(engine, {}))


@pytest.fixture
def open_store(engine, store_path):
    """``open_store(**options)`` opens the engine's store at ``store_path`` with small files;
    every store opened this way is closed at the end of the test."""
    opened = []

    def _open(path=None, **options):
        opts = {**small_options(engine), **options}
        store = mqstore.open(path or store_path, engine, **opts)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store):
    """A fresh writable store of the engine under test."""
    return open_store()


def values(records):
    """The values of a list of records."""
    return [r.value for r in records]


def read_all(store, topic, partition, offset=0, **kw):
    """Every record from ``offset`` to the end, following ``read`` page by page."""
    out = []
    end = store.end_offset(topic, partition)
    while offset < end:
        page = store.read(topic, partition, offset, **kw)
        assert page, f"read returned nothing at {offset} < end {end}"
        out.extend(page)
        offset = page[-1].offset + 1
    return out

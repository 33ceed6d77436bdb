"""Fixtures of the commitlog engine's own tests: small files so rolls happen with little data."""
from __future__ import annotations

import pytest

import mqstore

SMALL = {"mapped_file_size": 4096, "cq_units_per_file": 16, "hash_slots": 64,
         "index_entries": 128}


@pytest.fixture
def open_cl(store_path):
    """``open_cl(**options)`` opens a commitlog store at ``store_path`` with small files;
    every store it opened is closed at the end of the test."""
    opened = []

    def _open(path=None, **options):
        s = mqstore.open(path or store_path, "commitlog", **{**SMALL, **options})
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()

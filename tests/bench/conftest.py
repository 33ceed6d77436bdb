"""Fixtures of the harness tests: the OMB fixtures directory and the in-memory test double."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakes import fake_engine_registered  # noqa: E402  (test double, tests only)

OMB = Path(__file__).parents[2] / ".." / "shared" / "fixtures" / "omb"


@pytest.fixture
def omb_dir() -> Path:
    """``shared/fixtures/omb`` beside the repository (skip when it is absent)."""
    if not (OMB / "workloads").is_dir():
        pytest.skip("../shared/fixtures/omb is absent (OMB workload fixtures)")
    return OMB.resolve()


@pytest.fixture
def fake_engine():
    """The in-memory TEST DOUBLE registered as an engine for one test."""
    with fake_engine_registered() as name:
        yield name

"""Shared fixtures: the engine parameter and a fresh store directory per test."""
from __future__ import annotations

import pytest

import mqstore


def pytest_generate_tests(metafunc):
    """Every test that takes ``engine`` runs once per registered engine."""
    if "engine" in metafunc.fixturenames:
        metafunc.parametrize("engine", mqstore.engines())


@pytest.fixture
def store_path(tmp_path):
    """A fresh directory for one store."""
    return str(tmp_path / "store")

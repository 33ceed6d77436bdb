"""Every example runs as a user would run it, and prints what it promises."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mqstore import errors, registry

EXAMPLES = Path(__file__).parents[2] / "examples"


def _needs(engine: str) -> None:
    try:
        registry.load(engine)
    except errors.ConfigError as exc:
        pytest.skip(str(exc))


def _run(*args: str, env: dict | None = None) -> str:
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                       cwd=EXAMPLES.parent, env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_quickstart(engine, tmp_path):
    _needs(engine)
    out = _run("examples/quickstart.py", str(tmp_path / "data"), "--engine", engine)
    assert f"engine={engine}" in out
    assert "tag filter 'paid': 1 record(s)" in out and "lookup_key order-1: 2 record(s)" in out
    assert "committed offset of group billing: 2" in out
    assert (tmp_path / "data" / "mqstore.json").is_file()


def test_swap_engines_same_records_either_engine(tmp_path):
    _needs("segments")
    _needs("commitlog")
    shipped = (EXAMPLES / "swap_engines.toml").read_text()
    assert 'engine = "commitlog"' in shipped
    out_c = _run("examples/swap_engines.py")
    seg_cfg = tmp_path / "seg.toml"
    seg_cfg.write_text(shipped.replace('engine = "commitlog"', 'engine = "segments"'))
    out_s = _run("examples/swap_engines.py", str(seg_cfg))
    assert "engine: commitlog (flush=async)" in out_c
    assert "engine: segments (flush=async)" in out_s
    assert out_c.splitlines()[1:] == out_s.splitlines()[1:]  # same partitions, same records


def test_consumer_group_resumes_exactly_once(engine):
    _needs(engine)
    out = _run("examples/consumer_group.py", "--engine", engine)
    assert "resuming from committed offsets" in out
    assert "processed 30 orders in total, each exactly once" in out


def test_zero_copy_server(engine):
    _needs(engine)
    out = _run("examples/zero_copy_server.py", "--engine", engine, "--messages", "150")
    assert "150/150 values found" in out


def test_custom_workload():
    out = _run("examples/custom_workload.py", "--messages", "400")
    assert "raw-files: 400 records sent" in out

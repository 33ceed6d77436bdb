"""Smoke test of ``benchmarks/perf_goals.py``: every row prints and ``--check`` means it.

The script runs with ``--quick`` (tiny sizes, one pair per row). Nothing here asserts a
speed: a missed goal is forced with ``--goal ROW=VALUE`` (an unreachable goal), and a met one
with a goal of 0, so the exit status is checked without depending on the machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "benchmarks" / "perf_goals.py"
ROWS = {"segments": ["P1 1p", "P1 10p", "P2", "P3", "P4a", "P4b", "P5", "P7", "P9",
                     "L1", "L2", "L3"]}
ROWS["commitlog"] = ROWS["segments"][:7] + ["P6"] + ROWS["segments"][7:]


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--quick", "--repeat", "1",
                           "--dir", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "220"})


def test_every_row_prints_and_check_fails_on_a_missed_goal(tmp_path):
    out = tmp_path / "goals.json"
    proc = _run(tmp_path, "--json", str(out), "--check", "--goal", "P3=1e9")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "--check: missed" in proc.stdout
    assert "P3/segments" in proc.stdout and "P3/commitlog" in proc.stdout
    doc = json.loads(out.read_text())
    got = {(r["engine"], r["goal"]) for r in doc["rows"]}
    want = {(e, g) for e, gs in ROWS.items() for g in gs}
    assert got == want
    for r in doc["rows"]:
        assert r["error"] is None, f"{r['goal']}/{r['engine']}: {r['error']}"
        if r["skipped"]:  # only the LMDB aims, when py-lmdb is absent
            assert r["goal"].startswith("L") and "lmdb" in r["skipped"]
            continue
        assert len(r["pair_ratios"]) == 1 and r["best_ratio"] > 0
        assert len(r["engine_samples"]) == len(r["reference_samples"]) == 1
    lines = proc.stdout.splitlines()
    for engine, goals in ROWS.items():
        for goal in goals:
            assert any(line.startswith(f"│ {goal} ") and f" {engine} " in line
                       for line in lines), f"row {goal} {engine} not printed"


def test_check_passes_when_every_selected_goal_is_met(tmp_path):
    proc = _run(tmp_path, "--only", "P6", "--goal", "P6=0", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "│ P6 " in proc.stdout and "pass" in proc.stdout


def test_lmdb_rows_are_skipped_with_a_message_without_py_lmdb(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "lmdb.py").write_text("raise ImportError('py-lmdb hidden by the test')\n")
    out = tmp_path / "l.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--repeat", "1", "--only",
                           "L1,L2", "--engine", "segments", "--json", str(out), "--check"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(shim)})
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the aims never fail --check
    rows = json.loads(out.read_text())["rows"]
    assert [r["goal"] for r in rows] == ["L1", "L2"]
    assert all("py-lmdb is not installed" in r["skipped"] for r in rows)
    assert "skipped: py-lmdb is not installed" in proc.stdout


@pytest.fixture
def perf_model():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from perf import model
        yield model
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_verdict_uses_each_sides_best_run_and_the_direction(perf_model):
    Row, Sample = perf_model.Row, perf_model.Sample
    rate = Row("P1 1p", "segments", "w", "r", "msg/s", 3.0)
    rate.engine_samples = [Sample(300.0), Sample(200.0), Sample(250.0)]
    rate.reference_samples = [Sample(100.0), Sample(20.0), Sample(50.0)]  # one disturbed
    assert rate.ratios == [3.0, 10.0, 5.0]  # the disturbed pair would flatter the engine
    assert rate.best_ratio == 3.0 and rate.median_ratio == 5.0 and rate.passed is True
    time_row = Row("P9", "segments", "w", "r", "s", 2.0, lower=True)
    time_row.engine_samples = [Sample(0.5), Sample(0.3)]
    time_row.reference_samples = [Sample(0.1), Sample(0.2)]
    assert time_row.best_ratio == pytest.approx(3.0) and time_row.passed is False
    rate.extra_ok = False  # P5: the fsyncs-per-message condition missed
    assert rate.passed is False
    empty = Row("P2", "commitlog", "w", "r", "B/s", 0.8)
    assert empty.passed is None and empty.best_ratio is None

"""Plots: a PNG per scaling suite, one line per engine and reference (plot extra)."""
from __future__ import annotations

import pytest

from mqstore import cli


def test_bench_partitions_plot_writes_a_png(fake_engine, tmp_path):
    pytest.importorskip("matplotlib")
    code = cli.main(["bench", "partitions", "--engines", fake_engine, "--refs", "raw-files",
                     "--quick", "--scale", "0.02", "--max-partitions", "10",
                     "--plot", str(tmp_path)])
    assert code == 0
    png = tmp_path / "partitions.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_suite_without_scaling_parameter_draws_nothing(tmp_path):
    from mqstore.bench.plot import plot_suite
    from mqstore.bench.suites import Column, Row, SuiteResult

    res = SuiteResult("flush", "claim", [Column("msg_s", "msg/s")],
                      rows=[Row("sync 1p", "x", "engine", {"msg_s": 1.0})])
    assert plot_suite(res, tmp_path) is None

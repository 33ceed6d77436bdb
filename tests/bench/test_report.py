"""Reports: OMB JSON keys, ratios in tables, Kafka/RocketMQ summary lines."""
from __future__ import annotations

import json
import re

from rich.console import Console

from mqstore.bench import report
from mqstore.bench.runner import run_workload
from mqstore.bench.suites import Column, Row, SuiteResult, Verdict, ratio
from mqstore.bench.workload import Workload

OMB_KEYS = ["workload", "driver", "messageSize", "topics", "partitions", "producersPerTopic",
            "consumersPerTopic", "publishRate", "publishErrorRate", "consumeRate", "backlog",
            "aggregatedPublishLatencyQuantiles", "aggregatedPublishDelayLatencyQuantiles",
            "aggregatedEndToEndLatencyQuantiles"]
FAMILIES = ["publishLatency", "publishDelayLatency", "endToEndLatency"]
SUFFIXES = ["Avg", "50pct", "75pct", "95pct", "99pct", "999pct", "9999pct", "Max"]


def _run():
    wl = Workload(name="json test", messages=50, messageSize=64, partitionsPerTopic=2)
    return wl, run_workload(wl, "raw-files")


def test_omb_json_has_every_testresult_key(tmp_path):
    wl, r = _run()
    path = report.write_omb_json(tmp_path, r, wl)
    assert re.fullmatch(r"json_test-raw-files-\d{4}(-\d\d){5}\.json", path.name)
    d = json.loads(path.read_text())
    for k in OMB_KEYS:
        assert k in d, k
    for fam in FAMILIES:
        for suf in SUFFIXES:
            assert isinstance(d[f"{fam}{suf}"], list)
            agg = d[f"aggregated{fam[0].upper()}{fam[1:]}{suf}"]
            assert isinstance(agg, float)
    assert d["partitions"] == 2 and d["driver"] == "raw-files"
    assert sum(d["publishRate"]) == 50  # 1-second windows
    assert d["aggregatedPublishLatencyMax"] >= d["aggregatedPublishLatency50pct"] > 0
    m = d["mqstore"]
    assert m["produced"] == 50 and m["machine"]["crc_backend"] in ("native", "python")
    assert m["config"]["flush"] == "os" and m["workload"]["messages"] == 50


def test_summary_lines_follow_the_tools():
    _wl, r = _run()
    assert re.match(r"50 records sent, [\d.]+ records/sec \([\d.]+ MB/sec\), [\d.]+ ms avg "
                    r"latency, [\d.]+ ms max latency, \d+ ms 50th, \d+ ms 95th, \d+ ms 99th, "
                    r"\d+ ms 99\.9th\.$", report.kafka_producer_line(r))
    assert report.rocketmq_producer_line(r).startswith("[Complete] Send Total: 50 | Send TPS: ")
    header, row = report.kafka_consumer_line(r).splitlines()
    assert header.startswith("start.time, end.time, data.consumed.in.MB")
    assert row.split(", ")[4] == "50"
    assert "Consume TPS" in report.rocketmq_consumer_line(r)


def test_table_ratios_are_against_the_first_engine_of_the_case():
    res = SuiteResult("s", "claim", [Column("msg_s", "msg/s", ratio=True)])
    res.rows = [Row("c1", "segments", "engine", {"msg_s": 100.0}),
                Row("c1", "commitlog", "engine", {"msg_s": 250.0}),
                Row("c1", "raw-files", "reference", {"msg_s": 50.0}),
                Row("c2", "segments", "engine", {"msg_s": 10.0}),
                Row("c2", "commitlog", "engine", {"msg_s": None})]
    res.verdict = Verdict(True, "because")
    console = Console(record=True, width=200)
    console.print(report.suite_table(res))
    text = console.export_text()
    assert "×1.00" in text and "×2.50" in text and "×0.50" in text
    assert "—" in text and "shown: because" in text
    assert ratio(3, 2) == 1.5 and ratio(1, 0) is None and ratio(None, 1) is None

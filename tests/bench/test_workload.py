"""Workloads: OMB YAML loads unchanged, TOML/JSON, validation, payloads and keys."""
from __future__ import annotations

import json

import pytest

from mqstore.bench import workload as wmod
from mqstore.bench.payloads import PayloadSource, read_stamp, stamp
from mqstore.bench.workload import Workload, load_workload, workload_from_dict
from mqstore.errors import ConfigError

OMB_FILES = ["1-topic-1-partition-100b.yaml", "1-topic-100-partitions-1kb-4p-4c-200k.yaml",
             "1-topic-16-partitions-1kb.yaml", "backlog-1-topic-1-partition-1kb.yaml",
             "simple-workload.yaml"]


@pytest.mark.parametrize("name", OMB_FILES)
def test_omb_workload_loads_unchanged(omb_dir, name):
    wl = load_workload(omb_dir / "workloads" / name)
    text = (omb_dir / "workloads" / name).read_text()
    raw = wmod.parse_yaml(text)
    for key, value in raw.items():  # every OMB field keeps its value (payloadFile resolved)
        if key == "payloadFile":
            assert getattr(wl, key).endswith(value)
        else:
            assert getattr(wl, key) == value, key
    if wl.payloadFile:
        assert (omb_dir / raw["payloadFile"]).resolve().samefile(wl.payloadFile)


def test_omb_fields_read_as_omb_defines_them(omb_dir):
    wl = load_workload(omb_dir / "workloads" / "1-topic-100-partitions-1kb-4p-4c-200k.yaml")
    assert (wl.topics, wl.partitionsPerTopic, wl.messageSize) == (1, 100, 1024)
    assert wl.useRandomizedPayloads and wl.randomBytesRatio == 0.5
    assert (wl.producersPerTopic, wl.consumerPerSubscription, wl.producerRate) == (4, 4, 200000)
    assert wl.testDurationMinutes == 5 and wl.warmupDurationMinutes == 1  # OMB default
    assert wl.keyDistributor == "NO_KEY"
    src = PayloadSource(wl)
    assert len(src.pool) == 1000  # OMB's pool size when unset
    assert all(len(p) == 1024 for p in src.pool[:5])
    assert src.pool[0][512:] == bytes(512)  # the non-random half is zeros


def test_flat_yaml_fallback_matches_pyyaml(omb_dir, monkeypatch):
    yaml = pytest.importorskip("yaml")
    for name in OMB_FILES:
        text = (omb_dir / "workloads" / name).read_text()
        assert wmod._parse_flat_yaml(text, name) == yaml.safe_load(text)


def test_flat_yaml_fallback_refuses_nested_documents():
    with pytest.raises(ConfigError, match="yaml extra"):
        wmod._parse_flat_yaml("a:\n  b: 1\n", "x.yaml")


def test_backlog_is_capped_and_named_in_the_header(omb_dir):
    wl = load_workload(omb_dir / "workloads" / "backlog-1-topic-1-partition-1kb.yaml")
    wl = wl.replace(max_backlog_bytes=1 << 20)
    assert wl.backlog_bytes == 1 << 20
    assert wl.catchup
    assert wl.planned_messages() == 1024
    assert any("capped" in n for n in wl.header_notes())


def test_toml_and_json_load(tmp_path):
    (tmp_path / "w.toml").write_text('[workload]\nname = "t"\npartitionsPerTopic = 3\n'
                                     'messages = 10\nbatch_records = 4\nflush = "sync"\n')
    wl = load_workload(tmp_path / "w.toml")
    assert (wl.name, wl.partitionsPerTopic, wl.messages, wl.flush) == ("t", 3, 10, "sync")
    (tmp_path / "w.json").write_text(json.dumps({"topics": 2, "messageSize": 10}))
    wl = load_workload(tmp_path / "w.json")
    assert wl.name == "w" and wl.topics == 2 and wl.messageSize == 10


def test_driver_keys_are_ignored_and_named():
    wl = workload_from_dict({"replicationFactor": 3, "topics": 1})
    assert "replicationFactor" in wl.ignored
    assert any("replicationFactor" in n for n in wl.header_notes())


@pytest.mark.parametrize("bad", [{"topics": 0}, {"nope": 1}, {"flush": "never"},
                                 {"keyDistributor": "X"}, {"randomBytesRatio": 2.0},
                                 {"consumerBacklogSizeGB": 1, "producerRate": 0}])
def test_bad_fields_raise_config_error(bad):
    with pytest.raises(ConfigError):
        workload_from_dict(bad)


def test_payload_file_resolves_from_repository_root(tmp_path):
    (tmp_path / "payload").mkdir()
    (tmp_path / "payload" / "p.data").write_bytes(b"x" * 33)
    (tmp_path / "workloads").mkdir()
    (tmp_path / "workloads" / "w.yaml").write_text('payloadFile: "payload/p.data"\n')
    wl = load_workload(tmp_path / "workloads" / "w.yaml")
    assert PayloadSource(wl).payload(7) == b"x" * 33
    (tmp_path / "workloads" / "m.yaml").write_text('payloadFile: "payload/missing.data"\n')
    with pytest.raises(ConfigError, match="not found"):
        load_workload(tmp_path / "workloads" / "m.yaml")


def test_same_seed_same_bytes_and_keys():
    wl = Workload(messageSize=64, keyDistributor="RANDOM_NANO")
    a, b = PayloadSource(wl), PayloadSource(wl)
    assert [a.payload(i) for i in range(3)] == [b.payload(i) for i in range(3)]
    assert [a.key(i) for i in range(50)] == [b.key(i) for i in range(50)]
    assert PayloadSource(wl.replace(seed=7)).payload(0) != a.payload(0)
    rr = PayloadSource(wl.replace(keyDistributor="KEY_ROUND_ROBIN"))
    assert rr.key(0) == rr.key(10_000) and rr.key(0) != rr.key(1)
    assert len(rr.key(3)) == 7
    assert PayloadSource(Workload()).key(0) is None


def test_tag_ratio_spreads_the_first_tag():
    src = PayloadSource(Workload(tags=["A", "B"], tag_ratio=0.1))
    tags = [src.tag(i) for i in range(1000)]
    assert tags.count("A") == 100


def test_stamp_round_trips():
    v = stamp(b"\0" * 20, 123456789)
    assert read_stamp(v) == 123456789 and len(v) == 20
    assert stamp(b"abc", 5) == b"abc" and read_stamp(b"abc") is None

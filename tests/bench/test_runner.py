"""The runner: N produced means N consumed per subscription, on engines and references."""
from __future__ import annotations

import os

import pytest

import mqstore

from fakes import engine_loads
from mqstore.bench.runner import run_workload
from mqstore.bench.workload import Workload

REFS = ["raw-files", "raw-shared", "sqlite-wal"]


@pytest.mark.parametrize("target", ["fake"] + REFS)
def test_n_produced_n_consumed_per_subscription(fake_engine, target, tmp_path):
    name = fake_engine if target == "fake" else target
    wl = Workload(name="n", partitionsPerTopic=3, topics=2, messages=300, messageSize=64,
                  batch_records=7, subscriptionsPerTopic=2, consumerPerSubscription=2,
                  producersPerTopic=2)
    r = run_workload(wl, name, base_dir=str(tmp_path))
    assert r.produced == 300 and r.produced_bytes == 300 * 64
    assert r.consumed == 600  # every subscription reads every message
    assert r.publish_latency.count == 300 and r.end_to_end.count == 600
    assert r.batches >= 300 // 7
    assert r.publish_rate > 0 and r.consume_rate > 0
    assert not r.notes or all("unthrottled" in n for n in r.notes)
    assert os.listdir(tmp_path) == []  # the run's directory is removed


def test_catchup_reads_the_whole_backlog(fake_engine):
    wl = Workload(messages=200, partitionsPerTopic=2, messageSize=32, read_pattern="catchup")
    r = run_workload(wl, fake_engine)
    assert r.produced == 200 and r.consumed == 200


def test_duration_bound_run_produces_and_drains(tmp_path):
    wl = Workload(duration_s=0.3, warmup_s=0.1, producerRate=500, messageSize=32)
    r = run_workload(wl, "raw-files", base_dir=str(tmp_path))
    assert 0 < r.produced <= 500 * 0.4 + 5
    assert r.consumed == r.produced  # warm-up messages are excluded from both
    assert r.publish_delay.count == r.produced
    assert r.series and sum(s["publishRate"] for s in r.series) == pytest.approx(r.produced)


def test_linger_groups_rate_limited_messages_into_batches():
    wl = Workload(messages=60, producerRate=1000, linger_ms=20.0, batch_records=1000,
                  messageSize=16, subscriptionsPerTopic=0)
    r = run_workload(wl, "raw-shared")
    assert r.produced == 60
    assert r.batches < 30  # ~20 messages wait together per batch


def test_batch_size_caps_batches():
    wl = Workload(messages=100, batch_records=10, messageSize=16, subscriptionsPerTopic=0)
    r = run_workload(wl, "raw-shared")
    assert r.batches == 10


def test_flush_sync_counts_fsyncs():
    wl = Workload(messages=20, messageSize=16, flush="sync", subscriptionsPerTopic=0)
    r = run_workload(wl, "raw-files")
    assert r.fsyncs == 20 and r.fsyncs_per_msg == 1.0
    r = run_workload(wl.replace(flush="os"), "raw-files")
    assert r.fsyncs == 0


def test_real_engine_end_to_end(engine, tmp_path):
    if not engine_loads(engine):
        pytest.skip(f"engine {engine} is not available yet")
    wl = Workload(messages=200, partitionsPerTopic=4, messageSize=100, batch_records=8,
                  subscriptionsPerTopic=1, consumerPerSubscription=2)
    r = run_workload(wl, engine, base_dir=str(tmp_path))
    assert (r.produced, r.consumed) == (200, 200), r.notes
    assert r.config["engine"] == engine and "options" in r.config


def test_consumers_as_processes_follow_the_writer(engine, tmp_path):
    if not engine_loads(engine):
        pytest.skip(f"engine {engine} is not available yet")
    wl = Workload(messages=150, partitionsPerTopic=2, messageSize=64,
                  consumerPerSubscription=2)
    r = run_workload(wl, engine, base_dir=str(tmp_path), processes=True)
    assert r.produced == 150 and r.consumed == 150, r.notes


def test_engine_variant_runs_with_its_options(fake_engine):
    from mqstore.bench.targets import parse_engine_spec

    assert parse_engine_spec("commitlog[write_mode=write,hash_slots=64,x=true]") == (
        "commitlog", {"write_mode": "write", "hash_slots": 64, "x": True})
    assert parse_engine_spec("segments") == ("segments", {})
    with pytest.raises(mqstore.ConfigError):
        parse_engine_spec("bad[novalue]")
    r = run_workload(Workload(messages=20, messageSize=16), f"{fake_engine}[note=hello]")
    assert r.target == f"{fake_engine}[note=hello]" and r.consumed == 20
    assert r.config["engine"] == fake_engine and r.config["options"]["note"] == "hello"


@pytest.mark.parametrize("rate", [0, 20000])
def test_unthrottled_and_paced_producers_send_the_same_messages(fake_engine, rate):
    """The unthrottled producer builds whole batches at once; the messages (values after
    the stamp, keys, tags, partitions) are those of the paced per-message loop."""
    from mqstore.bench.payloads import PayloadSource

    wl = Workload(name="same", partitionsPerTopic=3, messages=120, messageSize=40,
                  batch_records=16, batch_bytes=400, keyDistributor="KEY_ROUND_ROBIN",
                  tags=["A", "B"], tag_ratio=0.25, producerRate=rate,
                  subscriptionsPerTopic=0)
    seen = {}

    def grab(target):
        store = target.store
        for p in range(3):
            for r in store.read("topic-0", p, 0, max_records=1000):
                seen[(r.value[8:], r.key, r.tag)] = seen.get((r.value[8:], r.key, r.tag), 0) + 1

    r = run_workload(wl, fake_engine, after_produce=grab)
    src = PayloadSource(wl.replace(seed=wl.seed))
    want = {}
    for i in range(120):
        k = (src.payload(i)[8:], src.key(i), src.tag(i))
        want[k] = want.get(k, 0) + 1
    assert r.produced == 120 and seen == want
    if rate == 0:  # full batches: 400 B / 40 B = 10 messages each (paced: sent as they come)
        assert r.batches == 12

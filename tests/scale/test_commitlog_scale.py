"""Commitlog costs per topic and per queue stay flat as counts grow (issue 10), checked with
small counts by counting the work (file rewrites, syncs, descriptors), never by time."""
from __future__ import annotations

import os
import resource

import pytest

import mqstore
from mqstore.engines.commitlog import metadata

OPTS = {"mapped_file_size": 1 << 20, "cq_units_per_file": 1000, "hash_slots": 64,
        "index_entries": 256}


def _count_json_writes(monkeypatch):
    writes = []
    real = metadata.write_json_atomic

    def counted(path, doc):
        writes.append(os.path.basename(path))
        return real(path, doc)
    monkeypatch.setattr(metadata, "write_json_atomic", counted)
    return writes


def test_create_topic_does_not_rewrite_topics_json_per_topic(store_path, monkeypatch):
    s = mqstore.open(store_path, "commitlog", flush="os", **OPTS)
    writes = _count_json_writes(monkeypatch)
    n = 3 * metadata.COMPACT_ENTRIES
    for i in range(n):
        s.create_topic(f"t{i:05d}")
    # folded when the journal has more entries than max(COMPACT_ENTRIES, the topics of the
    # last fold): after 1,025 and 2,051 topics, then at close; the journal never grows past
    # the table
    assert writes.count("topics.json") == 2
    lines = open(os.path.join(store_path, "config", "topics.json.journal"), "rb").read()
    assert lines.count(b"\n") == n - 2051
    s.close()
    assert writes.count("topics.json") == 3  # and at close
    s = mqstore.open(store_path, "commitlog")
    assert len(s.topics()) == n and s.partitions("t02999") == 1
    s.close()


def test_create_topics_writes_one_entry_and_reopens(store_path, monkeypatch):
    s = mqstore.open(store_path, "commitlog", **OPTS)
    writes = _count_json_writes(monkeypatch)
    names = [f"topic-{i:06d}" for i in range(20_000)]
    s.create_topics((n, 1 + i % 4) for i, n in enumerate(names))
    assert writes == []  # one journal line, topics.json untouched until close
    journal = os.path.join(store_path, "config", "topics.json.journal")
    assert open(journal, "rb").read().count(b"\n") == 1
    s.close()
    assert writes == ["topics.json", "topics.json.bak"]  # the table, then its copy
    s = mqstore.open(store_path, "commitlog")
    assert s.topics() == names and s.partitions("topic-019999") == 4
    s.append("topic-000003", b"x", partition=3)
    s.close()


@pytest.fixture
def low_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_many_topics_need_no_descriptor_each(store_path, low_nofile):
    """Topics without messages hold no file: 5,000 topics under RLIMIT_NOFILE=256."""
    s = mqstore.open(store_path, "commitlog", **OPTS)
    s.create_topics([f"t{i}" for i in range(5000)])
    before = len(os.listdir("/proc/self/fd"))
    s.create_topics([f"u{i}" for i in range(5000)])
    assert len(os.listdir("/proc/self/fd")) <= before + 1
    s.append("t42", b"v")
    s.close()
    s = mqstore.open(store_path, "commitlog")
    assert len(s.topics()) == 10_000 and s.read("t42", 0, 0)[0].value == b"v"
    s.close()


def test_the_journal_is_folded_when_it_outgrows_the_table(store_path, monkeypatch):
    """The journal is folded into topics.json once it has more entries than max(
    COMPACT_ENTRIES, topics at the last fold): the table doubles between rewrites."""
    monkeypatch.setattr(metadata, "COMPACT_ENTRIES", 8)
    s = mqstore.open(store_path, "commitlog", flush="os", **OPTS)
    writes = _count_json_writes(monkeypatch)
    longest = 0
    for i in range(40):
        s.create_topics([f"a{i}"])
        lines = open(os.path.join(store_path, "config", "topics.json.journal"), "rb").read()
        longest = max(longest, lines.count(b"\n"))
    assert writes.count("topics.json") == 3  # after 9, 19 and 39 topics
    assert longest == 19  # the most entries between the folds at 19 and 39 topics
    s.close()
    s = mqstore.open(store_path, "commitlog")
    assert len(s.topics()) == 40
    s.close()

"""The commitlog topic journal (``config/topics.json.journal``, ``metadata.TopicJournal``) at
each of its crash points: a torn entry, an entry written but not synced before a power loss
(zeros or garbage where it should be), a crash during compaction (before and after the
rename of ``topics.json``), and a damaged entry with good ones after it. Every acknowledged
topic survives; an unacknowledged one is dropped and the repair is logged; nothing raises
anything but the store's typed errors."""
from __future__ import annotations

import json
import os
import shutil

import pytest

import mqstore
from mqstore.engines.commitlog.metadata import TopicJournal

SMALL = {"mapped_file_size": 4096, "cq_units_per_file": 16, "hash_slots": 64,
         "index_entries": 128}


def _open(path, **opts):
    if os.path.exists(os.path.join(path, "mqstore.json")):
        return mqstore.open(path, "commitlog", **opts)
    return mqstore.open(path, "commitlog", **{**SMALL, **opts})


def _journal(path):
    return os.path.join(path, "config", "topics.json.journal")


def _crashed_copy(tmp_path, build):
    """A store as a crash leaves it: ``build(store)`` runs on an open store, whose
    directory is copied before it is closed."""
    live, crashed = str(tmp_path / "live"), str(tmp_path / "crashed")
    s = _open(live)
    build(s)
    shutil.copytree(live, crashed)
    s.close()
    return crashed


def _two_topics(s):
    s.create_topic("a", 2)
    s.create_topics([("b", 1), ("c", 3)])
    s.append("a", b"a1", partition=1)


def _repaired(s):
    return s.stats()["recovery"].get("metadata_repaired", 0)


def test_the_journal_holds_acknowledged_topics_after_a_crash(tmp_path):
    crashed = _crashed_copy(tmp_path, _two_topics)
    assert os.path.getsize(_journal(crashed)) > 0  # the topics are only in the journal
    s = _open(crashed)
    assert s.topics() == ["a", "b", "c"] and s.partitions("c") == 3
    assert s.read("a", 1, 0)[0].value == b"a1"
    assert _repaired(s) == 0
    assert os.path.getsize(_journal(crashed)) == 0  # folded into topics.json at open
    s.close()


@pytest.mark.parametrize("cut", [1, 9, 20, -1])
def test_a_torn_last_entry_is_cut(tmp_path, cut):
    crashed = _crashed_copy(tmp_path, _two_topics)
    entry = TopicJournal.encode({"torn": 4})
    with open(_journal(crashed), "ab") as f:
        f.write(entry[:cut])
    s = _open(crashed)
    assert s.topics() == ["a", "b", "c"]
    assert _repaired(s) == 1
    s.create_topic("torn", 2)  # never acknowledged: the name is free
    s.close()
    s = _open(crashed)
    assert s.topics() == ["a", "b", "c", "torn"] and _repaired(s) == 0
    s.close()


@pytest.mark.parametrize("tail", ["zeros", "garbage", "wrong_crc"])
def test_an_entry_written_but_not_synced(tmp_path, tail):
    """A power loss after the write, before its fdatasync: the tail may hold zeros (the size
    reached the disk, the data did not), other bytes, or the entry with a bad CRC."""
    crashed = _crashed_copy(tmp_path, _two_topics)
    entry = TopicJournal.encode({"lost": 1})
    data = {"zeros": bytes(len(entry)), "garbage": b"\xff" * (len(entry) - 1) + b"\n",
            "wrong_crc": b"00000000" + entry[8:]}[tail]
    with open(_journal(crashed), "ab") as f:
        f.write(data)
    s = _open(crashed)
    assert s.topics() == ["a", "b", "c"]
    assert _repaired(s) == 1
    s.close()


def test_crash_during_compaction_before_the_rename(tmp_path):
    """topics.json.tmp written, not renamed: the old topics.json and the whole journal."""
    crashed = _crashed_copy(tmp_path, _two_topics)
    tmp = os.path.join(crashed, "config", "topics.json.tmp")
    with open(tmp, "w") as f:
        f.write('{"topicConfigTable": {"a": {"writeQueue')  # torn temporary file
    s = _open(crashed)
    assert s.topics() == ["a", "b", "c"] and s.partitions("a") == 2
    s.close()


def test_crash_during_compaction_after_the_rename(tmp_path):
    """topics.json renamed into place, the journal not yet emptied: its entries are
    replayed over the table that already holds them, which changes nothing."""
    crashed = _crashed_copy(tmp_path, _two_topics)
    journal = open(_journal(crashed), "rb").read()
    s = _open(crashed)  # compacts
    s.close()
    with open(_journal(crashed), "wb") as f:
        f.write(journal)
    s = _open(crashed)
    assert s.topics() == ["a", "b", "c"] and s.partitions("c") == 3
    assert _repaired(s) == 0
    assert s.read("a", 1, 0)[0].value == b"a1"
    s.close()
    doc = json.load(open(os.path.join(crashed, "config", "topics.json")))
    assert sorted(doc["topicConfigTable"]) == ["a", "b", "c"]


def test_a_damaged_entry_before_good_ones_is_skipped_and_logged(tmp_path):
    def build(s):
        s.create_topic("a", 2)
        s.create_topic("gone", 1)  # no message: nothing else remembers it
        s.create_topic("kept", 2)
        s.append("kept", b"k", partition=1)
    crashed = _crashed_copy(tmp_path, build)
    path = _journal(crashed)
    lines = open(path, "rb").read().split(b"\n")
    lines[1] = lines[1][:12] + b"X" + lines[1][13:]
    open(path, "wb").write(b"\n".join(lines))
    s = _open(crashed)
    assert s.topics() == ["a", "kept"]
    assert _repaired(s) == 1
    assert s.read("kept", 1, 0)[0].value == b"k"
    s.close()


def test_a_damaged_entry_of_a_topic_with_messages_comes_back_from_its_queues(tmp_path):
    def build(s):
        s.create_topic("a", 1)
        s.create_topic("msgs", 3)
        s.create_topic("z", 1)
        s.append("msgs", b"m", partition=2)
        s.flush()
    crashed = _crashed_copy(tmp_path, build)
    path = _journal(crashed)
    lines = open(path, "rb").read().split(b"\n")
    lines[1] = b"#" + lines[1][1:]
    open(path, "wb").write(b"\n".join(lines))
    s = _open(crashed)
    assert s.topics() == ["a", "msgs", "z"]
    assert s.read("msgs", 2, 0)[0].value == b"m"
    s.close()


def test_a_follower_never_cuts_the_journal(tmp_path):
    crashed = _crashed_copy(tmp_path, _two_topics)
    with open(_journal(crashed), "ab") as f:
        f.write(b"0123")  # a writer's entry being written
    size = os.path.getsize(_journal(crashed))
    ro = _open(crashed, read_only=True)
    assert ro.topics() == ["a", "b", "c"]
    ro.close()
    assert os.path.getsize(_journal(crashed)) == size


def test_a_full_disk_while_journalling_creates_nothing(tmp_path, monkeypatch):
    import errno

    path = str(tmp_path / "s")
    s = _open(path, flush="os")  # no flusher thread meets the patched fdatasync
    s.create_topic("a")
    size = os.path.getsize(_journal(path))
    real = os.fdatasync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fdatasync", full)
    with pytest.raises(mqstore.errors.StoreFullError):
        s.create_topics(["b", "c"])
    monkeypatch.setattr(os, "fdatasync", real)
    assert s.topics() == ["a"]
    assert os.path.getsize(_journal(path)) == size
    s.create_topics(["b"])
    s.close()
    s = _open(path)
    assert s.topics() == ["a", "b"]
    s.close()

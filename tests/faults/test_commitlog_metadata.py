"""Damaged metadata in the commitlog engine (issue 8, item 10): ``config/topics.json``,
``config/consumerOffset.json`` and the ``checkpoint``. Each file is damaged in several ways
(truncated, not UTF-8, not JSON, not an object, a wrong type at each level); the open must
repair it (from ``<file>.bak``, from the store's own files, or, for the checkpoint, by
recovering as after a crash from the first CommitLog file) or refuse with a
``CorruptRecordError`` naming the file. Never TypeError, AttributeError or ValueError.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import struct

import pytest

import mqstore
from mqstore.errors import CorruptRecordError

SMALL = {"mapped_file_size": 4096, "cq_units_per_file": 16, "hash_slots": 64,
         "index_entries": 128}


def _open(path, **opts):
    if os.path.exists(os.path.join(path, "mqstore.json")):
        return mqstore.open(path, "commitlog", **opts)
    return mqstore.open(path, "commitlog", **{**SMALL, **opts})


def _cfg(store_path, name):
    return os.path.join(store_path, "config", name)


def _values(s, topic, partition):
    out, off = [], s.start_offset(topic, partition)
    while off < s.end_offset(topic, partition):
        page = s.read(topic, partition, off)
        out += [r.value for r in page]
        off = page[-1].offset + 1
    return out


def _build(store_path, messages=True):
    """Topics t (2 queues) and u (1), committed offsets written twice (so a backup of the
    previous version exists); messages in every queue unless ``messages`` is False."""
    s = _open(store_path)
    s.create_topic("t", 2)
    s.create_topic("u", 1)
    if messages:
        for p in (0, 1):
            s.append_batch("t", [b"t%d-%d" % (p, i) for i in range(3)], partition=p)
        s.append("u", b"u0", partition=0)
    s.commit_offset("g", "t", 0, 1)
    s.commit_offset("g", "t", 0, 2)
    s.close()


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


GOOD_TOPIC = {"topicName": "t", "readQueueNums": 2, "writeQueueNums": 2, "perm": 6}
TOPICS_MUTATIONS = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "empty": lambda raw: b"",
    "not_utf8": lambda raw: b"\xff\xfe" + raw,
    "not_json": lambda raw: b"{topicConfigTable: nope",
    "a_list": lambda raw: b"[1, 2]",
    "a_string": lambda raw: b'"topics"',
    "null": lambda raw: b"null",
    "table_is_a_list": lambda raw: _json({"topicConfigTable": []}),
    "topic_is_an_int": lambda raw: _json({"topicConfigTable": {"t": 5}}),
    "queues_is_a_string": lambda raw: _json({"topicConfigTable": {
        "t": {**GOOD_TOPIC, "writeQueueNums": "2"}}}),
    "queues_is_a_bool": lambda raw: _json({"topicConfigTable": {
        "t": {**GOOD_TOPIC, "writeQueueNums": True}}}),
    "queues_is_negative": lambda raw: _json({"topicConfigTable": {
        "t": {**GOOD_TOPIC, "writeQueueNums": -1}}}),
    "queues_is_a_float": lambda raw: _json({"topicConfigTable": {
        "t": {**GOOD_TOPIC, "writeQueueNums": 2.5}}}),
    "bad_topic_name": lambda raw: _json({"topicConfigTable": {"a\nb": GOOD_TOPIC}}),
}


def _damage(path, mutate):
    raw = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(mutate(raw))


def _repairs(caplog, name):
    return [r for r in caplog.records if r.name == "mqstore" and r.levelno == logging.WARNING
            and name in r.getMessage()]


@pytest.mark.parametrize("mutation", sorted(TOPICS_MUTATIONS))
def test_damaged_topics_json_is_replaced_by_its_backup(store_path, mutation, caplog):
    _build(store_path)
    _damage(_cfg(store_path, "topics.json"), TOPICS_MUTATIONS[mutation])
    caplog.set_level(logging.WARNING, "mqstore")
    s = _open(store_path)
    assert s.topics() == ["t", "u"]
    assert s.partitions("t") == 2
    assert _values(s, "t", 1) == [b"t1-%d" % i for i in range(3)]
    assert _repairs(caplog, "topics.json")
    rec = s.stats()["recovery"]
    if "metadata_repaired" in rec:  # the store counts it once it has a RecoveryLog
        assert rec["metadata_repaired"] >= 1
    s.close()
    caplog.clear()
    s = _open(store_path)  # repaired on disk: nothing to say the second time
    assert s.topics() == ["t", "u"] and not _repairs(caplog, "topics.json")
    s.close()


@pytest.mark.parametrize("mutation", ["truncated", "not_utf8", "a_list", "topic_is_an_int",
                                      "queues_is_a_string"])
def test_damaged_topics_json_without_backup_is_rebuilt_from_consume_queues(
        store_path, mutation, caplog):
    _build(store_path)
    os.unlink(_cfg(store_path, "topics.json.bak"))
    _damage(_cfg(store_path, "topics.json"), TOPICS_MUTATIONS[mutation])
    caplog.set_level(logging.WARNING, "mqstore")
    s = _open(store_path)
    assert s.topics() == ["t", "u"]
    assert s.partitions("t") == 2
    assert _values(s, "u", 0) == [b"u0"]
    assert _repairs(caplog, "topics.json")
    s.close()


@pytest.mark.parametrize("mutation", ["truncated", "not_utf8", "null", "table_is_a_list",
                                      "queues_is_a_bool", "bad_topic_name"])
def test_damaged_topics_json_with_nothing_to_rebuild_from_is_refused(store_path, mutation):
    _build(store_path, messages=False)
    os.unlink(_cfg(store_path, "topics.json.bak"))
    path = _cfg(store_path, "topics.json")
    _damage(path, TOPICS_MUTATIONS[mutation])
    with pytest.raises(CorruptRecordError) as info:
        _open(store_path)
    assert info.value.path == path
    assert "topics.json" in str(info.value)


OFFSETS_MUTATIONS = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "not_utf8": lambda raw: raw.replace(b"offsetTable", b"offset\xc3Table"),
    "not_json": lambda raw: b"offsetTable",
    "a_list": lambda raw: b"[]",
    "table_is_a_string": lambda raw: _json({"offsetTable": "t@g"}),
    "queues_is_an_int": lambda raw: _json({"offsetTable": {"t@g": 5}}),
    "offset_is_a_string": lambda raw: _json({"offsetTable": {"t@g": {"0": "2"}}}),
    "offset_is_negative": lambda raw: _json({"offsetTable": {"t@g": {"0": -2}}}),
    "queue_id_not_a_number": lambda raw: _json({"offsetTable": {"t@g": {"q": 2}}}),
    "key_without_group": lambda raw: _json({"offsetTable": {"tg": {"0": 2}}}),
    "data_version_is_a_list": lambda raw: _json({"offsetTable": {"t@g": {"0": "x"}},
                                                 "dataVersion": []}),
}


@pytest.mark.parametrize("mutation", sorted(OFFSETS_MUTATIONS))
def test_damaged_consumer_offsets_fall_back_to_the_previous_version(store_path, mutation,
                                                                      caplog):
    """RocketMQ keeps consumerOffset.json.bak: the previous commit comes back (a consumer
    re-reads one commit's worth, at-least-once), the file is rewritten."""
    _build(store_path)
    _damage(_cfg(store_path, "consumerOffset.json"), OFFSETS_MUTATIONS[mutation])
    caplog.set_level(logging.WARNING, "mqstore")
    s = _open(store_path)
    assert s.committed_offset("g", "t", 0) == 1
    assert _repairs(caplog, "consumerOffset.json")
    s.commit_offset("g", "t", 0, 3)
    s.close()
    s = _open(store_path)
    assert s.committed_offset("g", "t", 0) == 3
    s.close()


@pytest.mark.parametrize("mutation", ["truncated", "not_utf8", "a_list", "queues_is_an_int",
                                      "offset_is_a_string", "data_version_is_a_list"])
def test_damaged_consumer_offsets_without_backup_are_refused(store_path, mutation):
    _build(store_path)
    os.unlink(_cfg(store_path, "consumerOffset.json.bak"))
    path = _cfg(store_path, "consumerOffset.json")
    _damage(path, OFFSETS_MUTATIONS[mutation])
    with pytest.raises(CorruptRecordError) as info:
        _open(store_path)
    assert info.value.path == path


def test_a_wrong_data_version_alone_is_not_damage(store_path):
    """dataVersion is bookkeeping: a wrong type there is ignored (was AttributeError)."""
    _build(store_path)
    path = _cfg(store_path, "topics.json")
    doc = json.load(open(path))
    doc["dataVersion"] = "seven"
    open(path, "w").write(json.dumps(doc))
    s = _open(store_path)
    assert s.topics() == ["t", "u"]
    s.create_topic("v")
    s.close()
    assert json.load(open(path))["dataVersion"]["counter"] >= 1


# ----------------------------------------------------------------------------- checkpoint
def _crash_image(store_path, files=4):
    """A store with ``files`` CommitLog files and every ConsumeQueue unit durable, copied
    while open (a SIGKILL image: ``abort`` present); returns the image's path."""
    s = _open(store_path)
    s.create_topic("t")
    i = 0
    while len(s.commitlog.files) < files:
        s.append("t", b"m%04d" % i + b"." * 200, partition=0)
        i += 1
    s.flush()
    image = store_path + "-crash"
    shutil.copytree(store_path, image, ignore=shutil.ignore_patterns("lock"))
    s.close()
    return image, [b"m%04d" % k + b"." * 200 for k in range(i)]


CHECKPOINT_MUTATIONS = {
    "flip_byte_0": lambda raw: bytes([raw[0] ^ 0x40]) + raw[1:],
    "flip_byte_7": lambda raw: raw[:7] + bytes([raw[7] ^ 1]) + raw[8:],
    "flip_byte_20": lambda raw: raw[:20] + bytes([raw[20] ^ 0x80]) + raw[21:],
    "flip_in_padding": lambda raw: raw[:2000] + b"\x01" + raw[2001:],
    "flip_in_crc": lambda raw: raw[:-1] + bytes([raw[-1] ^ 0xFF]),
    "truncated": lambda raw: raw[:10],
    "future_without_trailer": lambda raw: struct.pack(">qqq", *[(1 << 62)] * 3)
    + bytes(4096 - 24),
    "negative_without_trailer": lambda raw: b"\xff" * 24 + bytes(4096 - 24),
}


@pytest.mark.parametrize("mutation", sorted(CHECKPOINT_MUTATIONS))
def test_garbled_checkpoint_recovers_from_the_first_file(store_path, mutation, caplog):
    """The checkpoint is a hint: a garbled one is ignored (logged), and recovery after a
    crash scans the CommitLog from its first file, so even ConsumeQueues lost whole are
    rebuilt (a checkpoint claiming too much used to skip them)."""
    image, values = _crash_image(store_path)
    _damage(os.path.join(image, "checkpoint"), CHECKPOINT_MUTATIONS[mutation])
    shutil.rmtree(os.path.join(image, "consumequeue"))  # derived: rebuilt from the log
    caplog.set_level(logging.WARNING, "mqstore")
    s = _open(image)
    assert s.recovery["abnormal"] is True
    assert _values(s, "t", 0) == values
    assert _repairs(caplog, "checkpoint")
    s.close()
    caplog.clear()
    s = _open(image)  # rewritten with a valid trailer on close
    assert not _repairs(caplog, "checkpoint")
    s.close()


def test_checkpoint_keeps_the_bytes_after_its_timestamps(store_path):
    """RocketMQ 5 stores more offsets after the three timestamps: they are kept."""
    s = _open(store_path)
    s.close()
    path = os.path.join(store_path, "checkpoint")
    raw = bytearray(open(path, "rb").read())
    raw[24:40] = struct.pack(">qq", 12345, 67890)
    raw[-8:] = bytes(8)  # as RocketMQ writes it: no trailer
    open(path, "wb").write(bytes(raw))
    s = _open(store_path)
    s.close()
    assert struct.unpack_from(">qq", open(path, "rb").read(), 24) == (12345, 67890)


def test_the_config_directory_entry_is_durable_before_topics_are_acknowledged(
        store_path, monkeypatch):
    """create_topic on a new store creates config/: its entry in the store root must be
    synced too, or a power loss drops config/topics.json with it (seen in the power-loss
    loop: topics came back with fewer partitions, rebuilt from consumequeue/)."""
    from mqstore.engines.commitlog import metadata as metadata_mod

    synced = []
    real = metadata_mod.fsync_dir
    monkeypatch.setattr(metadata_mod, "fsync_dir",
                        lambda p: (synced.append(os.path.abspath(p)), real(p)))
    s = _open(store_path)
    s.create_topic("t", 3)
    assert os.path.abspath(store_path) in synced
    s.close()


def test_a_missing_topics_json_falls_back_to_its_backup_and_verify_reports_it(
        store_path, caplog):
    """New-user finding: after a clean close, deleting ``topics.json`` (its ``.bak`` still
    there) reopened with no topics at all, and verify said the store was sound."""
    from mqstore import cli
    _build(store_path, messages=False)
    assert os.path.exists(_cfg(store_path, "topics.json.bak"))
    os.unlink(_cfg(store_path, "topics.json"))
    assert cli.main(["verify", store_path]) == 1
    caplog.set_level(logging.WARNING, "mqstore")
    s = _open(store_path)
    assert s.topics() == ["t", "u"] and s.partitions("t") == 2
    assert _repairs(caplog, "topics.json")
    s.close()
    assert os.path.exists(_cfg(store_path, "topics.json"))
    assert cli.main(["verify", store_path]) == 0


@pytest.mark.parametrize("where", ["middle", "last"])
def test_verify_reports_a_damaged_topic_journal_entry(store_path, where):
    """New-user finding: ``mqstore verify`` did not read ``config/topics.json.journal``; a
    CRC-damaged middle entry (whose topic the open then drops) was "no damage"."""
    import subprocess
    import sys
    code = (
        "import mqstore, os\n"
        f"s = mqstore.open({store_path!r}, 'commitlog', mapped_file_size=4096, "
        "cq_units_per_file=16, hash_slots=64, index_entries=128)\n"
        "for n in ('a', 'b', 'c'):\n"
        "    s.create_topic(n)\n"
        "s.flush()\n"
        "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    path = _cfg(store_path, "topics.json.journal")
    lines = open(path, "rb").read().split(b"\n")
    assert len([ln for ln in lines if ln]) == 3
    i = 1 if where == "middle" else 2
    lines[i] = lines[i].replace(b'"' + b"abc"[i:i + 1] + b'"', b'"' + b"ABC"[i:i + 1] + b'"')
    with open(path, "wb") as f:
        f.write(b"\n".join(lines))
    from mqstore import cli
    report = cli.verify_store(store_path)[2]
    hits = [d for d in report if d.path.endswith("topics.json.journal")]
    assert len(hits) == 1
    assert hits[0].kind == ("metadata" if where == "middle" else "torn_tail")


def test_a_store_without_its_manifest_opens_with_the_sizes_of_its_files(store_path):
    """New-user finding: with ``mqstore.json`` deleted, the open took the default sizes,
    extended the 4 KiB CommitLog file to 1 GiB and then refused the store for good. Without
    a manifest (also a RocketMQ-written store) the CommitLog and ConsumeQueue file sizes are
    taken from the files; an explicit size that disagrees is refused before anything is
    touched."""
    from mqstore.errors import ConfigError
    s = _open(store_path)
    s.create_topic("t")
    for i in range(40):
        s.append("t", b"v%03d" % i + b"x" * 150)
    s.close()
    os.unlink(os.path.join(store_path, "mqstore.json"))
    cl_dir = os.path.join(store_path, "commitlog")
    sizes = {f: os.path.getsize(os.path.join(cl_dir, f)) for f in os.listdir(cl_dir)}
    with pytest.raises(ConfigError, match="mapped_file_size"):
        mqstore.open(store_path, "commitlog", mapped_file_size=1 << 20)
    assert {f: os.path.getsize(os.path.join(cl_dir, f)) for f in os.listdir(cl_dir)} == sizes
    s = mqstore.open(store_path, "commitlog", hash_slots=64, index_entries=128)
    assert _values(s, "t", 0) == [b"v%03d" % i + b"x" * 150 for i in range(40)]
    s.close()
    assert {f: os.path.getsize(os.path.join(cl_dir, f)) for f in os.listdir(cl_dir)} == sizes

"""``verify_files`` of the commitlog engine (issue 8, item 15): every file kind, one Damage
per root cause, with kind, records_dropped and first_offset where they are knowable."""
from __future__ import annotations

import os
import struct

from mqstore.engines.commitlog.store import CommitLogStore
from tests.faults.test_commitlog_recovery import crash, fill, flip, messages, open_cl, patch

__all__ = ["open_cl"]  # the fixture


def verify(root):
    return CommitLogStore.verify_files(root)


def test_sound_store_verifies_clean(open_cl, store_path):
    fill(open_cl, 50)
    assert verify(store_path) == []


def test_corrupt_message_is_one_root_cause(open_cl, store_path):
    """Not also one per ConsumeQueue unit or IndexFile entry pointing at it."""
    fill(open_cl, 50)
    path, pos, _ = messages(store_path)[20]
    flip(path, pos + 84 + 4 + 2)
    (d,) = verify(store_path)
    assert (d.kind, d.path, d.position, d.records_dropped) == ("corruption", path, pos, 29)
    assert d.first_offset == int(os.path.basename(path)) + pos


def test_torn_tail_after_a_crash(open_cl, store_path):
    fill(open_cl, 50)
    path, pos, total = messages(store_path)[-1]
    patch(path, pos + total - 30, bytes(30))
    crash(store_path)
    (d,) = verify(store_path)
    assert d.kind == "torn_tail" and d.position == pos and d.records_dropped == 0


def test_torn_consume_queue_unit(open_cl, store_path):
    fill(open_cl, 40)
    path = os.path.join(store_path, "consumequeue", "t", "0", "%020d" % 0)
    patch(path, 3 * 20, bytes(20))
    (d,) = verify(store_path)
    assert d.kind == "derived" and d.path == path and d.position == 60 and d.first_offset == 3


def test_consume_queue_unit_with_a_wrong_tag_hash(open_cl, store_path):
    fill(open_cl, 40)
    path = os.path.join(store_path, "consumequeue", "t", "0", "%020d" % 0)
    off, size, tag = struct.unpack_from(">qiq", open(path, "rb").read(), 100)
    patch(path, 100, struct.pack(">qiq", off, size, tag + 1))
    (d,) = verify(store_path)
    assert d.kind == "derived" and d.first_offset == 5 and "tag hash" in d.problem


def test_index_file_damage(open_cl, store_path):
    fill(open_cl, 40)
    (name,) = os.listdir(os.path.join(store_path, "index"))
    path = os.path.join(store_path, "index", name)
    patch(path, 40 + 64 * 4 + 20 * 10 + 4, struct.pack(">q", 7))  # entry 10's offset
    (d,) = verify(store_path)
    assert d.kind == "derived" and d.path == path


def test_index_file_slot_damage(open_cl, store_path):
    fill(open_cl, 40)
    (name,) = os.listdir(os.path.join(store_path, "index"))
    patch(os.path.join(store_path, "index", name), 40, bytes(64 * 4))
    (d,) = verify(store_path)
    assert d.kind == "derived" and "slots" in d.problem


def test_unreadable_config_json_is_metadata_damage(open_cl, store_path):
    fill(open_cl, 5)
    s = open_cl()
    s.commit_offset("g", "t", 0, 3)
    s.close()
    for name, junk in (("topics.json", b'{"topicConfigTable": 5'),
                       ("consumerOffset.json", b'{"offsetTable": {"t@g": {"0": "x"}}}'),
                       # fuzz finding commitlog:fuzz-clean:4243.2491: the open refused a key
                       # that is not topic@group, verify passed it
                       ("consumerOffset.json", b'{"offsetTable": {"t0Dg": {"0": 3}}}'),
                       ("consumerOffset.json", b'{"offsetTable": {"t@g": {"~": 3}}}'),
                       ("topics.json", b'{"topicConfigTable": {"a b": {"writeQueueNums": 1}}}')):
        path = os.path.join(store_path, "config", name)
        keep = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(junk)
        (d,) = [d for d in verify(store_path) if d.path == path]
        assert d.kind == "metadata"
        with open(path, "wb") as f:
            f.write(keep)
    assert verify(store_path) == []


def test_garbled_checkpoint(open_cl, store_path):
    fill(open_cl, 5)
    path = os.path.join(store_path, "checkpoint")
    flip(path, 1)  # physicMsgTimestamp becomes impossible (centuries ahead)
    ds = [d for d in verify(store_path) if d.path == path]
    assert [d.kind for d in ds] == ["derived"]

"""Recovery, one test per failure mode (named the LevelDB way), plus the blank-marker boundary
and rebuilding ConsumeQueues from the CommitLog."""
from __future__ import annotations

import os
import shutil
import struct
import time

import pytest

import mqstore
from mqstore.engines.commitlog.checkpoint import StoreCheckpoint
from mqstore.engines.commitlog.store import CommitLogStore

V1 = 0xDAA320A7


def messages(store_path):
    """(file path, position, TOTALSIZE) of every message, read with struct."""
    d = os.path.join(store_path, "commitlog")
    out = []
    for n in sorted(os.listdir(d)):
        data = open(os.path.join(d, n), "rb").read()
        pos = 0
        while pos + 8 <= len(data):
            total, magic = struct.unpack_from(">iI", data, pos)
            if magic != V1:
                break
            out.append((os.path.join(d, n), pos, total))
            pos += total
    return out


def patch(path, pos, data):
    with open(path, "r+b") as f:
        f.seek(pos)
        f.write(data)


def crash_marker(store_path):
    open(os.path.join(store_path, "abort"), "w").close()


def set_physic_timestamp(store_path, ts):
    """Rewrite the checkpoint's physicMsgTimestamp (through the class: it keeps its CRC)."""
    ck = StoreCheckpoint(os.path.join(store_path, "checkpoint"))
    ck.physic_msg_timestamp = ts
    ck.flush()
    ck.close()


def fill(open_cl, n=20, **opts):
    s = open_cl(**opts)
    s.create_topic("t")
    for i in range(n):
        s.append("t", b"value-%03d" % i + b"." * 40, key=b"k", partition=0)
    s.close()


def values(s, topic="t", partition=0):
    out, off = [], s.start_offset(topic, partition)
    while off < s.end_offset(topic, partition):
        page = s.read(topic, partition, off)
        out += [r.value for r in page]
        off = page[-1].offset + 1
    return out


def test_truncated_trailing_record_is_ignored(open_cl, store_path):
    """A torn tail (the last message half written) is dropped silently on recovery."""
    fill(open_cl)
    path, pos, total = messages(store_path)[-1]
    patch(path, pos + total // 2, bytes(total - total // 2))
    crash_marker(store_path)
    set_physic_timestamp(store_path, 0)  # a crash before the last flush reached the disk
    damage = CommitLogStore.verify_files(store_path)
    assert damage and damage[0].position == pos
    s = open_cl()
    assert s.recovery["abnormal"] is True
    assert [d.split(": ", 1)[1].startswith("torn tail") for d in s.recovery["damage"]] == [True]
    assert s.end_offset("t", 0) == 19
    assert values(s) == [b"value-%03d" % i + b"." * 40 for i in range(19)]
    assert s.append("t", b"next", partition=0).offset == 19
    assert s.read("t", 0, 19)[0].value == b"next"
    s.close()
    assert CommitLogStore.verify_files(store_path) == []


def test_checksum_mismatch_refuses_the_open_by_default(open_cl, store_path):
    """A bad CRC in the middle of a cleanly closed store is corruption, not a torn tail:
    the open is refused, naming the file, the position and the records after it, and the
    store is left as it was."""
    fill(open_cl)
    path, pos, _total = messages(store_path)[12]
    patch(path, pos + 84 + 4, b"X")  # first body byte
    before = open(path, "rb").read()
    with pytest.raises(mqstore.CorruptRecordError, match="7 records follow") as info:
        open_cl()
    assert info.value.path == path and info.value.position == pos
    assert "CRC" in str(info.value)
    assert open(path, "rb").read() == before


def test_checksum_mismatch_with_truncate_cuts_the_log_there(open_cl, store_path):
    fill(open_cl)
    path, pos, _total = messages(store_path)[12]
    patch(path, pos + 84 + 4, b"X")
    s = open_cl(on_corruption="truncate")
    assert s.recovery["abnormal"] is False
    (damage,) = s.recovery["damage"]
    assert "corrupt message" in damage and "CRC" in damage
    assert s.stats()["recovery"]["corruption_truncated"] == 1
    assert s.end_offset("t", 0) == 12
    assert values(s)[-1] == b"value-011" + b"." * 40
    assert len(s.lookup_key("t", b"k")) == 12  # index entries past the cut are gone
    assert s.append("t", b"after", partition=0).offset == 12


def test_checksum_mismatch_with_skip_keeps_every_intact_record(open_cl, store_path):
    """on_corruption="skip": the damaged message's queue offset reads as a gap, every
    message after it is kept (and stays readable after another reopen)."""
    fill(open_cl)
    path, pos, _total = messages(store_path)[12]
    patch(path, pos + 84 + 4, b"X")
    s = open_cl(on_corruption="skip")
    assert s.stats()["recovery"]["corruption_skipped"] == 1
    want = [b"value-%03d" % i + b"." * 40 for i in range(20) if i != 12]
    assert values(s) == want
    assert s.end_offset("t", 0) == 20
    assert [r.offset for r in s.read("t", 0, 12, max_records=2)] == [13, 14]
    assert len(s.lookup_key("t", b"k", limit=100)) == 19
    assert s.append("t", b"after", partition=0).offset == 20
    s.close()
    s = open_cl(on_corruption="skip")
    assert values(s) == want + [b"after"]


def test_bad_length_in_the_middle_is_reported(open_cl, store_path):
    """Below the checkpoint's physicMsgTimestamp a bad message is corruption even after a
    crash (it was synced): refused by default."""
    fill(open_cl)
    path, pos, total = messages(store_path)[5]
    patch(path, pos, struct.pack(">i", total + 3))
    crash_marker(store_path)
    set_physic_timestamp(store_path, int(time.time() * 1000) + 3_600_000)  # all synced
    with pytest.raises(mqstore.CorruptRecordError, match="14 records follow"):
        open_cl()
    s = open_cl(on_corruption="truncate")
    assert s.end_offset("t", 0) == 5
    assert "corrupt" in s.recovery["damage"][0]


def test_bad_length_after_the_sync_point_is_a_torn_tail(open_cl, store_path):
    fill(open_cl)
    path, pos, total = messages(store_path)[5]
    patch(path, pos, struct.pack(">i", total + 3))
    crash_marker(store_path)
    set_physic_timestamp(store_path, 0)  # nothing is known durable
    s = open_cl()
    assert s.end_offset("t", 0) == 5
    assert s.stats()["recovery"]["torn_tail_truncated"] == 1
    assert s.recovery["damage"][0].split(": ", 1)[1].startswith("torn tail")


def test_missing_consume_queue_tail_is_redispatched(open_cl, store_path):
    fill(open_cl, n=30)  # 16 units per ConsumeQueue file: two files
    qdir = os.path.join(store_path, "consumequeue", "t", "0")
    before = {n: open(os.path.join(qdir, n), "rb").read() for n in os.listdir(qdir)}
    os.unlink(os.path.join(qdir, "%020d" % (16 * 20)))
    patch(os.path.join(qdir, "%020d" % 0), 13 * 20, bytes(3 * 20))
    crash_marker(store_path)
    s = open_cl()
    assert s.recovery["redispatched_messages"] >= 17
    assert s.end_offset("t", 0) == 30
    assert len(values(s)) == 30
    s.close()
    after = {n: open(os.path.join(qdir, n), "rb").read() for n in os.listdir(qdir)}
    assert after == before


def test_consume_queue_tail_pointing_past_the_log_is_cut(open_cl, store_path):
    fill(open_cl)
    msgs = messages(store_path)
    path, pos, _ = msgs[15]
    for p2, pos2, total2 in msgs[15:]:  # the last five never reached the disk
        patch(p2, pos2, bytes(total2))
    crash_marker(store_path)
    set_physic_timestamp(store_path, 0)  # nor did the checkpoint that vouched for them
    s = open_cl()
    # zeros are unwritten space; with the blank marker of file 0 surviving after them they
    # are a torn tail (never corruption: the store crashed and nothing vouches for them)
    assert all("torn tail" in d for d in s.recovery["damage"])
    assert s.stats()["recovery"]["corruption_truncated"] == 0
    assert s.end_offset("t", 0) == 15
    assert s.append("t", b"new-15", partition=0).offset == 15
    assert values(s)[-2:] == [b"value-014" + b"." * 40, b"new-15"]
    s.close()
    assert CommitLogStore.verify_files(store_path) == []


def test_index_entries_newer_than_the_checkpoint_are_redone(open_cl, store_path):
    fill(open_cl, n=10)
    msgs = messages(store_path)
    for p2, pos2, total2 in msgs[6:]:  # lost from the log, still in the IndexFile
        patch(p2, pos2, bytes(total2))
    crash_marker(store_path)
    set_physic_timestamp(store_path, 0)  # (they were never synced)
    s = open_cl()
    assert s.recovery["index_entries_removed"] >= 8  # KEYS + UNIQ_KEY of 4 messages
    assert len(s.lookup_key("t", b"k")) == 6
    for i in range(3):
        s.append("t", b"again-%d" % i, key=b"k", partition=0)
    got = s.lookup_key("t", b"k")
    # the new messages reuse the lost ones' positions: they must be indexed, not skipped
    assert sorted(r.value for r in got)[:3] == [b"again-0", b"again-1", b"again-2"]
    assert len(got) == 9
    s.close()
    (name,) = os.listdir(os.path.join(store_path, "index"))
    hdr = open(os.path.join(store_path, "index", name), "rb").read(40)
    assert struct.unpack(">qqqqii", hdr)[5] == 1 + 2 * 9  # no duplicate entries


def test_redispatch_after_a_crash_is_idempotent(open_cl, store_path):
    fill(open_cl, n=25)
    snap = {}
    for root, _d, files in os.walk(os.path.join(store_path, "consumequeue")):
        for f in files:
            snap[os.path.join(root, f)] = open(os.path.join(root, f), "rb").read()
    crash_marker(store_path)
    with open(os.path.join(store_path, "checkpoint"), "r+b") as f:
        f.write(bytes(24))  # the checkpoint says nothing is durable: rescan everything
    s = open_cl()
    assert s.recovery["abnormal"] and s.recovery["start_offset"] == 0
    assert s.recovery["redispatched_messages"] == 25
    assert len(s.lookup_key("t", b"k")) == 25
    s.close()
    for p, data in snap.items():
        assert open(p, "rb").read() == data
    (name,) = os.listdir(os.path.join(store_path, "index"))
    hdr = open(os.path.join(store_path, "index", name), "rb").read(40)
    assert struct.unpack(">qqqqii", hdr)[5] == 1 + 2 * 25  # rebuilt, not duplicated


def test_trailing_empty_commitlog_file_is_deleted(open_cl, store_path):
    fill(open_cl, n=5)
    empty = os.path.join(store_path, "commitlog", "%020d" % 4096)
    open(empty, "wb").close()
    s = open_cl()
    assert not os.path.exists(empty)
    assert s.end_offset("t", 0) == 5


def test_lost_last_commitlog_file_of_a_clean_store_refuses_the_open(open_cl, store_path):
    """The checkpoint and the ConsumeQueues vouch for messages the log no longer holds (a
    deleted last file): lost durable data, not a torn tail (fuzz finding)."""
    fill(open_cl, 40)
    last = sorted(os.listdir(os.path.join(store_path, "commitlog")))[-1]
    os.unlink(os.path.join(store_path, "commitlog", last))
    with pytest.raises(mqstore.CorruptRecordError, match="durable"):
        open_cl()
    s = open_cl(on_corruption="truncate")
    assert 0 < s.end_offset("t", 0) < 40
    assert s.stats()["recovery"]["corruption_truncated"] == 1


def test_short_commitlog_file_is_extended(open_cl, store_path):
    """A file shorter than mapped_file_size (its growth never reached the disk) is
    extended with zeros, never refused for its size; what it lost is a torn tail after a
    crash."""
    fill(open_cl, n=5)
    path, pos, _total = messages(store_path)[4]
    with open(path, "r+b") as f:
        f.truncate(pos + 10)
    crash_marker(store_path)
    set_physic_timestamp(store_path, 0)
    s = open_cl()
    assert os.path.getsize(path) == 4096
    assert s.end_offset("t", 0) == 4
    assert s.stats()["recovery"]["torn_tail_truncated"] >= 1


def test_short_commitlog_file_in_a_clean_store_is_corruption(open_cl, store_path):
    fill(open_cl, n=5)
    path, pos, _total = messages(store_path)[4]
    with open(path, "r+b") as f:
        f.truncate(pos + 10)
    with pytest.raises(mqstore.CorruptRecordError):
        open_cl()


# ----- the blank marker at the end of a file -----
def _sizes(body_len, topic="t"):
    props = 9 + 32 + 1 + 20  # UNIQ_KEY\x01<32 hex>\x02 __CRC32#\x01<10 digits>\x02
    return 91 + body_len + len(topic) + props


@pytest.mark.parametrize("slack", [8, 7, 4, 1, 0])
def test_message_ending_within_7_bytes_of_the_file_end_moves_to_the_next_file(
        open_cl, store_path, slack):
    """``slack`` = bytes the second message would leave in the file. It needs 8 (room for
    the blank), so with 0-7 it goes to the next file and a blank ends the first."""
    s = open_cl()
    s.create_topic("t")
    first = 4096 - 300
    s.append("t", b"a" * (first - _sizes(0)), partition=0)
    s.append("t", b"b" * (300 - slack - _sizes(0)), partition=0)
    s.append("t", b"c", partition=0)
    assert [r.value[:1] for r in s.read("t", 0, 0)] == [b"a", b"b", b"c"]
    s.close()
    f0 = open(os.path.join(store_path, "commitlog", "%020d" % 0), "rb").read()
    f1 = open(os.path.join(store_path, "commitlog", "%020d" % 4096), "rb").read()
    assert struct.unpack_from(">i", f0, 0)[0] == first
    if slack >= 8:
        size2 = struct.unpack_from(">iI", f0, first)
        assert size2 == (300 - slack, V1)
        blank_at = 4096 - slack
        assert struct.unpack_from(">iI", f0, blank_at) == (slack, 0xCBD43194)
        assert struct.unpack_from(">iI", f1, 0)[1] == V1  # "c"
    else:
        assert struct.unpack_from(">iI", f0, first) == (300, 0xCBD43194)
        assert struct.unpack_from(">iI", f1, 0) == (300 - slack, V1)  # "b" moved
    # recovery reads across the blank
    with mqstore.open(store_path, "commitlog") as s2:
        assert [r.value[:1] for r in s2.read("t", 0, 0)] == [b"a", b"b", b"c"]


def test_message_larger_than_a_file_is_refused(open_cl):
    s = open_cl()
    s.create_topic("t")
    with pytest.raises(mqstore.RecordTooLargeError, match="mapped_file_size"):
        s.append("t", b"x" * 4096, partition=0)
    assert s.end_offset("t", 0) == 0
    s.append("t", b"x" * (4096 - 8 - _sizes(0)), partition=0)  # exactly the largest
    assert s.end_offset("t", 0) == 1


# ----- rebuilding the ConsumeQueues -----
def _snapshot_cq(store_path):
    out = {}
    root = os.path.join(store_path, "consumequeue")
    for dirpath, _d, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


@pytest.mark.parametrize("path_taken", ["normal", "abnormal"])
def test_rebuilt_consume_queues_are_byte_identical(open_cl, store_path, path_taken):
    s = open_cl(hash_slots=16)
    s.create_topic("a", partitions=3)
    s.create_topic("b", partitions=2)
    for i in range(120):
        s.append("a" if i % 3 else "b", b"v%d" % i * (i % 7 + 1), key=b"k%d" % (i % 11),
                 tag=[None, "x", "中文", "😀"][i % 4])
    s.close()
    before = _snapshot_cq(store_path)
    assert len(before) > 5
    shutil.rmtree(os.path.join(store_path, "consumequeue"))
    if path_taken == "abnormal":
        crash_marker(store_path)
        with open(os.path.join(store_path, "checkpoint"), "r+b") as f:
            f.write(bytes(24))
    s = open_cl(hash_slots=16)
    assert s.recovery["redispatched_messages"] == 120
    s.close()
    assert _snapshot_cq(store_path) == before


def test_abnormal_recovery_starts_from_the_checkpoint(open_cl, store_path, monkeypatch):
    """After a crash only the files after the checkpoint (less 3 s) are rescanned and
    re-dispatched; what the checkpoint vouches for is kept as is."""
    import types

    from mqstore.engines.commitlog import commitlog as cl_module

    clock = [1_700_000_000_000]
    monkeypatch.setattr(cl_module, "time",
                        types.SimpleNamespace(time_ns=lambda: clock[0] * 1_000_000))
    s = open_cl(flush="sync", dispatch="sync", flush_consume_queue_interval_ms=600_000)
    s.create_topic("t")
    for i in range(60):
        s.append("t", b"old-%d" % i + b"." * 150, key=b"k%d" % (i % 4), partition=0)
    clock[0] += 5_000
    s.append("t", b"checkpointed", partition=0)
    s.flush()  # checkpoint: everything up to now is durable
    clock[0] += 5_000
    for i in range(60):
        s.append("t", b"new-%d" % i + b"." * 150, key=b"k%d" % (i % 4), partition=0)
    files = s.stats()["commitlog_files"]
    s._closed = True
    s._release()  # crash: abort stays, no final checkpoint
    s2 = open_cl(flush="sync")
    rec = s2.recovery
    assert rec["abnormal"] and rec["start_offset"] > 0
    assert rec["scanned_messages"] < 121 and files > 3
    assert s2.end_offset("t", 0) == 121
    assert len(s2.lookup_key("t", b"k1", limit=1000)) == 30
    entries = 0
    for name in os.listdir(os.path.join(store_path, "index")):
        hdr = open(os.path.join(store_path, "index", name), "rb").read(40)
        entries += struct.unpack(">qqqqii", hdr)[5] - 1
    assert entries == 121 + 120  # UNIQ_KEY on each message, KEYS on 120: no duplicates


@pytest.mark.parametrize("window", [100, 777, 4096])
def test_recovery_scan_windows_change_nothing(tmp_path, monkeypatch, window):
    """Recovery scans a CommitLog file a window at a time (recovery.SCAN_WINDOW): windows
    smaller than a message, or ending inside one, find the same messages, end and damage as
    one scan of the whole file."""
    import random

    from mqstore.engines.commitlog import recovery as rec

    opts = dict(mapped_file_size=1 << 16, cq_units_per_file=64, hash_slots=64,
                index_entries=4096)
    src = str(tmp_path / "src")
    s = mqstore.open(src, "commitlog", **opts)
    s.create_topic("t", 2)
    rng = random.Random(5)
    for j in range(120):
        s.append_batch("t", [rng.randbytes(rng.randrange(0, 3000))
                             for _ in range(rng.randint(1, 5))], partition=j % 2)
    s.flush()
    s._closed = True
    s._release()  # crash: abort stays
    path = os.path.join(src, "commitlog", "%020d" % 0)
    damaged = str(tmp_path / "damaged")
    shutil.copytree(src, damaged)
    with open(os.path.join(damaged, "commitlog", "%020d" % 0), "r+b") as f:
        f.seek(30_000)
        f.write(b"\xff")  # inside some message of the first file
    assert os.path.getsize(path) == 1 << 16

    def outcome(root):
        try:
            with mqstore.open(root, "commitlog", **opts) as x:
                r = x.recovery
                return (r["scanned_messages"], r["end_offset"], x.end_offset("t", 0),
                        x.end_offset("t", 1))
        except mqstore.errors.CorruptRecordError as exc:
            return str(exc).replace(root, "ROOT")

    want = [outcome(shutil.copytree(root, str(tmp_path / f"a{i}")))
            for i, root in enumerate((src, damaged))]
    monkeypatch.setattr(rec, "SCAN_WINDOW", window)
    got = [outcome(shutil.copytree(root, str(tmp_path / f"b{i}")))
           for i, root in enumerate((src, damaged))]
    assert got == want
    assert isinstance(want[0], tuple) and isinstance(want[1], str)  # sound, then refused

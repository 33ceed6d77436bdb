"""The checkpoint's durable offset (issue 9, P9): after a crash the ConsumeQueues and
IndexFiles are checked and re-dispatched only from the CommitLog offset below which the
checkpoint says everything was synced. Each test builds a seeded crash image (the store's
files copied while it is open: what a SIGKILL leaves, page cache included), then damages
the checkpoint, the log or a derived file, and reopens. Nothing acknowledged may be lost,
nothing wrong returned, and a bad offset must never be trusted."""
from __future__ import annotations

import os
import random
import shutil
import struct

import pytest

import mqstore
from mqstore.engines.commitlog import checkpoint as ckmod
from mqstore.engines.commitlog.checkpoint import StoreCheckpoint
from mqstore.engines.commitlog.store import CommitLogStore

SMALL = {"mapped_file_size": 1 << 16, "cq_units_per_file": 64, "hash_slots": 256,
         "index_entries": 4096}
V1 = 0xDAA320A7


def _value(seed, i):
    return b"%d-%05d-" % (seed, i) + random.Random(seed * 100_003 + i).randbytes(
        random.Random(seed + i).randrange(5, 120))


def _crash_image(root, seed, flushed=300, tail=40, **opts):
    """A store with ``flushed`` records made durable by flush() and an unflushed tail of
    ``tail`` (flush="os": the checkpoint then stays at the flush), copied while open.
    Returns (image path, values by offset, the checkpoint's durable offset)."""
    s = mqstore.open(root, "commitlog", flush="os", **{**SMALL, **opts})
    s.create_topic("t")
    vals = []
    rng = random.Random(seed)
    i = 0
    while i < flushed + tail:
        n = min(rng.randrange(1, 30), flushed + tail - i)
        if i < flushed:
            n = min(n, flushed - i)
        batch = [_value(seed, k) for k in range(i, i + n)]
        if rng.random() < 0.5:
            s.append_batch("t", batch, partition=0)
        else:
            for k, v in enumerate(batch):
                s.append("t", v, key=b"key-%d" % (i + k), partition=0)
        vals += batch
        i += n
        if i == flushed:
            s.flush()
    s.dispatcher.wait_until(s.commitlog.max_offset)
    durable = s.checkpoint.durable_offset
    image = root + "-crash"
    shutil.copytree(root, image, ignore=shutil.ignore_patterns("lock"))
    s.close()
    return image, vals, durable


def _read_all(s):
    out, off = [], 0
    end = s.end_offset("t", 0)
    while off < end:
        page = s.read("t", 0, off)
        out += [r.value for r in page]
        off = page[-1].offset + 1
    return out


def _rewrite(image, **fields):
    ck = StoreCheckpoint(os.path.join(image, "checkpoint"))
    for k, v in fields.items():
        setattr(ck, k, v)
    ck.flush()
    ck.close()


def _messages(root):
    d = os.path.join(root, "commitlog")
    out = []
    for n in sorted(os.listdir(d)):
        data = open(os.path.join(d, n), "rb").read()
        pos = 0
        while pos + 8 <= len(data):
            total, magic = struct.unpack_from(">iI", data, pos)
            if magic != V1:
                break
            out.append((os.path.join(d, n), int(n) + pos, pos, total))
            pos += total
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crash_after_the_offset_was_written_redispatches_only_the_tail(store_path, seed):
    image, vals, durable = _crash_image(store_path, seed)
    msgs = _messages(image)
    assert durable == msgs[300][1]  # the first unflushed message
    with mqstore.open(image, "commitlog", **SMALL) as s:
        rec = s.recovery
        assert rec["abnormal"] and rec["durable_offset"] == durable
        assert rec["start_offset"] < durable  # the CRC scan keeps its window
        assert 40 <= rec["redispatched_messages"] <= 41
        assert _read_all(s) == vals
        for i in (0, 150, 299, 300, 339):
            got = s.lookup_key("t", b"key-%d" % i)
            assert [r.value for r in got] in ([], [vals[i]])
        assert s.append("t", b"after", partition=0).offset == 340
        assert s.stats()["recovery"]["derived_rebuilt"] == 0
    with mqstore.open(image, "commitlog", **SMALL) as s:  # and again, after a clean close
        assert _read_all(s) == vals + [b"after"]
    assert CommitLogStore.verify_files(image) == []


@pytest.mark.parametrize("seed", [4, 5])
def test_tail_keys_are_found_after_the_crash(store_path, seed):
    """Keys of messages at or after the offset are redone (their entries may not be
    durable), those before it are kept: every keyed record is found exactly once."""
    image, vals, durable = _crash_image(store_path, seed)
    with mqstore.open(image, "commitlog", **SMALL) as s:
        keyed = [i for i in range(340)
                 if [r.value for r in s.lookup_key("t", b"key-%d" % i)] == [vals[i]]]
        hits = sum(len(s.lookup_key("t", b"key-%d" % i)) for i in range(340))
        assert hits == len(keyed) > 0


@pytest.mark.parametrize("where", ["past_the_files", "mid_message",
                                   "end_of_file_room", "zeros_then_messages"])
def test_an_offset_that_is_not_a_boundary_is_ignored(store_path, where, caplog):
    """A checkpoint whose CRC holds but whose offset does not name a place a scan may
    start is not trusted: recovery starts at a file boundary from the timestamps, as
    without an offset, logs the repair, and the ConsumeQueue (deleted here) is rebuilt."""
    image, vals, durable = _crash_image(store_path, 7)
    msgs = _messages(image)
    files = sorted(os.listdir(os.path.join(image, "commitlog")))
    if where == "past_the_files":
        bad = int(files[-1]) + SMALL["mapped_file_size"] + 100
    elif where == "mid_message":
        bad = msgs[200][1] + 7
    elif where == "end_of_file_room":
        bad = int(files[0]) + SMALL["mapped_file_size"] - 3
    else:  # zeros at the offset with sound messages after them
        path, off, pos, total = msgs[200]
        with open(path, "r+b") as f:
            f.seek(pos)
            f.write(bytes(8))
        bad = off
    _rewrite(image, durable_offset=bad, flushed_offset=bad)
    shutil.rmtree(os.path.join(image, "consumequeue"))
    opts = {"on_corruption": "skip"} if where == "zeros_then_messages" else {}
    with mqstore.open(image, "commitlog", **SMALL, **opts) as s:
        assert s.recovery["durable_offset"] is None
        got = _read_all(s)
        if where == "zeros_then_messages":
            assert got == vals[:200] + vals[201:]  # the zeroed message alone is dropped
        else:
            assert got == vals
        assert s.stats()["recovery"]["derived_rebuilt"] >= 1


def test_offsets_past_the_end_of_the_data_are_lost_durable_data(store_path):
    """Offsets (CRC intact) past where the log's data ends, inside its last file: the
    checkpoint vouches for messages the log no longer holds, so the open refuses by default
    (a torn tail cannot be below the sync point); "truncate" keeps what is there."""
    image, vals, durable = _crash_image(store_path, 18)
    msgs = _messages(image)
    bad = msgs[-1][1] + msgs[-1][3] + 64  # zeros, but not where the data ends
    _rewrite(image, durable_offset=bad, flushed_offset=bad)
    with pytest.raises(mqstore.CorruptRecordError, match="lost durable messages"):
        mqstore.open(image, "commitlog", **SMALL)
    with mqstore.open(image, "commitlog", on_corruption="truncate", **SMALL) as s:
        assert _read_all(s) == vals


def test_garbled_offset_checkpoint_scans_from_the_first_file(store_path):
    image, vals, durable = _crash_image(store_path, 8)
    path = os.path.join(image, "checkpoint")
    raw = bytearray(open(path, "rb").read())
    assert raw[ckmod.TRAILER_POS:ckmod.TRAILER_POS + 4] == ckmod.TRAILER_MAGIC_OFFSET
    raw[ckmod.DURABLE_OFFSET_POS + 7] ^= 0x10  # the offset, under the CRC
    open(path, "wb").write(bytes(raw))
    shutil.rmtree(os.path.join(image, "consumequeue"))
    with mqstore.open(image, "commitlog", **SMALL) as s:
        assert s.checkpoint.garbled is None  # rewritten by the recovery's own flush
        assert s.recovery["start_offset"] == 0 and s.recovery["durable_offset"] is None
        assert _read_all(s) == vals


def test_impossible_offsets_are_a_garbled_checkpoint(store_path):
    image, vals, durable = _crash_image(store_path, 9)
    path = os.path.join(image, "checkpoint")
    raw = bytearray(open(path, "rb").read())
    struct.pack_into(">qq", raw, ckmod.DURABLE_OFFSET_POS, durable, durable - 1)  # flushed < it
    struct.pack_into(">4sI", raw, ckmod.TRAILER_POS, ckmod.TRAILER_MAGIC_OFFSET,
                     __import__("zlib").crc32(bytes(raw[:ckmod.TRAILER_POS])))
    open(path, "wb").write(bytes(raw))
    ck = StoreCheckpoint(path, read_only=True)
    assert ck.garbled and "impossible offsets" in ck.garbled and ck.durable_offset is None
    with mqstore.open(image, "commitlog", **SMALL) as s:
        assert s.recovery["start_offset"] == 0
        assert _read_all(s) == vals


def test_commitlog_damage_below_the_offset_is_corruption_not_a_torn_tail(store_path):
    """The CRC scan still covers the file the timestamps name: a flipped body byte below
    the durable offset refuses the open (default) and is dropped alone with "skip"."""
    image, vals, durable = _crash_image(store_path, 10)
    path, off, pos, total = _messages(image)[120]
    assert off < durable
    with open(path, "r+b") as f:
        f.seek(pos + total - 30)
        b = f.read(1)
        f.seek(pos + total - 30)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(mqstore.CorruptRecordError, match="not a torn tail"):
        mqstore.open(image, "commitlog", **SMALL)
    with mqstore.open(image, "commitlog", on_corruption="skip", **SMALL) as s:
        assert _read_all(s) == vals[:120] + vals[121:]
        assert s.stats()["recovery"]["torn_tail_truncated"] == 0


def test_damage_between_the_offsets_is_corruption_even_in_the_same_millisecond(store_path):
    """Below the checkpoint's flushed offset the log was synced: damage there with nothing
    but same-millisecond messages after it is corruption, not a torn tail."""
    image, vals, durable = _crash_image(store_path, 11, flushed=300, tail=0)
    msgs = _messages(image)
    path, off, pos, total = msgs[-2]
    _rewrite(image, physic_msg_timestamp=1, logics_msg_timestamp=1, index_msg_timestamp=1)
    with open(path, "r+b") as f:  # zeros over the second-last message's header
        f.seek(pos)
        f.write(bytes(16))
    with pytest.raises(mqstore.CorruptRecordError, match="not a torn tail"):
        mqstore.open(image, "commitlog", **SMALL)


def _point_unit_at_the_next(path, u):
    raw = open(path, "rb").read()
    off, size, tag = struct.unpack_from(">qiq", raw, u * 20)
    nxt = struct.unpack_from(">qiq", raw, (u + 1) * 20)[0]
    with open(path, "r+b") as f:
        f.seek(u * 20)
        f.write(struct.pack(">qiq", nxt, size, tag))
    return off, nxt


def test_consume_queue_damage_in_a_trusted_file_is_caught_by_the_read(store_path):
    """The ConsumeQueue files wholly below the durable offset are not read at open (their
    units were synced before the checkpoint was written): a unit there pointing at the
    next message is not repaired, but the read that meets it checks it against the message
    and raises CorruptRecordError; it never returns the wrong record."""
    image, vals, durable = _crash_image(store_path, 12)
    qdir = os.path.join(image, "consumequeue", "t", "0")
    names = sorted(os.listdir(qdir))
    assert len(names) > 2
    off, nxt = _point_unit_at_the_next(os.path.join(qdir, names[0]), 5)
    assert nxt < durable
    with mqstore.open(image, "commitlog", **SMALL) as s:
        assert s.stats()["recovery"]["derived_rebuilt"] == 0
        with pytest.raises(mqstore.CorruptRecordError):
            s.read("t", 0, 5, max_records=1)
        assert [r.value for r in s.read("t", 0, 6, max_records=3)] == vals[6:9]
        assert [r.value for r in s.read("t", 0, 0, max_records=5)] == vals[:5]
    assert [d.position for d in CommitLogStore.verify_files(image)] == [5 * 20]


def test_consume_queue_damage_in_the_file_holding_the_offset_is_rebuilt(store_path):
    """The file the durable offset falls in (and every later one) is checked whole: a unit
    out of order there, even below the offset, cuts the queue and it is rebuilt."""
    image, vals, durable = _crash_image(store_path, 12)
    qdir = os.path.join(image, "consumequeue", "t", "0")
    holding = sorted(os.listdir(qdir))[300 // SMALL["cq_units_per_file"]]  # unit 300's
    off, nxt = _point_unit_at_the_next(os.path.join(qdir, holding), 1)
    assert nxt < durable
    with mqstore.open(image, "commitlog", **SMALL) as s:
        assert s.recovery["redispatched_from"] <= off
        assert s.stats()["recovery"]["derived_rebuilt"] >= 1
        assert _read_all(s) == vals


def test_lost_first_consume_queue_file_below_the_offset_is_rebuilt(store_path):
    image, vals, durable = _crash_image(store_path, 13)
    qdir = os.path.join(image, "consumequeue", "t", "0")
    names = sorted(os.listdir(qdir))
    assert len(names) > 2
    os.unlink(os.path.join(qdir, names[0]))
    with mqstore.open(image, "commitlog", **SMALL) as s:
        assert _read_all(s) == vals


def test_log_ending_before_the_flushed_offset_lost_durable_data(store_path):
    """The last CommitLog file deleted: the checkpoint's flushed offset says its messages
    were synced, so this is lost data, not a torn tail (refused by default)."""
    image, vals, durable = _crash_image(store_path, 14, flushed=700, tail=0)
    d = os.path.join(image, "commitlog")
    names = sorted(os.listdir(d))
    assert len(names) > 2
    last = os.path.join(d, names[-1])
    with open(last, "r+b") as f:  # its data gone, as a file system losing it would
        f.truncate(0)
    with pytest.raises(mqstore.CorruptRecordError, match="lost durable messages"):
        mqstore.open(image, "commitlog", **SMALL)
    with mqstore.open(image, "commitlog", on_corruption="truncate", **SMALL) as s:
        got = _read_all(s)
        assert got == vals[:len(got)] and len(got) < len(vals)


def test_an_older_checkpoint_without_the_offset_starts_at_a_file(store_path):
    """An MQCK checkpoint (mqstore before issue 9): no offset, the file-boundary start
    of before; the next flush writes MQC2 with the offset."""
    image, vals, durable = _crash_image(store_path, 15)
    path = os.path.join(image, "checkpoint")
    raw = bytearray(open(path, "rb").read())
    raw[ckmod.DURABLE_OFFSET_POS:ckmod.DURABLE_OFFSET_POS + 16] = bytes(16)
    struct.pack_into(">4sI", raw, ckmod.TRAILER_POS, ckmod.TRAILER_MAGIC,
                     __import__("zlib").crc32(bytes(raw[:ckmod.TRAILER_POS])))
    open(path, "wb").write(bytes(raw))
    ck = StoreCheckpoint(path, read_only=True)
    assert ck.garbled is None and ck.durable_offset is None and ck.physic_msg_timestamp > 0
    with mqstore.open(image, "commitlog", **SMALL) as s:
        assert s.recovery["durable_offset"] is None
        assert s.recovery["redispatched_messages"] > 40
        assert _read_all(s) == vals
    raw = open(path, "rb").read()
    assert raw[ckmod.TRAILER_POS:ckmod.TRAILER_POS + 4] == ckmod.TRAILER_MAGIC_OFFSET
    assert StoreCheckpoint(path, read_only=True).durable_offset == _messages(image)[-1][1] + \
        _messages(image)[-1][3]


def test_a_rocketmq_checkpoint_keeps_its_offsets_and_gives_none(store_path):
    """RocketMQ 5 writes masterFlushedOffset (24) and confirmPhyOffset (32) and no trailer:
    they are not mqstore's durable offset (not trusted) and are kept as found."""
    image, vals, durable = _crash_image(store_path, 16)
    path = os.path.join(image, "checkpoint")
    raw = bytearray(open(path, "rb").read())
    struct.pack_into(">qq", raw, 24, 10 ** 9, 10 ** 9)  # beyond the log: must not be used
    raw[ckmod.DURABLE_OFFSET_POS:] = bytes(len(raw) - ckmod.DURABLE_OFFSET_POS)
    open(path, "wb").write(bytes(raw))
    with mqstore.open(image, "commitlog", **SMALL) as s:
        assert s.recovery["durable_offset"] is None
        assert _read_all(s) == vals
    assert struct.unpack_from(">qq", open(path, "rb").read(), 24) == (10 ** 9, 10 ** 9)


def test_the_offset_never_passes_what_was_dispatched_or_synced(store_path):
    """The offset is min(dispatched before the ConsumeQueue/IndexFile syncs, CommitLog
    flushed offset): a lagging dispatcher or an unsynced log keeps it back."""
    s = mqstore.open(store_path, "commitlog", flush="async", flush_interval_ms=3_600_000,
                     **SMALL)
    s.create_topic("t")
    s.append_batch("t", [b"a" * 50] * 20, partition=0)
    s.flush()
    assert s.checkpoint.durable_offset == s.commitlog.max_offset
    synced = s.commitlog.max_offset
    s.append_batch("t", [b"b" * 50] * 20, partition=0)  # written, not synced
    s.dispatcher.wait_until(s.commitlog.max_offset)
    s._flush_logics()
    assert s.checkpoint.durable_offset == synced == s.checkpoint.flushed_offset
    s.flush()
    s.dispatcher.halt()  # the dispatcher stops: appends are synced, not dispatched
    dispatched = s.dispatcher.reput_from_offset
    s.append_batch("t", [b"c" * 50] * 20, partition=0)
    s._sync_commitlog()
    s._flush_logics()
    assert s.checkpoint.durable_offset == dispatched < s.checkpoint.flushed_offset
    s._release()


def test_sigkill_under_flush_os_without_a_flush_keeps_the_older_offset(store_path):
    """flush="os" writes the checkpoint only on flush() and close: a SIGKILL leaves the
    offset of the last flush (stale, but true), and the page cache holds the rest."""
    image, vals, durable = _crash_image(store_path, 17, flushed=100, tail=250)
    with mqstore.open(image, "commitlog", **SMALL) as s:
        assert s.recovery["durable_offset"] == durable
        assert s.recovery["redispatched_messages"] >= 250
        assert _read_all(s) == vals


@pytest.mark.parametrize("seed", [19, 20])
def test_index_header_newer_than_its_entries_is_rebuilt(store_path, seed):
    """Torture finding commitlog:powerloss-sync-posix:93.7.1 (on this work, before the fix):
    a power loss kept an IndexFile's header page (indexCount, end offset) but dropped the
    unsynced entry pages after it, from below the durable offset's entry on (what the
    durable offset vouches for ends before them, the header claims more). The zeros fooled
    the search for the tail (entries below the offset are trusted), nothing was checked or
    redone, and lookup_key missed the keys of the zeroed entries. The order of every entry's
    commitlog offset is now checked over the whole file: the file is rebuilt."""
    image, vals, durable = _crash_image(store_path, seed)
    d = os.path.join(image, "index")
    (name,) = sorted(os.listdir(d))
    path = os.path.join(d, name)
    raw = bytearray(open(path, "rb").read())
    entries = 40 + SMALL["hash_slots"] * 4
    count = struct.unpack_from(">i", raw, 36)[0]
    phys = [struct.unpack_from(">q", raw, entries + k * 20 + 4)[0] for k in range(1, count)]
    cut = next(k for k, p in enumerate(phys, 1) if p >= durable) - 5  # below the offset
    raw[entries + cut * 20:entries + count * 20] = bytes((count - cut) * 20)
    open(path, "wb").write(bytes(raw))
    with mqstore.open(image, "commitlog", **SMALL) as s:
        assert s.stats()["recovery"]["derived_rebuilt"] >= 1
        for i in range(340):
            got = [r.value for r in s.lookup_key("t", b"key-%d" % i)]
            assert got in ([], [vals[i]])
        keyed = sum(1 for i in range(340) if s.lookup_key("t", b"key-%d" % i))
        assert keyed == _keyed_count(image, vals)


def _keyed_count(image, vals):
    """How many of the records were appended with a key (read back from the log)."""
    with mqstore.open(image, "commitlog", read_only=True) as r:
        n, off = 0, 0
        while off < r.end_offset("t", 0):
            page = r.read("t", 0, off)
            n += sum(1 for rec in page if rec.key is not None)
            off = page[-1].offset + 1
        return n

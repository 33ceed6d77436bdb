"""Crash recovery, one test per failure mode (named after LevelDB's log_test.cc).

Crash images are copies of an open store's directory taken after ``flush()``: no
clean-shutdown marker, the active indexes still preallocated, exactly what a power cut after
the fsync leaves. Each test then damages the image the way a crash or a bad disk would.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import mqstore
from mqstore.engines.segments import format as fmt
from mqstore.engines.segments.store import SegmentsStore

from .conftest import SMALL, crash_image, segment_files, set_recovery_point


def _fill(s, n=120, size=60, partition=0):
    s.create_topic("t")
    vals = [b"%05d" % i * (size // 5) for i in range(n)]
    for v in vals:
        s.append("t", v, partition=partition)
    return vals


def _values(s, start=0):
    out, off, end = [], start, s.end_offset("t", 0)
    while off < end:
        page = s.read("t", 0, off)
        out += [r.value for r in page]
        off = page[-1].offset + 1
    return out


def _batch_starts(log_path):
    import struct
    data = open(log_path, "rb").read()
    pos, out = 0, []
    while pos + 12 <= len(data):
        size = struct.unpack_from(">i", data, pos + 8)[0] + 12
        out.append((pos, size))
        pos += size
    return out


def test_truncated_trailing_batch_is_ignored(open_segments, tmp_path):
    s = open_segments()
    vals = _fill(s)
    img = crash_image(s, str(tmp_path / "img"))
    set_recovery_point(img, 100)  # the last batches were written after the last sync
    active = segment_files(img)[-1]
    os.truncate(active, os.path.getsize(active) - 7)  # tear the last batch
    assert any("torn tail" in d.problem for d in SegmentsStore.verify_files(img))
    r = open_segments(img)
    assert r.end_offset("t", 0) == len(vals) - 1
    assert _values(r) == vals[:-1]
    assert r.stats()["recovered_bytes_truncated"] > 0
    assert r.append("t", b"next", partition=0).offset == len(vals) - 1
    assert SegmentsStore.verify_files(img) == []


def test_bad_length_at_end_is_ignored(open_segments, tmp_path):
    s = open_segments()
    vals = _fill(s, n=30)
    img = crash_image(s, str(tmp_path / "img"))
    active = segment_files(img)[-1]
    with open(active, "ab") as f:  # a header whose length runs past the end of the file
        f.write(fmt.BASE_OFFSET_AND_LENGTH.pack(30, 5000) + b"\x00\x00\x00\x00\x02" + b"z" * 60)
    r = open_segments(img)
    assert _values(r) == vals
    assert os.path.getsize(active) == sum(sz for _, sz in _batch_starts(active))


def test_checksum_mismatch_in_active_segment(open_segments, tmp_path):
    s = open_segments(segment_bytes=1 << 20)
    vals = _fill(s, n=50)
    img = crash_image(s, str(tmp_path / "img"))
    set_recovery_point(img, 10)  # batch 20 was written after the last sync: a torn tail
    (active,) = segment_files(img)
    starts = _batch_starts(active)
    pos, size = starts[20]
    with open(active, "r+b") as f:  # flip one bit inside batch 20's records
        f.seek(pos + size - 3)
        b = f.read(1)
        f.seek(pos + size - 3)
        f.write(bytes([b[0] ^ 0x10]))
    damage = SegmentsStore.verify_files(img)
    assert damage and damage[0].position == pos and "CRC" in damage[0].problem
    r = open_segments(img, segment_bytes=1 << 20)
    assert r.end_offset("t", 0) == 20  # the log ends at the first bad byte
    assert _values(r) == vals[:20]
    assert os.path.getsize(active) == pos
    assert SegmentsStore.verify_files(img) == []


def test_corruption_in_older_segment_drops_later_segments(open_segments, tmp_path):
    s = open_segments(segment_bytes=2000)
    vals = _fill(s, n=150)
    img = crash_image(s, str(tmp_path / "img"))
    os.unlink(os.path.join(img, fmt.RECOVERY_POINT_CHECKPOINT))  # recover from offset 0
    logs = segment_files(img)
    assert len(logs) > 3
    victim = logs[1]
    base = int(os.path.basename(victim)[:20])
    pos, size = _batch_starts(victim)[2]
    with open(victim, "r+b") as f:
        f.seek(pos + 40)
        f.write(b"\xff\xff")
    r = open_segments(img, segment_bytes=2000)
    assert r.end_offset("t", 0) == base + 2
    assert _values(r) == vals[:base + 2]
    assert segment_files(img) == logs[:2]  # every later segment is gone
    assert r.append("t", b"x", partition=0).offset == base + 2


def test_garbage_after_last_batch(open_segments, tmp_path):
    s = open_segments()
    vals = _fill(s, n=40)
    img = crash_image(s, str(tmp_path / "img"))
    active = segment_files(img)[-1]
    size = os.path.getsize(active)
    with open(active, "ab") as f:
        f.write(os.urandom(500))
    r = open_segments(img)
    assert _values(r) == vals
    assert os.path.getsize(active) == size


def test_zero_filled_segment_after_crash_is_emptied(open_segments, tmp_path):
    """The file system kept the new size of a fresh segment but none of its data."""
    s = open_segments(segment_bytes=1000)
    vals = _fill(s, n=40)
    img = crash_image(s, str(tmp_path / "img"))
    active = segment_files(img)[-1]
    base = int(os.path.basename(active)[:20])
    set_recovery_point(img, base)  # the new segment was never synced
    size = os.path.getsize(active)
    with open(active, "r+b") as f:
        f.write(b"\x00" * size)
    r = open_segments(img, segment_bytes=1000)
    assert r.end_offset("t", 0) == base
    assert _values(r) == vals[:base]
    assert os.path.getsize(active) == 0


def test_zero_fill_after_last_batch(open_segments, tmp_path):
    """A file system may extend the inode before the data lands: zeros after the log."""
    s = open_segments()
    vals = _fill(s, n=40)
    img = crash_image(s, str(tmp_path / "img"))
    active = segment_files(img)[-1]
    size = os.path.getsize(active)
    with open(active, "ab") as f:
        f.write(b"\x00" * 4096)
    r = open_segments(img)
    assert _values(r) == vals and os.path.getsize(active) == size


def test_index_entry_past_end_of_log(open_segments, store_path=None):
    s = open_segments(segment_bytes=1 << 20)
    vals = _fill(s, n=80)
    s.close()
    (log,) = segment_files(s.path)
    starts = _batch_starts(log)
    cut = starts[50][0]
    os.truncate(log, cut)  # the marker says clean, but the index points past the log now
    assert os.path.exists(os.path.join(s.path, fmt.CLEAN_SHUTDOWN_FILE))
    with pytest.raises(mqstore.CorruptRecordError, match="synced"):  # synced records gone
        open_segments(s.path, segment_bytes=1 << 20)
    r = open_segments(s.path, segment_bytes=1 << 20, on_corruption="truncate")
    assert r.end_offset("t", 0) == 50
    assert _values(r) == vals[:50]
    assert r.offset_for_time("t", 0, 0) == 0
    r.close()
    assert SegmentsStore.verify_files(s.path) == []


def test_missing_index_is_rebuilt(open_segments):
    s = open_segments(segment_bytes=3000)
    vals = _fill(s, n=150)
    s.close()
    logs = segment_files(s.path)
    target = logs[1][:-4]
    before = (open(target + ".index", "rb").read(), open(target + ".timeindex", "rb").read())
    assert before[0]
    os.unlink(target + ".index")
    os.unlink(target + ".timeindex")
    r = open_segments(s.path, segment_bytes=3000)
    assert _values(r) == vals
    assert r.end_offset("t", 0) == 150
    r.close()
    after = (open(target + ".index", "rb").read(), open(target + ".timeindex", "rb").read())
    assert after == before  # rebuilt on the same cadence


def test_corrupt_index_is_rebuilt(open_segments):
    s = open_segments(segment_bytes=1 << 20, index_interval_bytes=100)
    vals = _fill(s, n=100)
    s.close()
    (idx,) = segment_files(s.path, suffix=".index")
    good = open(idx, "rb").read()
    with open(idx, "r+b") as f:  # entries no longer increase
        f.seek(8)
        f.write(fmt.OFFSET_INDEX_ENTRY.pack(1, 3))
    r = open_segments(s.path, segment_bytes=1 << 20, index_interval_bytes=100)
    assert [r.read("t", 0, i, max_records=1)[0].value for i in range(0, 100, 9)] == vals[::9]
    r.close()
    assert open(idx, "rb").read() == good


def test_log_written_by_kafka_python_opens_and_reads(tmp_path):
    kp = pytest.importorskip("kafka.record.default_records", reason="kafka-python not installed")
    root = tmp_path / "kafka"
    pdir = root / "events-0"
    pdir.mkdir(parents=True)
    data = b""
    offset = 0
    for batch_no, codec in enumerate([0, 1, 0]):
        b = kp.DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False,
                                         producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                         batch_size=1 << 20)
        for i in range(10):
            b.append(i, timestamp=1_600_000_000_000 + offset + i, key=b"k%d" % (offset + i),
                     value=b"value-%d" % (offset + i), headers=[])
        raw = bytearray(b.build())
        raw[0:8] = (offset).to_bytes(8, "big")  # baseOffset is outside the CRC (the broker sets it)
        data += bytes(raw)
        offset += 10
    (pdir / "00000000000000000000.log").write_bytes(data)
    s = mqstore.open(str(root), **SMALL)  # the engine is detected from the files
    try:
        assert s.engine_name == "segments"
        assert s.topics() == ["events"]
        assert s.end_offset("events", 0) == 30
        recs = s.read("events", 0, 0)
        assert [r.value for r in recs] == [b"value-%d" % i for i in range(30)]
        assert recs[12].key == b"k12" and recs[12].timestamp_ms == 1_600_000_000_012
        assert s.offset_for_time("events", 0, 1_600_000_000_025) == 25
        assert s.append("events", b"ours", partition=0).offset == 30
    finally:
        s.close()
    assert (pdir / "00000000000000000000.index").exists()
    assert SegmentsStore.verify_files(str(root)) == []


def test_clean_shutdown_marker_and_checkpoints(open_segments):
    s = open_segments()
    _fill(s, n=10)
    marker = os.path.join(s.path, fmt.CLEAN_SHUTDOWN_FILE)
    assert not os.path.exists(marker)  # removed while open
    s.flush()
    rp = open(os.path.join(s.path, fmt.RECOVERY_POINT_CHECKPOINT)).read().split("\n")
    assert rp[:3] == ["0", "1", "t 0 10"]
    s.close()
    assert json.load(open(marker)) == {"version": 0, "brokerEpoch": 0}
    r = open_segments(s.path)
    assert not os.path.exists(marker)
    assert r.end_offset("t", 0) == 10


WRITER = textwrap.dedent(
    """
    import sys, threading, mqstore, json
    path, opts = sys.argv[1], json.loads(sys.argv[2])
    s = mqstore.open(path, "segments", flush="sync", **opts)
    s.create_topic("t", partitions=3)
    print("ready", flush=True)
    out = threading.Lock()
    def work(t):
        i = 0
        while True:
            vals = [b"%d-%d-%d" % (t, i, j) * 7 for j in range(1 + i % 5)]
            mds = s.append_batch("t", vals, partition=t)
            with out:
                for md, v in zip(mds, vals):
                    sys.stdout.write("%d %d %s\\n" % (md.partition, md.offset, v.decode()))
                sys.stdout.flush()
            i += 1
    for t in range(3):
        threading.Thread(target=work, args=(t,), daemon=True).start()
    threading.Event().wait()
    """
)


def test_sigkill_under_sync_loses_no_acknowledged_batch(tmp_path):
    path = str(tmp_path / "store")
    opts = {**SMALL, "segment_bytes": 4096}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, path, json.dumps(opts)],
                            stdout=subprocess.PIPE, text=True)
    acked = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 20
        while len(acked) < 400 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            p, off, v = line.split()
            acked.append((int(p), int(off), v.encode()))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(acked) >= 100
    with mqstore.open(path, "segments", **opts) as s:
        for p in range(3):
            end = s.end_offset("t", p)
            got = {}
            off = 0
            while off < end:
                page = s.read("t", p, off)
                got.update((r.offset, r.value) for r in page)
                off = page[-1].offset + 1
            assert sorted(got) == list(range(end))  # dense after recovery
            for part, o, v in acked:
                if part == p:
                    assert got.get(o) == v
    assert SegmentsStore.verify_files(path) == []


def test_old_message_format_is_refused_not_truncated(tmp_path):
    """A magic-1 message set (Kafka < 0.11) is not read, and never mistaken for damage."""
    import zlib
    root = tmp_path / "old"
    (root / "legacy-0").mkdir(parents=True)
    body = b"\x01\x00" + (1_600_000_000_000).to_bytes(8, "big") + b"\xff\xff\xff\xff" + \
        (3).to_bytes(4, "big") + b"abc"
    msg = zlib.crc32(body).to_bytes(4, "big") + body
    data = (0).to_bytes(8, "big") + len(msg).to_bytes(4, "big") + msg
    log = root / "legacy-0" / "00000000000000000000.log"
    log.write_bytes(data)
    with pytest.raises(mqstore.UnsupportedOperation):
        mqstore.open(str(root), "segments")
    assert log.read_bytes() == data


def test_recovery_starts_at_the_recovery_point(open_segments, tmp_path):
    """Kafka's rule: after a crash only segments from the one holding the recovery point are
    re-validated. Damage in an older, flushed segment is not rescanned at open (verify finds
    it); damage after the recovery point is truncated."""
    s = open_segments(segment_bytes=2000)
    vals = _fill(s, n=120)
    img = crash_image(s, str(tmp_path / "img"))  # flush(): recovery point = 120
    rp = open(os.path.join(img, fmt.RECOVERY_POINT_CHECKPOINT)).read().split()
    assert rp[-1] == "120"
    logs = segment_files(img)
    old = logs[0]
    pos, size = _batch_starts(old)[3]
    with open(old, "r+b") as f:  # a bit flip in a record body: headers and indexes still fine
        f.seek(pos + size - 2)
        f.write(b"\x7e")
    assert any(d.path == old for d in SegmentsStore.verify_files(img))
    r = open_segments(img, segment_bytes=2000)
    assert r.end_offset("t", 0) == 120  # not rescanned: the old segment was flushed
    assert len(segment_files(img)) == len(logs)
    assert _values(r, 100) == vals[100:]

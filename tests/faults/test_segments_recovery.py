"""Segments recovery under mqstore's damage model (issue 8), one test per failure mode.

Crash images are copies of an open store taken after ``flush()`` (no clean-shutdown marker,
the active indexes still preallocated); ``set_recovery_point`` then says which offsets were
written after the last sync, i.e. where a crash may legitimately tear the log. Every test is
deterministic: damage is made by hand at known batch positions.
"""
from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import sys

import pytest

import mqstore
from mqstore.damage import (CORRUPTION_SKIPPED, CORRUPTION_TRUNCATED, DERIVED_REBUILT,
                            METADATA_REPAIRED, TORN_TAIL)
from mqstore.engines.segments import format as fmt
from mqstore.engines.segments.checkpoint import read_checkpoint
from mqstore.engines.segments.partition_log import PartitionLog
from mqstore.engines.segments.store import SegmentsStore
from mqstore.errors import CorruptRecordError
from tests.segments.conftest import SMALL, crash_image, segment_files, set_recovery_point


@pytest.fixture
def open_segments(tmp_path):
    opened = []

    def _open(path=None, **options):
        s = mqstore.open(path or str(tmp_path / "store"), "segments", **{**SMALL, **options})
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()


def _fill(s, n=120, size=60):
    s.create_topic("t")
    vals = [b"%05d" % i * (size // 5) for i in range(n)]
    for v in vals:
        s.append("t", v, partition=0)
    return vals


def _all(s, start=0):
    """Every record from ``start`` as (offset, value), following gaps."""
    out, off, end = [], start, s.end_offset("t", 0)
    while off < end:
        page = s.read("t", 0, off)
        if not page:
            break
        out += [(r.offset, r.value) for r in page]
        off = page[-1].offset + 1
    return out


def _batches(log_path):
    data = open(log_path, "rb").read()
    pos, out = 0, []
    while pos + 12 <= len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        out.append((pos, length + 12, base))
        pos += length + 12
    return out


def _flip(path, position):
    with open(path, "r+b") as f:
        f.seek(position)
        b = f.read(1)
        f.seek(position)
        f.write(bytes([b[0] ^ 0x40]))


def _snapshot(root):
    out = {}
    for d, _dirs, names in os.walk(root):
        for n in names:
            if n.endswith(fmt.LOG_SUFFIX):
                p = os.path.join(d, n)
                out[p] = open(p, "rb").read()
    return out


# ----------------------------------------------------------------------------- torn tails
def test_torn_tail_after_recovery_point_is_truncated_logged_and_counted(
        open_segments, tmp_path, caplog):
    s = open_segments(segment_bytes=1 << 20)
    vals = _fill(s, n=50)
    img = crash_image(s, str(tmp_path / "img"))
    set_recovery_point(img, 30)
    (log,) = segment_files(img)
    pos, size, _ = _batches(log)[40]
    _flip(log, pos + size - 3)  # batch 40 is after the last sync: a torn tail
    with caplog.at_level(logging.WARNING, logger="mqstore"):
        r = open_segments(img, segment_bytes=1 << 20)
    assert [v for _o, v in _all(r)] == vals[:40]
    rec = r.stats()["recovery"]
    assert rec[TORN_TAIL] == 1 and rec[CORRUPTION_TRUNCATED] == 0
    msgs = [m.getMessage() for m in caplog.records if m.name == "mqstore"]
    assert any(log in m and f"@{pos}" in m and "10 records" in m for m in msgs), msgs


def test_offset_gap_after_power_loss_is_a_torn_tail(open_segments, tmp_path):
    """Item 2: a rolled segment lost its unsynced tail, the newer segment survived."""
    s = open_segments(segment_bytes=2000)
    vals = _fill(s, n=120)
    img = crash_image(s, str(tmp_path / "img"))
    logs = segment_files(img)
    assert len(logs) >= 4
    victim = logs[1]
    batches = _batches(victim)
    keep = 3
    os.truncate(victim, batches[keep][0])  # at a batch boundary: the segment itself looks fine
    lost_from = batches[keep][2]
    set_recovery_point(img, lost_from)  # its tail had not been synced
    damage = SegmentsStore.verify_files(img)
    assert [d.kind for d in damage] == ["torn_tail"]
    assert damage[0].first_offset == lost_from and damage[0].path == logs[2]
    r = open_segments(img, segment_bytes=2000)
    got = _all(r)
    assert [o for o, _v in got] == list(range(lost_from))  # dense: no jump
    assert [v for _o, v in got] == vals[:lost_from]
    assert segment_files(img) == logs[:2]
    assert r.stats()["recovery"][TORN_TAIL] == 1
    assert r.append("t", b"next", partition=0).offset == lost_from
    r.close()
    assert SegmentsStore.verify_files(img) == []


def _gap_image(open_segments, tmp_path):
    s = open_segments(segment_bytes=2000)
    vals = _fill(s, n=120)
    img = crash_image(s, str(tmp_path / "img"))  # recovery point 120: everything synced
    logs = segment_files(img)
    victim = logs[1]
    batches = _batches(victim)
    os.truncate(victim, batches[3][0])
    return vals, img, logs, batches[3][2], int(os.path.basename(logs[2])[:20])


def test_offset_gap_below_recovery_point_is_refused(open_segments, tmp_path):
    _vals, img, logs, lost_from, next_base = _gap_image(open_segments, tmp_path)
    before = _snapshot(img)
    with pytest.raises(CorruptRecordError) as info:
        open_segments(img, segment_bytes=2000)
    assert info.value.path == logs[2] and "records follow" in str(info.value)
    assert _snapshot(img) == before  # the store was not changed
    (d,) = SegmentsStore.verify_files(img)
    assert d.kind == "corruption" and d.first_offset == lost_from
    assert d.records_dropped == next_base - lost_from


def test_offset_gap_below_recovery_point_truncate(open_segments, tmp_path):
    vals, img, logs, lost_from, _next = _gap_image(open_segments, tmp_path)
    r = open_segments(img, segment_bytes=2000, on_corruption="truncate")
    assert [v for _o, v in _all(r)] == vals[:lost_from]
    assert segment_files(img) == logs[:2]
    assert r.stats()["recovery"][CORRUPTION_TRUNCATED] == 1


def test_offset_gap_below_recovery_point_skip_reads_as_a_gap(open_segments, tmp_path):
    vals, img, logs, lost_from, next_base = _gap_image(open_segments, tmp_path)
    r = open_segments(img, segment_bytes=2000, on_corruption="skip")
    got = dict(_all(r))
    assert sorted(got) == list(range(lost_from)) + list(range(next_base, 120))
    assert all(got[o] == vals[o] for o in got)
    assert r.read("t", 0, lost_from)[0].offset == next_base  # the gap: next surviving offset
    assert r.stats()["recovery"][CORRUPTION_SKIPPED] == 1
    assert segment_files(img) == logs
    r.close()
    assert SegmentsStore.verify_files(img) == []  # repaired: the gap is an empty batch now
    r = open_segments(img, segment_bytes=2000)  # and the default policy opens it
    assert dict(_all(r)) == got


# ----------------------------------------------------------------------------- corruption
def _corrupt_image(open_segments, tmp_path, batch=20, n=50, where=-3):
    s = open_segments(segment_bytes=1 << 20)
    vals = _fill(s, n=n)
    img = crash_image(s, str(tmp_path / "img"))  # recovery point n
    (log,) = segment_files(img)
    pos, size, _ = _batches(log)[batch]
    _flip(log, pos + size + where if where < 0 else pos + where)
    return vals, img, log, pos


def test_checksum_mismatch_below_recovery_point_is_refused(open_segments, tmp_path):
    _vals, img, log, pos = _corrupt_image(open_segments, tmp_path)
    before = _snapshot(img)
    with pytest.raises(CorruptRecordError) as info:
        open_segments(img, segment_bytes=1 << 20)
    err = info.value
    assert err.path == log and err.position == pos
    assert "29 records follow" in str(err)
    assert _snapshot(img) == before
    (d,) = SegmentsStore.verify_files(img)
    assert (d.kind, d.path, d.position, d.first_offset, d.records_dropped) == \
        ("corruption", log, pos, 20, 1)


def test_checksum_mismatch_truncate_cuts_there(open_segments, tmp_path):
    vals, img, log, pos = _corrupt_image(open_segments, tmp_path)
    r = open_segments(img, segment_bytes=1 << 20, on_corruption="truncate")
    assert [v for _o, v in _all(r)] == vals[:20]
    assert os.path.getsize(log) == pos
    assert r.stats()["recovery"][CORRUPTION_TRUNCATED] == 1


def test_checksum_mismatch_skip_keeps_every_intact_batch(open_segments, tmp_path, caplog):
    vals, img, log, pos = _corrupt_image(open_segments, tmp_path)
    with caplog.at_level(logging.WARNING, logger="mqstore"):
        r = open_segments(img, segment_bytes=1 << 20, on_corruption="skip")
    got = _all(r)
    assert [o for o, _v in got] == [o for o in range(50) if o != 20]
    assert [v for _o, v in got] == vals[:20] + vals[21:]
    assert r.read("t", 0, 20, max_records=1)[0].offset == 21
    assert r.end_offset("t", 0) == 50
    assert r.stats()["recovery"][CORRUPTION_SKIPPED] == 1
    assert any("corruption_skipped" in m.getMessage() and f"@{pos}" in m.getMessage()
               for m in caplog.records)
    assert r.append("t", b"after", partition=0).offset == 50
    r.close()
    assert SegmentsStore.verify_files(img) == []


def test_bad_length_field_below_recovery_point_skip_resynchronises(open_segments, tmp_path):
    """A flipped length field: the scan must find the next batch by its header and CRC."""
    vals, img, log, pos = _corrupt_image(open_segments, tmp_path, batch=10, where=9)
    with pytest.raises(CorruptRecordError):
        open_segments(img, segment_bytes=1 << 20)
    r = open_segments(img, segment_bytes=1 << 20, on_corruption="skip")
    assert [v for _o, v in _all(r)] == vals[:10] + vals[11:]


def test_zeroed_range_below_recovery_point_skip(open_segments, tmp_path):
    s = open_segments(segment_bytes=1 << 20)
    vals = _fill(s, n=60)
    img = crash_image(s, str(tmp_path / "img"))
    (log,) = segment_files(img)
    b = _batches(log)
    with open(log, "r+b") as f:  # a lost sector's worth in the middle: batches 30..34
        f.seek(b[30][0])
        f.write(bytes(b[35][0] - b[30][0]))
    r = open_segments(img, segment_bytes=1 << 20, on_corruption="skip")
    got = _all(r)
    assert [o for o, _v in got] == list(range(30)) + list(range(35, 60))
    assert [v for _o, v in got] == vals[:30] + vals[35:]
    (action,) = [a for a in r._recovery.actions if a.kind == CORRUPTION_SKIPPED]
    assert action.records_dropped == 5


def test_corruption_at_end_of_rolled_segment_skip_keeps_later_segments(open_segments, tmp_path):
    s = open_segments(segment_bytes=2000)
    vals = _fill(s, n=120)
    img = crash_image(s, str(tmp_path / "img"))
    logs = segment_files(img)
    pos, size, base = _batches(logs[1])[-1]
    _flip(logs[1], pos + 9)  # the length field: the tail walk at open sees it
    with pytest.raises(CorruptRecordError):
        open_segments(img, segment_bytes=2000)
    r = open_segments(img, segment_bytes=2000, on_corruption="skip")
    got = _all(r)
    nxt = int(os.path.basename(logs[2])[:20])
    assert [o for o, _v in got] == [o for o in range(120) if not base <= o < nxt]
    assert all(v == vals[o] for o, v in got)
    assert segment_files(img) == logs
    r.close()
    assert SegmentsStore.verify_files(img) == []


def test_damage_in_a_cleanly_closed_store_is_corruption(open_segments, tmp_path):
    s = open_segments(segment_bytes=1 << 20)
    vals = _fill(s, n=30)
    s.close()
    (log,) = segment_files(s.path)
    os.truncate(log, os.path.getsize(log) - 5)  # no crash can tear a cleanly closed log
    with pytest.raises(CorruptRecordError):
        open_segments(s.path, segment_bytes=1 << 20)
    assert os.path.exists(os.path.join(s.path, fmt.CLEAN_SHUTDOWN_FILE))  # still clean
    assert [d.kind for d in SegmentsStore.verify_files(s.path)] == ["corruption"]
    r = open_segments(s.path, segment_bytes=1 << 20, on_corruption="truncate")
    assert [v for _o, v in _all(r)] == vals[:29]


def test_verify_reports_one_damage_per_root_cause(open_segments, tmp_path):
    """A torn tail in an older segment drops every later segment: one Damage, not one per
    segment or per index entry."""
    s = open_segments(segment_bytes=2000)
    _fill(s, n=120)
    img = crash_image(s, str(tmp_path / "img"))
    logs = segment_files(img)
    pos, _size, base = _batches(logs[1])[2]
    set_recovery_point(img, base)
    _flip(logs[1], pos + 30)
    (d,) = SegmentsStore.verify_files(img)
    assert d.kind == "torn_tail" and d.first_offset == base and d.path == logs[1]
    assert d.records_dropped == 120 - base


# ----------------------------------------------------------------------------- derived files
@pytest.mark.parametrize("damage", ["garbage", "short", "missing", "odd_length"])
def test_damaged_index_never_blocks_the_open(open_segments, damage):
    s = open_segments(segment_bytes=3000, index_interval_bytes=100)
    vals = _fill(s, n=150)
    s.close()
    idx = segment_files(s.path, suffix=".index")[1]
    tidx = idx[:-len(".index")] + ".timeindex"
    good = open(idx, "rb").read()
    if damage == "garbage":
        with open(idx, "r+b") as f:
            f.write(os.urandom(len(good)))
    elif damage == "short":
        os.truncate(tidx, os.path.getsize(tidx) // 2)
        os.truncate(idx, 8)
        with open(idx, "r+b") as f:
            f.write(fmt.OFFSET_INDEX_ENTRY.pack(1, 10**6))
    elif damage == "missing":
        os.unlink(idx)
    else:
        with open(idx, "ab") as f:
            f.write(b"\x07\x07\x07")
    if damage != "missing":
        assert any(d.kind == "derived" for d in SegmentsStore.verify_files(s.path))
    r = open_segments(s.path, segment_bytes=3000, index_interval_bytes=100)
    assert [v for _o, v in _all(r)] == vals
    assert r.stats()["recovery"][DERIVED_REBUILT] >= 1
    r.close()
    assert open(idx, "rb").read() == good
    assert SegmentsStore.verify_files(s.path) == []


def test_index_prefix_scan_cost_does_not_grow_with_preallocated_size(tmp_path, monkeypatch):
    """Finding the entries of a 10 MiB preallocated index reads only the first chunk."""
    from mqstore.engines.segments import abstract_index
    from mqstore.engines.segments.offset_index import OffsetIndex

    path = str(tmp_path / "00000000000000000000.index")
    with open(path, "wb") as f:
        f.write(b"".join(fmt.OFFSET_INDEX_ENTRY.pack(i, i * 100) for i in range(1, 11)))
        f.truncate(10 * 1024 * 1024)
    seen = []
    real = abstract_index.np.frombuffer

    def spy(buf, dtype=float, count=-1, offset=0):
        seen.append(count)
        return real(buf, dtype=dtype, count=count, offset=offset)

    monkeypatch.setattr(abstract_index.np, "frombuffer", spy)
    idx = OffsetIndex(path, 0, 10 * 1024 * 1024, writable=True)
    try:
        assert idx.entries == 10
        assert sum(seen) <= abstract_index.PREFIX_CHUNK
    finally:
        idx.close()


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("name", [fmt.RECOVERY_POINT_CHECKPOINT, fmt.LOG_START_OFFSET_CHECKPOINT])
@pytest.mark.parametrize("garble", [b"0\n1\nt 0 \xff\xfe\n", b"\x00\x01\x02", b"0\n2\nt 0 5\n",
                                    b"0\n1\nt zero 5\n"])
def test_garbled_checkpoint_is_treated_as_absent(open_segments, tmp_path, name, garble):
    """Item 10: no UnicodeDecodeError; a checkpoint is a hint."""
    s = open_segments()
    vals = _fill(s, n=40)
    img = crash_image(s, str(tmp_path / "img"))
    with open(os.path.join(img, name), "wb") as f:
        f.write(garble)
    damage = SegmentsStore.verify_files(img)
    assert [d.kind for d in damage] == ["metadata"]
    assert any(line.startswith("unreadable") for line in SegmentsStore.inspect_files(img))
    r = open_segments(img)
    assert [v for _o, v in _all(r)] == vals
    assert r.stats()["recovery"][METADATA_REPAIRED] == 1
    r.close()
    assert read_checkpoint(os.path.join(img, name))[("t", 0)] == (40 if "recovery" in name else 0)
    assert SegmentsStore.verify_files(img) == []


def test_garbled_recovery_checkpoint_validates_every_segment(open_segments, tmp_path):
    """Absent means recover from the start of each log: a torn batch in an old segment is
    found (and, no sync point being known, treated as a torn tail)."""
    s = open_segments(segment_bytes=2000)
    vals = _fill(s, n=120)
    img = crash_image(s, str(tmp_path / "img"))
    logs = segment_files(img)
    pos, _size, base = _batches(logs[0])[4]
    _flip(logs[0], pos + 40)
    with open(os.path.join(img, fmt.RECOVERY_POINT_CHECKPOINT), "wb") as f:
        f.write(b"\xff\xff")
    r = open_segments(img, segment_bytes=2000)
    assert [v for _o, v in _all(r)] == vals[:base]


def test_mqstore_verify_reports_a_garbled_checkpoint_without_a_traceback(open_segments, tmp_path):
    s = open_segments()
    _fill(s, n=10)
    s.close()
    with open(os.path.join(s.path, fmt.RECOVERY_POINT_CHECKPOINT), "wb") as f:
        f.write(b"0\n1\n\xff\xfe 0 10\n")
    proc = subprocess.run([sys.executable, "-m", "mqstore", "verify", s.path],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "metadata" in proc.stdout


def test_no_accepted_topic_name_corrupts_a_checkpoint(open_segments):
    """Item 13: every name the API accepts round-trips through both checkpoints."""
    names = ["a", "A_Z-09", "-", "_", "a-1", "1-0", "x.y", "...", "-9", ".creating",
             "t" * 249]
    s = open_segments()
    for n in names:
        s.create_topic(n, partitions=2)
        s.append(n, b"v-" + n.encode(), partition=1)
    s.flush()
    for cp in (fmt.RECOVERY_POINT_CHECKPOINT, fmt.LOG_START_OFFSET_CHECKPOINT):
        entries = read_checkpoint(os.path.join(s.path, cp))
        assert {(n, p) for n in names for p in (0, 1)} <= set(entries)
    s.close()
    assert SegmentsStore.verify_files(s.path) == []
    r = open_segments(s.path)
    assert set(names) <= set(r.topics())
    assert r.stats()["recovery"][METADATA_REPAIRED] == 0
    for n in names:
        assert r.partitions(n) == 2
        assert [x.value for x in r.read(n, 1, 0)] == [b"v-" + n.encode()]


# ----------------------------------------------------------------------------- create_topic
def test_create_topic_cut_by_a_crash_leaves_no_topic(open_segments, tmp_path, monkeypatch):
    """Item 11: a crash after 75 of 200 partitions: the topic is absent, and creating it
    again works."""
    s = open_segments()
    s.create_topic("other")
    s.append("other", b"keep")
    s.flush()
    img = str(tmp_path / "img")
    real = PartitionLog.create
    made = []

    def create(self):
        real(self)
        made.append(self.partition)
        if len(made) == 75:  # the crash: what the disk holds at this moment
            shutil.copytree(s.path, img)

    monkeypatch.setattr(PartitionLog, "create", create)
    s.create_topic("big", partitions=200)
    monkeypatch.undo()
    assert s.partitions("big") == 200
    assert any(d.kind == "metadata" for d in SegmentsStore.verify_files(img))
    r = open_segments(img)
    assert r.topics() == ["other"]
    assert r.stats()["recovery"][METADATA_REPAIRED] == 1
    assert not any(n.startswith("big-") for n in os.listdir(img))
    r.create_topic("big", partitions=200)
    assert r.partitions("big") == 200
    assert [x.value for x in r.read("other", 0, 0)] == [b"keep"]
    r.close()
    assert SegmentsStore.verify_files(img) == []


def test_create_topic_failing_midway_is_undone_and_can_be_retried(open_segments, monkeypatch):
    s = open_segments()
    real = PartitionLog.create

    def create(self):
        if self.partition == 7:
            raise OSError(5, "injected I/O error")
        real(self)

    monkeypatch.setattr(PartitionLog, "create", create)
    with pytest.raises(OSError):
        s.create_topic("big", partitions=20)
    monkeypatch.undo()
    assert s.topics() == []
    assert not any(n.startswith("big-") for n in os.listdir(s.path))
    s.create_topic("big", partitions=20)
    assert s.partitions("big") == 20


def test_read_only_follower_does_not_see_a_topic_being_created(open_segments, tmp_path):
    s = open_segments()
    _fill(s, n=3)
    s.flush()
    os.makedirs(os.path.join(s.path, fmt.CREATING_DIR), exist_ok=True)
    with open(os.path.join(s.path, fmt.CREATING_DIR, "half"), "w") as f:
        f.write("3\n")
    os.makedirs(os.path.join(s.path, "half-0"))
    with mqstore.open(s.path, read_only=True) as r:
        assert r.topics() == ["t"]


# ----------------------------------------------------------------------------- lost segments
def test_missing_first_segment_is_reported_not_silently_skipped(open_segments, tmp_path):
    """A deleted first segment of a crashed store used to move the log start silently."""
    s = open_segments(segment_bytes=2000)
    vals = _fill(s, n=120)
    img = crash_image(s, str(tmp_path / "img"))
    logs = segment_files(img)
    second = int(os.path.basename(logs[1])[:20])
    for suffix in (".log", ".index", ".timeindex"):
        os.unlink(logs[0][:-4] + suffix)
    (d,) = SegmentsStore.verify_files(img)
    assert (d.kind, d.first_offset, d.records_dropped) == ("corruption", 0, second)
    with pytest.raises(CorruptRecordError, match="missing at the head"):
        open_segments(img, segment_bytes=2000)
    r = open_segments(img, segment_bytes=2000, on_corruption="skip")
    assert r.start_offset("t", 0) == second
    assert [v for _o, v in _all(r, second)] == vals[second:]
    assert r.stats()["recovery"][CORRUPTION_SKIPPED] == 1


def test_retention_writes_the_log_start_before_deleting(open_segments, monkeypatch, tmp_path):
    """A crash between retention's unlinks and its checkpoint must not look like lost data:
    the checkpoint is durable first."""
    s = open_segments(segment_bytes=2000, retention_bytes=4000)
    _fill(s, n=120)
    s.flush()
    img = str(tmp_path / "img")
    from mqstore.engines.segments.segment import LogSegment

    real = LogSegment.delete_files

    def delete_files(self):
        if not os.path.exists(img):  # the crash: at the first unlink
            shutil.copytree(s.path, img)
        return real(self)

    monkeypatch.setattr(LogSegment, "delete_files", delete_files)
    assert s.apply_retention() > 0
    monkeypatch.undo()
    start = s.start_offset("t", 0)
    assert start > 0
    assert SegmentsStore.verify_files(img) == [] or all(
        d.kind == "torn_tail" for d in SegmentsStore.verify_files(img))
    r = open_segments(img, segment_bytes=2000, retention_bytes=4000)
    assert r.start_offset("t", 0) == start
    assert [o for o, _v in _all(r, start)] == list(range(start, 120))


def test_log_start_that_is_not_a_segment_boundary_is_ignored(open_segments, tmp_path):
    """A bit flip turned the log start 0 into 4: it hid records 0..3 with no report."""
    s = open_segments(segment_bytes=2000)
    vals = _fill(s, n=120)
    s.close()
    path = os.path.join(s.path, fmt.LOG_START_OFFSET_CHECKPOINT)
    with open(path, "wb") as f:
        f.write(b"0\n1\nt 0 4\n")
    assert [d.kind for d in SegmentsStore.verify_files(s.path)] == ["metadata"]
    r = open_segments(s.path, segment_bytes=2000)
    assert r.start_offset("t", 0) == 0
    assert [v for _o, v in _all(r)] == vals
    assert r.stats()["recovery"][METADATA_REPAIRED] == 1
    r.close()
    assert SegmentsStore.verify_files(s.path) == []


def test_sync_appends_keep_the_recovery_point_checkpoint_fresh(open_segments, monkeypatch):
    """Under flush="sync" no flush() is called: the group commit writes the checkpoint too
    (at most every CHECKPOINT_INTERVAL_S), else recovery would take synced damage for a
    torn tail."""
    from mqstore.engines.segments import store as store_mod

    monkeypatch.setattr(store_mod, "CHECKPOINT_INTERVAL_S", 0.0)
    s = open_segments(flush="sync")
    s.create_topic("t")
    for i in range(5):
        s.append("t", b"v%d" % i)
    entries = read_checkpoint(os.path.join(s.path, fmt.RECOVERY_POINT_CHECKPOINT))
    assert entries[("t", 0)] == 5


def test_recovery_point_past_the_log_end_is_a_wrong_hint(open_segments, tmp_path):
    """A bit flip raised a recovery-point entry past the end of the log: the checkpoint is a
    hint, so the open goes on (logged and counted) instead of refusing."""
    s = open_segments()
    vals = _fill(s, n=40)
    img = crash_image(s, str(tmp_path / "img"))
    set_recovery_point(img, 44)
    (d,) = SegmentsStore.verify_files(img)
    assert (d.kind, d.records_dropped) == ("metadata", 4)
    r = open_segments(img)
    assert [v for _o, v in _all(r)] == vals
    assert r.stats()["recovery"][METADATA_REPAIRED] == 1
    r.close()
    assert SegmentsStore.verify_files(img) == []


def test_repair_modes_validate_segments_the_default_open_trusts(open_segments):
    """A flipped value byte in an old segment of a cleanly closed store: the default open
    trusts the segment (Kafka's rule) and reads report it; verify reports it; opening with
    on_corruption="skip" (what `mqstore repair` does) finds and repairs it."""
    s = open_segments(segment_bytes=2000)
    vals = _fill(s, n=120)
    s.close()
    log = segment_files(s.path)[1]
    pos, size, base = _batches(log)[2]
    _flip(log, pos + size - 3)
    (d,) = SegmentsStore.verify_files(s.path)
    assert (d.kind, d.first_offset) == ("corruption", base)
    r = open_segments(s.path, segment_bytes=2000)
    with pytest.raises(CorruptRecordError):
        _all(r)
    r.close()
    r = open_segments(s.path, segment_bytes=2000, on_corruption="skip")
    assert r.stats()["recovery"][CORRUPTION_SKIPPED] == 1
    assert [o for o, _v in _all(r)] == [o for o in range(120) if o != base]
    r.close()
    assert SegmentsStore.verify_files(s.path) == []


def test_deleted_newest_segment_of_a_clean_store_is_refused(open_segments, tmp_path):
    """Fuzz finding F1 (segments:fuzz-clean:2026.8): deleting the newest segment's .log of a
    cleanly closed store dropped its records with only a WARNING. Its index files are left:
    evidence that the segment existed, so the loss is corruption, not a wrong hint."""
    path = str(tmp_path / "store")
    s = open_segments(path, segment_bytes=2000)
    vals = _fill(s, n=120)
    s.close()
    logs = segment_files(path)
    last_base = int(os.path.basename(logs[-1])[:20])
    os.unlink(logs[-1])
    before = {p: open(p, "rb").read() for p in segment_files(path)}
    with pytest.raises(CorruptRecordError, match="index files"):
        open_segments(path, segment_bytes=2000)
    assert {p: open(p, "rb").read() for p in segment_files(path)} == before  # unchanged
    damage = SegmentsStore.verify_files(path)
    assert [d.kind for d in damage] == ["corruption"]
    assert damage[0].first_offset == last_base
    r = open_segments(path, segment_bytes=2000, on_corruption="truncate")
    assert [v for _o, v in _all(r)] == vals[:last_base]
    assert r.stats()["recovery"][CORRUPTION_TRUNCATED] == 1

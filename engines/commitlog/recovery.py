"""CommitLog recovery: validate the log from a start file, classify what is bad, apply the
store's ``on_corruption`` (RocketMQ ``recoverNormally`` / ``recoverAbnormally`` plus
mqstore's damage model, ``mqstore/damage.py``).

A message is sound when its magic (V1 or V2), TOTALSIZE, every length (host fields by
SYSFLAG, body, topic, properties), and its CRCs check: the record CRC of the ``__CRC32#``
property when the message carries one, else the body CRC. Once a message with a record CRC
has been seen, every later one must carry one too (mqstore writes it on every message; a
message without it has lost its tail). ``native.scan_commitlog`` walks V1 and V2 messages
(IPv4 or IPv6 hosts) and checks their CRCs in C (the record CRC, or the body CRC of a message
without one); the "every later message carries one" rule is numpy here, and the message the
walk stops at is classified by ``message.check`` in Python.

The first bad message is classified:

- **torn tail**: the store was not closed cleanly (``abort`` exists), the damage is not
  before the checkpoint's flushed CommitLog offset, and no sound message after it was stored
  before the checkpoint's ``physicMsgTimestamp`` (the store time of the last flush): it is
  after the last sync point, so the log is truncated there;
- **corruption** otherwise (a cleanly closed store syncs everything): ``on_corruption``
  "raise" refuses the open (file, position, how many records follow), "truncate" cuts the
  log there, "skip" keeps every sound message after it: recovery *resyncs* at the next
  position where a message validates and says it is there (PHYSICALOFFSET equal to its own
  offset), and the damaged range is remembered in ``CommitLog.skipped`` so that the
  dispatcher never indexes it. Its queue offsets read as gaps (see docs/commitlog.md).
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from mqstore import native
from mqstore.api import Damage
from mqstore.storedir import write_json_atomic
from mqstore.damage import (CORRUPTION_SKIPPED, CORRUPTION_TRUNCATED, TORN_TAIL, RecoveryLog,
                            refuse_corruption)

from . import format as fmt
from . import message as msgcodec

if TYPE_CHECKING:
    from .commitlog import CommitLog
    from .mapped_file import MappedFile

_CRC_LEN = fmt.CRC32_RESERVED_LEN
#: the first three bytes of both message magics (V1 0xDAA320A7, V2 0xDAA320AB)
_MAGIC_PREFIX = fmt.MESSAGE_MAGIC_V1.to_bytes(4, "big")[:3]
_BLANK_MAGIC = fmt.BLANK_MAGIC.to_bytes(4, "big")


class RecoveryResult(NamedTuple):
    """Where the recovery scan started and ended, and the damage it found."""

    start_offset: int
    valid_end: int
    damage: list[Damage]
    scanned_messages: int
    #: the first damaged range skipped (on_corruption="skip"), None if none: the derived
    #: files must be rebuilt from there
    skipped_from: int | None = None
    #: the first scanned message stored at or after ``covered_timestamp`` (the checkpoint):
    #: the derived files are durable for every message before it; None if every scanned
    #: message is older
    uncovered_from: int | None = None


class _State:
    """What the walk carries along: messages seen, the newest store time, the CRC rule."""

    __slots__ = ("count", "last_ts", "crc_required", "first_crc", "covered_ts",
                 "uncovered_from")

    def __init__(self, crc_required: bool, first_crc: int | None, covered_ts: int = 0):
        self.count = 0
        self.last_ts = 0
        self.crc_required = crc_required
        self.first_crc = first_crc
        self.covered_ts = covered_ts
        self.uncovered_from: int | None = None


#: bytes of a CommitLog file scanned per native call during recovery
SCAN_WINDOW = 8 << 20


def _first_missing_record_crc(mm, positions: np.ndarray, sizes: np.ndarray, st: _State,
                              file_from: int) -> tuple[int, str | None]:
    """The record CRC rule over messages the native scan accepted (the scan itself checked
    each ``__CRC32#`` present): from the first message that carries one, every later one
    must (``native.record_crc_rule``: one C pass, no per-message Python). Returns (index of
    the first message missing it or -1, its problem) and updates the rule in ``st``."""
    bad, first = native.record_crc_rule(mm, positions, sizes, fmt.MSG_FIXED_OVERHEAD + _CRC_LEN,
                                        _CRC_LEN, st.crc_required)
    if first is not None:
        st.crc_required = True
        st.first_crc = file_from + int(positions[first])
    if bad >= 0:
        return bad, "the __CRC32# property is missing (torn or overwritten properties)"
    return -1, None


def walk(cl: "CommitLog", offset: int, st: _State) -> tuple[int, str | None]:
    """Validate messages from commitlog ``offset``. Returns (offset, None) at the end of the
    log, or (offset of the first bad message, what is wrong with it)."""
    files = cl.files
    if not files:
        return offset, None
    idx = (offset - files[0].file_from_offset) // cl.file_size
    pos = offset - files[idx].file_from_offset if idx < len(files) else 0
    whole = False  # scan to the end of the file (a message larger than a window)
    while idx < len(files):
        mf = files[idx]
        mm = mf.mm
        # a window at a time: the columns of a 1 GiB file would be 10^7 rows
        stop = cl.file_size if whole else min(cl.file_size, pos + SCAN_WINDOW)
        scan = native.scan_commitlog(mm, pos, stop)
        positions = scan.positions
        if len(positions):
            bad, problem = _first_missing_record_crc(mm, positions, scan.sizes, st,
                                                 mf.file_from_offset)
            ok = len(positions) if bad < 0 else bad
            st.count += ok
            if ok:
                st.last_ts = int(scan.store_timestamps[ok - 1])
                if st.uncovered_from is None and st.last_ts >= st.covered_ts:
                    first = int(np.argmax(scan.store_timestamps[:ok] >= st.covered_ts))
                    st.uncovered_from = mf.file_from_offset + int(positions[first])
            if bad >= 0:
                return mf.file_from_offset + int(positions[bad]), problem
        q = scan.valid_end
        if stop < cl.file_size and (scan.status == native.SCAN_OK or (
                scan.status in (native.SCAN_TORN, native.SCAN_ZERO) and (
                    stop - q < fmt.MSG_FIXED_OVERHEAD
                    or fmt.TOTALSIZE.unpack_from(mm, q)[0] > stop - q))):
            # the window ended, not the data (a message crossing its end is read by the
            # next window, which starts at that message; one larger than a window by a
            # scan to the end of the file)
            whole = q == pos
            pos = q
            continue
        whole = False
        if scan.status in (native.SCAN_BLANK, native.SCAN_OK):
            if scan.status == native.SCAN_BLANK:
                left = fmt.BLANK.unpack_from(mm, q)[0]
                if left != cl.file_size - q:
                    return mf.file_from_offset + q, (
                        f"end-of-file blank says {left} bytes are left, {cl.file_size - q} are")
            idx += 1
            pos = 0
            continue
        if scan.status == native.SCAN_ZERO:
            nxt = resync(cl, mf.file_from_offset + q, st.crc_required)
            if nxt is None:
                return mf.file_from_offset + q, None  # the end of the data
            return mf.file_from_offset + q, (
                f"zeros where a message should be, with messages after them (at {nxt})")
        # torn or corrupt for the native walk: message.check names the problem
        problem = msgcodec.check(mm, q, cl.file_size, st.crc_required)
        if problem is not None:
            return mf.file_from_offset + q, problem
        size = fmt.TOTALSIZE.unpack_from(mm, q)[0]
        st.count += 1
        st.last_ts = msgcodec.store_timestamp(mm, q, cl.file_size)
        if st.uncovered_from is None and st.last_ts >= st.covered_ts:
            st.uncovered_from = mf.file_from_offset + q
        if not st.crc_required and msgcodec.has_record_crc(mm, q, size):
            st.crc_required = True
            st.first_crc = mf.file_from_offset + q
        pos = q + size
    return files[-1].file_end_offset, None


def _candidates(mf: "MappedFile", pos: int):
    """Positions from ``pos`` where a message or a blank marker may start (its magic at +4),
    in order."""
    mm = mf.mm
    for start, end in mf.data_ranges(pos + 4):
        i = start
        while True:
            a = mm.find(_MAGIC_PREFIX, i, end)
            b = mm.find(_BLANK_MAGIC, i, end)
            hits = [h for h in (a, b) if h >= 0]
            if not hits:
                break
            h = min(hits)
            yield h - 4
            i = h + 1


def _sound_at(cl: "CommitLog", mf: "MappedFile", pos: int, crc_required: bool) -> bool:
    """A resync point: a sound message that says it is at this offset, or a blank marker
    that ends the file exactly."""
    if pos < 0 or pos + 8 > cl.file_size:
        return False
    size, magic = fmt.TOTALSIZE_AND_MAGIC.unpack_from(mf.mm, pos)
    if magic == fmt.BLANK_MAGIC:
        return size == cl.file_size - pos
    return msgcodec.check(mf.mm, pos, cl.file_size, crc_required,
                          physical_offset=mf.file_from_offset + pos) is None


def resync(cl: "CommitLog", offset: int, crc_required: bool) -> int | None:
    """The commitlog offset of the next resync point after ``offset`` (LevelDB's reader
    skips to the next block; a commitlog has none, so look for a message that validates and
    whose PHYSICALOFFSET is its own offset), or None if nothing sound follows."""
    files = cl.files
    idx = (offset - files[0].file_from_offset) // cl.file_size
    pos = offset - files[idx].file_from_offset + 1
    while idx < len(files):
        mf = files[idx]
        if pos == 0 and _sound_at(cl, mf, 0, crc_required):
            return mf.file_from_offset
        for cand in _candidates(mf, pos):
            if cand >= pos and _sound_at(cl, mf, cand, crc_required):
                return mf.file_from_offset + cand
        idx += 1
        pos = 0
    return None


def boundary_problem(cl: "CommitLog", offset: int) -> str | None:
    """Why commitlog ``offset`` is not a place a scan may start (None if it is): past the
    last file, or not the start of a file, of a sound message that says it is there, of
    the blank that ends its file, or of zeros with no sound message after them (the end
    of the data). Used to check the checkpoint's durable offset before trusting it."""
    files = cl.files
    if offset > files[-1].file_end_offset:
        return f"is past the end of the CommitLog files ({files[-1].file_end_offset})"
    if offset == files[-1].file_end_offset:
        return None
    mf = files[(offset - files[0].file_from_offset) // cl.file_size]
    pos = offset - mf.file_from_offset
    if pos == 0:
        return None
    if pos + 8 > cl.file_size:
        return "is inside the end-of-file room, not at a message"
    size, magic = fmt.TOTALSIZE_AND_MAGIC.unpack_from(mf.mm, pos)
    if size == 0 and magic == 0:
        if resync(cl, offset, True) is None:
            return None
        return "holds zeros with messages after them"
    if _sound_at(cl, mf, pos, offset >= cl.crc_required_from):
        return None
    return "is not at a sound message"


def _plausible_headers(cl: "CommitLog", start: int, end: int) -> int:
    """How many message headers in [start, end) say they are where they are (an estimate of
    the records a skipped range held; at least 1)."""
    n = 0
    for mf in cl.files:
        if mf.file_end_offset <= start or mf.file_from_offset >= end:
            continue
        lo = max(start, mf.file_from_offset) - mf.file_from_offset
        hi = min(end, mf.file_end_offset) - mf.file_from_offset
        for cand in _candidates(mf, lo - 4 if lo >= 4 else 0):
            if cand >= hi:
                break
            if lo <= cand and cand + 36 <= cl.file_size and fmt.PHYSICALOFFSET.unpack_from(
                    mf.mm, cand + fmt.POS_PHYSICALOFFSET)[0] == mf.file_from_offset + cand:
                n += 1
    return max(n, 1)


_SKIP_TOPIC = fmt.SKIPPED_TOPIC.encode("ascii")
#: the smallest skip marker: a message with an empty body and only the record CRC
SKIP_MARKER_MIN = fmt.MSG_FIXED_OVERHEAD + len(_SKIP_TOPIC) + fmt.CRC32_RESERVED_LEN


def skip_marker(physical_offset: int, size: int, store_timestamp: int) -> bytes:
    """A sound message of exactly ``size`` bytes (>= SKIP_MARKER_MIN) on the skip topic."""
    n = size - SKIP_MARKER_MIN
    body = (fmt.SKIPPED_BODY + bytes(max(0, n - len(fmt.SKIPPED_BODY))))[:n]
    return bytes(native.cl_encode(_SKIP_TOPIC, body, [0], [len(body)], b"", [0], [0], b"", 0,
                                  [0], [0], [store_timestamp], physical_offset,
                                  store_timestamp))


def write_skip_markers(cl: "CommitLog", start: int, end: int,
                       store_timestamp: int) -> list[tuple[int, int]]:
    """Overwrite the damaged range [start, end) with skip markers (a blank marker where it
    reaches the end of a file), synced, so that the store is sound from now on and the
    skip is never redone. Returns the parts that could not be covered (too small for a
    marker): they stay in ``CommitLog.skipped`` for this process."""
    left: list[tuple[int, int]] = []
    for mf in cl.files:
        lo, hi = max(start, mf.file_from_offset), min(end, mf.file_end_offset)
        if lo >= hi:
            continue
        pos, stop = lo - mf.file_from_offset, hi - mf.file_from_offset
        if stop == cl.file_size and stop - pos >= fmt.END_FILE_MIN_BLANK_LENGTH and (
                stop - pos < SKIP_MARKER_MIN or pos > 0):
            mf.write_at(pos, fmt.BLANK.pack(stop - pos, fmt.BLANK_MAGIC))
        elif stop - pos >= SKIP_MARKER_MIN:
            mf.write_at(pos, skip_marker(lo, stop - pos, store_timestamp))
        else:
            left.append((lo, hi))
            continue
        mf.force()
    return left


def _crc_rule_before(cl: "CommitLog", start_index: int) -> int | None:
    """The start of the oldest file up to ``start_index`` whose first message carries a
    record CRC (every message from there must), or None."""
    for mf in cl.files[:start_index + 1]:
        try:
            size = msgcodec.layout(mf.mm, 0, cl.file_size).size
        except msgcodec.BadMessage:
            continue
        if msgcodec.has_record_crc(mf.mm, 0, size):
            return mf.file_from_offset
    return None


def _file_at(cl: "CommitLog", offset: int) -> "MappedFile":
    files = cl.files
    idx = min((offset - files[0].file_from_offset) // cl.file_size, len(files) - 1)
    return files[idx]


def read_log_start(root: str) -> int | None:
    """The CommitLog start retention recorded (``logStart.json`` in the store root), None
    if there is none or it cannot be read (then it is written again)."""
    try:
        with open(os.path.join(root, fmt.LOG_START_FILE), "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
        value = doc["commitlogMinOffset"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def write_log_start(root: str, offset: int) -> None:
    """Record (atomically, durably) that the CommitLog starts at ``offset``."""
    write_json_atomic(os.path.join(root, fmt.LOG_START_FILE), {"commitlogMinOffset": offset})


def recover(cl: "CommitLog", start_index: int, *, policy: str, clean: bool,
            sync_timestamp: int, log: RecoveryLog,
            covered_timestamp: int = 0, sync_offset: int = 0) -> RecoveryResult:
    """Validate the log from file ``start_index``, apply the damage model (module
    docstring), truncate the log at its new end and set ``cl.skipped`` and
    ``cl.crc_required_from``. Raises CorruptRecordError (``policy="raise"``) before changing
    anything. ``uncovered_from`` in the result: the first message stored at or after
    ``covered_timestamp``. Damage before ``sync_offset`` (the checkpoint's flushed
    CommitLog offset) is below the sync point whatever the timestamps say."""
    damage: list[Damage] = []
    cl.skipped = []
    if not cl.files:
        cl.max_offset = cl.flushed_offset = 0
        cl.crc_required_from = 0
        return RecoveryResult(0, 0, damage, 0)
    first_crc = _crc_rule_before(cl, start_index)
    st = _State(first_crc is not None, first_crc, covered_timestamp)
    start = cl.files[start_index].file_from_offset
    offset = start
    skipped: list[tuple[int, int, int]] = []
    actions: list[tuple] = []
    while True:
        bad, problem = walk(cl, offset, st)
        if problem is None:
            valid_end = bad
            break
        mf = _file_at(cl, bad)
        pos = bad - mf.file_from_offset
        nxt = resync(cl, bad, st.crc_required)
        follow = _State(st.crc_required, st.first_crc)
        follow_end = walk(cl, nxt, follow)[0] if nxt is not None else bad
        after = follow.count
        ts_after = msgcodec.store_timestamp(_file_at(cl, nxt).mm, nxt - _file_at(
            cl, nxt).file_from_offset, cl.file_size) if nxt is not None else 0
        below_sync = clean or 0 < ts_after < sync_timestamp or bad < sync_offset
        # bytes dropped: up to the end of the sound data after the damage, else the
        # damaged message itself (when its TOTALSIZE is plausible)
        size = fmt.TOTALSIZE.unpack_from(mf.mm, pos)[0] if pos + 4 <= cl.file_size else 0
        log_end = max(follow_end, bad + (size if 0 < size <= cl.file_size - pos else 0))
        if not below_sync:
            detail = f"torn tail (after the last sync point): {problem}"
            damage.append(Damage(mf.path, pos, detail, kind="torn_tail", records_dropped=after))
            actions.append((TORN_TAIL, mf.path, pos, detail, log_end - bad, after))
            valid_end = bad
            break
        detail = f"corrupt message: {problem}"
        refuse_corruption(policy, mf.path, pos, detail, after)
        if policy == "truncate" or nxt is None:
            damage.append(Damage(mf.path, pos, detail + "; the log was cut there",
                                 records_dropped=after))
            actions.append((CORRUPTION_TRUNCATED, mf.path, pos, detail, log_end - bad,
                            after + 1))
            valid_end = bad
            break
        lost = _plausible_headers(cl, bad, nxt)
        damage.append(Damage(mf.path, pos, detail + f"; skipped to {nxt}", records_dropped=lost))
        actions.append((CORRUPTION_SKIPPED, mf.path, pos, detail + f"; resynced at {nxt}",
                        nxt - bad, lost))
        skipped.append((bad, nxt, st.last_ts))
        offset = nxt
    for kind, path, pos, detail, nbytes, nrecs in actions:
        log.record(kind, path, pos, detail, bytes_dropped=nbytes, records_dropped=nrecs)
    skips = skipped
    skipped = [r for a, b, ts in skips for r in write_skip_markers(cl, a, b, ts)]
    cl.truncate_to(valid_end)
    cl.skipped = skipped
    cl.crc_required_from = st.first_crc if st.first_crc is not None else valid_end
    last_ts = st.last_ts
    if last_ts == 0 and cl.files and start_index > 0 and start_index < len(cl.files):
        last_ts = msgcodec.store_timestamp(cl.files[start_index].mm, 0, cl.file_size)
    cl.last_store_timestamp = cl.flushed_store_timestamp = last_ts
    uncovered = st.uncovered_from if st.uncovered_from is None or \
        st.uncovered_from < valid_end else None
    return RecoveryResult(start, valid_end, damage, st.count,
                          skips[0][0] if skips else None, uncovered)

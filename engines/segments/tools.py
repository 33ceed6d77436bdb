"""Offline tools for a segments store: ``inspect_files`` (Kafka's ``DumpLogSegments``) and
``verify_files`` (every batch with the scan recovery uses, ``log_scan.scan_log``; every index
against its log; the checkpoints), one ``Damage`` per root cause. Both only read: they work on
a closed store and alongside a live writer (a batch being written shows as a torn tail)."""
from __future__ import annotations

import bisect
import os
from collections.abc import Iterator

import numpy as np

from mqstore.api import Damage
from mqstore.engines.segments import format as fmt
from mqstore.engines.segments.checkpoint import read_checkpoint
from mqstore.engines.segments.log_scan import LogScan, scan_log
from mqstore.engines.segments.partition_log import parse_log_dir_name
from mqstore.engines.segments.record_batch import batch_is_valid, read_header
from mqstore.errors import CorruptRecordError

_OFFSET_DTYPE = np.dtype([("relative_offset", ">i4"), ("position", ">i4")])
_TIME_DTYPE = np.dtype([("timestamp", ">i8"), ("relative_offset", ">i4")])


def _index_entries(path: str, dtype: np.dtype) -> np.ndarray | None:
    """Entries of an index file (the non-zero prefix if it was never trimmed); None if absent."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    n = len(data) // dtype.itemsize
    raw = np.frombuffer(data, dtype=np.uint8, count=n * dtype.itemsize).reshape(n, dtype.itemsize)
    zero = np.flatnonzero(~raw.any(axis=1))
    n = int(zero[0]) if zero.size else n
    return np.frombuffer(data, dtype=dtype, count=n).copy()


def _partition_dirs(root: str) -> list[str]:
    out = []
    for e in sorted(os.scandir(root), key=lambda e: e.name):
        if e.is_dir() and parse_log_dir_name(e.name):
            out.append(e.path)
    return out


def _segment_bases(pdir: str) -> list[int]:
    return sorted(int(n[: -len(fmt.LOG_SUFFIX)]) for n in os.listdir(pdir)
                  if n.endswith(fmt.LOG_SUFFIX) and n[: -len(fmt.LOG_SUFFIX)].isdigit())


def _orphan_index_files(pdir: str, bases: list[int], first: int) -> list[str]:
    """Index files of a segment at or after offset ``first`` whose .log is gone."""
    have = set(bases)
    out = []
    for n in sorted(os.listdir(pdir)):
        stem, _, suffix = n.partition(".")
        if stem.isdigit() and int(stem) >= first and int(stem) not in have and \
                "." + suffix in (fmt.INDEX_SUFFIX, fmt.TIME_INDEX_SUFFIX, fmt.TXN_INDEX_SUFFIX):
            out.append(n)
    return out


# ----- inspect -----
def _dump_log(path: str) -> Iterator[str]:
    yield f"Dumping {path}"
    base = os.path.basename(path)[: fmt.FILENAME_DIGITS]
    yield f"Starting offset: {int(base) if base.isdigit() else '?'}"
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        pos = 0
        while pos + fmt.RECORD_BATCH_OVERHEAD <= size:
            h = read_header(os.pread(fd, fmt.RECORD_BATCH_OVERHEAD, pos))
            if h.magic != fmt.MAGIC or h.size < fmt.RECORD_BATCH_OVERHEAD:
                yield f"corrupt batch header at position: {pos} (magic {h.magic}, size {h.size})"
                return
            if pos + h.size > size:
                break
            valid = batch_is_valid(os.pread(fd, h.size, pos))
            ts_type = "LogAppendTime" if h.attributes & fmt.TIMESTAMP_TYPE_MASK else "CreateTime"
            last_seq = h.base_sequence + h.last_offset_delta if h.base_sequence >= 0 else -1
            yield (f"baseOffset: {h.base_offset} lastOffset: {h.last_offset} count: "
                   f"{h.records_count} baseSequence: {h.base_sequence} lastSequence: {last_seq} "
                   f"producerId: {h.producer_id} producerEpoch: {h.producer_epoch} "
                   f"partitionLeaderEpoch: {h.partition_leader_epoch} isTransactional: "
                   f"{str(bool(h.attributes & fmt.TRANSACTIONAL_FLAG_MASK)).lower()} isControl: "
                   f"{str(h.is_control).lower()} position: {pos} {ts_type}: {h.max_timestamp} "
                   f"size: {h.size} magic: {h.magic} compresscodec: "
                   f"{fmt.CODEC_NAMES.get(h.codec, h.codec)} crc: {h.crc} "
                   f"isvalid: {str(valid).lower()}")
            pos += h.size
        if pos < size:
            yield f"torn tail: {size - pos} bytes after position {pos} hold no whole batch"


def _dump_index(path: str) -> Iterator[str]:
    yield f"Dumping {path}"
    base = int(os.path.basename(path)[: fmt.FILENAME_DIGITS])
    if path.endswith(fmt.TIME_INDEX_SUFFIX):
        arr = _index_entries(path, _TIME_DTYPE)
        for ts, rel in ([] if arr is None else arr.tolist()):
            yield f"timestamp: {ts} offset: {base + rel}"
    else:
        arr = _index_entries(path, _OFFSET_DTYPE)
        for rel, pos in ([] if arr is None else arr.tolist()):
            yield f"offset: {base + rel} position: {pos}"


def _dump_file(path: str) -> Iterator[str]:
    if path.endswith(fmt.LOG_SUFFIX):
        yield from _dump_log(path)
    elif path.endswith((fmt.INDEX_SUFFIX, fmt.TIME_INDEX_SUFFIX)):
        yield from _dump_index(path)
    elif os.path.basename(path) in (fmt.RECOVERY_POINT_CHECKPOINT, fmt.LOG_START_OFFSET_CHECKPOINT):
        yield f"Dumping {path}"
        try:
            entries = read_checkpoint(path)
        except CorruptRecordError as exc:
            yield f"unreadable: {exc}"
            return
        for (t, p), o in sorted(entries.items()):
            yield f"{t} {p} {o}"
    else:
        yield f"Skipping {path} (not a segment, index or checkpoint file)"


def inspect_files(root: str, target: str | None = None) -> Iterator[str]:
    """Lines like Kafka's ``kafka-dump-log.sh``: per batch baseOffset, lastOffset, count,
    position, CreateTime, size, crc, isvalid; index entries; checkpoints. ``target`` is a
    partition directory or a file (relative to ``root`` or absolute); default: everything."""
    if target is not None:
        path = target if os.path.isabs(target) else os.path.join(root, target)
        if os.path.isdir(path):
            dirs = [path]
        else:
            yield from _dump_file(path)
            return
    else:
        dirs = _partition_dirs(root)
        for name in (fmt.RECOVERY_POINT_CHECKPOINT, fmt.LOG_START_OFFSET_CHECKPOINT):
            if os.path.exists(os.path.join(root, name)):
                yield from _dump_file(os.path.join(root, name))
        yield f"clean shutdown marker: {os.path.exists(os.path.join(root, fmt.CLEAN_SHUTDOWN_FILE))}"
    for d in dirs:
        for base in _segment_bases(d):
            prefix = os.path.join(d, f"{base:0{fmt.FILENAME_DIGITS}d}")
            for suffix in (fmt.LOG_SUFFIX, fmt.INDEX_SUFFIX, fmt.TIME_INDEX_SUFFIX):
                if os.path.exists(prefix + suffix):
                    yield from _dump_file(prefix + suffix)


# ----- verify -----
def _scan_path(path: str, base: int) -> LogScan:
    with open(path, "rb") as f:
        return scan_log(f.fileno(), base)


def _first_bad_offset_entry(idx: np.ndarray, base: int, rows, valid_end: int,
                            damaged: bool) -> tuple[int, str] | None:
    """(slot, problem) of the first ``.index`` entry that does not match the intact batches
    (entries past damage in the log are its consequence, not another root cause)."""
    starts = {r[0]: r for r in rows}
    seg_last = rows[-1][3] if rows else base - 1
    prev = (-1, -1)
    for slot, (rel, pos) in enumerate(idx.tolist()):
        if damaged and pos >= valid_end:
            return None
        row = starts.get(pos)
        if rel <= prev[0] or pos <= prev[1]:
            return slot, f"entry ({base + rel}, {pos}) is not increasing"
        if row is None:
            return slot, (f"entry ({base + rel}, {pos}) does not point at a batch"
                          + (" (past the end of the log)" if pos >= valid_end else ""))
        if not row[2] <= base + rel <= seg_last:
            return slot, f"entry offset {base + rel} is not held by the batch at {pos}"
        prev = (rel, pos)
    return None


def _first_bad_time_entry(tidx: np.ndarray, base: int, rows, damaged: bool
                          ) -> tuple[int, str] | None:
    running, run_max = [], -1
    for r in rows:
        run_max = max(run_max, r[4])
        running.append((r[2], r[3], run_max))
    lasts = [x[1] for x in running]
    prev_ts, prev_rel = -2, -1
    for slot, (ts, rel) in enumerate(tidx.tolist()):
        off = base + rel
        i = bisect.bisect_left(lasts, off)
        holder = running[i] if i < len(running) and running[i][0] <= off else None
        if ts <= prev_ts or rel < prev_rel:
            return slot, f"entry ({ts}, {off}) is not increasing"
        if holder is None:
            if damaged:
                return None
            return slot, f"entry offset {off} is past the end of the log"
        if holder[2] != ts:
            return slot, (f"entry timestamp {ts} is not the largest timestamp up to offset "
                          f"{off} ({holder[2]})")
        prev_ts, prev_rel = ts, rel
    return None


def _verify_indexes(prefix: str, base: int, scan: LogScan) -> list[Damage]:
    """One "derived" Damage per index file that does not match its log (the first bad
    entry, and how many are bad); recovery rebuilds them."""
    out: list[Damage] = []
    damaged = bool(scan.damaged)
    rows = scan.rows_before(scan.valid_end) if damaged else scan.rows
    for suffix, dtype, size, check in (
            (fmt.INDEX_SUFFIX, _OFFSET_DTYPE, fmt.OFFSET_INDEX_ENTRY_SIZE,
             lambda a: _first_bad_offset_entry(a, base, rows, scan.valid_end, damaged)),
            (fmt.TIME_INDEX_SUFFIX, _TIME_DTYPE, fmt.TIME_INDEX_ENTRY_SIZE,
             lambda a: _first_bad_time_entry(a, base, rows, damaged))):
        path = prefix + suffix
        arr = _index_entries(path, dtype)
        if arr is None:
            if scan.rows:
                out.append(Damage(path, 0, f"{suffix[1:]} file is missing (rebuilt from the log "
                                  "at the next open)", kind="derived"))
            continue
        bad = check(arr)
        length = os.path.getsize(path)
        if bad is None and length % size:
            bad = (length // size, f"file is {length} bytes long, not a multiple of {size}")
        if bad is not None:
            out.append(Damage(path, bad[0] * size, f"{bad[1]} (rebuilt from the log at the next "
                              "open)", kind="derived", first_offset=None))
    return out


def _verify_partition(pdir: str, durable: int | None, synced_to: int,
                      log_start: int | None = None) -> list[Damage]:
    """The damage of one partition, one per root cause, classified as recovery would:
    damage whose first lost offset is at or past ``durable`` (None: a clean shutdown) is a
    torn tail and ends the partition; anything else is corruption."""
    bases = _segment_bases(pdir)
    scans = [_scan_path(os.path.join(pdir, f"{b:0{fmt.FILENAME_DIGITS}d}{fmt.LOG_SUFFIX}"), b)
             for b in bases]
    out: list[Damage] = []
    if log_start is not None and bases and log_start < bases[0]:
        out.append(Damage(os.path.join(pdir, f"{bases[0]:0{fmt.FILENAME_DIGITS}d}"
                                       f"{fmt.LOG_SUFFIX}"), 0,
                          f"the log starts at offset {bases[0]} but the log-start checkpoint "
                          f"says {log_start}: segments are missing at the head",
                          kind="corruption", records_dropped=bases[0] - log_start,
                          first_offset=log_start))
    if not bases:
        lost = max(synced_to - (log_start or 0), 0)
        return [Damage(pdir, 0, f"the partition holds no segment (offsets up to {synced_to - 1} "
                       "were synced)" if lost else "the partition holds no segment",
                       kind="torn_tail" if durable is not None and not lost else "corruption",
                       records_dropped=lost, first_offset=log_start or 0)]
    if log_start is not None and log_start > bases[0] and log_start not in bases:
        out.append(Damage(pdir, 0, f"log-start checkpoint entry {log_start} is not a segment "
                          f"boundary (the next open starts the log at {bases[0]})",
                          kind="metadata"))
    held: list[Damage] = []  # index entries past the end of a log: a consequence of log damage
    expect: int | None = None  # where the previous segment's chain ended (None: damage)

    def seen_after(i: int, position: int) -> int | None:
        for sc in reversed(scans[i + 1:]):
            if sc.rows:
                return sc.rows[-1][3]
        rows = scans[i].rows
        return rows[-1][3] if rows and rows[-1][0] >= position else None

    def dropped(first: int, i: int, position: int) -> int:
        last = seen_after(i, position)
        return 0 if last is None else last - first + 1

    for i, (base, scan) in enumerate(zip(bases, scans)):
        prefix = os.path.join(pdir, f"{base:0{fmt.FILENAME_DIGITS}d}")
        log_path = prefix + fmt.LOG_SUFFIX
        later = sum(sc.records for sc in scans[i + 1:])
        if expect is not None and base != expect:
            what = "gap" if base > expect else "overlap"
            problem = (f"segment starts at offset {base} but the previous one ends at "
                       f"{expect - 1} (offset {what})")
            if durable is not None and expect >= durable:
                out.append(Damage(log_path, 0, problem + "; torn tail: the previous segment "
                                  "lost its unsynced tail", kind="torn_tail",
                                  records_dropped=dropped(expect, i - 1, 1 << 62),
                                  first_offset=expect))
                return out
            out.append(Damage(log_path, 0, problem, kind="corruption",
                              records_dropped=base - expect if what == "gap" else None,
                              first_offset=expect))
        else:  # the chain holds: entries past the end were not explained by a lost tail
            out.extend(held)
        held = []
        for d in scan.damaged:
            after = scan.records_after(d.start)
            if durable is not None and d.first_offset >= durable:
                out.append(Damage(log_path, d.start, f"torn tail: {d.detail}", kind="torn_tail",
                                  records_dropped=dropped(d.first_offset, i, d.start),
                                  first_offset=d.first_offset))
                return out
            lost = d.offsets_lost
            if lost is None and i + 1 < len(bases):
                lost = bases[i + 1] - d.first_offset
            out.append(Damage(log_path, d.start, f"{d.detail}; damage below the last sync "
                              f"point, {after + later} intact records follow it",
                              kind="corruption", records_dropped=lost,
                              first_offset=d.first_offset))
        for dmg in _verify_indexes(prefix, base, scan):
            (held if "past the end" in dmg.problem else out).append(dmg)
        ends_damaged = bool(scan.damaged) and scan.damaged[-1].next_base is None
        expect = None if ends_damaged else (scan.rows[-1][3] + 1 if scan.rows else base)
    if expect is not None and bases and synced_to > expect and \
            not any(d.kind != "derived" for d in out):
        last = os.path.join(pdir, f"{bases[-1]:0{fmt.FILENAME_DIGITS}d}{fmt.LOG_SUFFIX}")
        where = (f"the log ends at offset {expect - 1} but the recovery-point checkpoint says "
                 f"offsets up to {synced_to - 1} were synced")
        orphans = _orphan_index_files(pdir, bases, expect)
        if held or orphans:  # the indexes saw the lost end too: synced records are gone
            why = (f"; the index files {', '.join(orphans)} of a later segment remain, its "
                   "log is gone" if orphans else " and the index points past the end of the log")
            out.append(Damage(last, scans[-1].file_size, where + why, kind="corruption",
                              records_dropped=synced_to - expect, first_offset=expect))
        else:  # as the open does: the checkpoint entry is taken to be wrong
            out.append(Damage(last, scans[-1].file_size, where + " (the checkpoint entry, or "
                              "records lost at the end)", kind="metadata",
                              records_dropped=synced_to - expect, first_offset=expect))
    else:
        out.extend(held)
    return out


def _read_checkpoint_hint(path: str, damage: list[Damage]) -> dict | None:
    try:
        return read_checkpoint(path)
    except CorruptRecordError as exc:
        damage.append(Damage(path, 0, f"{exc}; ignored at the next open (every log is then "
                             "validated from its start) and rewritten", kind="metadata"))
        return None


def verify_files(root: str) -> list[Damage]:
    """Check every batch (size, magic, CRC-32C, the offset chain inside and between
    segments), every index against its log, and the checkpoints; return one Damage per root
    cause (empty when sound), classified as the next open would: a torn tail (after the
    recovery point, no clean-shutdown marker), corruption, "derived" (an index; rebuilt)
    or "metadata" (a checkpoint or an unfinished ``create_topic``). Read-only."""
    damage: list[Damage] = []
    clean = os.path.exists(os.path.join(root, fmt.CLEAN_SHUTDOWN_FILE))
    points = _read_checkpoint_hint(os.path.join(root, fmt.RECOVERY_POINT_CHECKPOINT), damage)
    starts = _read_checkpoint_hint(os.path.join(root, fmt.LOG_START_OFFSET_CHECKPOINT), damage)
    try:
        creating = set(os.listdir(os.path.join(root, fmt.CREATING_DIR)))
    except (FileNotFoundError, NotADirectoryError):
        creating = set()
    for topic in sorted(creating):
        damage.append(Damage(os.path.join(root, fmt.CREATING_DIR, topic), 0,
                             f"create_topic({topic!r}) did not finish; the next open removes "
                             "its partitions", kind="metadata"))
    for d in _partition_dirs(root):
        parsed = parse_log_dir_name(os.path.basename(d))
        assert parsed is not None
        if parsed[0] in creating:
            continue
        synced = (points or {}).get(parsed, 0)
        damage.extend(_verify_partition(d, None if clean else synced, synced,
                                        None if starts is None else starts.get(parsed, 0)))
    return damage

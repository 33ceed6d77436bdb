"""Offline tools for a segments store: ``inspect_files`` (Kafka's ``DumpLogSegments``) and
``verify_files`` (every batch CRC, every index entry). Both only read: they work on a closed
store and alongside a live writer (a batch being written shows as a torn tail)."""
from __future__ import annotations

import bisect
import os
from collections.abc import Iterator

import numpy as np

from mqstore import native
from mqstore.api import Damage
from mqstore.engines.segments import format as fmt
from mqstore.engines.segments.checkpoint import read_checkpoint
from mqstore.engines.segments.partition_log import parse_log_dir_name
from mqstore.engines.segments.record_batch import batch_is_valid, read_header
from mqstore.errors import CorruptRecordError

_CHUNK = 8 * 1024 * 1024
_OFFSET_DTYPE = np.dtype([("relative_offset", ">i4"), ("position", ">i4")])
_TIME_DTYPE = np.dtype([("timestamp", ">i8"), ("relative_offset", ">i4")])


def scan_file(path: str) -> tuple[list[tuple[int, int, int, int, int]], int, int, int]:
    """Validate every batch of a ``.log``: ``(rows, valid_end, status, file_size)`` with rows
    ``(position, size, base_offset, last_offset, max_timestamp)`` and a ``native.SCAN_*``
    status for where it stopped."""
    rows: list[tuple[int, int, int, int, int]] = []
    with open(path, "rb") as f:
        fd = f.fileno()
        file_size = os.fstat(fd).st_size
        pos, need, status = 0, _CHUNK, native.SCAN_OK
        while pos < file_size:
            buf = os.pread(fd, min(need, file_size - pos), pos)
            scan = native.scan_batches(buf, 0, len(buf))
            for r in zip(scan.positions.tolist(), scan.sizes.tolist(), scan.base_offsets.tolist(),
                         scan.last_offsets.tolist(), scan.max_timestamps.tolist()):
                rows.append((pos + r[0],) + r[1:])
            start, pos = pos, pos + scan.valid_end
            status = scan.status
            if status == native.SCAN_OK:
                need = _CHUNK
                continue
            if status != native.SCAN_TORN or start + len(buf) >= file_size \
                    or file_size - pos < fmt.RECORD_BATCH_OVERHEAD:
                break
            size = fmt.BASE_OFFSET_AND_LENGTH.unpack_from(os.pread(fd, 12, pos), 0)[1] + 12
            if size < fmt.RECORD_BATCH_OVERHEAD:
                status = native.SCAN_CORRUPT
                break
            if pos + size > file_size:
                break
            need = max(size, _CHUNK)
    return rows, pos, status, file_size


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
        for (t, p), o in sorted(read_checkpoint(path).items()):
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
def _verify_segment(prefix: str, base: int, prev_last: int) -> tuple[list[Damage], int]:
    damage: list[Damage] = []
    log_path = prefix + fmt.LOG_SUFFIX
    rows, valid_end, status, size = scan_file(log_path)
    if status == native.SCAN_CORRUPT:
        damage.append(Damage(log_path, valid_end, "corrupt batch (size, magic or CRC-32C)"))
    elif valid_end < size:
        damage.append(Damage(log_path, valid_end,
                             f"torn tail: {size - valid_end} bytes hold no whole batch"))
    last = prev_last
    for pos, _sz, b, lst, _ts in rows:
        if b <= last or b < base:
            damage.append(Damage(log_path, pos, f"batch offset {b} does not follow {last}"))
            break
        last = lst
    starts = {r[0]: r for r in rows}
    seg_last = rows[-1][3] if rows else base - 1
    idx = _index_entries(prefix + fmt.INDEX_SUFFIX, _OFFSET_DTYPE)
    if idx is None:
        if rows:
            damage.append(Damage(prefix + fmt.INDEX_SUFFIX, 0, "offset index is missing"))
    else:
        prev = (-1, -1)
        for slot, (rel, pos) in enumerate(idx.tolist()):
            where = slot * fmt.OFFSET_INDEX_ENTRY_SIZE
            row = starts.get(pos)
            if (rel, pos) <= prev or rel <= prev[0] or pos <= prev[1]:
                damage.append(Damage(prefix + fmt.INDEX_SUFFIX, where,
                                     f"entry ({base + rel}, {pos}) is not increasing"))
            elif row is None:
                damage.append(Damage(prefix + fmt.INDEX_SUFFIX, where,
                                     f"entry ({base + rel}, {pos}) does not point at a batch"
                                     + (" (past the end of the log)" if pos >= valid_end else "")))
            elif not row[2] <= base + rel <= seg_last:
                damage.append(Damage(prefix + fmt.INDEX_SUFFIX, where,
                                     f"entry offset {base + rel} is not held by the batch at {pos}"))
            prev = (rel, pos)
    tidx = _index_entries(prefix + fmt.TIME_INDEX_SUFFIX, _TIME_DTYPE)
    if tidx is None:
        if rows:
            damage.append(Damage(prefix + fmt.TIME_INDEX_SUFFIX, 0, "time index is missing"))
    else:
        running, run_max = [], -1
        for r in rows:
            run_max = max(run_max, r[4])
            running.append((r[2], r[3], run_max))
        lasts = [x[1] for x in running]
        prev_ts, prev_rel = -2, -1
        for slot, (ts, rel) in enumerate(tidx.tolist()):
            where = slot * fmt.TIME_INDEX_ENTRY_SIZE
            off = base + rel
            i = bisect.bisect_left(lasts, off)
            holder = running[i] if i < len(running) and running[i][0] <= off else None
            if ts <= prev_ts or rel < prev_rel:
                damage.append(Damage(prefix + fmt.TIME_INDEX_SUFFIX, where,
                                     f"entry ({ts}, {off}) is not increasing"))
            elif holder is None:
                damage.append(Damage(prefix + fmt.TIME_INDEX_SUFFIX, where,
                                     f"entry offset {off} is past the end of the log"))
            elif holder[2] != ts:
                damage.append(Damage(prefix + fmt.TIME_INDEX_SUFFIX, where,
                                     f"entry timestamp {ts} is not the largest timestamp up to "
                                     f"offset {off} ({holder[2]})"))
            prev_ts, prev_rel = ts, rel
    return damage, last


def verify_files(root: str) -> list[Damage]:
    """Check every batch (size, magic, CRC-32C, increasing offsets) and every index entry of
    every partition; return the damage found (empty when sound). Read-only."""
    damage: list[Damage] = []
    for name in (fmt.RECOVERY_POINT_CHECKPOINT, fmt.LOG_START_OFFSET_CHECKPOINT):
        try:
            read_checkpoint(os.path.join(root, name))
        except CorruptRecordError as exc:
            damage.append(Damage(os.path.join(root, name), 0, str(exc)))
    for d in _partition_dirs(root):
        last = -1
        for base in _segment_bases(d):
            found, last = _verify_segment(os.path.join(d, f"{base:0{fmt.FILENAME_DIGITS}d}"),
                                          base, last)
            damage.extend(found)
    return damage

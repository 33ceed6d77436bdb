"""Offline tools for ``mqstore inspect`` and ``mqstore verify`` on a commitlog store.

Both only read (files are mapped read-only), so they work on a closed store and alongside a
live writer (then the newest bytes may be mid-write and show up as a torn tail).
"""
from __future__ import annotations

import mmap
import os
from collections.abc import Iterator

from mqstore import native
from mqstore.api import Damage

from . import format as fmt
from . import message as msgcodec
from .mapped_file import parse_file_name

_STATUS = {native.SCAN_OK: "full", native.SCAN_BLANK: "blank marker (file full)",
           native.SCAN_ZERO: "end of data", native.SCAN_TORN: "TORN TAIL",
           native.SCAN_CORRUPT: "CORRUPT MESSAGE"}


def _map(path: str) -> mmap.mmap | None:
    size = os.path.getsize(path)
    if size == 0:
        return None
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)


def _commitlog_files(root: str) -> list[str]:
    d = os.path.join(root, fmt.COMMITLOG_DIR)
    if not os.path.isdir(d):
        return []
    return [os.path.join(d, n) for n in sorted(os.listdir(d)) if parse_file_name(n) is not None]


def _queue_dirs(root: str) -> list[tuple[str, int, str]]:
    d = os.path.join(root, fmt.CONSUMEQUEUE_DIR)
    out = []
    if os.path.isdir(d):
        for topic in sorted(os.listdir(d)):
            for qid in sorted(os.listdir(os.path.join(d, topic)), key=lambda s: (len(s), s)):
                if qid.isdigit():
                    out.append((topic, int(qid), os.path.join(d, topic, qid)))
    return out


def _units(qdir: str) -> Iterator[tuple[str, int, int, int, int]]:
    """(file, queue offset, commitlog offset, size, tag hash) of every written unit."""
    for name in sorted(os.listdir(qdir)):
        base = parse_file_name(name)
        if base is None:
            continue
        path = os.path.join(qdir, name)
        mm = _map(path)
        if mm is None:
            continue
        with mm:
            for i in range(len(mm) // fmt.CQ_UNIT_SIZE):
                off, size, tag = fmt.CQ_UNIT.unpack_from(mm, i * fmt.CQ_UNIT_SIZE)
                if off < 0 or size <= 0:
                    return
                yield path, base // fmt.CQ_UNIT_SIZE + i, off, size, tag


def _describe_message(mm, pos: int) -> str:
    m = msgcodec.decode(mm, pos)
    props = m.properties
    return (f"  @{pos} size={m.total_size} topic={m.topic} queue={m.queue_id} "
            f"queueOffset={m.queue_offset} phys={m.physical_offset} "
            f"storeTimestamp={m.store_timestamp} bornTimestamp={m.born_timestamp} "
            f"tag={props.tag!r} key={props.key!r} body={len(m.body)}B")


def _inspect_commitlog_file(path: str) -> Iterator[str]:
    mm = _map(path)
    if mm is None:
        yield f"{path}: empty"
        return
    with mm:
        scan = native.scan_commitlog(mm, 0, len(mm))
        yield f"{path}: {len(scan.positions)} messages, data ends at {scan.valid_end} " \
              f"({_STATUS[scan.status]})"
        for pos in scan.positions.tolist():
            yield _describe_message(mm, pos)
        if scan.status == native.SCAN_BLANK:
            left = fmt.BLANK.unpack_from(mm, scan.valid_end)[0]
            yield f"  @{scan.valid_end} BLANK size={left}"


def _inspect_index_file(path: str) -> Iterator[str]:
    with open(path, "rb") as f:
        h = fmt.INDEX_HEADER.unpack(f.read(fmt.INDEX_HEADER_SIZE))
    yield (f"{path}: beginTimestamp={h[0]} endTimestamp={h[1]} beginPhyOffset={h[2]} "
           f"endPhyOffset={h[3]} hashSlotCount={h[4]} indexCount={h[5]}")


def inspect_files(root: str, target: str | None = None) -> Iterator[str]:
    """Lines describing the store, or one file / queue directory named by ``target``."""
    if target is not None:
        path = target if os.path.isabs(target) else os.path.join(root, target)
        rel = os.path.relpath(path, root).split(os.sep)
        if os.path.isdir(path) and rel[0] == fmt.CONSUMEQUEUE_DIR:
            for qpath in ([path] if len(rel) == 3 else
                          [q for _t, _i, q in _queue_dirs(root) if q.startswith(path + os.sep)]):
                yield f"{qpath}:"
                for _f, q, off, size, tag in _units(qpath):
                    yield f"  unit {q}: phys={off} size={size} tagHash={tag}"
        elif rel[0] == fmt.COMMITLOG_DIR:
            yield from _inspect_commitlog_file(path)
        elif rel[0] == fmt.INDEX_DIR:
            yield from _inspect_index_file(path)
        elif rel[0] == fmt.CHECKPOINT_FILE:
            with open(path, "rb") as f:
                p, lg, ix = fmt.CHECKPOINT.unpack(f.read(fmt.CHECKPOINT.size))
            yield f"{path}: physicMsgTimestamp={p} logicsMsgTimestamp={lg} indexMsgTimestamp={ix}"
        else:
            yield f"{path}: not a commitlog store file"
        return
    yield f"commitlog store at {root} (abort marker "\
          f"{'present' if os.path.exists(os.path.join(root, fmt.ABORT_FILE)) else 'absent'})"
    for path in _commitlog_files(root):
        mm = _map(path)
        if mm is None:
            continue
        with mm:
            scan = native.scan_commitlog(mm, 0, len(mm))
        yield f"{os.path.relpath(path, root)}: {len(scan.positions)} messages, " \
              f"data ends at {scan.valid_end} ({_STATUS[scan.status]})"
    for topic, qid, qdir in _queue_dirs(root):
        units = list(_units(qdir))
        span = f"{units[0][1]}..{units[-1][1]}" if units else "empty"
        yield f"{os.path.relpath(qdir, root)}: {len(units)} units ({span})"
    idx = os.path.join(root, fmt.INDEX_DIR)
    if os.path.isdir(idx):
        for name in sorted(os.listdir(idx)):
            yield from _inspect_index_file(os.path.join(idx, name))
    ck = os.path.join(root, fmt.CHECKPOINT_FILE)
    if os.path.exists(ck):
        yield from inspect_files(root, ck)


def verify_files(root: str) -> list[Damage]:
    """Every file kind, one Damage per root cause (``verify.py``)."""
    from .verify import verify_files as _verify
    return _verify(root)

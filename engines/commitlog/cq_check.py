"""Recovery's check of the ConsumeQueues against the CommitLog window it validated, without
re-dispatching it (numpy over ``native.dispatch_fields``; Python only per tagged message).

Every unit whose message lies in the window [start, end) must match that message: same
commitlog offset, TOTALSIZE, queue id, queue offset (its position in the queue), topic and
tag hash; and every message of the window (skip markers aside) must have exactly one unit.
:func:`first_mismatch` returns the commitlog offset of the first message whose unit is wrong
or missing (the dispatcher then re-dispatches from there in verifying mode, which rewrites
the wrong units), or None. Units of a queue with a commitlog offset at or after ``start``
are a suffix of the queue (offsets grow along a queue), so the cost follows the window's
data, not the files' preallocated size.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mqstore import native

from . import format as fmt
from . import message as msgcodec

if TYPE_CHECKING:
    from .commitlog import CommitLog
    from .consume_queue import ConsumeQueue

_SKIPPED = fmt.SKIPPED_TOPIC.encode("ascii")


def _suffix(cq: "ConsumeQueue", start: int) -> np.ndarray:
    """(queue offset, commitlog offset, size, tag hash) rows of the units from the first one
    (fillers aside) pointing at or after ``start`` to the end of the queue, as int64."""
    parts = []
    q_end = cq.max_units
    for i in range(len(cq.files) - 1, -1, -1):
        base = cq.files[i].file_from_offset // fmt.CQ_UNIT_SIZE
        n = min(cq.units_per_file, q_end - base)
        if n <= 0:
            continue
        a = cq.read_units(i, 0, n)  # pread: an idle queue's mapping stays untouched
        off = a["offset"].astype(np.int64)
        size = a["size"].astype(np.int64)
        real = size != fmt.CQ_FILLER_SIZE
        below = np.flatnonzero(real & (off < start))
        lo = int(below[-1]) + 1 if below.size else 0
        rows = np.column_stack((np.arange(base + lo, base + n, dtype=np.int64), off[lo:],
                                size[lo:], a["tag_hash"][lo:].astype(np.int64)))
        parts.append(rows[real[lo:]])
        if below.size:
            break
    if not parts:
        return np.empty((0, 4), dtype=np.int64)
    return np.concatenate(parts[::-1])


def first_mismatch(cl: "CommitLog", queues: dict, start: int, end: int,
                   tag_hash) -> int | None:
    """See the module docstring. ``tag_hash(tag: str) -> int`` is the dispatcher's."""
    if start >= end or not cl.files:
        return None
    worst: list[int] = []
    msgs = []  # per file: (mf, fields)
    for mf in cl.files:
        if mf.file_end_offset <= start or mf.file_from_offset >= end:
            continue
        lo = max(start, mf.file_from_offset) - mf.file_from_offset
        hi = min(end, mf.file_end_offset) - mf.file_from_offset
        scan = native.dispatch_fields(mf.mm, lo, hi)
        if scan.valid_end < hi and scan.status != native.SCAN_BLANK:
            # the walk stopped inside the window (damage recovery left): verify from there
            worst.append(mf.file_from_offset + scan.valid_end)
        msgs.append((mf, scan.fields))
    if not msgs:
        return min(worst) if worst else None
    fields = np.concatenate([f for _mf, f in msgs])
    file_of = np.concatenate([np.full(len(f), k, dtype=np.int64) for k, (_m, f) in
                              enumerate(msgs)])
    phys = fields[:, 0] + np.array([mf.file_from_offset for mf, _f in msgs])[file_of]
    f_size, f_qid, f_qoff = (np.ascontiguousarray(fields[:, c]) for c in (1, 2, 3))
    f_tp, f_tl, f_gp, f_gl = (np.ascontiguousarray(fields[:, c]) for c in (6, 7, 8, 9))
    claimed = np.zeros(len(fields), dtype=bool)
    u8 = [np.frombuffer(mf.mm, dtype=np.uint8) for mf, _f in msgs]
    hashes: dict[bytes, int] = {}
    for (topic, qid), cq in list(queues.items()):
        units = _suffix(cq, start)
        if not len(units):
            continue
        idx = np.searchsorted(phys, units[:, 1])
        idx_c = np.minimum(idx, len(phys) - 1)
        ok = (idx < len(phys)) & (phys[idx_c] == units[:, 1]) & (f_size[idx_c] == units[:, 2]) \
            & (f_qid[idx_c] == qid) & (f_qoff[idx_c] == units[:, 0])
        tb = topic.encode("utf-8")
        ok &= f_tl[idx_c] == len(tb)
        want = np.frombuffer(tb, dtype=np.uint8)
        u_file = file_of[idx_c]
        for k in np.unique(u_file[ok]).tolist():
            sel = np.flatnonzero(ok & (u_file == k))
            if len(tb):
                got = u8[k][f_tp[idx_c[sel]][:, None] + np.arange(len(tb))]
                ok[sel[~(got == want).all(axis=1)]] = False
        # tag hashes: 0 without TAGS, else the dispatcher's hash of the tag
        u_gp = f_gp[idx_c]
        untagged = u_gp < 0
        ok &= ~untagged | (units[:, 3] == 0)
        u_gl = f_gl[idx_c]
        for j in np.flatnonzero(ok & ~untagged).tolist():
            k = int(u_file[j])
            gp, gl = int(u_gp[j]), int(u_gl[j])
            raw = bytes(msgs[k][0].mm[gp:gp + gl])
            h = hashes.get(raw)
            if h is None:
                text = raw.decode("utf-8", "replace")
                if text.startswith(fmt.ESCAPE):
                    text = msgcodec.unescape_value(text).decode("utf-8", "replace")
                h = hashes[raw] = tag_hash(text)
            if h != units[j, 3]:
                ok[j] = False
        bad = np.flatnonzero(~ok)
        if bad.size:
            worst.append(int(units[bad[0], 1]) if idx[bad[0]] >= len(phys) else
                         int(min(units[bad[0], 1], phys[idx_c[bad[0]]])))
            ok_rows = idx_c[ok]
        else:
            ok_rows = idx_c
        claimed[ok_rows] = True
    # every message of the window has its unit (skip markers have none)
    skip = f_tl == len(_SKIPPED)
    for k in np.unique(file_of[skip]).tolist():
        sel = np.flatnonzero(skip & (file_of == k))
        got = u8[k][f_tp[sel][:, None] + np.arange(len(_SKIPPED))]
        skip[sel[~(got == np.frombuffer(_SKIPPED, dtype=np.uint8)).all(axis=1)]] = False
    missing = np.flatnonzero(~claimed & ~skip)
    if missing.size:
        worst.append(int(phys[missing[0]]))
    return min(worst) if worst else None

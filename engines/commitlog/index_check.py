"""Recovery's checks of the IndexFiles (derived data): :func:`validate` one file against
its own invariants (numpy over the entries written, so the cost follows ``indexCount``, not
the preallocated size) and :func:`recover` the files at open, repairing slot heads and
header counts in place and deleting a file whose entries are wrong, with every later one,
so that the dispatcher re-indexes them from the CommitLog. After a crash with a checkpoint
offset, only the entries of messages at or after it are checked (:func:`validate_tail`)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from mqstore.damage import DERIVED_REBUILT, RecoveryLog

from . import format as fmt

if TYPE_CHECKING:
    from .index_file import IndexFile, IndexService


def _header(f: "IndexFile") -> tuple:
    """``(beginPhyOffset, endPhyOffset, hashSlotCount, indexCount)`` of the header, or the
    verdict itself when it settles the file: ("damaged", why) for an impossible
    ``indexCount``, ("ok", None) for a file with no entries."""
    (_bt, _et, begin_phy, end_phy, slot_count,
     count) = fmt.INDEX_HEADER.unpack_from(f.mm, 0)
    if not 1 <= count <= f.index_entries:
        return "damaged", f"indexCount {count} outside [1, {f.index_entries}]"
    if count == 1:
        return "ok", None
    return begin_phy, end_phy, slot_count, count


def _entries(f: "IndexFile", n: int) -> np.ndarray:
    """The first ``n`` entries (entry 0 is unused, as in RocketMQ), a view of the map."""
    return np.frombuffer(f.mm, dtype=fmt.INDEX_ENTRY_DTYPE, count=n,
                         offset=f.entries_pos + fmt.INDEX_ENTRY_SIZE)


def validate(f: "IndexFile", repair: bool = False) -> tuple[str, str | None]:
    """Check the file against its own invariants (numpy over the entries written, so the
    cost follows ``indexCount``, not the preallocated size): ("ok", None), ("repaired",
    what) when only derived-of-derived fields were wrong and ``repair`` rewrote them
    (slot heads, header counts and bounds), or ("damaged", what) when entries are wrong
    and the file must be rebuilt.

    Entries: keyHash >= 0, prev in [0, n) and in the same slot, commitlog offsets and
    times in log order. Slots: the slot of every key holds its newest entry. Chains:
    every entry is reached exactly once (from its slot or from one newer entry)."""
    header = _header(f)
    if isinstance(header[0], str):
        return header
    begin_phy, end_phy, slot_count, count = header
    n = count - 1
    e = _entries(f, n)
    h = e["hash"].astype(np.int64)
    phy = e["phy"].astype(np.int64)
    diff = e["diff"].astype(np.int64)
    prev = e["prev"].astype(np.int64)
    idx = np.arange(1, count, dtype=np.int64)
    if (h < 0).any():
        return "damaged", f"entry {int(idx[np.argmax(h < 0)])}: negative key hash"
    bad = np.flatnonzero((prev < 0) | (prev >= idx))
    if bad.size:
        return "damaged", f"entry {int(idx[bad[0]])}: previous entry {int(prev[bad[0]])} " \
                          "out of range"
    bad = np.flatnonzero((np.diff(phy) < 0) | (np.diff(diff) < 0))
    if bad.size or phy[0] < 0 or diff[0] < 0:
        at = int(idx[bad[0] + 1]) if bad.size else 1
        return "damaged", f"entry {at}: commitlog offset or time out of log order"
    slot = h % f.hash_slots
    linked = prev > 0
    if (slot[prev[linked] - 1] != slot[linked]).any():
        at = int(idx[linked][np.argmax(slot[prev[linked] - 1] != slot[linked])])
        return "damaged", f"entry {at}: chained to an entry of another slot"
    # the newest entry of each used slot (entries are in index order)
    order = np.lexsort((idx, slot))
    last_of_slot = np.flatnonzero(np.diff(slot[order], append=-1) != 0)
    used = slot[order][last_of_slot]
    heads = idx[order][last_of_slot]
    refs = np.bincount(prev[linked], minlength=count)[1:]
    refs[heads - 1] += 1
    if (refs != 1).any():
        at = int(idx[np.argmax(refs != 1)])
        return "damaged", f"entry {at}: reached {int(refs[at - 1])} times from its slot chain"
    slots = np.frombuffer(f.mm, dtype=">i4", count=f.hash_slots,
                          offset=fmt.INDEX_HEADER_SIZE)
    wrong_heads = np.flatnonzero(slots[used] != heads)
    fixes = []
    if wrong_heads.size:
        fixes.append(f"{wrong_heads.size} slots did not hold the newest entry of their "
                     "chain")
    if begin_phy != phy[0] or end_phy != phy[-1] or slot_count != used.size:
        fixes.append("header bounds or hashSlotCount disagreed with the entries")
    if not fixes:
        return "ok", None
    if repair:
        f._reserve_table()
        for s_, hd in zip(used[wrong_heads].tolist(), heads[wrong_heads].tolist()):
            fmt.INDEX_SLOT.pack_into(f.mm, fmt.INDEX_HEADER_SIZE + s_ * 4, hd)
        f.read_header()
        f.begin_phy_offset, f.end_phy_offset = int(phy[0]), int(phy[-1])
        f.hash_slot_count = int(used.size)
        f._write_header()
        f.dirty = True
    return "repaired", "; ".join(fixes)


def validate_tail(f: "IndexFile", from_phy: int, repair: bool = False
                  ) -> tuple[str, str | None]:
    """:func:`validate` for the entries of messages at or after ``from_phy`` only: those
    before it were synced before the checkpoint that says so was written (recovery trusts
    them, as it trusts the ConsumeQueue units below the checkpoint's durable offset). The
    tail's entries are checked as :func:`validate` checks all of them (hashes, previous
    entries in range and in the same slot, each entry reached exactly once from the newer
    ones or its slot, no trusted entry continued twice), and the slot of every key of the
    tail must hold its newest entry. The log order of every entry's commitlog offset, and
    the header's first and last against them, are checked over the whole file (one column,
    the cheap part): when they are off, :func:`validate` decides. Not checked here:
    ``hashSlotCount`` (it counts every slot) and slots no tail key uses."""
    header = _header(f)
    if isinstance(header[0], str):
        return header
    begin_phy, end_phy, _slot_count, count = header
    n = count - 1
    # every entry's commitlog offset, in log order from the header's first to its last: a
    # header newer than the entries (a power loss kept its page, not theirs) shows here, and
    # the tail is then found exactly; anything off is left to the whole-file check
    all_phy = _entries(f, n)["phy"].astype(np.int64)
    if all_phy[0] != begin_phy or all_phy[-1] != end_phy or all_phy[0] < 0 or \
            (np.diff(all_phy) < 0).any():
        return validate(f, repair)
    k0 = int(np.searchsorted(all_phy, from_phy))
    del all_phy
    if k0 >= n:
        return "ok", None
    # entries k0 .. n-1 (0-based), plus the last trusted one for the order check
    first = max(k0 - 1, 0)
    e = np.frombuffer(f.mm, dtype=fmt.INDEX_ENTRY_DTYPE, count=n - first,
                      offset=f.entries_pos + (first + 1) * fmt.INDEX_ENTRY_SIZE)
    h = e["hash"].astype(np.int64)
    phy = e["phy"].astype(np.int64)
    diff = e["diff"].astype(np.int64)
    prev = e["prev"].astype(np.int64)
    idx = np.arange(first + 1, count, dtype=np.int64)  # 1-based entry numbers
    t = slice(k0 - first, None)  # the tail's rows
    th, tp, ti = h[t], prev[t], idx[t]
    if (th < 0).any():
        return "damaged", f"entry {int(ti[np.argmax(th < 0)])}: negative key hash"
    bad = np.flatnonzero((tp < 0) | (tp >= ti))
    if bad.size:
        return "damaged", f"entry {int(ti[bad[0]])}: previous entry {int(tp[bad[0]])} " \
                          "out of range"
    bad = np.flatnonzero((np.diff(phy) < 0) | (np.diff(diff) < 0))
    if bad.size or phy[0] < 0 or diff[0] < 0:
        at = int(idx[bad[0] + 1]) if bad.size else int(idx[0])
        return "damaged", f"entry {at}: commitlog offset or time out of log order"
    slot = th % f.hash_slots
    linked = tp > 0
    lp = tp[linked]
    in_tail = lp > k0
    prev_slot = np.empty(lp.size, dtype=np.int64)
    prev_slot[in_tail] = slot[lp[in_tail] - (k0 + 1)]
    if (~in_tail).any():  # chained to trusted entries: read their hashes
        old = np.frombuffer(f.mm, dtype=fmt.INDEX_ENTRY_DTYPE, count=k0,
                            offset=f.entries_pos + fmt.INDEX_ENTRY_SIZE)
        prev_slot[~in_tail] = old["hash"][lp[~in_tail] - 1].astype(np.int64) % f.hash_slots
    if (prev_slot != slot[linked]).any():
        at = int(ti[linked][np.argmax(prev_slot != slot[linked])])
        return "damaged", f"entry {at}: chained to an entry of another slot"
    order = np.lexsort((ti, slot))
    last_of_slot = np.flatnonzero(np.diff(slot[order], append=-1) != 0)
    used = slot[order][last_of_slot]
    heads = ti[order][last_of_slot]
    refs = np.bincount(lp[in_tail] - (k0 + 1), minlength=len(ti))
    refs[heads - (k0 + 1)] += 1
    if (refs != 1).any():
        at = int(ti[np.argmax(refs != 1)])
        return "damaged", f"entry {at}: reached {int(refs[at - k0 - 1])} times from its " \
                          "slot chain"
    old_refs = lp[~in_tail]
    if old_refs.size and np.unique(old_refs).size != old_refs.size:
        return "damaged", "two entries continue the same older entry's chain"
    slots = np.frombuffer(f.mm, dtype=">i4", count=f.hash_slots,
                          offset=fmt.INDEX_HEADER_SIZE)
    wrong_heads = np.flatnonzero(slots[used] != heads)
    fixes = []
    if wrong_heads.size:
        fixes.append(f"{wrong_heads.size} slots did not hold the newest entry of their "
                     "chain")
    first_phy = fmt.INDEX_ENTRY.unpack_from(f.mm, f.entries_pos + fmt.INDEX_ENTRY_SIZE)[1]
    if begin_phy != first_phy or end_phy != phy[-1]:
        fixes.append("header bounds disagreed with the entries")
    if not fixes:
        return "ok", None
    if repair:
        f._reserve_table()
        for s_, hd in zip(used[wrong_heads].tolist(), heads[wrong_heads].tolist()):
            fmt.INDEX_SLOT.pack_into(f.mm, fmt.INDEX_HEADER_SIZE + s_ * 4, hd)
        f.read_header()
        f.begin_phy_offset, f.end_phy_offset = int(first_phy), int(phy[-1])
        f._write_header()
        f.dirty = True
    return "repaired", "; ".join(fixes)


def drop_files(svc: "IndexService", names: list[str], log: RecoveryLog | None,
               why: str) -> None:
    for name in names:
        try:
            os.unlink(os.path.join(svc.dir, name))
        except FileNotFoundError:
            pass
    svc._dir_dirty = True
    if log is not None:
        log.record(DERIVED_REBUILT, os.path.join(svc.dir, names[0]), 0,
                   f"{why}: {len(names)} IndexFile(s) from here deleted, to be rebuilt "
                   "from the CommitLog")

def recover(svc: "IndexService", log: RecoveryLog | None, window_start: int,
            min_phys: int, trusted_below: int | None = None) -> int | None:
    """Validate the IndexFiles that cover the recovery window (from commitlog offset
    ``window_start``) and the newest one (:meth:`IndexFile.validate`); repair what is
    repairable and delete a damaged file and every later one. With ``trusted_below`` (the
    checkpoint's durable offset) only the entries of messages at or after it are checked
    (:func:`validate_tail`), in every file. Returns the commitlog offset the dispatcher
    must re-index from, or None if nothing was deleted."""
    with svc._lock:
        for k, f in enumerate(svc.files):
            sane = 1 <= f.index_count <= svc.index_entries
            if trusted_below is not None and sane:
                if f.end_phy_offset < trusted_below:
                    continue
                status, why = validate_tail(f, trusted_below, repair=True)
            elif f.end_phy_offset < window_start and k < len(svc.files) - 1 and sane:
                continue
            else:
                status, why = f.validate(repair=True)
            if status == "repaired" and log is not None:
                log.record(DERIVED_REBUILT, f.path, 0, f"IndexFile repaired: {why}")
            if status != "damaged":
                continue
            gone = svc.files[k:]
            svc.files = svc.files[:k]
            for g in gone:
                g.close()
            drop_files(svc, [os.path.basename(g.path) for g in gone], log,
                       f"IndexFile damaged: {why}")
            svc._update_indexed_end()
            return svc.indexed_end if svc.indexed_end >= 0 else min_phys
    return None

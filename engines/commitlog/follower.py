"""Follower: what a ``read_only=True`` store does to follow a live writer in another process.

The follower takes no lock, runs no recovery and writes nothing. It maps the writer's files
and decides, per queue, which units are *visible*:

1. ConsumeQueue units up to the first one with size <= 0 or offset < 0 (never written), then,
   from the tail backwards, only units whose CommitLog message really is there: TOTALSIZE
   equal to the unit's size, V1 magic, QUEUEID / QUEUEOFFSET naming this queue and offset,
   and the unit's tag hash matching the message's tag. A unit the writer's dispatcher is still
   copying, or one pointing past what the CommitLog holds, stays invisible until complete.
2. Messages the writer appended but its dispatcher has not reached yet: the follower runs its
   own small reput over the CommitLog tail (from the highest position any visible unit points
   at), keeps the units it finds in memory, and shows those that continue a queue without a
   gap. Messages are accepted only whole (size, magic, recomputed length, body CRC), so a
   message being written is never returned.

New files the writer creates are mapped on demand; files retention deleted stay readable
through the existing mapping until the follower notices and forgets them. A follower assumes
the writer does not recover underneath it: reopen followers after a writer crash.
"""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from mqstore import native

from . import format as fmt
from . import message as msgcodec
from .consume_queue import ConsumeQueue

if TYPE_CHECKING:
    from .store import CommitLogStore

Unit = tuple[int, int, int, int]  # queue offset, commitlog offset, size, tag hash
_TAIL_PRUNE_AT = 100_000


class Follower:
    """Visibility bookkeeping of a read-only store. Thread-safety: one internal lock."""

    def __init__(self, store: "CommitLogStore"):
        self.store = store
        self._lock = threading.Lock()
        self._validated: dict[tuple[str, int], int] = {}
        self._min_phys: dict[tuple[str, int], int] = {}
        self._tails: dict[tuple[str, int], list[Unit]] = {}
        self._tail_count = 0
        self.known_end = 0  # every message below this has its ConsumeQueue unit written
        for (topic, qid), cq in list(store._queues.items()):
            self._validate(cq, (topic, qid), qid)
        self.scan_pos = max(self.known_end, store.commitlog.min_offset)

    def queue(self, topic: str, queue_id: int) -> tuple[ConsumeQueue | None, int, int,
                                                        list[Unit]]:
        """(queue or None, visible end, end of the units in files, in-memory tail units)."""
        st = self.store
        with self._lock:
            cl = st.commitlog
            if cl.files and not os.path.exists(cl.files[0].path):
                cl.refresh()
            key = (topic, queue_id)
            cq = st._queues.get(key)
            if cq is None:
                cq = ConsumeQueue(os.path.join(st.path, fmt.CONSUMEQUEUE_DIR), topic, queue_id,
                                  st.config.options["cq_units_per_file"], read_only=True)
                if cq.load_new_files():
                    st._queues[key] = cq
                else:
                    cq = None
            cq_end = self._validate(cq, key, queue_id) if cq is not None else 0
            self._scan_tail()
            tail = self._tails.get(key, [])
            if tail and tail[0][0] < cq_end:
                keep = [u for u in tail if u[0] >= cq_end]
                self._tail_count -= len(tail) - len(keep)
                self._tails[key] = tail = keep
            visible: list[Unit] = []
            for u in tail:
                if u[0] != cq_end + len(visible):
                    break
                visible.append(u)
            return cq, cq_end + len(visible), cq_end, visible

    # ----- units in files -----
    def _validate(self, cq: ConsumeQueue, key: tuple[str, int], queue_id: int) -> int:
        end = self._validated.get(key)
        if end is None:
            end = cq.scan_end()
        else:
            end = self._extend(cq, end)
        end = self._trim_tail(cq, end, queue_id)
        self._validated[key] = end
        cq.max_units = end
        min_phys = self.store.commitlog.min_offset
        if self._min_phys.get(key) != min_phys:  # retention moved the log's start
            self._min_phys[key] = min_phys
            cq.correct_min_offset(min_phys)
        if end > cq.first_unit:
            phys, size, _ = cq.unit(end - 1)
            if size != fmt.CQ_FILLER_SIZE:
                self.known_end = max(self.known_end, phys + size)
        return end

    @staticmethod
    def _extend(cq: ConsumeQueue, end: int) -> int:
        """Move ``end`` over units that look written (size > 0, offset >= 0)."""
        while True:
            blk = cq.unit_block(end, end + cq.units_per_file)
            if blk is None:
                if cq.load_new_files():
                    continue
                return end
            arr, _mf = blk
            bad = ((arr["size"] <= 0) | (arr["offset"] < 0)).nonzero()[0]
            if bad.size:
                return end + int(bad[0])
            end += len(arr)

    def _trim_tail(self, cq: ConsumeQueue, end: int, queue_id: int) -> int:
        """Drop tail units whose message is not (yet) what they claim."""
        start = cq.first_unit
        while end > start:
            phys, size, tag_hash = cq.unit(end - 1)
            if size == fmt.CQ_FILLER_SIZE or self._matches(phys, size, tag_hash, queue_id,
                                                           end - 1):
                break
            end -= 1
        return end

    def _matches(self, phys: int, size: int, tag_hash: int, queue_id: int, q: int) -> bool:
        cl = self.store.commitlog
        mf = cl.find_file(phys)
        if mf is None:
            return phys < cl.min_offset  # deleted by retention: it was valid
        pos = phys - mf.file_from_offset
        if size < fmt.MSG_FIXED_OVERHEAD or pos + size > mf.file_size:
            return False
        head = fmt.MSG_HEADER.unpack_from(mf.mm, pos)
        if head[0] != size or head[3] != queue_id or head[5] != q:
            return False
        try:  # V1 or V2, IPv4 or IPv6 hosts; a message still being written is not whole
            _topic, props = msgcodec.topic_and_properties(mf.mm, pos, mf.file_size)
        except msgcodec.BadMessage:
            return False
        want = 0 if props.tag is None else native.java_string_hash(props.tag)
        return want == tag_hash

    # ----- the follower's own reput over the CommitLog tail -----
    def _scan_tail(self) -> None:
        cl = self.store.commitlog
        self.scan_pos = max(self.scan_pos, self.known_end, cl.min_offset)
        if self._tail_count > _TAIL_PRUNE_AT:
            self._prune()
        while True:
            mf = cl.find_file(self.scan_pos)
            if mf is None:
                return
            pos = self.scan_pos - mf.file_from_offset
            scan = native.scan_commitlog(mf.mm, pos, mf.file_size)
            for p in scan.positions.tolist():
                head = fmt.MSG_HEADER.unpack_from(mf.mm, p)
                topic, props = msgcodec.topic_and_properties(mf.mm, p, mf.file_size)
                tag = 0 if props.tag is None else native.java_string_hash(props.tag)
                self._tails.setdefault((topic, head[3]), []).append(
                    (head[5], head[6], head[0], tag))
                self._tail_count += 1
            if scan.status in (native.SCAN_BLANK, native.SCAN_OK):
                self.scan_pos = mf.file_end_offset
                continue
            self.scan_pos = mf.file_from_offset + scan.valid_end
            return

    def _prune(self) -> None:
        """Forget tail units below ``known_end`` (their ConsumeQueue units are in files)."""
        count = 0
        for key, tail in list(self._tails.items()):
            keep = [u for u in tail if u[1] >= self.known_end]
            if keep:
                self._tails[key] = keep
                count += len(keep)
            else:
                del self._tails[key]
        self._tail_count = count

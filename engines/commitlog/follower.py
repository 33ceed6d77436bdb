"""Follower: what a ``read_only=True`` store does to follow a live writer in another process.

The follower takes no lock, runs no recovery and writes nothing. It maps the writer's files
and decides, per queue, how many ConsumeQueue units are *visible*: the units up to the first
one with size <= 0 or offset < 0 (never written), and then, from the tail backwards, only
units whose CommitLog message really is there: TOTALSIZE equal to the unit's size, V1 magic,
and QUEUEID / QUEUEOFFSET naming this queue and offset, with the unit's tag hash matching the
message's tag. A unit the writer's dispatcher is still copying (half-written) or one that
points past what the CommitLog holds therefore stays invisible until it is complete. New
files the writer creates are mapped on demand; files retention deleted stay readable through
the existing mapping until the follower notices and forgets them.
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


class Follower:
    """Visibility bookkeeping of a read-only store. Thread-safety: one internal lock."""

    def __init__(self, store: "CommitLogStore"):
        self.store = store
        self._lock = threading.Lock()
        self._validated: dict[tuple[str, int], int] = {}

    def queue(self, topic: str, queue_id: int) -> tuple[ConsumeQueue | None, int]:
        """The queue (None if the writer has not created it yet) and its visible end."""
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
                if not cq.load_new_files():
                    return None, 0
                st._queues[key] = cq
                end = cq.scan_end()
            else:
                end = self._validated.get(key, cq.first_unit)
                capacity = cq.first_unit + len(cq.files) * cq.units_per_file
                if end >= capacity:
                    cq.load_new_files()
                end = self._extend(cq, end)
            end = self._trim_tail(cq, end, queue_id)
            self._validated[key] = end
            cq.max_units = end
            cq.correct_min_offset(cl.min_offset)
            return cq, end

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
        mf = self.store.commitlog.find_file(phys)
        if mf is None:
            return phys < self.store.commitlog.min_offset  # deleted by retention: was valid
        pos = phys - mf.file_from_offset
        if size < fmt.MSG_FIXED_OVERHEAD or pos + size > mf.file_size:
            return False
        head = fmt.MSG_HEADER.unpack_from(mf.mm, pos)
        if head[0] != size or head[1] != fmt.MESSAGE_MAGIC_V1 or head[3] != queue_id \
                or head[5] != q:
            return False
        _topic, props = msgcodec.topic_and_properties(mf.mm, pos)
        want = 0 if props.tag is None else native.java_string_hash(props.tag)
        return want == tag_hash

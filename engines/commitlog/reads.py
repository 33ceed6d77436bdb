"""The read side of CommitLogStore: ConsumeQueue unit -> CommitLog slice (RocketMQ's
``DefaultMessageStore#getMessage``), time and key lookups, and ``transfer_to``.

``ConsumeQueueReads`` is mixed into :class:`~.store.CommitLogStore`; it uses the store's
``commitlog``, ``index``, ``dispatcher``/``follower`` and ``_queue_for_read``. Every method is
safe to call from any number of threads while appends run.
"""
from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING

from mqstore import errors, native
from mqstore.api import (DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS, Record, check_lookup_args,
                         check_read_args, check_timestamp_arg)
from mqstore.records import Records

from . import format as fmt
from . import message as msgcodec
from .consume_queue import ConsumeQueue
from .read_batch import ReadBatch, unit_blocks

if TYPE_CHECKING:
    from .commitlog import CommitLog
    from .dispatcher import Dispatcher
    from .follower import Follower
    from .index_file import IndexService

_IOV_MAX = 1024
_SLICES = 256  # slices planned per native call (runs of adjacent messages)
_INT64_MAX = (1 << 63) - 1
_UNIT_PHYS = struct.Struct(">q").unpack_from  # a ConsumeQueue unit's commitlog offset


class ConsumeQueueReads:
    """read / start_offset / end_offset / offset_for_time / lookup_key / transfer_to."""

    commitlog: "CommitLog"
    index: "IndexService"
    dispatcher: "Dispatcher | None"
    follower: "Follower | None"
    _queues: dict
    _queue_next: dict

    def _queue_for_read(self, topic: str, partition: int
                        ) -> tuple[ConsumeQueue | None, int, int, list]:
        """(queue, end offset, end of its units in files, in-memory tail units). A writer
        waits here for its dispatcher (read-your-writes); a follower has no end beyond what
        it can see."""
        self._check_open()
        count = self.partitions(topic)
        self._check_partition(topic, partition, count)
        if self.follower is not None:
            return self.follower.queue(topic, partition)
        key = (topic, partition)
        end = self._queue_next.get(key, 0)
        cq = self._queues.get(key)
        if end and (cq is None or cq.max_units < end):
            self.dispatcher.check()
            self.dispatcher.wait_until(self._confirm_offset())
            cq = self._queues.get(key)
        return cq, end, (min(end, cq.max_units) if cq is not None else 0), []

    def _check_offset(self, cq: ConsumeQueue | None, offset: object, end: int) -> int:
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise errors.OffsetOutOfRangeError(f"offset must be an int: {offset!r}")
        start = cq.min_logic_offset if cq is not None else 0
        if offset < start or offset > end:
            raise errors.OffsetOutOfRangeError(
                f"offset {offset} is outside [{start}, {end}] (start offset, end offset)")
        return offset

    def read(self, topic: str, partition: int, offset: int, *,
             max_records: int = DEFAULT_MAX_RECORDS, max_bytes: int = DEFAULT_MAX_BYTES,
             tags: Iterable[str] | None = None) -> Records:
        """ConsumeQueue units from ``offset``, then the CommitLog messages they point at,
        gathered into one Records by one native call per CommitLog file (``ReadBatch``).
        With ``tags``, units whose tag hash matches none of the tags are skipped without
        touching the CommitLog; candidates are re-checked on the real tag."""
        tags = check_read_args(offset, max_records, max_bytes, tags)
        cq, end, cq_end, tail = self._queue_for_read(topic, partition)
        offset = self._check_offset(cq, offset, end)
        if offset >= end or max_records <= 0:
            return Records.empty(topic, partition)
        tagset = hashes = None
        if tags is not None:
            tagset = set(tags)
            hashes = [native.java_string_hash(t) for t in tagset]
            if not hashes:
                return Records.empty(topic, partition)
        batch = ReadBatch(self.commitlog, self.config.check_crcs, topic, partition,
                          max_records, max_bytes, tagset)
        batch.read_queue(cq, offset, cq_end, tail, hashes)
        return batch.records()

    def start_offset(self, topic: str, partition: int) -> int:
        cq, _end, _cq_end, tail = self._queue_for_read(topic, partition)
        if cq is not None:
            return cq.min_logic_offset
        return tail[0][0] if tail else 0

    def end_offset(self, topic: str, partition: int) -> int:
        self._check_open()
        self._check_partition(topic, partition, self.partitions(topic))
        if self.follower is not None:
            return self.follower.queue(topic, partition)[1]
        return self._queue_next.get((topic, partition), 0)

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int | None:
        """Binary search of the queue by the STORETIMESTAMP of the messages its units point
        at (RocketMQ ``getOffsetInQueueByTime``): the first offset stored at or after
        ``timestamp_ms``."""
        check_timestamp_arg("timestamp_ms", timestamp_ms)
        cq, end, cq_end, tail = self._queue_for_read(topic, partition)
        tail_phys = {u[0]: u[1] for u in tail}
        lo = cq.min_logic_offset if cq is not None else (tail[0][0] if tail else 0)
        hi = end
        while lo < hi:
            mid = (lo + hi) // 2
            if mid < cq_end:
                phys, size, _ = cq.unit(mid)
                ts = self._store_timestamp_at(phys) if size != fmt.CQ_FILLER_SIZE else -1
            else:
                ts = self._store_timestamp_at(tail_phys[mid])
            if ts < timestamp_ms:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < end else None

    def lookup_key(self, topic: str, key: bytes, *, start_ms: int | None = None,
                   end_ms: int | None = None, limit: int = 64) -> list[Record]:
        """Records of ``topic`` with ``key`` through the IndexFile, newest first; the time
        range applies to store timestamps. Candidates are re-checked on topic and key."""
        self._check_open()
        self.partitions(topic)
        check_lookup_args(limit, start_ms, end_ms)
        if not isinstance(key, (bytes, bytearray, memoryview)):
            raise errors.InvalidRecordError(f"key must be bytes-like, not {type(key).__name__}")
        key = bytes(key)
        if not self.config.options["message_index"]:
            raise errors.UnsupportedOperation(
                "lookup_key needs the IndexFile; this store runs with message_index=False")
        begin = 0 if start_ms is None else start_ms
        end = _INT64_MAX if end_ms is None else end_ms
        if self.follower is not None:
            self.index.refresh()
        else:
            self.dispatcher.wait_until(self._confirm_offset())
        text = msgcodec.escape_value(key, is_key=True)
        want = max(2 * limit + 8, 64)
        while True:
            cands = self.index.query(topic, text, begin, end, want)
            out = self._recheck(cands, topic, key, begin, end, limit)
            if len(out) >= limit or len(cands) < want:
                return out
            want *= 4

    def _recheck(self, cands: list[int], topic: str, key: bytes, begin: int, end: int,
                 limit: int) -> list[Record]:
        out: list[Record] = []
        seen: set[int] = set()
        for phys in cands:
            if len(out) >= limit:
                break
            if phys in seen:
                continue
            seen.add(phys)
            mf = self.commitlog.find_file(phys)
            if mf is None:
                continue
            pos = phys - mf.file_from_offset
            if msgcodec.check(mf.mm, pos, mf.file_size,
                              phys >= self.commitlog.crc_required_from) is not None:
                continue  # a damaged message is never returned (verify reports it)
            m = msgcodec.decode(mf.mm, pos)
            if m.topic != topic or not (begin <= m.store_timestamp <= end) or not (
                    m.properties.key == key or _one_of_keys(m.properties.keys_text, key)):
                continue
            out.append(Record(topic, m.queue_id, m.queue_offset, m.born_timestamp, key, m.body,
                              m.properties.headers, m.properties.tag))
        return out

    def transfer_to(self, sock: socket.socket, topic: str, partition: int, offset: int,
                    max_bytes: int) -> tuple[int, int]:
        """Send the stored messages from ``offset`` as memoryview slices of the mapped
        CommitLog with batched ``socket.sendmsg`` (RocketMQ's ManyMessageTransfer): messages
        adjacent in the file go out as one slice, planned by ``native.cl_transfer_plan`` over
        the ConsumeQueue units (no object per message). Messages are taken while their
        summed sizes stay within ``max_bytes``, but at least one is sent so a consumer makes
        progress. Returns (bytes sent, the queue offset to continue from)."""
        cq, end, cq_end, tail = self._queue_for_read(topic, partition)
        offset = self._check_offset(cq, offset, end)
        cl = self.commitlog
        slices: list[list] = []  # [mapped file, start, end] (file positions)
        total = have = 0
        q = offset
        mf = None
        for units, first, n, q0 in unit_blocks(cq, offset, cq_end, tail):
            i, full = 0, False
            if mf is None and n:  # the file of the first unit (usually the only one)
                mf = cl.find_file(_UNIT_PHYS(units, first * fmt.CQ_UNIT_SIZE)[0])
            while i < n:
                plan = native.cl_transfer_plan(
                    units, first, n, i, 0 if mf is None else mf.file_from_offset,
                    0 if mf is None else mf.file_size, max_bytes, total, have, _SLICES)
                for a, b in plan.slices.tolist():
                    last = slices[-1] if slices else None
                    if last is not None and last[0] is mf and last[2] == a:
                        last[2] = b
                    else:
                        slices.append([mf, a, b])
                total, have, i = plan.total, plan.have, plan.next
                if plan.status == native.CLR_OK:
                    break
                if plan.status == native.CLR_LIMIT:
                    full = True
                    break
                if plan.status == native.CLR_OTHER_FILE:
                    found = cl.find_file(plan.stop_phys)
                    if found is None or found is mf:
                        i += 1  # MESSAGE_WAS_REMOVING: nothing to send for it
                    else:
                        mf = found
            q = q0 + i
            if full:
                break
        views = [f.view(a, b - a) for f, a, b in slices]
        try:
            sent = _sendmsg_all(sock, views)
        finally:
            for v in views:
                v.release()
        return sent, q


def _one_of_keys(keys_text: str | None, key: bytes) -> bool:
    """True if ``key`` is one element of a space-separated KEYS property (a message written
    by RocketMQ itself may carry several keys)."""
    if not keys_text or fmt.KEY_SEPARATOR not in keys_text:
        return False
    return msgcodec.escape_value(key, is_key=True) in keys_text.split(fmt.KEY_SEPARATOR)


def _sendmsg_all(sock: socket.socket, views: list[memoryview]) -> int:
    """Send every view, IOV_MAX buffers per ``sendmsg`` call, resuming after short sends."""
    sent_total = 0
    i = 0
    while i < len(views):
        batch = views[i:i + _IOV_MAX]
        n = sock.sendmsg(batch)
        sent_total += n
        # advance over fully sent views; trim a partly sent one
        for v in batch:
            if n >= len(v):
                n -= len(v)
                i += 1
            else:
                views[i] = v[n:]
                break
    return sent_total

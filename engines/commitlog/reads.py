"""The read side of CommitLogStore: ConsumeQueue unit -> CommitLog slice (RocketMQ's
``DefaultMessageStore#getMessage``), time and key lookups, and ``transfer_to``.

``ConsumeQueueReads`` is mixed into :class:`~.store.CommitLogStore`; it uses the store's
``commitlog``, ``index``, ``dispatcher``/``follower`` and ``_queue_for_read``. Every method is
safe to call from any number of threads while appends run.
"""
from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from mqstore import errors, native
from mqstore.api import (DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS, Record, check_lookup_args,
                         check_read_args, check_timestamp_arg)
from mqstore.records import Records

from . import format as fmt
from . import message as msgcodec
from .consume_queue import ConsumeQueue

if TYPE_CHECKING:
    from .commitlog import CommitLog
    from .dispatcher import Dispatcher
    from .follower import Follower
    from .index_file import IndexService

_IOV_MAX = 1024
_INT64_MAX = (1 << 63) - 1


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

    @staticmethod
    def _unit_batches(cq: ConsumeQueue | None, q: int, cq_end: int, tail: list,
                      hashes: list[int] | None, step: int = 512) -> Iterator[list]:
        """(queue offset, commitlog offset, size, tag hash) of the units from ``q``, in
        batches; with ``hashes`` only units whose tag hash is one of them (numpy scan of the
        mapped ConsumeQueue, no CommitLog access)."""
        while cq is not None and q < cq_end:
            blk = cq.unit_block(q, cq_end)
            if blk is None:
                break
            arr, mf = blk
            if hashes is not None:
                rel = native.cq_tag_scan(mf.mm, q % cq.units_per_file, len(arr), hashes)
                if len(rel):
                    yield [(qq, *u) for qq, u in zip((q + rel).tolist(), arr[rel].tolist())]
                q += len(arr)
            else:
                part = arr[:step].tolist()
                yield [(qq, *u) for qq, u in zip(range(q, q + len(part)), part)]
                q += len(part)
        units = [u for u in tail if u[0] >= q]
        if hashes is not None:
            units = [u for u in units if u[3] in hashes]
        if units:
            yield units

    def read(self, topic: str, partition: int, offset: int, *,
             max_records: int = DEFAULT_MAX_RECORDS, max_bytes: int = DEFAULT_MAX_BYTES,
             tags: Iterable[str] | None = None) -> list[Record]:
        """ConsumeQueue units from ``offset``, then the CommitLog slices they point at.
        With ``tags``, units whose tag hash matches none of the tags are skipped without
        touching the CommitLog; candidates are re-checked on the real tag."""
        return Records.from_records(topic, partition, self._read_list(
            topic, partition, offset, max_records, max_bytes, tags))

    def _read_list(self, topic, partition, offset, max_records, max_bytes, tags):
        tags = check_read_args(offset, max_records, max_bytes, tags)
        cq, end, cq_end, tail = self._queue_for_read(topic, partition)
        offset = self._check_offset(cq, offset, end)
        out: list[Record] = []
        if offset >= end or max_records <= 0:
            return out
        tagset = hashes = None
        if tags is not None:
            if isinstance(tags, str):
                tags = [tags]
            tagset = set(tags)
            hashes = [native.java_string_hash(t) for t in tagset]
            if not hashes:
                return out
        total = 0
        for batch in self._unit_batches(cq, offset, cq_end, tail, hashes):
            for qq, phys, size, _tag in batch:
                if size == fmt.CQ_FILLER_SIZE:
                    continue
                rec = self._record_at(phys, size, topic, partition, qq)
                if rec is None or (tagset is not None and rec.tag not in tagset):
                    continue
                if out and total + len(rec.value) > max_bytes:
                    return out
                out.append(rec)
                total += len(rec.value)
                if len(out) >= max_records:
                    return out
        return out

    def _record_at(self, phys: int, size: int, topic: str, partition: int,
                   queue_offset: int) -> Record | None:
        """The record a ConsumeQueue unit points at. Every length is bounds-checked and,
        with ``check_crcs`` (default), the record CRC (``__CRC32#``) or, for a message
        without one, the body CRC; the message must be the one the unit names (size, queue,
        queue offset). Any mismatch raises CorruptRecordError."""
        cl = self.commitlog
        mf = cl.find_file(phys)
        if mf is None:
            return None  # MESSAGE_WAS_REMOVING: retention took it
        pos = phys - mf.file_from_offset
        try:
            f = msgcodec.read_fields(mf.mm, pos, mf.file_size, self.config.check_crcs,
                                     phys >= cl.crc_required_from)
        except msgcodec.BadMessage as exc:
            raise errors.CorruptRecordError(
                f"{topic}/{partition}@{queue_offset}: {exc}", mf.path, pos) from None
        if f.size != size or f.queue_offset != queue_offset or f.queue_id != partition:
            raise errors.CorruptRecordError(
                f"ConsumeQueue unit {topic}/{partition}@{queue_offset} points at a message of "
                f"size {f.size}, queue {f.queue_id}, queue offset {f.queue_offset}; expected "
                f"size {size}", mf.path, pos)
        props = f.properties
        if props is None:
            return Record(topic, partition, queue_offset, f.born_timestamp, None, f.body, {},
                          None)
        return Record(topic, partition, queue_offset, f.born_timestamp, props.key, f.body,
                      props.headers, props.tag)

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
            if len(out) >= limit:
                break
        return out

    def transfer_to(self, sock: socket.socket, topic: str, partition: int, offset: int,
                    max_bytes: int) -> tuple[int, int]:
        """Send the stored messages from ``offset`` as memoryview slices of the mapped
        CommitLog, message by message, with batched ``socket.sendmsg`` (RocketMQ's
        ManyMessageTransfer). At least one message is sent so a consumer makes progress."""
        cq, end, cq_end, tail = self._queue_for_read(topic, partition)
        offset = self._check_offset(cq, offset, end)
        views: list[memoryview] = []
        total = 0
        q = offset
        for batch in self._unit_batches(cq, offset, cq_end, tail, None):
            for qq, phys, size, _tag in batch:
                if size != fmt.CQ_FILLER_SIZE:
                    if views and total + size > max_bytes:
                        break
                    mf = self.commitlog.find_file(phys)
                    if mf is not None:
                        views.append(mf.view(phys - mf.file_from_offset, size))
                        total += size
                q = qq + 1
            else:
                continue
            break
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

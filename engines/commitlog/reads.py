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

import numpy as np

from mqstore import errors, native
from mqstore.api import (DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS, Record, check_lookup_args,
                         check_read_args, check_timestamp_arg)
from mqstore.records import Records

from . import format as fmt
from . import message as msgcodec
from .consume_queue import ConsumeQueue
from .read_batch import ReadBatch

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
    def _units(cq: ConsumeQueue | None, q: int, cq_end: int, tail: list,
               hashes: list[int] | None, want) -> Iterator[tuple[np.ndarray, ...]]:
        """The units from ``q`` as int64 arrays (queue offsets, commitlog offsets, sizes,
        fillers included), one ConsumeQueue file at a time: with ``hashes`` only the units
        whose tag hash is one of them (``native.cq_tag_scan`` over the mapped file, no
        CommitLog access), else at most ``want()`` units at a time."""
        while cq is not None and q < cq_end:
            blk = cq.unit_block(q, cq_end)
            if blk is None:
                break
            arr, mf = blk
            if hashes is not None:
                rel = native.cq_tag_scan(mf.mm, q % cq.units_per_file, len(arr), hashes)
                sel, qs = arr[rel], q + rel
                q += len(arr)
            else:
                sel = arr[:max(want(), 1)]
                qs = np.arange(q, q + len(sel), dtype=np.int64)
                q += len(sel)
            if len(sel):
                yield qs, sel["offset"].astype(np.int64), sel["size"].astype(np.int64)
        units = [u for u in tail if u[0] >= q and (hashes is None or u[3] in hashes)]
        if units:
            cols = np.array(units, dtype=np.int64).reshape(-1, 4)
            yield cols[:, 0].copy(), cols[:, 1].copy(), cols[:, 2].copy()

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
            if isinstance(tags, str):
                tags = [tags]
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
        CommitLog with batched ``socket.sendmsg`` (RocketMQ's ManyMessageTransfer): adjacent
        messages of the queue go out as one slice. Messages are taken while their summed
        sizes stay within ``max_bytes``, but at least one is sent so a consumer makes
        progress. Returns (bytes sent, the queue offset to continue from)."""
        cq, end, cq_end, tail = self._queue_for_read(topic, partition)
        offset = self._check_offset(cq, offset, end)
        plan = _TransferPlan(self.commitlog, max_bytes)
        q = offset
        for qs, phys, sizes in self._units(cq, offset, cq_end, tail, None, plan.want):
            q = plan.add(qs, phys, sizes)
            if plan.full:
                break
        views = plan.views()
        try:
            sent = _sendmsg_all(sock, views)
        finally:
            for v in views:
                v.release()
        return sent, q


class _TransferPlan:
    """The slices of one ``transfer_to``: runs of units in, (file, start, end) slices of
    adjacent messages out, with one numpy pass per run of units."""

    def __init__(self, commitlog: "CommitLog", max_bytes: int):
        self.cl = commitlog
        self.max_bytes = max_bytes
        self.total = 0  # bytes planned
        self.have = False  # a message is planned (the first one always is)
        self.full = False
        self.slices: list[list] = []  # [mapped file, start, end] in file positions

    def want(self) -> int:
        """Units to fetch next: enough to reach max_bytes with the smallest messages."""
        return min(max(self.max_bytes - self.total, 0) // fmt.MSG_FIXED_OVERHEAD + 1, 1 << 16)

    def add(self, qs: np.ndarray, phys: np.ndarray, sizes: np.ndarray) -> int:
        """Plan these units (fillers included); returns the queue offset after the last
        unit planned or passed over."""
        real = sizes != fmt.CQ_FILLER_SIZE
        if not real.all():
            rq, phys, sizes = qs[real], phys[real], sizes[real]
        else:
            rq = qs
        n = len(rq)
        runs = []  # (first, end, mapped file or None): the units in one CommitLog file
        i = 0
        while i < n:
            mf = self.cl.find_file(int(phys[i]))
            if mf is None:
                runs.append((i, i + 1, None))  # MESSAGE_WAS_REMOVING: nothing to send
                i += 1
                continue
            j = max(i + 1, i + int(np.searchsorted(phys[i:], mf.file_end_offset)))
            runs.append((i, j, mf))
            i = j
        if all(mf is not None for _i, _j, mf in runs):
            eff = sizes
            before = np.arange(n) > 0
        else:  # a file retention took: its units count for nothing
            exists = np.zeros(n, dtype=bool)
            for i, j, mf in runs:
                exists[i:j] = mf is not None
            eff = np.where(exists, sizes, 0)
            before = (np.cumsum(exists) - exists) > 0
        cum = np.cumsum(eff)
        over = (cum - eff + self.total + sizes > self.max_bytes) & (before | self.have)
        stop = int(np.argmax(over)) if n and over.any() else n
        if stop < n:
            self.full = True
        for i, j, mf in runs:
            j = min(j, stop)
            if mf is None or j <= i:
                continue
            starts, ends = phys[i:j], phys[i:j] + sizes[i:j]
            cut = np.flatnonzero(starts[1:] != ends[:-1]) + 1
            base = mf.file_from_offset
            firsts = [0, *cut.tolist()]
            lasts = [*(cut - 1).tolist(), j - i - 1]
            for a, b in zip(starts[firsts].tolist(), ends[lasts].tolist()):
                last = self.slices[-1] if self.slices else None
                if last is not None and last[0] is mf and last[2] == a - base:
                    last[2] = b - base
                else:
                    self.slices.append([mf, a - base, b - base])
            self.have = True
        self.total += int(cum[stop - 1]) if stop else 0
        return int(rq[stop]) if stop < n else int(qs[-1]) + 1

    def views(self) -> list[memoryview]:
        return [mf.view(a, b - a) for mf, a, b in self.slices]


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

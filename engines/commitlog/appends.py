"""The append half of :class:`~.store.CommitLogStore` (RocketMQ ``CommitLog#putMessages``
and ``DefaultAppendMessageCallback``): a batch is turned into columns (bodies joined into one
blob with offsets and lengths, per-message queue ids, queue offsets, born timestamps, and the
PROPERTIES of messages that carry a key, tag or headers) and encoded into the CommitLog by one
``native.cl_encode`` call per file touched, under the put lock; the result is a
``BatchMetadata`` of columns. Mixed into the store; uses its ``commitlog``, ``dispatcher``,
``_queue_next``, ``_consume_queue``, ``_gc``, ``config`` and the UNIQ_KEY state set up in
its ``__init__``.

Thread-safety: any number of appending threads; queue offsets are assigned under the
CommitLog put lock, UNIQ_KEY numbers under ``_uniq_lock``.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from mqstore import errors, native
from mqstore.api import Message, RecordMetadata, as_message_list, normalize_message
from mqstore.damage import full_error, is_full, translate_full
from mqstore.errors import StoreFullError
from mqstore.records import BatchMetadata

from . import format as fmt
from . import message as msgcodec

class CommitLogAppends:
    """``append`` and ``append_batch`` (see the module docstring)."""

    def append(self, topic: str, value: bytes, *, key: bytes | None = None,
               partition: int | None = None, timestamp_ms: int | None = None,
               headers=None, tag: str | None = None) -> RecordMetadata:
        """Append one message (see :meth:`append_batch`). A plain bytes value takes the short
        path: one ``native.cl_encode_one`` under the put lock."""
        if type(value) is bytes and key is None and headers is None and tag is None \
                and timestamp_ms is None:
            return self._append_one(topic, value, partition)
        return self.append_batch(topic, [Message(value, key, timestamp_ms, headers, tag)],
                                 partition=partition)[0]

    def _append_one(self, topic: str, value: bytes, partition: int | None) -> RecordMetadata:
        """A plain value: the checks of :meth:`append_batch` spelled out (each method call
        costs here), the queue offset and UNIQ_KEY number taken, and one
        ``CommitLog.put_one_locked`` (one ``native.cl_encode_one_into`` into the mapping)."""
        if self._closed or self._read_only:
            self._check_writable()
        d = self.dispatcher
        if d.error is not None:
            d.check()
        count = self.partitions(topic)
        if partition is None:  # as _group_by_partition for a value without a key
            p = 0 if count == 1 else self._next_round_robin(topic, count)
        else:
            p = self._check_partition(topic, partition, count)
        topic_b = self._topic_b.get(topic)
        if topic_b is None:
            topic_b = self._topic_bytes(topic)
        size = self._plain_overhead + len(topic_b) + len(value)
        if size > self._size_limit:
            self._too_large(0, size)
        with self._uniq_lock:
            uniq = self._uniq_next
            self._uniq_next = uniq + 1
        k = (topic, p)
        cl = self.commitlog
        with cl.put_lock:
            if self._closed:
                self._check_open()
            q = self._queue_next.get(k, 0)
            cq = self._queues.get(k)
            if cq is None:
                cq = self._consume_queue(topic, p)
            try:  # translate_full, spelled out: a generator context costs 1.5 us a call
                cq.reserve_units(q, q)  # (see append_batch)
                store_ts = cl.put_one_locked(size, topic_b, value, self._uniq_prefix_b, uniq,
                                             p, q)
            except StoreFullError:
                raise
            except OSError as exc:
                if is_full(exc):
                    raise full_error(exc, f"appending to {topic!r}") from exc
                raise
            self._queue_next[k] = q + 1
            self.appended_records += 1
            self.appended_bytes += size
            gc = self._gc
            ticket = gc.written() if gc is not None else 0
        if gc is not None:
            self._acknowledged(topic, ticket)
        else:
            d.wakeup()
        return tuple.__new__(RecordMetadata, (topic, p, q, store_ts))

    def _acknowledged(self, topic: str, ticket: int) -> None:
        """After a put (outside the put lock): wait as the flush policy says, then wake the
        dispatcher for the new messages."""
        if self._gc is not None:
            with translate_full(f"syncing an append to {topic!r}"):
                self._gc.wait_durable(ticket)
        self.dispatcher.wakeup()

    def _topic_bytes(self, topic: str) -> bytes:
        b = self._topic_b.get(topic)
        if b is None:
            b = topic.encode("ascii")
            msgcodec.check_topic(b)
            self._topic_b[topic] = b
        return b

    def append_batch(self, topic: str, messages: Iterable[bytes | Message], *,
                     partition: int | None = None) -> BatchMetadata:
        """Append a producer batch: one CommitLog message per record (RocketMQ stores no
        batches), encoded in one native call per CommitLog file touched
        (``native.cl_encode``) under one lock acquisition, with one flush wait. Returns the
        queue offsets as columns (``BatchMetadata``)."""
        self._check_writable()
        self.dispatcher.check()  # a failed dispatcher makes the store unwritable (RocketMQ)
        count = self.partitions(topic)
        msgs = as_message_list(messages)
        topic_b = self._topic_bytes(topic)
        n = len(msgs)
        p_single = None
        props = props_offsets = props_lengths = born = None
        if partition is not None:
            p_single = self._check_partition(topic, partition, count)
            if not msgs:
                raise errors.InvalidRecordError("append_batch needs at least one message")
            try:  # plain values to one queue: encoded from the bytes objects (the short path)
                total, bad = native.cl_values_scan(msgs, self._plain_overhead + len(topic_b),
                                                   self._size_limit)
            except TypeError:  # not all exactly bytes (or not a list): the general path
                pass
            else:
                return self._append_values(topic, topic_b, msgs, p_single, total, bad)
            items = [(i, m if type(m) is bytes else normalize_message(m, 0))
                     for i, m in enumerate(msgs)]
        else:
            items = [None] * n
            for p, group in self._group_by_partition(topic, msgs, None, count).items():
                for i, m in group:
                    items[i] = (p, m)
        with self._uniq_lock:
            uniq_base = self._uniq_next
            self._uniq_next = uniq_base + n
        if partition is not None:
            queue_ids = np.full(n, p_single, dtype=np.int64)
            msgs_n = [m for _i, m in items]
        else:
            queue_ids = np.fromiter((it[0] for it in items), dtype=np.int64, count=n)
            msgs_n = [it[1] for it in items]
        values, props, props_offsets, props_lengths, born = self._columns(msgs, msgs_n,
                                                                          uniq_base)
        body_lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
        bodies = b"".join(values)
        body_offsets = np.cumsum(body_lengths) - body_lengths
        prefix = self._uniq_prefix_b
        sizes = native.cl_encoded_sizes(len(topic_b), body_lengths, props_lengths, len(prefix))
        if props_lengths is not None:
            too_many = props_lengths + fmt.CRC32_RESERVED_LEN > fmt.PROPERTIES_MAX_BYTES
        else:
            too_many = None
        bad = sizes > self._size_limit
        if too_many is not None:
            bad |= too_many
        if bad.any():
            i = int(np.argmax(bad))
            if too_many is not None and too_many[i]:
                msgcodec.properties_too_large(int(props_lengths[i]) + fmt.CRC32_RESERVED_LEN)
            self._too_large(i, int(sizes[i]))
        total = int(sizes.sum())

        def encode(phys: int, first: int, k: int, store_ts: int, out, out_pos: int):
            end = first + k
            return native.cl_encode(
                topic_b, bodies, body_offsets[first:end], body_lengths[first:end], props,
                None if props_offsets is None else props_offsets[first:end],
                None if props_lengths is None else props_lengths[first:end], prefix,
                uniq_base + first, queue_ids[first:end], queue_offsets[first:end],
                None if born is None else born[first:end], phys, store_ts, out, out_pos)

        cl = self.commitlog
        with cl.put_lock:
            self._check_open()
            if p_single is not None:
                k0 = (topic, p_single)
                q0 = self._queue_next.get(k0, 0)
                queue_offsets = np.arange(q0, q0 + n, dtype=np.int64)
                nxt = {k0: q0 + n}
            else:
                queue_offsets, nxt = self._assign_queue_offsets(topic, queue_ids)
            with translate_full(f"appending to {topic!r}"):
                # the ConsumeQueue files these units go to exist before anything is written,
                # so a full disk fails this call, never the dispatcher (nothing is assigned
                # yet: the queue offsets are only taken below, once the put succeeded)
                for k, end in nxt.items():
                    self._consume_queue(*k).reserve_units(self._queue_next.get(k, 0), end - 1)
                store_ts = cl.put_locked(sizes, encode)
            self._queue_next.update(nxt)
            self.appended_records += n
            self.appended_bytes += total
            ticket = self._gc.written() if self._gc is not None else 0
        self._acknowledged(topic, ticket)
        if born is None:
            if p_single is not None:
                return BatchMetadata.single(topic, p_single, q0, n, store_ts)
            stamps = np.full(n, store_ts, dtype=np.int64)
        else:
            stamps = np.where(born < 0, store_ts, born)
        return BatchMetadata(topic, queue_ids, queue_offsets, stamps)

    def _append_values(self, topic: str, topic_b: bytes, values: list, p: int, total: int,
                       bad: int) -> BatchMetadata:
        """:meth:`append_batch` of plain values (exactly bytes) to partition ``p``: no
        columns, no join; ``native.cl_values_fit`` cuts the batch at file ends and
        ``native.cl_encode_values_into`` encodes each run from the bytes objects into the
        mapping or the transient pool buffer (``CommitLog.put_runs_locked``). ``total`` and
        ``bad`` are ``native.cl_values_scan``'s (the first message over the size limit)."""
        overhead = self._plain_overhead + len(topic_b)
        if bad >= 0:
            self._too_large(bad, overhead + len(values[bad]))
        n = len(values)
        with self._uniq_lock:
            uniq_base = self._uniq_next
            self._uniq_next = uniq_base + n
        prefix = self._uniq_prefix_b
        k0 = (topic, p)
        cl = self.commitlog
        with cl.put_lock:
            self._check_open()
            q0 = self._queue_next.get(k0, 0)

            def fit(first: int, room: int):
                return native.cl_values_fit(values, first, overhead, room)

            def encode(phys: int, first: int, k: int, store_ts: int, out, out_pos: int):
                return native.cl_encode_values_into(
                    out, out_pos, topic_b, values, first, k, prefix, uniq_base + first, p,
                    q0 + first, phys, store_ts)

            with translate_full(f"appending to {topic!r}"):  # see append_batch
                self._consume_queue(*k0).reserve_units(q0, q0 + n - 1)
                store_ts = cl.put_runs_locked(n, total, fit, encode)
            self._queue_next[k0] = q0 + n
            self.appended_records += n
            self.appended_bytes += total
            ticket = self._gc.written() if self._gc is not None else 0
        self._acknowledged(topic, ticket)
        return BatchMetadata.single(topic, p, q0, n, store_ts)

    def _columns(self, raw: list, msgs: list, uniq_base: int):
        """Values, properties blob, offsets and lengths (-1: plain, UNIQ_KEY only) and born
        timestamps (-1: the store's) of normalised messages; ``raw`` are the messages as
        given (a Message without a timestamp gets the store timestamp, as RocketMQ)."""
        n = len(msgs)
        values = [None] * n
        parts: list[bytes] = []
        poffs = np.full(n, 0, dtype=np.int64)
        plens = np.full(n, -1, dtype=np.int64)
        born = np.full(n, -1, dtype=np.int64)
        prefix = self._uniq_prefix
        at = 0
        for i, m in enumerate(msgs):
            if type(m) is bytes:
                values[i] = m
                continue
            values[i] = m.value
            r = raw[i]
            if isinstance(r, Message) and r.timestamp_ms is not None:
                born[i] = m.timestamp_ms
            if m.tag is None and m.key is None and not m.headers:
                continue
            pb = msgcodec.encode_properties(m.tag, m.key, "%s%016X" % (prefix, uniq_base + i),
                                            m.headers)
            parts.append(pb)
            poffs[i] = at
            plens[i] = len(pb)
            at += len(pb)
        return values, b"".join(parts), poffs, plens, born

    def _assign_queue_offsets(self, topic: str, queue_ids: np.ndarray):
        """Queue offsets for messages to several queues (caller holds the put lock): each
        queue's messages take the next offsets of that queue, in call order."""
        order = np.argsort(queue_ids, kind="stable")
        sq = queue_ids[order]
        starts = np.flatnonzero(np.concatenate(([True], sq[1:] != sq[:-1])))
        ends = np.append(starts[1:], len(sq))
        rank = np.arange(len(sq), dtype=np.int64) - np.repeat(starts, ends - starts)
        base = np.empty(len(starts), dtype=np.int64)
        nxt: dict[tuple[str, int], int] = {}
        get = self._queue_next.get
        for j, (p, c) in enumerate(zip(sq[starts].tolist(), (ends - starts).tolist())):
            b = get((topic, p), 0)
            base[j] = b
            nxt[(topic, p)] = b + c
        offsets = np.empty(len(sq), dtype=np.int64)
        offsets[order] = np.repeat(base, ends - starts) + rank
        return offsets, nxt

    def _too_large(self, i: int, size: int) -> None:
        limit = self.config.max_message_bytes
        room = self.commitlog.file_size - fmt.END_FILE_MIN_BLANK_LENGTH
        which = "max_message_bytes" if size > limit else "mapped_file_size"
        raise errors.RecordTooLargeError(
            f"message {i} of the batch is {size} bytes as a CommitLog entry; {which} allows "
            f"{min(limit, room)} (one message per CommitLog entry, each checked on its own)")

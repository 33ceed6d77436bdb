"""The append half of :class:`~.store.SegmentsStore` (Kafka's ``Log.append`` as the
broker's ``ReplicaManager.appendRecords`` sees it): one producer batch per partition group,
size-checked before anything is written, then appended under the partition's lock. Plain
``bytes`` values are built into a whole batch at their base offset by one C call under the
lock (``record_batch.value_batch`` for one ``append``, ``values_batch`` for an
``append_batch``) and written with one ``pwrite``; ``Message`` batches and records with a
key, headers or a tag are encoded first (``encode_messages`` / ``encode_one``). The result
of ``append_batch`` is a ``BatchMetadata`` of columns (base offset and count per
partition), never one ``RecordMetadata`` per message. Mixed into the
store; uses its ``_topics``, ``_gc``, ``_max_message_bytes``, ``_max_plain_value``,
``_closed``, ``_read_only`` and ``_logs``.

Thread-safety: any number of appending threads; offsets are assigned under each
partition's ``PartitionLog.lock``.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from mqstore import errors
from mqstore.api import (
    INT64_MAX,
    Message,
    RecordMetadata,
    as_message_list,
    normalize_message,
    now_ms,
)
from mqstore.engines.segments import format as fmt
from mqstore.engines.segments.record_batch import encode_messages, encode_one, values_batch_size
from mqstore.partitioner import partition_for_key
from mqstore.records import BatchMetadata

if TYPE_CHECKING:
    from mqstore.engines.segments.partition_log import PartitionLog

_INTERNAL = fmt.CONSUMER_OFFSETS_TOPIC
_time_ns = time.time_ns
_tuple_new = tuple.__new__  # the cheapest way to make a NamedTuple
#: the most a one-record batch adds to its value: the 61-byte header and the record's framing
#: (length and value-length varints of <= 5 bytes each, attributes, timestampDelta,
#: offsetDelta, a null key's length and the header count, one byte each): a value this much
#: under max_message_bytes surely fits
ONE_RECORD_OVERHEAD = fmt.RECORD_BATCH_OVERHEAD + 15


class SegmentsAppends:
    """``append`` and ``append_batch`` (see the module docstring)."""

    def _writable_logs(self, topic: str) -> list[PartitionLog]:
        if self._closed:
            raise errors.StoreClosedError(f"store at {self.path} is closed")
        if self._read_only:
            raise errors.ReadOnlyStoreError(f"store at {self.path} was opened read_only")
        logs = self._topics.get(topic)
        if logs is None or topic == fmt.CONSUMER_OFFSETS_TOPIC:
            if topic == fmt.CONSUMER_OFFSETS_TOPIC:
                raise errors.InvalidTopicError(f"{topic!r} is internal; use commit_offset")
            return self._logs(topic)
        return logs

    def append(self, topic: str, value: bytes, *, key: bytes | None = None,
               partition: int | None = None, timestamp_ms: int | None = None,
               headers: Mapping[str, bytes] | None = None,
               tag: str | None = None) -> RecordMetadata:
        """Append one record as a one-record batch (see :meth:`Store.append`)."""
        logs = self._topics.get(topic)
        if logs is None or self._closed or self._read_only or topic == _INTERNAL:
            logs = self._writable_logs(topic)
        if (type(value) is bytes and key is None and headers is None and tag is None
                and timestamp_ms is None and partition is None and len(logs) == 1
                and len(value) <= self._max_plain_value):
            # the commonest call, a plain value that surely fits to a one-partition topic:
            # built whole and written in one step under the lock (as append_value below)
            log = logs[0]
            ts = _time_ns() // 1_000_000
            with log.lock:
                if self._closed:
                    raise errors.StoreClosedError(f"store at {self.path} is closed")
                base = log.append_value(value, ts)
                gc = self._gc
                ticket = gc.written() if gc is not None else 0
            if gc is not None:
                gc.wait_durable(ticket)
            return _tuple_new(RecordMetadata, (topic, 0, base, ts))
        plain = (type(value) is bytes and key is None and headers is None and tag is None
                 and (timestamp_ms is None
                      or (type(timestamp_ms) is int and 0 <= timestamp_ms <= INT64_MAX)))
        if plain:
            ts = _time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
        else:
            msg = normalize_message(Message(value, key, timestamp_ms, headers, tag),
                                    now_ms() if timestamp_ms is None else 0)
            value, key, headers, tag, ts = msg.value, msg.key, msg.headers, msg.tag, msg.timestamp_ms
            if headers and fmt.TAG_HEADER in headers:
                raise errors.InvalidRecordError(f"header name {fmt.TAG_HEADER!r} is reserved for tag=")
        count = len(logs)
        if partition is not None:
            if type(partition) is int and 0 <= partition < count:
                p = partition
            else:
                p = self._check_partition(topic, partition, count)
        elif key is not None:
            p = partition_for_key(key, count)
        else:
            p = self._next_round_robin(topic, count) if count > 1 else 0
        if plain and len(value) <= self._max_plain_value:
            # a plain value that surely fits: built whole and written in one step, under the
            # partition's lock (the bytes encode_one and batch_prefix would give)
            log = logs[p]
            gc = self._gc
            with log.lock:
                if self._closed:
                    raise errors.StoreClosedError(f"store at {self.path} is closed")
                base = log.append_value(value, ts)
                ticket = gc.written() if gc is not None else 0
            if gc is not None:
                gc.wait_durable(ticket)
        else:
            base = self._append_encoded(logs[p], encode_one(ts, key, value, headers, tag))
        return _tuple_new(RecordMetadata, (topic, p, base, ts))

    def _append_encoded(self, log, body) -> int:
        """Append one encoded batch to ``log`` under its lock (size checked first, so a
        refused batch writes nothing), wait as the flush policy says, return its base
        offset."""
        if body.size > self._max_message_bytes:
            raise errors.RecordTooLargeError(
                f"batch of {body.size} bytes exceeds max_message_bytes={self._max_message_bytes}")
        gc = self._gc
        with log.lock:
            if self._closed:
                raise errors.StoreClosedError(f"store at {self.path} is closed")
            base = log.append(body)
            ticket = gc.written() if gc is not None else 0
        if gc is not None:
            gc.wait_durable(ticket)
        return base

    def append_batch(self, topic: str, messages: Iterable[bytes | Message], *,
                     partition: int | None = None) -> BatchMetadata:
        """One RecordBatch per partition group; all groups are encoded and size-checked
        before anything is written. The result is built from columns (base offset and
        count per partition), never one ``RecordMetadata`` per message."""
        logs = self._writable_logs(topic)
        messages = as_message_list(messages)
        if messages:
            try:  # plain bytes values only (one C pass over them)?
                size = values_batch_size(messages)
            except TypeError:  # a Message (or another type): the general path
                size = -1
            if size >= 0:
                return self._append_values(topic, logs, messages, size, partition)
        groups = self._group_by_partition(topic, messages, partition, len(logs))
        encoded = []
        total = 0
        for p, items in groups.items():
            rows = []
            for _i, m in items:
                if m.headers and fmt.TAG_HEADER in m.headers:
                    raise errors.InvalidRecordError(
                        f"header name {fmt.TAG_HEADER!r} is reserved for tag=")
                rows.append((m.timestamp_ms, m.key, m.value, m.headers, m.tag))
            body = encode_messages(rows)
            if body.size > self._max_message_bytes:
                raise errors.RecordTooLargeError(
                    f"batch of {body.size} bytes for partition {p} exceeds "
                    f"max_message_bytes={self._max_message_bytes}")
            encoded.append((p, items, body, [r[0] for r in rows]))
            total += len(items)
        partitions = np.empty(total, dtype=np.int64)
        offsets = np.empty(total, dtype=np.int64)
        timestamps = np.empty(total, dtype=np.int64)
        gc = self._gc
        ticket = 0
        for p, items, body, stamps in encoded:
            log = logs[p]
            with log.lock:
                if self._closed:
                    raise errors.StoreClosedError(f"store at {self.path} is closed")
                base = log.append(body)
                if gc is not None:
                    ticket = gc.written()
            if len(encoded) == 1:  # one partition: the batch is in call order
                partitions.fill(p)
                offsets[:] = np.arange(base, base + total, dtype=np.int64)
                timestamps[:] = stamps
                break
            at = np.fromiter((i for i, _m in items), dtype=np.int64, count=len(items))
            partitions[at] = p
            offsets[at] = np.arange(base, base + len(items), dtype=np.int64)
            timestamps[at] = stamps
        if gc is not None:
            gc.wait_durable(ticket)
        return BatchMetadata(topic, partitions, offsets, timestamps)

    def _append_values(self, topic: str, logs: list[PartitionLog], values: list[bytes],
                       size: int, partition: int | None) -> BatchMetadata:
        """``append_batch`` of plain ``bytes`` values (a ``size``-byte batch): one partition
        (explicit, else one round-robin choice, as the generic path does for unkeyed
        messages), one batch, built whole under the partition's lock from the values where
        they lie and written with one ``pwrite`` (``PartitionLog.append_values``)."""
        count = len(logs)
        if partition is not None:
            p = self._check_partition(topic, partition, count)
        else:
            p = self._next_round_robin(topic, count) if count > 1 else 0
        if size > self._max_message_bytes:
            raise errors.RecordTooLargeError(
                f"batch of {size} bytes exceeds max_message_bytes={self._max_message_bytes}")
        ts = now_ms()
        log = logs[p]
        gc = self._gc
        with log.lock:
            if self._closed:
                raise errors.StoreClosedError(f"store at {self.path} is closed")
            base = log.append_values(values, size, ts)
            ticket = gc.written() if gc is not None else 0
        if gc is not None:
            gc.wait_durable(ticket)
        return BatchMetadata.single(topic, p, base, len(values), ts)


"""The read path of one partition: ``read_records`` (Kafka's ``LocalLog.read`` over
``FileRecords``), batch-native.

A read preads the byte range of the batches that can hold the answer (from the batch the
offset index and the header walk locate, bounded by what ``max_records`` / ``max_bytes`` can
need, read further when that is not enough, across segments), and decodes every record of
every batch of a range in ONE native call (``native.decode_batches``), which also checks
each batch as reads always have: header, CRC-32C (``check_crcs``), the offset chain. The
result is a :class:`~mqstore.records.Records` over the bytes read: offsets, timestamps,
key and value positions are columns; headers and tags are made from the header rows on
first use. Compressed batches (gzip, lz4, zstd: Kafka-written logs) are decompressed and
decoded by the same call, one batch at a time.

A damaged batch is reported (CorruptRecordError naming the ``.log`` and the batch position)
only when the read needs its records: a read that is complete before it returns, as the
record-at-a-time reader it replaces did.

Thread-safety: runs alongside appends (the segment list and sizes are snapshots; bytes past
the acknowledged end offset are never returned). Pure reads of the files.
"""
from __future__ import annotations

import os

import numpy as np

from mqstore import _purepy_batches as ref
from mqstore import errors, native
from mqstore.engines.segments import format as fmt
from mqstore.engines.segments.record_batch import (
    header_rows,
    read_header,
    tag_of,
    uncompressed_copy,
)
from mqstore.records import EMPTY_HEADERS, Records, count_within

_INT64_MAX = (1 << 63) - 1
_unpack_offsets = fmt.BATCH_OFFSETS.unpack_from
#: bytes a record is assumed to take beyond its value before anything was read
FIRST_GUESS_OVERHEAD = 32
#: bytes a record is assumed to take in all before anything was read (a read that needs
#: more reads on: a guess too large costs more than one more pread)
FIRST_GUESS_RECORD = 256
#: slack of the first read over twice ``max_bytes`` (a huge ``max_records``)
WALK_GUESS = 64 * 1024
#: smallest and largest single pread of a read
MIN_READ = 4096
MAX_READ = 8 * 1024 * 1024
_decode = native.decode_batches


class _Pieces:
    """The decoded parts of one read: ``(bytes, record rows, header rows)`` each, positions
    relative to their own bytes; with a tag filter, each part's tags too. ``rows`` and
    ``value_bytes`` count what the read can return (the records the filter keeps)."""

    __slots__ = ("parts", "tags", "wanted", "rows", "value_bytes")

    def __init__(self, wanted):
        self.parts: list[tuple[bytes, np.ndarray, np.ndarray]] = []
        self.tags: list[str | None] = []
        self.wanted = wanted
        self.rows = 0
        self.value_bytes = 0

    def add(self, data: bytes, got) -> None:
        if not len(got.records) and not len(got.headers):
            return
        self.parts.append((data, got.records, got.headers))
        if self.wanted is None:
            self.rows += len(got.records)
            self.value_bytes += got.value_bytes
            return
        hl = got.headers.tolist()
        tags = [tag_of(data, t, hl) for t in got.records[:, 8].tolist()]
        self.tags += tags
        for t, vl in zip(tags, got.records[:, 5].tolist()):
            if t in self.wanted:
                self.rows += 1
                self.value_bytes += max(vl, 0)

    def complete(self, max_records: int, max_bytes: int) -> bool:
        """True when a damaged batch after these records is never needed: the read has as
        many records as asked, or the next one would pass ``max_bytes`` (the first record
        always counts)."""
        return self.rows >= max_records or self.value_bytes > max_bytes

    def joined(self) -> tuple[bytes, np.ndarray, np.ndarray]:
        """One buffer with every piece's rows pointing into it."""
        parts = self.parts
        if not parts:
            return b"", np.empty((0, 9), dtype=np.int64), np.empty((0, 4), dtype=np.int64)
        if len(parts) == 1:
            return parts[0]
        rows, hdrs = [], []
        shift = n_headers = 0
        for data, r, h in parts:
            r = r.copy()
            r[:, 2] += shift
            r[:, 4] += shift
            r[:, 6] += n_headers
            r[:, 8] = np.where(r[:, 8] >= 0, r[:, 8] + n_headers, -1)
            h = h.copy()
            h[:, 0] += shift
            h[:, 2] += shift
            rows.append(r)
            hdrs.append(h)
            shift += len(data)
            n_headers += len(h)
        return (b"".join(p[0] for p in parts), np.concatenate(rows), np.concatenate(hdrs))

    def records(self, topic: str, partition: int, max_records: int,
                max_bytes: int) -> Records:
        """The Records the read returns: the tag filter, then ``count_within``."""
        data, rows, hdrs = self.joined()
        tags = None
        if self.wanted is not None:
            keep = [i for i, t in enumerate(self.tags) if t in self.wanted]
            rows = rows[keep]
            tags = [self.tags[i] for i in keep]
        k = count_within(np.maximum(rows[:, 5], 0), max_records, max_bytes)
        return _build(topic, partition, data, rows[:k], hdrs,
                      None if tags is None else tags[:k])


def _build(topic: str, partition: int, data: bytes, rows: np.ndarray, hdrs: np.ndarray,
           tags: list | None) -> Records:
    if not len(rows):
        return Records.empty(topic, partition)
    counts = rows[:, 7]
    headers_col = tags_col = None
    if counts.any():
        first, tag_rows = rows[:, 6], rows[:, 8]

        def make_headers() -> list:
            hl = hdrs.tolist()
            return [header_rows(data, f, c, hl) or EMPTY_HEADERS if c else EMPTY_HEADERS
                    for f, c in zip(first.tolist(), counts.tolist())]

        headers_col = make_headers
        if tags is not None:
            tags_col = tags if any(t is not None for t in tags) else None
        elif (tag_rows >= 0).any():
            def make_tags() -> list:
                hl = hdrs.tolist()
                return [tag_of(data, t, hl) for t in tag_rows.tolist()]
            tags_col = make_tags
    return Records(topic, partition, data, rows[:, 0], rows[:, 1], rows[:, 4], rows[:, 5],
                   key_offsets=rows[:, 2], key_lengths=rows[:, 3], headers=headers_col,
                   tags=tags_col)


def _problem(log, seg, data: bytes, at: int, position: int, status: int, expect: int):
    """The CorruptRecordError for a batch ``decode_batches`` stopped at (``at`` in
    ``data``, ``position`` in the ``.log``)."""
    if status == ref.BATCHES_BAD_CRC:
        size = int.from_bytes(data[at + 8:at + 12], "big", signed=True) + fmt.LOG_OVERHEAD
        seg.check_batch(memoryview(data)[at:at + size], position)  # raises with the CRCs
    base = int.from_bytes(data[at:at + 8], "big", signed=True)
    if status == ref.BATCHES_BAD_CHAIN:
        return errors.CorruptRecordError(
            f"batch has baseOffset {base} where {expect} was expected", seg.log_path, position)
    if status == ref.BATCHES_BAD_RECORDS:
        return errors.CorruptRecordError(
            f"batch at offset {base} has malformed records (in {log.topic}-{log.partition})",
            seg.log_path, position)
    return errors.CorruptRecordError(
        f"malformed batch header in {log.topic}-{log.partition} inside the validated part "
        "of the segment", seg.log_path, position)


def read_records(log, offset: int, max_records: int, max_bytes: int, wanted) -> Records:
    """The records of ``log`` (a PartitionLog) from ``offset`` (see ``Store.read`` for the
    limits; ``wanted`` is a set of tags or None)."""
    log.check_offset(offset)
    topic, partition = log.topic, log.partition
    end = log.next_offset  # bytes past it may be in the file, not yet acknowledged
    if offset >= end:
        return Records.empty(topic, partition)
    loc = log.locate(offset)
    if loc is None:
        return Records.empty(topic, partition)
    seg, (pos, first_size, _base, _last) = loc
    segs = log.segments
    start = segs.index(seg) if seg in segs else len(segs)
    check = log.config.check_crcs
    if wanted is None:  # the decoder may stop once the limits are met
        limit_records, limit_bytes = max_records, max_bytes
    else:
        limit_records = limit_bytes = _INT64_MAX
    pieces = _Pieces(wanted)
    read = 0  # bytes read so far (to size the next read from what records took)
    want = min(max(first_size, min(max_bytes + max_records * FIRST_GUESS_OVERHEAD,
                                   max_records * FIRST_GUESS_RECORD,
                                   2 * max_bytes + WALK_GUESS)), MAX_READ)
    for s in segs[start:]:
        p = pos if s is seg else 0
        expect = s.base_offset if p == 0 else -1  # the offset chain (not CRC-covered)
        while p < s.size:
            data = os.pread(s.fd, min(s.size - p, max(want, MIN_READ)), p)
            got = _decode(data, 0, len(data), expect, offset, end, check,
                          limit_records - pieces.rows, limit_bytes - pieces.value_bytes)
            pieces.add(data, got)
            status, at, expect = got.status, got.next_pos, got.next_expect
            if status == ref.BATCHES_LIMIT:
                return pieces.records(topic, partition, max_records, max_bytes)
            if status == ref.BATCHES_COMPRESSED:
                size = read_header(data, at).size
                plain = uncompressed_copy(data, at)
                inner = _decode(plain, 0, len(plain), -1, offset, end, False,
                                _INT64_MAX, _INT64_MAX)
                if inner.status != ref.BATCHES_END:
                    raise _problem(log, s, plain, 0, p + at, ref.BATCHES_BAD_RECORDS, -1)
                pieces.add(plain, inner)
                at += size
            elif status == ref.BATCHES_TORN and at == 0 and len(data) >= fmt.LOG_OVERHEAD \
                    and want < _batch_size(data) and p + _batch_size(data) <= s.size:
                want = _batch_size(data)  # the next batch is larger than the read: read it
                continue
            elif status not in (ref.BATCHES_END, ref.BATCHES_TORN) or at == 0:
                # a damaged batch, or a header claiming bytes past the segment's end
                if pieces.complete(max_records, max_bytes):
                    return pieces.records(topic, partition, max_records, max_bytes)
                raise _problem(log, s, data, at, p + at, status, expect)
            p += at
            read += at
            if pieces.complete(max_records, max_bytes):
                return pieces.records(topic, partition, max_records, max_bytes)
            if pieces.rows:  # size the next read from what the records took so far
                left = max_records - pieces.rows
                want = min(left * (read // pieces.rows + 1),
                           max_bytes - pieces.value_bytes + left * FIRST_GUESS_OVERHEAD,
                           MAX_READ)
            else:
                want = min(want * 2, MAX_READ)
    return pieces.records(topic, partition, max_records, max_bytes)


def _batch_size(data: bytes) -> int:
    return int.from_bytes(data[8:12], "big", signed=True) + fmt.LOG_OVERHEAD

"""One ``read()`` of the commitlog engine as columns: ConsumeQueue units in, ``Records`` out.

RocketMQ's ``DefaultMessageStore#getMessage`` walks the ConsumeQueue units from an offset and
copies the CommitLog slices they point at into one result. :class:`ReadBatch` does the same
with one native call (``native.cl_gather``) per CommitLog file the units touch: the call
checks every message (lengths against TOTALSIZE and the file, the CRCs with
``check_crcs``, the message against its unit) and copies the bodies, and the properties of
messages that have a key, tag or header, into one output buffer, returning their places as
int64 columns. Nothing is made per message in Python on that path; keys, headers and tags
are decoded from the copied properties only when the caller touches them (a plain ASCII
key is a column of positions, no decoding at all).

The first message the gather cannot take stops it; :meth:`ReadBatch._read_one` then reads
that message alone with :func:`.message.read_fields`, which words the CorruptRecordError
(the same text and position as ever), reads a message the native walk leaves alone (V2,
IPv6 hosts), or applies the tag and ``max_bytes`` rules exactly, and the gather resumes after
it. A unit whose CommitLog file retention deleted is skipped (MESSAGE_WAS_REMOVING).

Thread-safety: a ReadBatch belongs to one read in one thread. The gathers write into a
per-thread scratch buffer that the next read of the thread reuses, so the Records it
returns gets its own copy of the bytes (no view of the scratch or of a mapped file): it
outlives any later read and any retention.
"""
from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from mqstore import errors, native
from mqstore.records import EMPTY_HEADERS, Records

from . import format as fmt
from . import message as msgcodec

if TYPE_CHECKING:
    from .commitlog import CommitLog
    from .consume_queue import ConsumeQueue

(_QUEUE_OFFSET, _BODY_POS, _BODY_LEN, _BORN, _PROPS_POS, _PROPS_LEN, _TAG_POS, _TAG_LEN,
 _KEY_POS, _KEY_LEN, _FLAGS) = range(native.CLR_COLUMNS)
_ESCAPE = fmt.ESCAPE
_NO_FILE = b""  # the CommitLog "file" when no unit names one that exists
_UNIT_PHYS = struct.Struct(">q").unpack_from  # a ConsumeQueue unit's commitlog offset
#: room a read's output gets per message for its properties, and beyond the bodies
_PROPS_ROOM = 512
_SLACK = 1 << 16
#: per thread, the output buffer gathers write into (reused: a read copies out its bytes);
#: one grown past _SCRATCH_KEEP by a large read is not kept
_scratch = threading.local()
_SCRATCH_KEEP = 8 << 20


def _tag_text(raw: bytes) -> str:
    """A TAGS value as ``decode_properties`` reads it."""
    text = raw.decode("utf-8", "replace")
    return msgcodec.unescape_value(text).decode("utf-8") if text.startswith(_ESCAPE) else text


def _key_bytes(raw: bytes) -> bytes:
    """A KEYS value as ``decode_properties`` reads it."""
    return msgcodec.unescape_value(raw.decode("utf-8", "replace"))


def unit_blocks(cq: "ConsumeQueue | None", q: int, cq_end: int,
                tail: list) -> Iterator[tuple[Any, int, int, int]]:
    """The ConsumeQueue units from ``q`` as (buffer of 20-byte units, first unit, count,
    queue offset of the first): the mapped files up to ``cq_end``, one file at a time, then
    the in-memory ``tail`` units (a follower's, consecutive queue offsets) packed the same
    way."""
    while cq is not None and q < cq_end:
        blk = cq.unit_block(q, cq_end)
        if blk is None:
            break
        arr, cqf = blk
        yield cqf.mm, q % cq.units_per_file, len(arr), q
        q += len(arr)
    units = [u for u in tail if u[0] >= q]
    if units:
        yield (b"".join(fmt.CQ_UNIT.pack(p, size, h) for _q, p, size, h in units), 0,
               len(units), units[0][0])


class ReadBatch:
    """The messages of one read of ``topic``/``partition``: :meth:`read_queue`, then
    :meth:`records`."""

    def __init__(self, commitlog: "CommitLog", check_crcs: bool, topic: str, partition: int,
                 max_records: int, max_bytes: int, tagset: set[str] | None):
        self.cl = commitlog
        self.check_crcs = check_crcs
        self.topic = topic
        self.partition = partition
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.tagset = tagset
        self.taken = 0  # messages in the result so far
        self.taken_bytes = 0  # their summed body sizes
        self.done = False
        self._mf = None  # the CommitLog file of the last message gathered
        out = getattr(_scratch, "out", None)
        self._out: np.ndarray = out if out is not None else np.empty(0, dtype=np.uint8)
        self._out_pos = 0
        self._rows: list[np.ndarray] = []  # (CLR_COLUMNS, k) columns of the taken, per call
        self._flags = 0  # OR of their flags
        self._tags: list[str | None] = []  # tag reads: the tag of each taken message
        #: row index -> (key, headers, tag) of a message read by the per-message reader
        self._slow: dict[int, tuple] = {}

    @property
    def remaining(self) -> int:
        """How many more messages the read may take."""
        return self.max_records - self.taken

    # ----- gathering -----
    def read_queue(self, cq: "ConsumeQueue | None", q: int, cq_end: int, tail: list,
                   hashes: list[int] | None) -> None:
        """Take the messages of the units from ``q`` (:func:`unit_blocks`); with ``hashes``
        only units whose tag hash is one of them (``native.cq_tag_scan``, no CommitLog
        access)."""
        for units, first, n, q0 in unit_blocks(cq, q, cq_end, tail):
            select = None if hashes is None else native.cq_tag_scan(units, first, n, hashes)
            if select is None or len(select):
                self._walk(units, first, n, select, q0)
            if self.done:
                break

    def _walk(self, units, first: int, n: int, select, q0: int) -> None:
        """Gather from the units ``units[first:first + n]`` (queue offsets from ``q0``),
        one native call per CommitLog file they point into."""
        cl = self.cl
        n_iter = n if select is None else len(select)
        i = 0
        if self._mf is None and n_iter:  # the file of the first unit (the usual one for all)
            rel = 0 if select is None else int(select[0])
            self._mf = cl.find_file(_UNIT_PHYS(units, (first + rel) * fmt.CQ_UNIT_SIZE)[0])
        while i < n_iter and not self.done:
            mf = self._mf
            cap = min(self.remaining, n_iter - i)
            self._room(min(self.max_bytes - self.taken_bytes, cap * 4096)
                       + cap * _PROPS_ROOM + _SLACK)
            got = native.cl_gather(
                units, first, n, select, i, q0,
                _NO_FILE if mf is None else mf.mm, 0 if mf is None else mf.file_size,
                0 if mf is None else mf.file_from_offset, self.partition, self.check_crcs,
                cl.crc_required_from, self.taken, self.taken_bytes, self.max_bytes, cap,
                self._out, self._out_pos)
            if got.rows.shape[1]:
                self._take(got)
            i = got.next
            status = got.status
            if status == native.CLR_OK:
                pass
            elif status == native.CLR_OTHER_FILE:
                found = cl.find_file(got.stop_phys)
                if found is None or found is mf:
                    i += 1  # MESSAGE_WAS_REMOVING: retention took it
                else:
                    self._mf = found
            elif status == native.CLR_FULL:
                self._room(got.stop_size)
            elif status == native.CLR_LIMIT and self.tagset is None:
                self.done = True
            else:
                self._read_one(got.stop_queue_offset, got.stop_phys, got.stop_size)
                i += 1
            if self.taken >= self.max_records:
                self.done = True

    def _room(self, need: int) -> None:
        """Make the output hold ``need`` more bytes (kept for the thread's next reads)."""
        need = max(need, 0)
        out = self._out
        if self._out_pos + need > len(out):
            grown = np.empty(max(2 * len(out), self._out_pos + need), dtype=np.uint8)
            grown[:self._out_pos] = out[:self._out_pos]
            self._out = _scratch.out = grown

    def _take(self, got) -> None:
        rows = got.rows
        self._out_pos = got.out_end
        self._flags |= got.flags
        if self.tagset is not None:  # candidates by tag hash: re-check the real tag
            buf = self._out
            tags = [None if length < 0 else _tag_text(buf[p:p + length].tobytes())
                    for p, length in zip(rows[_TAG_POS].tolist(), rows[_TAG_LEN].tolist())]
            keep = [t in self.tagset for t in tags]
            if not all(keep):
                rows = rows[:, keep]
                tags = [t for t, ok in zip(tags, keep) if ok]
            self._tags += tags
            self.taken_bytes += int(rows[_BODY_LEN].sum())
        else:
            self.taken_bytes = got.taken_bytes
        if rows.shape[1]:
            self._rows.append(rows)
            self.taken += rows.shape[1]

    def _read_one(self, queue_offset: int, phys: int, size: int) -> None:
        """The message a unit points at, read alone (the gather stopped at it): raises
        CorruptRecordError for a damaged one, takes or skips a sound one by the read's
        rules."""
        cl = self.cl
        mf = cl.find_file(phys)
        if mf is None:
            return  # MESSAGE_WAS_REMOVING
        pos = phys - mf.file_from_offset
        topic, partition = self.topic, self.partition
        try:
            f = msgcodec.read_fields(mf.mm, pos, mf.file_size, self.check_crcs,
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
            key, headers, tag = None, EMPTY_HEADERS, None
        else:
            key, headers, tag = props.key, props.headers or EMPTY_HEADERS, props.tag
        if self.tagset is not None and tag not in self.tagset:
            return
        body = f.body
        if self.taken and self.taken_bytes + len(body) > self.max_bytes:
            self.done = True
            return
        self._room(len(body))
        p = self._out_pos
        self._out[p:p + len(body)] = np.frombuffer(body, dtype=np.uint8)
        self._rows.append(np.array([[queue_offset], [p], [len(body)], [f.born_timestamp],
                                    [-1], [-1], [-1], [-1], [-1], [-1], [0]], dtype=np.int64))
        self._slow[self.taken] = (key, headers, tag)
        self._out_pos = p + len(body)
        if self.tagset is not None:
            self._tags.append(tag)
        self.taken += 1
        self.taken_bytes += len(body)

    # ----- the result -----
    def records(self) -> Records:
        """The Records of everything taken (one bytes buffer, lazy keys/headers/tags)."""
        if not self._rows:
            return Records.empty(self.topic, self.partition)
        buf = self._out[:self._out_pos].tobytes()
        if len(self._out) > _SCRATCH_KEEP:
            _scratch.out = None
        rows = self._rows[0] if len(self._rows) == 1 else np.concatenate(self._rows, axis=1)
        slow, flags = self._slow, self._flags
        key_offsets = key_lengths = keys = None
        if slow or flags & native.CLR_HAS_KEY:
            if not slow and not flags & native.CLR_KEY_OTHER:
                key_offsets, key_lengths = rows[_KEY_POS], rows[_KEY_LEN]
            else:
                keys = _lazy_keys(buf, rows, slow)
        headers = None
        if slow or flags & native.CLR_HAS_HEADERS:
            headers = _lazy_headers(buf, rows, slow)
        if self.tagset is not None:
            tags = self._tags
        elif slow or flags & native.CLR_HAS_TAG:
            tags = _lazy_tags(buf, rows, slow)
        else:
            tags = None
        return Records(self.topic, self.partition, buf, rows[_QUEUE_OFFSET], rows[_BORN],
                       rows[_BODY_POS], rows[_BODY_LEN], key_offsets=key_offsets,
                       key_lengths=key_lengths, keys=keys, headers=headers, tags=tags,
                       null_values=False)  # a RocketMQ body is never null


def _lazy_keys(buf: bytes, rows: np.ndarray, slow: dict):
    def keys() -> list:
        out: list = [None] * rows.shape[1]
        has = rows[_KEY_LEN] >= 0
        for i, p, length in zip(np.flatnonzero(has).tolist(), rows[_KEY_POS][has].tolist(),
                                rows[_KEY_LEN][has].tolist()):
            out[i] = _key_bytes(buf[p:p + length])
        for i, (key, _headers, _tag) in slow.items():
            out[i] = key
        return out
    return keys


def _lazy_headers(buf: bytes, rows: np.ndarray, slow: dict):
    def headers() -> list:
        out: list = [EMPTY_HEADERS] * rows.shape[1]
        has = (rows[_FLAGS] & native.CLR_HAS_HEADERS) != 0
        for i, p, length in zip(np.flatnonzero(has).tolist(), rows[_PROPS_POS][has].tolist(),
                                rows[_PROPS_LEN][has].tolist()):
            out[i] = msgcodec.decode_properties(buf[p:p + length]).headers or EMPTY_HEADERS
        for i, (_key, hdrs, _tag) in slow.items():
            out[i] = hdrs
        return out
    return headers


def _lazy_tags(buf: bytes, rows: np.ndarray, slow: dict):
    def tags() -> list:
        out: list = [None] * rows.shape[1]
        has = rows[_TAG_LEN] >= 0
        for i, p, length in zip(np.flatnonzero(has).tolist(), rows[_TAG_POS][has].tolist(),
                                rows[_TAG_LEN][has].tolist()):
            out[i] = _tag_text(buf[p:p + length])
        for i, (_key, _headers, tag) in slow.items():
            out[i] = tag
        return out
    return tags

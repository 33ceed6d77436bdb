"""One ``read()`` of the commitlog engine as columns: ConsumeQueue units in, ``Records`` out.

RocketMQ's ``DefaultMessageStore#getMessage`` walks the ConsumeQueue units from an offset and
copies the CommitLog slices they point at into one result. :class:`ReadBatch` does the same
with one native call (``native.cl_gather``) per CommitLog file the units touch: the call
checks every message (lengths against TOTALSIZE and the file, the CRCs with
``check_crcs``, the message against its unit) and copies bodies and properties into one
output buffer, returning their places as int64 columns. Nothing is made per message in
Python on that path; keys, headers and tags are decoded from the copied properties only
when the caller touches them.

The first message the gather cannot take stops it; :meth:`ReadBatch._read_one` then reads
that message alone with :func:`.message.read_fields`, which words the CorruptRecordError
(the same text and position as ever), reads a message the native walk leaves alone (V2,
IPv6 hosts), or applies the tag and ``max_bytes`` rules exactly, and the gather resumes after
it. A unit whose CommitLog file retention deleted is skipped (MESSAGE_WAS_REMOVING).

Thread-safety: a ReadBatch belongs to one read in one thread; the Records it returns owns
its bytes (no view of a mapped file), so it outlives any retention.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mqstore import errors, native
from mqstore.records import EMPTY_HEADERS, Records

from . import format as fmt
from . import message as msgcodec

if TYPE_CHECKING:
    from .commitlog import CommitLog

_BODY_POS, _BODY_LEN, _BORN, _PROPS_POS, _PROPS_LEN = 0, 1, 2, 3, 4
_TAG_POS, _TAG_LEN, _KEY_POS, _KEY_LEN, _FLAGS = 5, 6, 7, 8, 9
_ESCAPE = fmt.ESCAPE
#: the output buffer of a read gets room for the bodies max_bytes lets through plus this, and
#: this much a message for its properties, before it grows
_OUT_SLACK = 1 << 16
_PROPS_SLACK = 512


def _tag_text(raw: bytes) -> str:
    """A TAGS value as ``decode_properties`` reads it."""
    text = raw.decode("utf-8", "replace")
    return msgcodec.unescape_value(text).decode("utf-8") if text.startswith(_ESCAPE) else text


def _key_bytes(raw: bytes) -> bytes:
    """A KEYS value as ``decode_properties`` reads it."""
    return msgcodec.unescape_value(raw.decode("utf-8", "replace"))


class ReadBatch:
    """The messages of one read of ``topic``/``partition``: :meth:`add` runs of units (in
    queue order) until it returns False, then :meth:`records`."""

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
        self._out: np.ndarray | None = None  # uint8, the result's bytes (grows)
        self._out_pos = 0
        self._offsets: list[np.ndarray] = []  # queue offsets of the taken messages, per chunk
        self._rows: list[np.ndarray] = []  # their (CLR_COLUMNS, k) columns, per chunk
        self._tags: list[str | None] = []  # tag reads: the tag of each taken message
        #: row index -> (key, headers, tag) of a message read by the per-message reader
        self._slow: dict[int, tuple] = {}

    @property
    def remaining(self) -> int:
        """How many more messages the read may take."""
        return self.max_records - self.taken

    # ----- gathering -----
    def add(self, queue_offsets: np.ndarray, phys: np.ndarray, sizes: np.ndarray) -> bool:
        """Take the messages of these units (int64 arrays, fillers removed); False once the
        read is complete."""
        i, n = 0, len(queue_offsets)
        cl = self.cl
        while i < n and not self.done:
            mf = cl.find_file(int(phys[i]))
            if mf is None:
                i += 1  # MESSAGE_WAS_REMOVING: retention took it
                continue
            # the units in this file (a queue's units ascend through the log; a unit that
            # does not is outside the file and is read on its own below)
            j = i + int(np.searchsorted(phys[i:], mf.file_end_offset))
            if j == i:
                j = i + 1
            self._gather_file(mf, queue_offsets[i:j], phys[i:j], sizes[i:j])
            i = j
        return not self.done

    def _room(self, need: int) -> np.ndarray:
        out = self._out
        if out is None:
            out = self._out = np.empty(need, dtype=np.uint8)
        elif self._out_pos + need > len(out):
            grown = np.empty(max(2 * len(out), self._out_pos + need), dtype=np.uint8)
            grown[:self._out_pos] = out[:self._out_pos]
            out = self._out = grown
        return out

    def _gather_file(self, mf, qs: np.ndarray, phys: np.ndarray, sizes: np.ndarray) -> None:
        positions = phys - mf.file_from_offset
        crc_pos = self.cl.crc_required_from - mf.file_from_offset
        limit = mf.file_size
        k, n = 0, len(qs)
        while k < n and not self.done:
            m = min(n - k, self.remaining)
            sel = slice(k, k + m)
            # room for every message of the call (a message is never larger than its unit),
            # within what max_bytes lets through; a message that still does not fit (large
            # properties) is CLR_FULL and gathered again after the buffer grows
            room = int(np.clip(sizes[sel], 0, limit).sum())
            self._room(min(room, max(self.max_bytes - self.taken_bytes, 0) + _OUT_SLACK
                           + m * _PROPS_SLACK))
            got = native.cl_gather(mf.mm, limit, positions[sel], sizes[sel], qs[sel],
                                   self.partition, self.check_crcs, crc_pos, self.taken,
                                   self.taken_bytes, self.max_bytes, self._out, self._out_pos)
            if got.count:
                self._take(qs[k:k + got.count], got.rows, got.out_end)
            k += got.count
            status = got.status
            if status == native.CLR_FULL:
                self._room(int(sizes[k]))
            elif status == native.CLR_LIMIT and self.tagset is None:
                self.done = True
            elif status != native.CLR_OK:
                self._read_one(int(qs[k]), int(phys[k]), int(sizes[k]))
                k += 1
            if self.taken >= self.max_records:
                self.done = True

    def _take(self, qs: np.ndarray, rows: np.ndarray, out_end: int) -> None:
        self._out_pos = out_end
        if self.tagset is not None:  # candidates by tag hash: re-check the real tag
            buf = self._out
            tags = [None if length < 0 else _tag_text(buf[p:p + length].tobytes())
                    for p, length in zip(rows[_TAG_POS].tolist(), rows[_TAG_LEN].tolist())]
            keep = [t in self.tagset for t in tags]
            if not all(keep):
                qs, rows = qs[keep], rows[:, keep]
                tags = [t for t, ok in zip(tags, keep) if ok]
            self._tags += tags
        if len(qs):
            self._offsets.append(qs)
            self._rows.append(rows)
            self.taken += len(qs)
            self.taken_bytes += int(rows[_BODY_LEN].sum())

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
        out = self._room(len(body))
        p = self._out_pos
        out[p:p + len(body)] = np.frombuffer(body, dtype=np.uint8)
        row = np.array([[p], [len(body)], [f.born_timestamp], [-1], [-1], [-1], [-1], [-1],
                        [-1], [0]], dtype=np.int64)
        self._slow[self.taken] = (key, headers, tag)
        self._out_pos = p + len(body)
        self._offsets.append(np.array([queue_offset], dtype=np.int64))
        self._rows.append(row)
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
        if len(self._rows) == 1:
            rows, offsets = self._rows[0], self._offsets[0]
        else:
            rows, offsets = np.concatenate(self._rows, axis=1), np.concatenate(self._offsets)
        slow = self._slow
        key_len = rows[_KEY_LEN]
        key_offsets = key_lengths = keys = None
        if slow or (key_len >= 0).any():
            plain = (rows[_FLAGS] & native.CLR_KEY_PLAIN) != 0
            if not slow and bool(np.all(plain | (key_len < 0))):
                key_offsets, key_lengths = rows[_KEY_POS], key_len
            else:
                keys = _lazy_keys(buf, rows, slow)
        headers = None
        if slow or (rows[_FLAGS] & native.CLR_HAS_HEADERS).any():
            headers = _lazy_headers(buf, rows, slow)
        if self.tagset is not None:
            tags = self._tags
        elif slow or (rows[_TAG_LEN] >= 0).any():
            tags = _lazy_tags(buf, rows, slow)
        else:
            tags = None
        return Records(self.topic, self.partition, buf, offsets, rows[_BORN], rows[_BODY_POS],
                       rows[_BODY_LEN], key_offsets=key_offsets, key_lengths=key_lengths,
                       keys=keys, headers=headers, tags=tags)


def _lazy_keys(buf: bytes, rows: np.ndarray, slow: dict):
    def keys() -> list:
        out: list = [None] * rows.shape[1]
        for i, p, length in zip(np.flatnonzero(rows[_KEY_LEN] >= 0).tolist(),
                                rows[_KEY_POS][rows[_KEY_LEN] >= 0].tolist(),
                                rows[_KEY_LEN][rows[_KEY_LEN] >= 0].tolist()):
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

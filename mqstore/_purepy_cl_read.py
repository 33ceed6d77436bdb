"""Pure-Python reference of the commitlog read gather (``native/cl_read.c``).

:func:`cl_gather` defines what ``mqstore.native.cl_gather`` does on both backends: it reads,
in one call, the messages that a run of ConsumeQueue units points at inside one CommitLog
file (RocketMQ V1 messages, FORMATS.md), checks each one and copies its body and properties
into one output buffer, and stops at the first message it cannot take with a status saying
why. The engine (``engines/commitlog/reads.py``) then reads that message alone with its
per-message reader, which words the error (CorruptRecordError) or decodes a message the walk
leaves alone (V2, IPv6 hosts).

Thread-safety: a pure function over caller-owned memory (it writes only ``out``).
"""
from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

import numpy as np

from mqstore._purepy import _bytes_view
from mqstore.errors import BufferRangeError

#: columns of ``ClGather.rows`` (one row of the (COLUMNS, n) array each)
COLUMNS = ("body_pos", "body_len", "born_timestamp", "props_pos", "props_len", "tag_pos",
           "tag_len", "key_pos", "key_len", "flags")
CLR_COLUMNS = len(COLUMNS)
#: flags: a named property besides TAGS, KEYS, UNIQ_KEY and __CRC32# (a user header)
CLR_HAS_HEADERS = 1
#: flags: the KEYS value is ASCII and not escaped, so the key is its bytes
CLR_KEY_PLAIN = 2
#: flags: the TAGS value is ASCII and not escaped, so the tag is its text
CLR_TAG_PLAIN = 4
#: statuses: every message gathered, or why message ``count`` stopped the walk
CLR_OK = 0
CLR_LIMIT = 1  # sound and the unit's, but its body would take the read past max_bytes
CLR_CORRUPT = 2  # a length does not fit TOTALSIZE or the file, or a CRC differs
CLR_MISMATCH = 3  # sound, but not the message its unit names (size, queue id, queue offset)
CLR_FULL = 5  # ``out`` has no room for it: call again from it with a larger ``out``
CLR_FOREIGN = 6  # not V1 with IPv4 hosts, or TOTALSIZE out of range: the caller decides

_MAGIC_V1 = 0xDAA320A7
_IPV6_HOSTS = 0x30
_MIN = 91  # MSG_FIXED_OVERHEAD
_POS_BODY = 84
_CRC_LEN = 20  # "__CRC32#\x01" + 10 digits + "\x02"
_CRC_PREFIX = b"__CRC32#\x01"
_MASK = 0x7FFFFFFF
_HEAD = struct.Struct(">iIIiiqqiq")  # TOTALSIZE .. BORNTIMESTAMP
_I32 = struct.Struct(">i").unpack_from
_I16 = struct.Struct(">h").unpack_from
_OWN_NAMES = (b"UNIQ_KEY", b"__CRC32#")


class ClGather(NamedTuple):
    """What one :func:`cl_gather` call took."""

    status: int  # CLR_OK, or the CLR_* reason message ``count`` was not taken
    count: int  # messages gathered
    out_end: int  # end of the bytes written into ``out``
    rows: np.ndarray  # int64, shape (CLR_COLUMNS, count): see COLUMNS


def _ascii_value(v: bytes) -> bool:
    return v.isascii() and not v.startswith(b"\x03")


def parse_properties(raw: bytes, base: int) -> tuple[int, int, int, int, int]:
    """(tag position, tag length, key position, key length, flags) of PROPERTIES bytes
    ``raw`` found at ``base`` of the output: the last TAGS and KEYS win (as in
    ``decode_properties``), -1, -1 where absent. Pairs are ``\\x02``-separated, name and value
    split at the pair's first ``\\x01``; a pair without one or with an empty name is
    skipped."""
    tag_pos = tag_len = key_pos = key_len = -1
    flags = 0
    tag = key = None
    i = 0
    n = len(raw)
    while i < n:
        j = raw.find(b"\x02", i)
        if j < 0:
            j = n
        sep = raw.find(b"\x01", i, j)
        if sep > i:
            name = raw[i:sep]
            v = sep + 1
            if name == b"TAGS":
                tag_pos, tag_len, tag = base + v, j - v, raw[v:j]
            elif name == b"KEYS":
                key_pos, key_len, key = base + v, j - v, raw[v:j]
            elif name not in _OWN_NAMES:
                flags |= CLR_HAS_HEADERS
        i = j + 1
    if key is not None and _ascii_value(key):
        flags |= CLR_KEY_PLAIN
    if tag is not None and _ascii_value(tag):
        flags |= CLR_TAG_PLAIN
    return tag_pos, tag_len, key_pos, key_len, flags


def _problem(mv: memoryview, pos: int, limit: int, check_crcs: bool,
             crc_required_pos: int) -> tuple[int, tuple | None]:
    """(CLR_OK, fields) for a message the walk reads, else (status, None)."""
    if pos < 0 or pos > limit - _MIN:
        return CLR_CORRUPT, None
    size, magic, body_crc, queue_id, _flag, qoff, _phys, sys_flag, born = \
        _HEAD.unpack_from(mv, pos)
    if magic != _MAGIC_V1 or sys_flag & _IPV6_HOSTS or size < _MIN or size > limit - pos:
        return CLR_FOREIGN, None
    end = pos + size
    p = pos + _POS_BODY
    body_len = _I32(mv, p)[0]
    if body_len < 0 or p + 4 + body_len + 3 > end:
        return CLR_CORRUPT, None
    body = p + 4
    p = body + body_len
    p += 1 + mv[p]
    if p + 2 > end:
        return CLR_CORRUPT, None
    props_len = _I16(mv, p)[0]
    p += 2
    if props_len < 0 or p + props_len != end:
        return CLR_CORRUPT, None
    has_crc = (props_len >= _CRC_LEN and mv[end - _CRC_LEN:end - 11] == _CRC_PREFIX
               and mv[end - 1] == 2)
    if check_crcs:
        if has_crc:
            digits = bytes(mv[end - 11:end - 1])
            stored = int(digits[::-1]) if digits.isdigit() else -1
            if stored != zlib.crc32(mv[pos:end - _CRC_LEN]) & _MASK:
                return CLR_CORRUPT, None
        elif pos >= crc_required_pos or zlib.crc32(mv[body:body + body_len]) & _MASK != body_crc:
            return CLR_CORRUPT, None
    raw_len = props_len - _CRC_LEN if has_crc else props_len
    return CLR_OK, (size, queue_id, qoff, born, body, body_len, p, raw_len)


def cl_gather(buf, limit: int, positions, sizes, queue_offsets, queue_id: int,
              check_crcs: bool, crc_required_pos: int, taken: int, taken_bytes: int,
              max_bytes: int, out, out_pos: int) -> ClGather:
    """Gather the messages at ``positions`` (int64, file positions) of one CommitLog file
    ``buf[0:limit)`` for a read of queue ``queue_id``, in order, into ``out`` from
    ``out_pos``.

    Each message is checked as ``engines/commitlog/message.read_fields`` checks it: the
    header fits the file, V1 with IPv4 hosts and TOTALSIZE within [91, limit - pos] (else
    CLR_FOREIGN), body, topic and properties lengths against TOTALSIZE; with ``check_crcs``
    the ``__CRC32#`` record CRC where the message ends with that property, else the body CRC
    (and at or after ``crc_required_pos`` a message without ``__CRC32#`` is CLR_CORRUPT);
    then its size, queue offset and queue id against the unit (``sizes``,
    ``queue_offsets``, ``queue_id``: CLR_MISMATCH). It is taken while no message was taken
    before it in the read (``taken`` plus those of this call is 0) or ``taken_bytes`` plus
    the bodies so far plus its body stay within ``max_bytes`` (else CLR_LIMIT).

    A taken message's body, then its properties without the trailing ``__CRC32#`` property,
    are copied to ``out``; its row holds their places and what :func:`parse_properties`
    finds; a message that does not fit in ``out`` is CLR_FULL. ``BufferRangeError`` when
    ``limit`` is outside ``buf`` or ``out_pos`` outside ``out``.
    """
    mv = _bytes_view(buf)
    dst = _bytes_view(out)
    if limit < 0 or limit > len(mv) or out_pos < 0 or out_pos > len(dst):
        n_bytes, n_out = len(mv), len(dst)
        mv.release()
        dst.release()
        raise BufferRangeError(f"gather window limit {limit} / output position {out_pos} is "
                               f"outside a buffer of {n_bytes} / {n_out} bytes")
    positions = np.asarray(positions, dtype=np.int64).tolist()
    sizes = np.asarray(sizes, dtype=np.int64).tolist()
    queue_offsets = np.asarray(queue_offsets, dtype=np.int64).tolist()
    if not len(positions) == len(sizes) == len(queue_offsets):
        raise ValueError("positions, sizes and queue_offsets must have the same length")
    rows: list[tuple[int, ...]] = []
    o = out_pos
    status = CLR_OK
    for k, pos in enumerate(positions):
        status, f = _problem(mv, pos, limit, check_crcs, crc_required_pos)
        if f is None:
            break
        size, qid, qoff, born, body, body_len, props, raw_len = f
        if size != sizes[k] or qoff != queue_offsets[k] or qid != queue_id:
            status = CLR_MISMATCH
            break
        if taken + k > 0 and taken_bytes + body_len > max_bytes:
            status = CLR_LIMIT
            break
        if o + body_len + raw_len > len(dst):
            status = CLR_FULL
            break
        dst[o:o + body_len] = mv[body:body + body_len]
        body_pos = o
        o += body_len
        raw = bytes(mv[props:props + raw_len])
        dst[o:o + raw_len] = raw
        rows.append((body_pos, body_len, born, o, raw_len, *parse_properties(raw, o)))
        o += raw_len
        taken_bytes += body_len
    mv.release()
    dst.release()
    cols = np.array(rows, dtype=np.int64).reshape(-1, CLR_COLUMNS).T.copy()
    return ClGather(status, len(rows), o, cols)

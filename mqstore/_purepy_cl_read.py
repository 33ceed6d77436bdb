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

#: columns of ``ClGather.rows`` (one row of the (CLR_COLUMNS, n) array each)
COLUMNS = ("queue_offset", "body_pos", "body_len", "born_timestamp", "props_pos", "props_len",
           "tag_pos", "tag_len", "key_pos", "key_len", "flags")
CLR_COLUMNS = len(COLUMNS)
#: flags: a named property besides TAGS, KEYS, UNIQ_KEY and __CRC32# (a user header)
CLR_HAS_HEADERS = 1
#: flags: the KEYS value is ASCII and not escaped, so the key is its bytes
CLR_KEY_PLAIN = 2
#: flags: the TAGS value is ASCII and not escaped, so the tag is its text
CLR_TAG_PLAIN = 4
#: flags: a KEYS property / a TAGS property / a KEYS value that is not plain
CLR_HAS_KEY = 8
CLR_HAS_TAG = 16
CLR_KEY_OTHER = 32
#: statuses: every message gathered, or why message ``count`` stopped the walk
CLR_OK = 0
CLR_LIMIT = 1  # sound and the unit's, but its body would take the read past max_bytes
CLR_CORRUPT = 2  # a length does not fit TOTALSIZE or the file, or a CRC differs
CLR_MISMATCH = 3  # sound, but not the message its unit names (size, queue id, queue offset)
CLR_FULL = 5  # ``out`` has no room for it: call again from it with a larger ``out``
CLR_FOREIGN = 6  # not V1 with IPv4 hosts, or TOTALSIZE out of range: the caller decides
CLR_OTHER_FILE = 7  # the unit points outside this CommitLog file

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
_UNIT = struct.Struct(">qi")  # a ConsumeQueue unit's commitlog offset and size (tag hash after)
_UNIT_SIZE = 20
_FILLER = 0x7FFFFFFF


class ClGather(NamedTuple):
    """What one :func:`cl_gather` call did."""

    status: int  # CLR_OK: the walk ended; else why it stopped at unit ``next``
    next: int  # the index the walk stopped at (or the end)
    out_end: int  # end of the bytes written into ``out``
    taken_bytes: int  # body bytes taken by the read, this call included
    flags: int  # OR of the flags of the messages gathered
    stop_phys: int  # commitlog offset, size and queue offset of the last unit looked at
    stop_size: int  # (the stop unit when status is not CLR_OK; -1 if none)
    stop_queue_offset: int
    rows: np.ndarray  # int64, shape (CLR_COLUMNS, messages gathered): see COLUMNS


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
    if key is not None:
        flags |= CLR_HAS_KEY | (CLR_KEY_PLAIN if _ascii_value(key) else CLR_KEY_OTHER)
    if tag is not None:
        flags |= CLR_HAS_TAG | (CLR_TAG_PLAIN if _ascii_value(tag) else 0)
    return tag_pos, tag_len, key_pos, key_len, flags


def _problem(mv: memoryview, phys: int, file_from: int, limit: int, check_crcs: bool,
             crc_required_from: int) -> tuple[int, tuple | None]:
    """(CLR_OK, fields) for a message the walk reads, else (status, None)."""
    pos = phys - file_from
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
        elif phys >= crc_required_from or zlib.crc32(mv[body:body + body_len]) & _MASK != body_crc:
            return CLR_CORRUPT, None
    raw_len = props_len - _CRC_LEN if has_crc else props_len
    return CLR_OK, (size, queue_id, qoff, born, body, body_len, p, raw_len)


def cl_gather(units, first_unit: int, n_units: int, select, start: int,
              first_queue_offset: int, buf, limit: int, file_from: int, queue_id: int,
              check_crcs: bool, crc_required_from: int, taken: int, taken_bytes: int,
              max_bytes: int, rows_cap: int, out, out_pos: int) -> ClGather:
    """Walk ConsumeQueue units and gather the messages they point at in one CommitLog file.

    The units are the 20-byte units ``units[first_unit : first_unit + n_units]`` (unit ``r``
    of them has queue offset ``first_queue_offset + r``), or with ``select`` (int64 indexes
    relative to ``first_unit``) only those; the walk starts at index ``start`` (of the units
    or of ``select``) and skips fillers. ``buf[0:limit)`` is the CommitLog file starting at
    commitlog offset ``file_from``; a unit outside it stops the walk (CLR_OTHER_FILE).

    Each message is checked as ``engines/commitlog/message.read_fields`` checks it: the
    header fits the file, V1 with IPv4 hosts and TOTALSIZE within [91, limit - pos] (else
    CLR_FOREIGN), body, topic and properties lengths against TOTALSIZE; with ``check_crcs``
    the ``__CRC32#`` record CRC where the message ends with that property, else the body CRC
    (and at or after commitlog offset ``crc_required_from`` a message without ``__CRC32#``
    is CLR_CORRUPT); then its size, queue offset and queue id against the unit and
    ``queue_id`` (CLR_MISMATCH). It is taken while nothing was taken before it in the read
    (``taken`` plus this call's messages is 0) or ``taken_bytes`` plus its body stays within
    ``max_bytes`` (else CLR_LIMIT), and while fewer than ``rows_cap`` were taken by the call
    (the walk then ends, CLR_OK). A taken message's body, then its properties without the
    trailing ``__CRC32#`` property (not copied, position and length -1, when flags is 0:
    nothing but UNIQ_KEY), are copied to ``out`` from ``out_pos``; one that does not fit
    body and properties is CLR_FULL. Its row holds their places and what :func:`parse_properties` finds.

    ``BufferRangeError`` when the units, ``limit`` or ``out_pos`` are outside their buffers;
    ``ValueError`` for a negative count, ``start`` past the end or a ``select`` index outside
    ``[0, n_units)``.
    """
    um = _bytes_view(units)
    mv = _bytes_view(buf)
    dst = _bytes_view(out)
    if (first_unit < 0 or n_units < 0 or (first_unit + n_units) * _UNIT_SIZE > len(um)
            or limit < 0 or limit > len(mv) or out_pos < 0 or out_pos > len(dst)):
        sizes = len(um), len(mv), len(dst)
        for view in (um, mv, dst):
            view.release()  # a kept traceback must not pin the buffers (mmaps)
        raise BufferRangeError(
            f"gather of units [{first_unit}, {first_unit + n_units}), limit {limit}, output "
            f"position {out_pos} is outside buffers of {sizes[0]} / {sizes[1]} / {sizes[2]} "
            "bytes")
    sel = None if select is None else np.asarray(select, dtype=np.int64).tolist()
    n_iter = n_units if sel is None else len(sel)
    if rows_cap < 0 or start < 0 or start > n_iter or (
            sel is not None and any(not 0 <= r < n_units for r in sel[start:])):
        for view in (um, mv, dst):
            view.release()
        raise ValueError(f"bad gather arguments: rows_cap {rows_cap}, start {start} of "
                         f"{n_iter}, select outside [0, {n_units})")
    rows: list[tuple[int, ...]] = []
    o = out_pos
    status = CLR_OK
    flags_or = 0
    stop = (-1, -1, -1)
    i = start
    while i < n_iter:
        rel = i if sel is None else sel[i]
        phys, size = _UNIT.unpack_from(um, (first_unit + rel) * _UNIT_SIZE)
        if size == _FILLER:
            i += 1
            continue
        if len(rows) == rows_cap:
            break
        qoff = first_queue_offset + rel
        stop = (phys, size, qoff)
        if phys < file_from or phys - file_from >= limit:
            status = CLR_OTHER_FILE
            break
        status, f = _problem(mv, phys, file_from, limit, check_crcs, crc_required_from)
        if f is None:
            break
        msize, qid, mqoff, born, body, body_len, props, raw_len = f
        if msize != size or mqoff != qoff or qid != queue_id:
            status = CLR_MISMATCH
            break
        if taken + len(rows) > 0 and taken_bytes + body_len > max_bytes:
            status = CLR_LIMIT
            break
        if o + body_len + raw_len > len(dst):
            status = CLR_FULL
            break
        dst[o:o + body_len] = mv[body:body + body_len]
        body_pos = o
        o += body_len
        raw = bytes(mv[props:props + raw_len])
        places = parse_properties(raw, o)
        if places[-1]:  # a key, tag or header to decode later: keep the properties
            dst[o:o + raw_len] = raw
            rows.append((qoff, body_pos, body_len, born, o, raw_len, *places))
            o += raw_len
        else:  # only UNIQ_KEY (and the record CRC): nothing a Record holds
            rows.append((qoff, body_pos, body_len, born, -1, -1, *places))
        flags_or |= places[-1]
        taken_bytes += body_len
        i += 1
    for view in (um, mv, dst):
        view.release()
    cols = np.array(rows, dtype=np.int64).reshape(-1, CLR_COLUMNS).T.copy()
    return ClGather(status, i, o, taken_bytes, flags_or, *stop, cols)


# ----- transfer_to -----
class TransferPlan(NamedTuple):
    """What one :func:`cl_transfer_plan` call planned."""

    status: int  # CLR_OK (units done), CLR_LIMIT, CLR_OTHER_FILE or CLR_FULL at unit ``next``
    next: int  # the index the walk stopped at (or the end)
    total: int  # bytes planned by the transfer, this call included
    have: int  # 1 once a message is planned
    stop_phys: int  # commitlog offset and size of the last unit looked at (-1 if none)
    stop_size: int
    slices: np.ndarray  # int64 (k, 2): start and end file positions of adjacent messages


def cl_transfer_plan(units, first_unit: int, n_units: int, start: int, file_from: int,
                     limit: int, max_bytes: int, total: int, have: int,
                     cap: int) -> TransferPlan:
    """The slices a ``transfer_to`` sends from one CommitLog file: walk the 20-byte units
    ``units[first_unit : first_unit + n_units]`` from index ``start``, skip fillers, and plan
    each message while nothing is planned (``have`` 0) or ``total`` plus its size stays
    within ``max_bytes`` (else CLR_LIMIT). A unit outside the file ``[file_from, file_from +
    limit)`` stops the walk (CLR_OTHER_FILE). Messages adjacent in the file join one slice
    (file positions; a message's end is clamped to the file, a negative size is empty); at
    most ``cap`` slices (then CLR_FULL).

    ``BufferRangeError`` when the units are outside their buffer or ``limit`` is negative;
    ``ValueError`` for a negative ``cap`` or ``start`` outside ``[0, n_units]``.
    """
    um = _bytes_view(units)
    if (first_unit < 0 or n_units < 0 or (first_unit + n_units) * _UNIT_SIZE > len(um)
            or limit < 0):
        n_bytes = len(um)
        um.release()
        raise BufferRangeError(f"transfer plan of units [{first_unit}, "
                               f"{first_unit + n_units}) over a buffer of {n_bytes} bytes, "
                               f"limit {limit}")
    if cap < 0 or not 0 <= start <= n_units:
        um.release()
        raise ValueError(f"bad transfer plan arguments: cap {cap}, start {start} of {n_units}")
    slices: list[list[int]] = []
    status = CLR_OK
    stop = (-1, -1)
    i = start
    while i < n_units:
        phys, size = _UNIT.unpack_from(um, (first_unit + i) * _UNIT_SIZE)
        if size == _FILLER:
            i += 1
            continue
        stop = (phys, size)
        if have and total + size > max_bytes:
            status = CLR_LIMIT
            break
        if phys < file_from or phys - file_from >= limit:
            status = CLR_OTHER_FILE
            break
        begin = phys - file_from
        end = begin if size < 0 else min(begin + size, limit)
        if slices and slices[-1][1] == begin:
            slices[-1][1] = end
        else:
            if len(slices) == cap:
                status = CLR_FULL
                break
            slices.append([begin, end])
        total += size
        have = 1
        i += 1
    um.release()
    return TransferPlan(status, i, total, have, *stop,
                        np.array(slices, dtype=np.int64).reshape(-1, 2))

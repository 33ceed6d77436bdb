"""Encoding and decoding of CommitLog messages (RocketMQ V1) and their properties.

The messages of an append are encoded under the append lock in one native call
(``native.cl_encode``: RocketMQ's ``MessageExtEncoder`` and ``doAppend`` in one pass, with the
physical offset, store timestamp, body CRC and ``__CRC32#`` record CRC filled in); this
module encodes only the PROPERTIES of messages that carry a key, tag or headers.

Properties are ``name\\x01value\\x02`` pairs in UTF-8. mqstore puts the tag in ``TAGS``, the
key in ``KEYS`` and a generated id in ``UNIQ_KEY``, then the user headers under their own
names. Keys and header values are bytes in the API, so they must survive any content. The
escape (mqstore's, documented in docs/commitlog.md):

- a value is stored as is when it is non-empty valid UTF-8 without ``\\x01``, ``\\x02``,
  ``\\x03`` (and, for ``KEYS``, without a space, RocketMQ's key separator);
- anything else is stored as ``\\x03`` followed by the standard base64 of the bytes;
- a header name is stored as is unless it contains ``\\x01``, ``\\x02``, ``\\x03`` or is one of
  the names the store uses itself (``TAGS``, ``KEYS``, ``UNIQ_KEY``); such names are stored as
  ``\\x03`` + base64 of their UTF-8 bytes.

A value or name that starts with ``\\x03`` is therefore always an escaped one, and decoding is
exact. RocketMQ tools show escaped fields as base64 text, but never misread a separator.
"""
from __future__ import annotations

import base64
import struct
import zlib
from typing import NamedTuple

from mqstore import errors

from . import format as fmt

_SPECIAL = (fmt.NAME_VALUE_SEPARATOR, fmt.PROPERTY_SEPARATOR, fmt.ESCAPE)
_RESERVED_NAMES = frozenset((fmt.PROPERTY_TAGS, fmt.PROPERTY_KEYS, fmt.PROPERTY_UNIQ_KEY,
                             fmt.PROPERTY_CRC32))


def _has_special(s: str) -> bool:
    return "\x01" in s or "\x02" in s or "\x03" in s


def _escape_bytes(b: bytes) -> str:
    return fmt.ESCAPE + base64.b64encode(b).decode("ascii")


def escape_value(value: bytes, *, is_key: bool = False) -> str:
    """The property text for a bytes value (see the module docstring for the rule)."""
    if value:
        try:
            s = value.decode("utf-8")
        except UnicodeDecodeError:
            return _escape_bytes(value)
        if not _has_special(s) and not (is_key and fmt.KEY_SEPARATOR in s):
            return s
    return _escape_bytes(value)


def unescape_value(text: str) -> bytes:
    """The bytes a property text stands for (inverse of :func:`escape_value`)."""
    if text.startswith(fmt.ESCAPE):
        return base64.b64decode(text[1:])
    return text.encode("utf-8")


def escape_name(name: str) -> str:
    """The property name for a user header name."""
    if name in _RESERVED_NAMES or _has_special(name):
        return _escape_bytes(_utf8(name, "header name"))
    return name


def unescape_name(text: str) -> str:
    """The user header name a property name stands for."""
    if text.startswith(fmt.ESCAPE):
        return base64.b64decode(text[1:]).decode("utf-8")
    return text


def escape_tag(tag: str) -> str:
    """The ``TAGS`` text for a tag (escaped only if it holds a separator character)."""
    if _has_special(tag):
        return _escape_bytes(_utf8(tag, "tag"))
    return tag


def _utf8(s: str, what: str) -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise errors.InvalidRecordError(f"{what} {s!r} is not valid Unicode: {exc}") from None


def encode_properties(tag: str | None, key: bytes | None, uniq_key: str | None,
                      headers: dict[str, bytes] | None) -> bytes:
    """The PROPERTIES bytes of one message."""
    parts = []
    if tag is not None:
        parts.append(f"TAGS\x01{escape_tag(tag)}\x02")
    if key is not None:
        parts.append(f"KEYS\x01{escape_value(key, is_key=True)}\x02")
    if uniq_key is not None:
        parts.append(f"UNIQ_KEY\x01{uniq_key}\x02")
    if headers:
        for name, value in headers.items():
            parts.append(f"{escape_name(name)}\x01{escape_value(value)}\x02")
    return _utf8("".join(parts), "property")


class Properties(NamedTuple):
    """The decoded properties of a message."""

    tag: str | None
    key: bytes | None
    keys_text: str | None  # the KEYS property as stored (what the IndexFile hashes)
    uniq_key: str | None
    headers: dict[str, bytes]


def decode_properties(data: bytes | memoryview) -> Properties:
    """Parse PROPERTIES bytes (pairs without a ``\\x01`` or with an empty name are skipped,
    as RocketMQ's ``string2messageProperties`` does)."""
    tag = key = keys_text = uniq = None
    headers: dict[str, bytes] = {}
    if not data:
        return Properties(None, None, None, None, headers)
    text = bytes(data).decode("utf-8", "replace")
    for pair in text.split(fmt.PROPERTY_SEPARATOR):
        name, sep, value = pair.partition(fmt.NAME_VALUE_SEPARATOR)
        if not sep or not name:
            continue
        if name == fmt.PROPERTY_TAGS:
            tag = unescape_value(value).decode("utf-8") if value.startswith(fmt.ESCAPE) else value
        elif name == fmt.PROPERTY_KEYS:
            keys_text = value
            key = unescape_value(value)
        elif name == fmt.PROPERTY_UNIQ_KEY:
            uniq = value
        elif name == fmt.PROPERTY_CRC32:
            continue  # the record CRC (see record_crc_problem), not a user header
        else:
            headers[unescape_name(name)] = unescape_value(value)
    return Properties(tag, key, keys_text, uniq, headers)


def body_crc(body: bytes | memoryview) -> int:
    """BODYCRC: CRC-32 (IEEE, java.util.zip) of the body, masked to 31 bits."""
    return zlib.crc32(body) & fmt.BODY_CRC_MASK


# ----- encoding (the bytes themselves: native.cl_encode, reference _purepy_cl_write) -----
def check_topic(topic: bytes) -> None:
    """RecordTooLargeError if the topic does not fit V1's one-byte TOPIC length."""
    if len(topic) > fmt.TOPIC_MAX_BYTES:
        raise errors.RecordTooLargeError(
            f"topic name is {len(topic)} bytes; a V1 message holds at most {fmt.TOPIC_MAX_BYTES}")


def properties_too_large(length: int) -> None:
    """Raise the RecordTooLargeError of a message whose PROPERTIES (record CRC included)
    take ``length`` > 32767 bytes."""
    raise errors.RecordTooLargeError(
        f"key, tag and headers take {length} bytes of message properties (with "
        f"the {fmt.CRC32_RESERVED_LEN}-byte record CRC); RocketMQ's format allows at most "
        f"{fmt.PROPERTIES_MAX_BYTES}")


_CRC_LEN = fmt.CRC32_RESERVED_LEN
_CRC_DIGITS_AT = _CRC_LEN - len(fmt.CRC32_PREFIX)  # digits start this far before the end
_CRC_PREFIX = fmt.CRC32_PREFIX


def crc_digits(crc: int) -> bytes:
    """The 10 ASCII digits of ``__CRC32#``: least-significant first, padded with '0'
    (RocketMQ ``MessageDecoder#createCrc32``)."""
    return (b"%d" % crc)[::-1].ljust(fmt.CRC32_DIGITS, b"0")


# ----- layout and checks (V1 and V2, IPv4 and IPv6 hosts) -----
_I32 = struct.Struct(">i").unpack_from
_I64 = struct.Struct(">q").unpack_from
_I16 = struct.Struct(">h").unpack_from
_SIZE_MAGIC = fmt.TOTALSIZE_AND_MAGIC.unpack_from
#: TOTALSIZE .. BORNTIMESTAMP (the part of the header whose position never varies)
_FIXED_HEAD = struct.Struct(">iIIiiqqiq")
_FIXED_HEAD_UNPACK = _FIXED_HEAD.unpack_from
_V1 = fmt.MESSAGE_MAGIC_V1
_V2 = fmt.MESSAGE_MAGIC_V2
_IPV6 = fmt.SYSFLAG_IPV6_HOSTS


class BadMessage(Exception):
    """The bytes at a position are not a sound message; ``str()`` says why. The caller adds
    the file and position (CorruptRecordError) or classifies it (recovery)."""


class Layout(NamedTuple):
    """Where the variable fields of one message are (absolute positions in the buffer)."""

    size: int
    magic: int
    sys_flag: int
    born_host_pos: int
    born_host_len: int
    store_timestamp_pos: int
    store_host_pos: int
    store_host_len: int
    body_pos: int
    body_len: int
    topic_pos: int
    topic_len: int
    props_pos: int
    props_len: int


def layout(buf, pos: int, limit: int) -> Layout:
    """The field positions of the message at ``buf[pos:limit]``; every length is checked
    against TOTALSIZE (RocketMQ ``checkMessageAndReturnSize`` and ``calMsgLength``), so a
    flipped length bit raises BadMessage, never IndexError. No CRC check (see :func:`check`)."""
    if pos < 0 or limit - pos < 8:
        raise BadMessage("truncated header")
    size, magic = _SIZE_MAGIC(buf, pos)
    if magic == _V1:
        topic_len_size = 1
    elif magic == _V2:
        topic_len_size = 2
    else:
        raise BadMessage(f"bad magic 0x{magic:08X}")
    if size < fmt.MSG_FIXED_OVERHEAD:
        raise BadMessage(f"TOTALSIZE {size} below the {fmt.MSG_FIXED_OVERHEAD}-byte minimum")
    end = pos + size
    if end > limit:
        raise BadMessage(f"TOTALSIZE {size} runs past the end of the data")
    sys_flag = _I32(buf, pos + fmt.POS_SYSFLAG)[0]
    born_len = fmt.HOST_V6_SIZE if sys_flag & fmt.SYSFLAG_BORNHOST_V6 else fmt.HOST_V4_SIZE
    store_len = fmt.HOST_V6_SIZE if sys_flag & fmt.SYSFLAG_STOREHOST_V6 else fmt.HOST_V4_SIZE
    born_pos = pos + fmt.POS_BORNTIMESTAMP + 8
    ts_pos = born_pos + born_len
    store_pos = ts_pos + 8
    p = store_pos + store_len + 12  # RECONSUMETIMES, PREPARED TX OFFSET
    if p + 4 > end:
        raise BadMessage(f"host fields (SYSFLAG 0x{sys_flag:X}) do not fit TOTALSIZE {size}")
    body_len = _I32(buf, p)[0]
    p += 4
    if body_len < 0 or p + body_len + topic_len_size > end:
        raise BadMessage(f"body length {body_len} does not fit TOTALSIZE {size}")
    body_pos = p
    p += body_len
    topic_len = buf[p] if topic_len_size == 1 else _I16(buf, p)[0]
    p += topic_len_size
    if topic_len < 0 or p + topic_len + 2 > end:
        raise BadMessage(f"topic length {topic_len} does not fit TOTALSIZE {size}")
    topic_pos = p
    p += topic_len
    props_len = _I16(buf, p)[0]
    p += 2
    if props_len < 0 or p + props_len != end:
        raise BadMessage(f"recomputed length differs from TOTALSIZE {size}")
    return Layout(size, magic, sys_flag, born_pos, born_len, ts_pos, store_pos, store_len,
                  body_pos, body_len, topic_pos, topic_len, p, props_len)


def stored_record_crc(buf, props_pos: int, end: int) -> int | None:
    """The CRC in the message's trailing ``__CRC32#`` property, None if it has none, -1 if
    the property is there but its digits are not."""
    t = end - _CRC_LEN
    if t < props_pos or buf[t:end - _CRC_DIGITS_AT] != _CRC_PREFIX or buf[end - 1] != 2:
        return None
    digits = bytes(buf[end - _CRC_DIGITS_AT:end - 1])
    if not digits.isdigit():
        return -1
    return int(digits[::-1])


def crc_problem(buf, pos: int, lay: Layout, crc_required: bool = False) -> str | None:
    """What is wrong with the CRCs of the message at ``pos``, or None. The record CRC
    (``__CRC32#``) covers the body, so when it is present the body CRC is not recomputed
    (RocketMQ's ``forceVerifyPropCRC`` does the same). ``crc_required``: the message is at
    or after the first one that carried a record CRC, so a missing one is damage (its tail,
    where the property lives, was torn off or overwritten)."""
    end = pos + lay.size
    stored = stored_record_crc(buf, lay.props_pos, end)
    if stored is not None:
        actual = zlib.crc32(buf[pos:end - _CRC_LEN]) & fmt.BODY_CRC_MASK
        if actual != stored:
            return f"record CRC mismatch (__CRC32# says {stored}, computed {actual})"
        return None
    if crc_required:
        return "the __CRC32# property is missing (torn or overwritten properties)"
    want = _SIZE_CRC(buf, pos)[2]
    if body_crc(buf[lay.body_pos:lay.body_pos + lay.body_len]) != want:
        return f"body CRC mismatch (stored 0x{want:08X})"
    return None


_SIZE_CRC = struct.Struct(">iII").unpack_from


def has_record_crc(buf, pos: int, size: int) -> bool:
    """True if the message at ``pos`` of ``size`` bytes ends with the ``__CRC32#`` property."""
    end = pos + size
    return buf[end - _CRC_LEN:end - _CRC_DIGITS_AT] == _CRC_PREFIX and buf[end - 1] == 2


def check(buf, pos: int, limit: int, crc_required: bool = False,
          physical_offset: int | None = None) -> str | None:
    """What is wrong with the message at ``buf[pos:limit]``, or None if it is sound: magic,
    TOTALSIZE, every length against TOTALSIZE, the CRCs (:func:`crc_problem`), and with
    ``physical_offset`` that its PHYSICALOFFSET says it is there (a resync candidate)."""
    try:
        lay = layout(buf, pos, limit)
    except BadMessage as exc:
        return str(exc)
    if physical_offset is not None:
        stored = _I64(buf, pos + fmt.POS_PHYSICALOFFSET)[0]
        if stored != physical_offset:
            return f"PHYSICALOFFSET {stored} is not its position {physical_offset}"
    return crc_problem(buf, pos, lay, crc_required)


def store_timestamp(buf, pos: int, limit: int) -> int:
    """STORETIMESTAMP of the message at ``pos`` (0 if there is no sound header there)."""
    try:
        return _I64(buf, layout(buf, pos, limit).store_timestamp_pos)[0]
    except BadMessage:
        return 0


# ----- decoding -----
class DecodedMessage(NamedTuple):
    """Every field of one message (body copied out of the file)."""

    total_size: int
    magic: int
    body_crc: int
    queue_id: int
    flag: int
    queue_offset: int
    physical_offset: int
    sys_flag: int
    born_timestamp: int
    born_host: bytes
    store_timestamp: int
    store_host: bytes
    reconsume_times: int
    prepared_transaction_offset: int
    body: bytes
    topic: str
    properties: Properties


def _props_bytes(buf, lay: Layout) -> bytes:
    end = lay.props_pos + lay.props_len
    if stored_record_crc(buf, lay.props_pos, end) is not None:
        end -= _CRC_LEN
    return bytes(buf[lay.props_pos:end])


def _topic(buf, lay: Layout) -> str:
    return bytes(buf[lay.topic_pos:lay.topic_pos + lay.topic_len]).decode("utf-8", "replace")


def decode(buf, pos: int = 0, limit: int | None = None) -> DecodedMessage:
    """Decode the message at ``buf[pos:]`` (V1 or V2, IPv4 or IPv6 hosts). Lengths are
    checked (BadMessage); CRCs are not (see :func:`check`)."""
    lay = layout(buf, pos, len(buf) if limit is None else limit)
    size, magic, crc, queue_id, flag, qoff, phys, sys_flag, born = _FIXED_HEAD_UNPACK(buf, pos)
    p = lay.store_host_pos + lay.store_host_len
    reconsume, prepared = struct.unpack_from(">iq", buf, p)
    return DecodedMessage(
        size, magic, crc, queue_id, flag, qoff, phys, sys_flag, born,
        bytes(buf[lay.born_host_pos:lay.born_host_pos + lay.born_host_len]),
        _I64(buf, lay.store_timestamp_pos)[0],
        bytes(buf[lay.store_host_pos:lay.store_host_pos + lay.store_host_len]),
        reconsume, prepared, bytes(buf[lay.body_pos:lay.body_pos + lay.body_len]),
        _topic(buf, lay), decode_properties(_props_bytes(buf, lay)))


def topic_and_properties(buf, pos: int, limit: int | None = None) -> tuple[str, Properties]:
    """Only the topic and properties of the message at ``buf[pos:]`` (the dispatcher's and
    the index re-check's view: the body is skipped, not copied)."""
    lay = layout(buf, pos, len(buf) if limit is None else limit)
    return _topic(buf, lay), decode_properties(_props_bytes(buf, lay))


def _property(raw: bytes, name: bytes) -> str | None:
    """One property's text straight from PROPERTIES bytes (pairs start at 0 or after
    ``\x02``; escaped names start with ``\x03``, so a user header cannot match)."""
    if raw.startswith(name):
        i = len(name)
    else:
        i = raw.find(b"\x02" + name)
        if i < 0:
            return None
        i += 1 + len(name)
    j = raw.find(b"\x02", i)
    return raw[i:j if j >= 0 else len(raw)].decode("utf-8", "replace")


_TAGS_EQ = b"TAGS\x01"
_KEYS_EQ = b"KEYS\x01"
_UNIQ_EQ = b"UNIQ_KEY\x01"


class DispatchFields(NamedTuple):
    """What the dispatcher needs from one message (the columns of native.dispatch_fields)."""

    size: int
    queue_id: int
    queue_offset: int
    physical_offset: int
    store_timestamp: int
    topic: str
    tag: str | None
    keys_text: str | None
    uniq_key: str | None


def dispatch_fields(buf, pos: int, limit: int | None = None) -> DispatchFields:
    """The dispatcher's view of any message mqstore reads (V1 or V2, IPv4 or IPv6 hosts),
    one message at a time: the second opinion where ``native.dispatch_fields`` stops."""
    lay = layout(buf, pos, len(buf) if limit is None else limit)
    _s, _m, _c, queue_id, _f, qoff, phys, _sf, _b = _FIXED_HEAD_UNPACK(buf, pos)
    raw = _props_bytes(buf, lay)
    tag = _property(raw, _TAGS_EQ)
    if tag is not None and tag.startswith(fmt.ESCAPE):
        tag = unescape_value(tag).decode("utf-8")
    return DispatchFields(lay.size, queue_id, qoff, phys, _I64(buf, lay.store_timestamp_pos)[0],
                          _topic(buf, lay), tag, _property(raw, _KEYS_EQ),
                          _property(raw, _UNIQ_EQ))


_UNIQ_ONLY = b"UNIQ_KEY\x01"
_MIN = fmt.MSG_FIXED_OVERHEAD
_MASK = fmt.BODY_CRC_MASK


class ReadFields(NamedTuple):
    """The read path's view of one message."""

    size: int
    queue_id: int
    queue_offset: int
    born_timestamp: int
    body: bytes
    properties: Properties | None  # None: the message carries only its UNIQ_KEY


def read_fields(mm, pos: int, limit: int, check_crcs: bool = True,
                crc_required: bool = False) -> ReadFields:
    """The read path's decoder for the message at ``mm[pos:limit]`` (``mm`` must slice to
    bytes: an mmap or bytes object). Every length is checked against TOTALSIZE and, with
    ``check_crcs``, the CRCs (:func:`crc_problem`); any problem raises BadMessage."""
    if pos < 0 or pos + _MIN > limit:
        raise BadMessage("message header runs past the end of the file")
    size, magic, bcrc, queue_id, _flag, qoff, _phys, sys_flag, born = _FIXED_HEAD_UNPACK(mm, pos)
    end = pos + size
    if magic != _V1 or sys_flag & _IPV6 or size < _MIN or end > limit:
        return _read_fields_slow(mm, pos, limit, check_crcs, crc_required)
    p = pos + fmt.POS_BODY
    blen = _I32(mm, p)[0]
    if blen < 0 or p + 4 + blen + 3 > end:
        raise BadMessage(f"body length {blen} does not fit TOTALSIZE {size}")
    body = mm[p + 4:p + 4 + blen]
    p += 4 + blen
    p += 1 + mm[p]
    if p + 2 > end:
        raise BadMessage(f"topic length does not fit TOTALSIZE {size}")
    plen = _I16(mm, p)[0]
    p += 2
    if plen < 0 or p + plen != end:
        raise BadMessage(f"recomputed length differs from TOTALSIZE {size}")
    if plen >= _CRC_LEN and mm[end - _CRC_LEN:end - _CRC_DIGITS_AT] == _CRC_PREFIX \
            and mm[end - 1] == 2:
        if check_crcs:
            digits = mm[end - _CRC_DIGITS_AT:end - 1]
            actual = zlib.crc32(mm[pos:end - _CRC_LEN]) & _MASK
            if not digits.isdigit() or int(digits[::-1]) != actual:
                raise BadMessage(f"record CRC mismatch (__CRC32# {digits!r}, computed {actual})")
        raw = mm[p:end - _CRC_LEN]
        plen -= _CRC_LEN
    else:
        if check_crcs:
            if crc_required:
                raise BadMessage("the __CRC32# property is missing (torn or overwritten "
                                 "properties)")
            if zlib.crc32(body) & _MASK != bcrc:
                raise BadMessage(f"body CRC mismatch (stored 0x{bcrc:08X})")
        raw = mm[p:end]
    if raw.startswith(_UNIQ_ONLY) and raw.find(b"\x02") == plen - 1:
        return ReadFields(size, queue_id, qoff, born, body, None)
    return ReadFields(size, queue_id, qoff, born, body, decode_properties(raw))


def _read_fields_slow(mm, pos: int, limit: int, check_crcs: bool,
                      crc_required: bool) -> ReadFields:
    lay = layout(mm, pos, limit)
    if check_crcs:
        problem = crc_problem(mm, pos, lay, crc_required)
        if problem is not None:
            raise BadMessage(problem)
    _s, _m, _c, queue_id, _f, qoff, _p, _sf, born = _FIXED_HEAD_UNPACK(mm, pos)
    return ReadFields(lay.size, queue_id, qoff, born,
                      bytes(mm[lay.body_pos:lay.body_pos + lay.body_len]),
                      decode_properties(_props_bytes(mm, lay)))

"""Encoding and decoding of CommitLog messages (RocketMQ V1) and their properties.

A message is built in two steps, as RocketMQ's ``MessageExtEncoder`` does: :func:`encode`
produces the whole entry outside the append lock with QUEUEOFFSET, PHYSICALOFFSET and
STORETIMESTAMP zeroed, and :func:`patch` fills those three fields (and BORNTIMESTAMP for a
message whose timestamp the store chose) under the lock, once the position is known.

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
_RESERVED_NAMES = frozenset((fmt.PROPERTY_TAGS, fmt.PROPERTY_KEYS, fmt.PROPERTY_UNIQ_KEY))
_HEADER = fmt.MSG_HEADER
_BODY_LENGTH_PACK = fmt.BODY_LENGTH.pack
_TOPIC_LENGTH_PACK = fmt.TOPIC_LENGTH.pack
_PROPERTIES_LENGTH_PACK = fmt.PROPERTIES_LENGTH.pack


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
        else:
            headers[unescape_name(name)] = unescape_value(value)
    return Properties(tag, key, keys_text, uniq, headers)


def body_crc(body: bytes | memoryview) -> int:
    """BODYCRC: CRC-32 (IEEE, java.util.zip) of the body, masked to 31 bits."""
    return zlib.crc32(body) & fmt.BODY_CRC_MASK


def encode(topic: bytes, queue_id: int, born_timestamp: int, body: bytes,
           properties: bytes) -> bytes:
    """A whole V1 message with QUEUEOFFSET, PHYSICALOFFSET and STORETIMESTAMP left zero.

    Raises RecordTooLargeError if the topic or the properties exceed what V1 can hold.
    """
    if len(topic) > fmt.TOPIC_MAX_BYTES:
        raise errors.RecordTooLargeError(
            f"topic name is {len(topic)} bytes; a V1 message holds at most {fmt.TOPIC_MAX_BYTES}")
    if len(properties) > fmt.PROPERTIES_MAX_BYTES:
        raise errors.RecordTooLargeError(
            f"key, tag and headers take {len(properties)} bytes of message properties; "
            f"RocketMQ's format allows at most {fmt.PROPERTIES_MAX_BYTES}")
    total = fmt.MSG_FIXED_OVERHEAD + len(body) + len(topic) + len(properties)
    return b"".join((
        _HEADER.pack(total, fmt.MESSAGE_MAGIC_V1, zlib.crc32(body) & fmt.BODY_CRC_MASK,
                     queue_id, 0, 0, 0, fmt.SYSFLAG_NONE, born_timestamp, fmt.BORNHOST, 0,
                     fmt.STOREHOST, 0, 0),
        _BODY_LENGTH_PACK(len(body)), body, _TOPIC_LENGTH_PACK(len(topic)), topic,
        _PROPERTIES_LENGTH_PACK(len(properties)), properties))


def encoder_for_plain_values(topic: bytes, uniq_prefix: str):
    """A fast :func:`encode` for values that carry nothing but their UNIQ_KEY (no key, tag or
    headers): ``enc(queue_id, body, uniq_number) -> bytes``. The topic is checked once."""
    if len(topic) > fmt.TOPIC_MAX_BYTES:
        raise errors.RecordTooLargeError(
            f"topic name is {len(topic)} bytes; a V1 message holds at most {fmt.TOPIC_MAX_BYTES}")
    head_pack = _HEADER.pack
    crc32 = zlib.crc32
    topic_part = _TOPIC_LENGTH_PACK(len(topic)) + topic
    props_template = b"UNIQ_KEY\x01" + uniq_prefix.encode("ascii") + b"%016X\x02"
    props_len = _PROPERTIES_LENGTH_PACK(len(props_template % 0))
    fixed = fmt.MSG_FIXED_OVERHEAD + len(topic) + len(props_template % 0)
    magic, mask, sysflag = fmt.MESSAGE_MAGIC_V1, fmt.BODY_CRC_MASK, fmt.SYSFLAG_NONE
    born_host, store_host = fmt.BORNHOST, fmt.STOREHOST
    body_len = _BODY_LENGTH_PACK
    join = b"".join

    def enc(queue_id: int, body: bytes, uniq_number: int) -> bytes:
        return join((head_pack(fixed + len(body), magic, crc32(body) & mask, queue_id, 0, 0, 0,
                               sysflag, 0, born_host, 0, store_host, 0, 0),
                     body_len(len(body)), body, topic_part, props_len,
                     props_template % uniq_number))

    return enc


def patch(buf: bytearray, pos: int, queue_offset: int, physical_offset: int,
          store_timestamp: int, born_timestamp: int | None) -> None:
    """Fill the fields known only under the append lock into the message at ``buf[pos:]``."""
    fmt.QUEUEOFFSET_PHYSICALOFFSET.pack_into(buf, pos + fmt.POS_QUEUEOFFSET, queue_offset,
                                             physical_offset)
    fmt.STORETIMESTAMP.pack_into(buf, pos + fmt.POS_STORETIMESTAMP, store_timestamp)
    if born_timestamp is not None:
        fmt.STORETIMESTAMP.pack_into(buf, pos + fmt.POS_BORNTIMESTAMP, born_timestamp)


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


def decode(buf, pos: int = 0) -> DecodedMessage:
    """Decode the message at ``buf[pos:]`` (no CRC check; see :func:`check`)."""
    head = _HEADER.unpack_from(buf, pos)
    p = pos + fmt.POS_BODY
    body_len = fmt.BODY_LENGTH.unpack_from(buf, p)[0]
    p += 4
    body = bytes(buf[p:p + body_len])
    p += body_len
    topic_len = buf[p]
    topic = bytes(buf[p + 1:p + 1 + topic_len]).decode("utf-8", "replace")
    p += 1 + topic_len
    props_len = fmt.PROPERTIES_LENGTH.unpack_from(buf, p)[0]
    props = decode_properties(buf[p + 2:p + 2 + props_len])
    return DecodedMessage(*head, body, topic, props)


def topic_and_properties(buf, pos: int) -> tuple[str, Properties]:
    """Only the topic and properties of the message at ``buf[pos:]`` (the dispatcher's and
    the index re-check's view: the body is skipped, not copied)."""
    p = pos + fmt.POS_BODY
    p += 4 + fmt.BODY_LENGTH.unpack_from(buf, p)[0]
    topic_len = buf[p]
    topic = bytes(buf[p + 1:p + 1 + topic_len]).decode("utf-8", "replace")
    p += 1 + topic_len
    props_len = fmt.PROPERTIES_LENGTH.unpack_from(buf, p)[0]
    return topic, decode_properties(buf[p + 2:p + 2 + props_len])


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


def dispatch_fields(buf, pos: int) -> tuple[str, str | None, str | None, str | None]:
    """(topic, tag, KEYS text, UNIQ_KEY) of the message at ``buf[pos:]``: what the
    dispatcher needs, without decoding the other properties."""
    p = pos + fmt.POS_BODY
    p += 4 + fmt.BODY_LENGTH.unpack_from(buf, p)[0]
    topic_len = buf[p]
    topic = bytes(buf[p + 1:p + 1 + topic_len]).decode("utf-8", "replace")
    p += 1 + topic_len
    props_len = fmt.PROPERTIES_LENGTH.unpack_from(buf, p)[0]
    raw = bytes(buf[p + 2:p + 2 + props_len])
    if raw.startswith(_UNIQ_EQ) and raw.find(b"\x02") == props_len - 1:  # no tag, no key
        return topic, None, None, raw[len(_UNIQ_EQ):-1].decode("utf-8", "replace")
    tag = _property(raw, _TAGS_EQ)
    if tag is not None and tag.startswith(fmt.ESCAPE):
        tag = unescape_value(tag).decode("utf-8")
    return topic, tag, _property(raw, _KEYS_EQ), _property(raw, _UNIQ_EQ)


_EMPTY_HEADERS: dict = {}
_UNIQ_ONLY = b"UNIQ_KEY\x01"
_I32 = struct.Struct(">i").unpack_from
_I64 = struct.Struct(">q").unpack_from
_I16 = struct.Struct(">h").unpack_from
_SIZE_MAGIC = fmt.TOTALSIZE_AND_MAGIC.unpack_from


def record_fields(mm, pos: int) -> tuple[int, int, int, bytes, Properties | None]:
    """(TOTALSIZE, magic, BORNTIMESTAMP, body, properties or None when the message carries
    only its UNIQ_KEY) of the message at ``mm[pos:]``: the read path's decoder. ``mm`` must
    slice to bytes (an mmap or bytes object)."""
    size, magic = _SIZE_MAGIC(mm, pos)
    born = _I64(mm, pos + fmt.POS_BORNTIMESTAMP)[0]
    p = pos + fmt.POS_BODY
    blen = _I32(mm, p)[0]
    body = mm[p + 4:p + 4 + blen]
    p += 4 + blen
    p += 1 + mm[p]
    plen = _I16(mm, p)[0]
    raw = mm[p + 2:p + 2 + plen]
    if raw.startswith(_UNIQ_ONLY) and raw.find(b"\x02") == plen - 1:
        return size, magic, born, body, None
    return size, magic, born, body, decode_properties(raw)


def check(buf, pos: int, limit: int) -> str | None:
    """What is wrong with the message at ``buf[pos:limit]``, or None if it is sound
    (TOTALSIZE, magic, recomputed length, body CRC: RocketMQ's checkMessageAndReturnSize)."""
    if limit - pos < 8:
        return "truncated header"
    size, magic = fmt.TOTALSIZE_AND_MAGIC.unpack_from(buf, pos)
    if magic != fmt.MESSAGE_MAGIC_V1:
        return f"bad magic 0x{magic:08X}"
    if size < fmt.MSG_FIXED_OVERHEAD:
        return f"TOTALSIZE {size} below the {fmt.MSG_FIXED_OVERHEAD}-byte minimum"
    if pos + size > limit:
        return f"TOTALSIZE {size} runs past the end of the data"
    p = pos + fmt.POS_BODY
    body_len = fmt.BODY_LENGTH.unpack_from(buf, p)[0]
    if body_len < 0 or p + 4 + body_len + 3 > pos + size:
        return f"body length {body_len} does not fit TOTALSIZE {size}"
    body = buf[p + 4:p + 4 + body_len]
    p += 4 + body_len
    p += 1 + buf[p]
    if p + 2 > pos + size:
        return "topic length does not fit TOTALSIZE"
    props_len = fmt.PROPERTIES_LENGTH.unpack_from(buf, p)[0]
    if props_len < 0 or p + 2 + props_len != pos + size:
        return f"recomputed length differs from TOTALSIZE {size}"
    crc = _HEADER.unpack_from(buf, pos)[2]
    if body_crc(body) != crc:
        return f"body CRC mismatch (stored 0x{crc:08X})"
    return None

"""Build many ``mqstore.api.Record`` / ``RecordMetadata`` objects quickly.

``Record`` is a frozen, slotted dataclass: its generated ``__init__`` goes through
``object.__setattr__`` once per field, which costs more than decoding the record from its
batch. For the read path we set the slots through their member descriptors instead (what
``object.__setattr__`` ends up doing, minus the generic lookup): about 3x cheaper, and the
result is an ordinary, equal, immutable ``Record``. If ``Record`` ever stops being a slotted
class with exactly these fields, :func:`make_records` falls back to the constructor.
"""
from __future__ import annotations

import dataclasses

from mqstore.api import Record, RecordMetadata

_FIELDS = ("topic", "partition", "offset", "timestamp_ms", "key", "value", "headers", "tag")


def _setters():
    if tuple(f.name for f in dataclasses.fields(Record)) != _FIELDS:
        return None
    try:
        descriptors = tuple(Record.__dict__[name] for name in _FIELDS)
    except KeyError:
        return None
    if not all(type(d).__name__ == "member_descriptor" for d in descriptors):
        return None
    return descriptors


_DESCRIPTORS = _setters()


def make_records(topic: str, partition: int, rows: list[tuple]) -> list[Record]:
    """``Record(topic, partition, *row)`` for each ``(offset, timestamp_ms, key, value,
    headers, tag)`` row."""
    if _DESCRIPTORS is None:
        return [Record(topic, partition, *row) for row in rows]
    new = object.__new__
    d_topic, d_part, d_off, d_ts, d_key, d_val, d_hdr, d_tag = _DESCRIPTORS
    s_topic, s_part, s_off, s_ts = d_topic.__set__, d_part.__set__, d_off.__set__, d_ts.__set__
    s_key, s_val, s_hdr, s_tag = d_key.__set__, d_val.__set__, d_hdr.__set__, d_tag.__set__
    out = []
    append = out.append
    for off, ts, key, value, headers, tag in rows:
        r = new(Record)
        s_topic(r, topic)
        s_part(r, partition)
        s_off(r, off)
        s_ts(r, ts)
        s_key(r, key)
        s_val(r, value)
        s_hdr(r, headers)
        s_tag(r, tag)
        append(r)
    return out


def _metadata_descriptors():
    names = ("topic", "partition", "offset", "timestamp_ms")
    if tuple(f.name for f in dataclasses.fields(RecordMetadata)) != names:
        return None
    try:
        descriptors = tuple(RecordMetadata.__dict__[name] for name in names)
    except KeyError:
        return None
    if not all(type(d).__name__ == "member_descriptor" for d in descriptors):
        return None
    return descriptors


_MD_DESCRIPTORS = _metadata_descriptors()


def make_metadata(topic: str, partition: int, base_offset: int, timestamp_ms: int,
                  count: int) -> list[RecordMetadata]:
    """``RecordMetadata(topic, partition, base_offset + i, timestamp_ms)`` for i < count."""
    if _MD_DESCRIPTORS is None:
        return [RecordMetadata(topic, partition, base_offset + i, timestamp_ms)
                for i in range(count)]
    new = object.__new__
    s_topic, s_part, s_off, s_ts = (d.__set__ for d in _MD_DESCRIPTORS)
    out = []
    append = out.append
    for off in range(base_offset, base_offset + count):
        m = new(RecordMetadata)
        s_topic(m, topic)
        s_part(m, partition)
        s_off(m, off)
        s_ts(m, timestamp_ms)
        append(m)
    return out

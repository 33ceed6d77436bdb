"""Message normalisation, topic-name validation, and the pure-Python reference kernels."""
from __future__ import annotations

import pytest

from mqstore import InvalidRecordError, InvalidTopicError, Message, _purepy
from mqstore.api import normalize_message, validate_topic_name


def test_normalize_message_fills_timestamp_and_copies_buffers():
    m = normalize_message(bytearray(b"v"), 42)
    assert (m.value, m.key, m.timestamp_ms, m.headers, m.tag, m.partition) == \
        (b"v", None, 42, None, None, None)
    assert type(m.value) is bytes
    clean = normalize_message(Message(b"v", key=b"k", partition=2), 9)  # the fast path
    assert (clean.value, clean.key, clean.timestamp_ms, clean.partition) == (b"v", b"k", 9, 2)
    assert normalize_message(Message(b"v", timestamp_ms=5, headers={}), 9).timestamp_ms == 5
    m = normalize_message(Message(memoryview(b"x"), key=bytearray(b"k"), headers={"h": b"1"}), 7)
    assert (m.value, m.key, m.timestamp_ms, m.headers) == (b"x", b"k", 7, {"h": b"1"})


@pytest.mark.parametrize("msg", [
    Message("str"), Message(b"v", key=1), Message(b"v", headers={1: b"x"}),
    Message(b"v", headers={"": b"x"}), Message(b"v", tag=""), Message(b"v", tag="x" * 256),
    Message(b"v", timestamp_ms=-1), Message(b"v", partition="0"),
    Message(b"v", headers={"mqstore.tag": b"x"}),
])
def test_normalize_message_rejects(msg):
    with pytest.raises(InvalidRecordError):
        normalize_message(msg, 0)


def test_topic_names():
    assert validate_topic_name("a.b-c_D9") == "a.b-c_D9"
    for bad in ("", ".", "..", "a/b", "x" * 250, None):
        with pytest.raises(InvalidTopicError):
            validate_topic_name(bad)


def test_reference_kernels_check_values():
    assert _purepy.crc32c(b"123456789") == 0xE3069283
    assert _purepy.crc32c(b"") == 0
    assert _purepy.crc32c(b"6789", _purepy.crc32c(b"12345")) == 0xE3069283
    assert _purepy.java_string_hash("hello") == 99162322
    assert _purepy.java_string_hash("") == 0
    assert _purepy.murmur2(b"21") == -973932308
    assert _purepy.murmur2(b"foobar") == -790332482
    assert _purepy.murmur2(b"") == 275646681

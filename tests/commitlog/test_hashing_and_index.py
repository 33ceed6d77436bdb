"""Java String.hashCode vectors (tag hash, index key hash) and IndexFile collisions / rolls."""
from __future__ import annotations

import os
import struct

import pytest

from mqstore import native

from mqstore.engines.commitlog.index_file import key_hash

JAVA_VECTORS = [
    ("", 0),
    ("hello", 99162322),
    ("TagA", 2598919),
    ("中文", 646394),                 # two BMP code units: 20013 * 31 + 25991
    ("😀", 1772899),                  # U+1F600 is the surrogate pair D83D DE00
    ("a😀b", ((97 * 31 + 0xD83D) * 31 + 0xDE00) * 31 + 98),
    ("polygenelubricants", -2147483648),  # the classic Integer.MIN_VALUE hash
    ("Aa", 2112), ("BB", 2112),       # the classic collision
]


@pytest.mark.parametrize("s,want", JAVA_VECTORS)
def test_java_string_hash_vectors(s, want):
    assert native.java_string_hash(s) == want


def test_index_key_hash_is_abs_with_min_value_zero():
    assert key_hash("polygenelubricants") == 0
    assert key_hash("hello") == 99162322
    neg = next(s for s in ("zzzzzzzz", "abcdefghij", "negative-hash-1")
               if native.java_string_hash(s) < 0)
    assert key_hash(neg) == -native.java_string_hash(neg)


@pytest.mark.parametrize("tag", ["polygenelubricants", "😀", "中文", "TagA"])
def test_tag_hash_in_consume_queue_is_sign_extended(open_cl, store_path, tag):
    s = open_cl()
    s.create_topic("t")
    s.append("t", b"v", tag=tag, partition=0)
    s.append("t", b"w", tag="other", partition=0)
    assert [r.value for r in s.read("t", 0, 0, tags=[tag])] == [b"v"]
    s.close()
    unit = open(os.path.join(store_path, "consumequeue", "t", "0", "%020d" % 0), "rb").read(20)
    assert struct.unpack(">qiq", unit)[2] == native.java_string_hash(tag)


def test_colliding_keys_are_told_apart(open_cl):
    # "t#Aa" and "t#BB" have the same Java hash, so they share slot and hash
    s = open_cl()
    s.create_topic("t")
    for i in range(5):
        s.append("t", b"aa%d" % i, key=b"Aa")
        s.append("t", b"bb%d" % i, key=b"BB")
    assert native.java_string_hash("t#Aa") == native.java_string_hash("t#BB")
    assert sorted(r.value for r in s.lookup_key("t", b"Aa")) == [b"aa%d" % i for i in range(5)]
    assert sorted(r.value for r in s.lookup_key("t", b"BB")) == [b"bb%d" % i for i in range(5)]
    assert len(s.lookup_key("t", b"Aa", limit=3)) == 3


def test_one_hash_slot_chains_every_key(open_cl):
    s = open_cl(hash_slots=1, index_entries=4096)
    s.create_topic("t", partitions=2)
    s.create_topic("u")
    for i in range(60):
        s.append("t", b"t%d" % i, key=b"k%d" % (i % 7))
        s.append("u", b"u%d" % i, key=b"k%d" % (i % 7))
    for k in range(7):
        got = s.lookup_key("t", b"k%d" % k)
        assert sorted(r.value for r in got) == sorted(b"t%d" % i for i in range(k, 60, 7))
        assert all(r.topic == "t" and r.key == b"k%d" % k for r in got)


def test_index_file_rolls_when_full_and_lookups_span_files(open_cl, store_path):
    s = open_cl(hash_slots=8, index_entries=9)  # 8 usable entries: 4 messages per file
    s.create_topic("t")
    for i in range(30):
        s.append("t", b"v%d" % i, key=b"k%d" % (i % 3), partition=0)
    s.flush()  # the async dispatcher has built the index by now
    assert s.stats()["index_files"] >= 7
    names = sorted(os.listdir(os.path.join(store_path, "index")))
    assert len(names) == s.stats()["index_files"] and names == sorted(set(names))
    got = s.lookup_key("t", b"k1")
    assert sorted(r.value for r in got) == sorted(b"v%d" % i for i in range(1, 30, 3))
    offsets = [r.offset for r in got]
    assert offsets == sorted(offsets, reverse=True)  # newest first


def test_unique_key_is_indexed(open_cl):
    s = open_cl()
    s.create_topic("t")
    s.append("t", b"v", partition=0)
    s.flush()
    st = s.stats()
    assert st["index_files"] == 1
    # UNIQ_KEY is the message id RocketMQ clients look up; it is in the index too
    from mqstore.engines.commitlog import message as msgcodec
    mf = s.commitlog.files[0]
    _topic, props = msgcodec.topic_and_properties(mf.mm, 0)
    assert s.index.query("t", props.uniq_key, 0, 1 << 62, 10) == [0]

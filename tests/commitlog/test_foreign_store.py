"""A store laid out by other software (no mqstore.json, no topics.json), built byte by byte
here from FORMATS.md with plain struct: mqstore detects it, opens it and reads it, including
RocketMQ's multi-key KEYS and properties mqstore never writes itself."""
from __future__ import annotations

import os
import struct
import zlib

import pytest

import mqstore

FILE = 4096


def rocketmq_message(topic: str, queue_id: int, queue_offset: int, phys: int, body: bytes,
                     props: str, store_ts: int) -> bytes:
    t, p = topic.encode(), props.encode()
    total = 91 + len(body) + len(t) + len(p)
    return (struct.pack(">iIIiiqqiq", total, 0xDAA320A7, zlib.crc32(body) & 0x7FFFFFFF,
                        queue_id, 0, queue_offset, phys, 0, store_ts - 5)
            + bytes([10, 0, 0, 7]) + struct.pack(">i", 54321)
            + struct.pack(">q", store_ts) + bytes([10, 0, 0, 1]) + struct.pack(">i", 10911)
            + struct.pack(">iq", 0, 0) + struct.pack(">i", len(body)) + body
            + bytes([len(t)]) + t + struct.pack(">h", len(p)) + p)


def java_hash(s: str) -> int:
    h = 0
    b = s.encode("utf-16-be")
    for i in range(0, len(b), 2):
        h = (31 * h + int.from_bytes(b[i:i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def build(root: str, with_consume_queue: bool) -> list[tuple]:
    os.makedirs(os.path.join(root, "commitlog"))
    log = bytearray(FILE)
    pos, ts = 0, 1_700_000_000_000
    written = []
    next_q = {0: 0, 1: 0}
    for i in range(12):
        qid = i % 2
        props = (f"TAGS\x01{'TagA' if i % 3 == 0 else 'TagB'}\x02KEYS\x01order-{i} "
                 f"common\x02UNIQ_KEY\x01{i:032X}\x02WAIT\x01true\x02")
        msg = rocketmq_message("TopicTest", qid, next_q[qid], pos, b"body-%d" % i, props, ts + i)
        log[pos:pos + len(msg)] = msg
        written.append((qid, next_q[qid], pos, len(msg), i))
        next_q[qid] += 1
        pos += len(msg)
    with open(os.path.join(root, "commitlog", "%020d" % 0), "wb") as f:
        f.write(log)
    with open(os.path.join(root, "checkpoint"), "wb") as f:
        f.write(struct.pack(">qqq", ts + 11, ts + 11, ts + 11) + bytes(4096 - 24))
    if with_consume_queue:
        for qid in (0, 1):
            d = os.path.join(root, "consumequeue", "TopicTest", str(qid))
            os.makedirs(d)
            units = b"".join(struct.pack(">qiq", phys, size, java_hash(
                "TagA" if i % 3 == 0 else "TagB")) for q_id, _q, phys, size, i in written
                if q_id == qid)
            with open(os.path.join(d, "%020d" % 0), "wb") as f:
                f.write(units + bytes(16 * 20 - len(units)))
    return written


@pytest.mark.parametrize("with_consume_queue", [True, False])
def test_foreign_rocketmq_store_opens_and_reads(tmp_path, with_consume_queue):
    root = str(tmp_path / "rmq")
    build(root, with_consume_queue)
    assert mqstore.registry.detect(root) == "commitlog"
    with mqstore.open(root, mapped_file_size=FILE, cq_units_per_file=16, hash_slots=64,
                      index_entries=128) as s:
        assert s.engine_name == "commitlog"
        assert s.topics() == ["TopicTest"] and s.partitions("TopicTest") == 2
        recs = s.read("TopicTest", 0, 0)
        assert [r.value for r in recs] == [b"body-%d" % i for i in range(0, 12, 2)]
        assert recs[0].tag == "TagA" and recs[0].key == b"order-0 common"
        assert recs[0].headers == {"WAIT": b"true"}
        assert recs[0].timestamp_ms == 1_700_000_000_000 - 5  # BORNTIMESTAMP
        tagged = s.read("TopicTest", 1, 0, tags={"TagA"})
        assert [r.value for r in tagged] == [b"body-3", b"body-9"]
        # every space-separated KEYS element is indexed, as RocketMQ's IndexService does
        assert [r.value for r in s.lookup_key("TopicTest", b"order-7")] == [b"body-7"]
        assert len(s.lookup_key("TopicTest", b"common")) == 12
        assert s.end_offset("TopicTest", 1) == 6
        md = s.append("TopicTest", b"from-mqstore", partition=1)
        assert md.offset == 6
    assert os.path.exists(os.path.join(root, "mqstore.json"))
    assert os.path.exists(os.path.join(root, "config", "topics.json"))


def test_unsupported_v2_message_is_refused_not_truncated(tmp_path):
    root = str(tmp_path / "rmq")
    written = build(root, with_consume_queue=True)
    path = os.path.join(root, "commitlog", "%020d" % 0)
    _qid, _q, pos, _size, _i = written[5]
    with open(path, "r+b") as f:
        f.seek(pos + 4)
        f.write(struct.pack(">I", 0xDAA320AB))  # a V2 message (2-byte topic length)
    before = open(path, "rb").read()
    with pytest.raises(mqstore.UnsupportedOperation, match="V2"):
        mqstore.open(root, mapped_file_size=FILE, cq_units_per_file=16, hash_slots=64,
                     index_entries=128)
    assert open(path, "rb").read() == before

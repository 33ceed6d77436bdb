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


def rocketmq5_message(topic: str, queue_id: int, queue_offset: int, phys: int, body: bytes,
                      props: str, store_ts: int, *, v2: bool, born_v6: bool, store_v6: bool,
                      with_crc: bool) -> bytes:
    """A message as RocketMQ 5 writes it: V2 magic (2-byte topic length), IPv6 born / store
    hosts (16 + 4 bytes, SYSFLAG bits 0x10 / 0x20), and the ``__CRC32#`` property
    (enabledAppendPropCRC: CRC32 of everything before it, digits least-significant first)."""
    t, p = topic.encode(), props.encode()
    if with_crc:
        p += b"__CRC32#\x01" + b"0" * 10 + b"\x02"
    sysflag = (0x10 if born_v6 else 0) | (0x20 if store_v6 else 0)
    born = bytes(range(16)) + struct.pack(">i", 54321) if born_v6 else \
        bytes([10, 0, 0, 7]) + struct.pack(">i", 54321)
    store = bytes(15) + b"\x01" + struct.pack(">i", 10911) if store_v6 else \
        bytes([10, 0, 0, 1]) + struct.pack(">i", 10911)
    topic_len = struct.pack(">h", len(t)) if v2 else bytes([len(t)])
    rest = (struct.pack(">iiqqiq", queue_id, 0, queue_offset, phys, sysflag, store_ts - 5)
            + born + struct.pack(">q", store_ts) + store + struct.pack(">iq", 0, 0)
            + struct.pack(">i", len(body)) + body + topic_len + t
            + struct.pack(">h", len(p)) + p)
    total = 12 + len(rest)
    msg = bytearray(struct.pack(">iII", total, 0xDAA320AB if v2 else 0xDAA320A7,
                                zlib.crc32(body) & 0x7FFFFFFF) + rest)
    if with_crc:
        crc = zlib.crc32(msg[:total - 20]) & 0x7FFFFFFF
        msg[total - 11:total - 1] = str(crc)[::-1].ljust(10, "0").encode()
    return bytes(msg)


def build_rocketmq5(root: str) -> list[bytes]:
    """A CommitLog (no ConsumeQueue) mixing V1 / V2, IPv4 / IPv6 hosts, with and without
    the record CRC."""
    os.makedirs(os.path.join(root, "commitlog"))
    log = bytearray(FILE)
    pos, ts = 0, 1_700_000_000_000
    bodies = []
    for i in range(10):
        body = b"rmq5-%d" % i
        props = f"TAGS\x01T{i % 2}\x02KEYS\x01key-{i}\x02UNIQ_KEY\x01{i:032X}\x02"
        msg = rocketmq5_message("TopicV2", 0, i, pos, body, props, ts + i, v2=i % 2 == 1,
                                born_v6=i % 3 == 1, store_v6=i % 4 == 2, with_crc=i >= 5)
        log[pos:pos + len(msg)] = msg
        bodies.append(body)
        pos += len(msg)
    with open(os.path.join(root, "commitlog", "%020d" % 0), "wb") as f:
        f.write(log)
    with open(os.path.join(root, "checkpoint"), "wb") as f:
        f.write(struct.pack(">qqq", ts + 9, ts + 9, ts + 9) + bytes(4096 - 24))
    return bodies


def _open(root, **kw):
    return mqstore.open(root, mapped_file_size=FILE, cq_units_per_file=16, hash_slots=64,
                        index_entries=128, **kw)


def test_v2_magic_and_ipv6_hosts_are_read(tmp_path):
    """RocketMQ 5 writes V2 messages and IPv6 hosts: mqstore reads and indexes them."""
    root = str(tmp_path / "rmq5")
    bodies = build_rocketmq5(root)
    with _open(root) as s:
        recs = s.read("TopicV2", 0, 0)
        assert [r.value for r in recs] == bodies
        assert [r.tag for r in recs] == [f"T{i % 2}" for i in range(10)]
        assert [r.key for r in recs] == [b"key-%d" % i for i in range(10)]
        assert all(r.headers == {} for r in recs)  # __CRC32# is not a user header
        assert [r.value for r in s.read("TopicV2", 0, 0, tags={"T1"})] == bodies[1::2]
        assert [r.value for r in s.lookup_key("TopicV2", b"key-7")] == [b"rmq5-7"]
        assert s.offset_for_time("TopicV2", 0, 1_700_000_000_004) == 4
        s.append("TopicV2", b"from-mqstore", partition=0)
    with _open(root) as s:  # a clean reopen validates them all again
        assert [r.value for r in s.read("TopicV2", 0, 0)] == bodies + [b"from-mqstore"]
    assert mqstore.engines.commitlog.store.CommitLogStore.verify_files(root) == []


def test_torn_tail_with_v1_magic_and_ipv6_flag_is_truncated(tmp_path):
    """Garbage after a crash that carries the V1 magic and the IPv6 SYSFLAG bits is a bad
    message like any other: a torn tail, truncated (it used to refuse the open)."""
    root = str(tmp_path / "rmq")
    written = build(root, with_consume_queue=True)
    _qid, _q, pos, size, _i = written[-1]
    path = os.path.join(root, "commitlog", "%020d" % 0)
    junk = struct.pack(">iIIiiqqi", 300, 0xDAA320A7, 12345, 0, 0, 12, pos + size, 0x30) + \
        bytes(range(200))
    with open(path, "r+b") as f:
        f.seek(pos + size)
        f.write(junk)
    open(os.path.join(root, "abort"), "w").close()
    with _open(root) as s:
        assert s.end_offset("TopicTest", 0) == 6 and s.end_offset("TopicTest", 1) == 6
        assert s.stats()["recovery"]["torn_tail_truncated"] == 1
    assert open(path, "rb").read()[pos + size:pos + size + 300] == bytes(300)


def test_v2_magic_on_a_v1_message_of_a_clean_store_is_corruption(tmp_path):
    """A V1 message whose magic flipped to V2 no longer parses (its topic length is read as
    2 bytes): corruption in a cleanly closed store, so the open is refused, not the log cut
    or the store refused as unsupported."""
    root = str(tmp_path / "rmq")
    written = build(root, with_consume_queue=True)
    path = os.path.join(root, "commitlog", "%020d" % 0)
    _qid, _q, pos, _size, _i = written[5]
    with open(path, "r+b") as f:
        f.seek(pos + 4)
        f.write(struct.pack(">I", 0xDAA320AB))
    before = open(path, "rb").read()
    with pytest.raises(mqstore.CorruptRecordError, match="6 records follow"):
        _open(root)
    assert open(path, "rb").read() == before


@pytest.mark.parametrize("backend", ["native", "python"])
def test_the_native_walk_reads_v2_and_ipv6_messages(tmp_path, backend):
    """scan_commitlog and dispatch_fields walk RocketMQ 5's V2 / IPv6 messages themselves
    (recovery and dispatch never fall back to one message at a time), with the same fields
    on both backends, and the store timestamp read after the IPv6 born host."""
    from mqstore import _purepy, native
    if backend == "native" and native.backend != "native":
        pytest.skip("native helper not built")
    impl = native if backend == "native" else _purepy
    root = str(tmp_path / "s")
    build_rocketmq5(root)
    data = open(os.path.join(root, "commitlog", "%020d" % 0), "rb").read()
    scan = impl.scan_commitlog(data, 0, len(data))
    assert scan.status == 4 and len(scan.positions) == 10  # then zero fill
    assert scan.store_timestamps.tolist() == [1_700_000_000_000 + i for i in range(10)]
    assert scan.queue_offsets.tolist() == list(range(10))
    rows = impl.dispatch_fields(data, 0, len(data)).fields
    assert len(rows) == 10
    for i, row in enumerate(rows.tolist()):
        tp, tl, gp, gl, kp, kl = row[6:12]
        assert data[tp:tp + tl] == b"TopicV2"
        assert data[gp:gp + gl] == b"T%d" % (i % 2) and data[kp:kp + kl] == b"key-%d" % i
    other = _purepy if impl is native else native
    if native.backend == "native":
        assert (other.dispatch_fields(data, 0, len(data)).fields == rows).all()

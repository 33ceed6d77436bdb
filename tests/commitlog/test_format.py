"""The bytes on disk, decoded with plain ``struct`` here (never the engine's own reader), against
FORMATS.md "commitlog engine"."""
from __future__ import annotations

import json
import os
import struct
import zlib

from mqstore import Message

V1 = 0xDAA320A7
BLANK = 0xCBD43194


def decode_commitlog_file(data: bytes):
    """Every message of one CommitLog file, field by field, and the blank if any."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        total, magic = struct.unpack_from(">iI", data, pos)
        if total == 0 and magic == 0:
            return out, None
        if magic == BLANK:
            return out, (pos, total)
        assert magic == V1, hex(magic)
        (crc, qid, flag, qoff, phys, sysflag, born, bornhost, store, storehost, recon,
         prep) = struct.unpack_from(">IiiqqiqQqQiq", data, pos + 8)
        p = pos + 84
        (blen,) = struct.unpack_from(">i", data, p)
        body = data[p + 4:p + 4 + blen]
        p += 4 + blen
        tlen = data[p]
        topic = data[p + 1:p + 1 + tlen].decode()
        p += 1 + tlen
        (plen,) = struct.unpack_from(">h", data, p)
        props = data[p + 2:p + 2 + plen]
        p += 2 + plen
        assert p - pos == total, "TOTALSIZE must equal the recomputed length"
        out.append(dict(pos=pos, total=total, crc=crc, queue_id=qid, flag=flag,
                        queue_offset=qoff, phys=phys, sysflag=sysflag, born=born,
                        bornhost=bornhost, store=store, storehost=storehost, recon=recon,
                        prepared=prep, body=body, topic=topic, props=props))
        pos += total
    return out, None


def parse_props(raw: bytes) -> dict[str, str]:
    out = {}
    for pair in raw.decode().split("\x02"):
        if "\x01" in pair:
            k, v = pair.split("\x01", 1)
            out[k] = v
    return out


def java_hash(s: str) -> int:
    h = 0
    b = s.encode("utf-16-be")
    for i in range(0, len(b), 2):
        h = (31 * h + int.from_bytes(b[i:i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def test_commitlog_messages_field_by_field(open_cl, store_path):
    s = open_cl()
    s.create_topic("orders", partitions=3)
    mds = [s.append("orders", b"body-%d" % i, key=b"k%d" % i, partition=i % 3, tag="TagA",
                    headers={"h": b"v%d" % i}, timestamp_ms=1_700_000_000_000 + i)
           for i in range(40)]
    s.close()
    d = os.path.join(store_path, "commitlog")
    names = sorted(os.listdir(d))
    assert all(len(n) == 20 and n.isdigit() for n in names)
    assert [int(n) for n in names] == [i * 4096 for i in range(len(names))]
    msgs = []
    for n in names:
        path = os.path.join(d, n)
        assert os.path.getsize(path) == 4096  # preallocated to mapped_file_size
        data = open(path, "rb").read()
        found, _blank = decode_commitlog_file(data)
        for m in found:
            assert m["phys"] == int(n) + m["pos"]
        msgs += found
    assert len(msgs) == 40
    last_store = 0
    for i, (m, md) in enumerate(zip(msgs, mds)):
        assert m["body"] == b"body-%d" % i
        assert m["crc"] == zlib.crc32(m["body"]) & 0x7FFFFFFF
        assert (m["queue_id"], m["queue_offset"]) == (md.partition, md.offset)
        assert m["flag"] == 0 and m["sysflag"] == 0 and m["recon"] == 0 and m["prepared"] == 0
        assert m["born"] == 1_700_000_000_000 + i
        assert m["bornhost"] == 0x7F000001_00000000
        assert m["storehost"] == (0x7F000001 << 32) | 10911
        assert m["store"] >= last_store  # STORETIMESTAMP is monotonic along the log
        last_store = m["store"]
        assert m["topic"] == "orders"
        props = parse_props(m["props"])
        assert props["TAGS"] == "TagA" and props["KEYS"] == "k%d" % i
        assert props["h"] == "v%d" % i
        assert len(props["UNIQ_KEY"]) == 32 and int(props["UNIQ_KEY"], 16) >= 0
        assert m["total"] == 91 + len(m["body"]) + len("orders") + len(m["props"])


def test_full_files_end_with_a_blank_marker(open_cl, store_path):
    s = open_cl()
    s.create_topic("t")
    s.append_batch("t", [b"x" * 300] * 30, partition=0)
    s.close()
    d = os.path.join(store_path, "commitlog")
    names = sorted(os.listdir(d))
    assert len(names) >= 3
    for n in names[:-1]:
        msgs, blank = decode_commitlog_file(open(os.path.join(d, n), "rb").read())
        assert blank is not None, "a full file ends with the 8-byte blank"
        pos, total = blank
        assert pos == msgs[-1]["pos"] + msgs[-1]["total"]
        assert total == 4096 - pos  # TOTALSIZE of the blank = bytes left in the file
        assert total >= 8


def test_consume_queue_units(open_cl, store_path):
    s = open_cl()
    s.create_topic("t", partitions=2)
    for i in range(40):
        s.append("t", b"v%d" % i, partition=i % 2, tag=None if i % 5 == 0 else "中文")
    s.close()
    by_phys = {}
    for n in sorted(os.listdir(os.path.join(store_path, "commitlog"))):
        for m in decode_commitlog_file(open(os.path.join(store_path, "commitlog", n), "rb")
                                       .read())[0]:
            by_phys[m["phys"]] = m
    for qid in (0, 1):
        qdir = os.path.join(store_path, "consumequeue", "t", str(qid))
        names = sorted(os.listdir(qdir))
        assert names[:2] == ["%020d" % 0, "%020d" % (16 * 20)]  # byte offsets
        raw = b"".join(open(os.path.join(qdir, n), "rb").read() for n in names)
        assert all(os.path.getsize(os.path.join(qdir, n)) == 16 * 20 for n in names)
        for q in range(20):
            phys, size, tag = struct.unpack_from(">qiq", raw, q * 20)
            m = by_phys[phys]
            assert (m["queue_id"], m["queue_offset"], m["total"]) == (qid, q, size)
            tags = parse_props(m["props"]).get("TAGS")
            assert tag == (0 if tags is None else java_hash(tags))
        assert raw[20 * 20:20 * 21] == bytes(20)  # nothing after the last unit


def test_index_file_header_slots_and_entries(open_cl, store_path):
    s = open_cl(hash_slots=7, index_entries=1000)
    s.create_topic("t")
    for i in range(10):
        s.append("t", b"v", key=b"key-%d" % i, partition=0)
    s.close()
    idir = os.path.join(store_path, "index")
    (name,) = os.listdir(idir)
    assert len(name) == 17 and name.isdigit()  # yyyyMMddHHmmssSSS
    data = open(os.path.join(idir, name), "rb").read()
    assert len(data) == 40 + 7 * 4 + 1000 * 20
    begin_ts, end_ts, begin_phy, end_phy, slot_count, index_count = struct.unpack_from(
        ">qqqqii", data, 0)
    assert index_count == 1 + 20  # entry 0 unused; KEYS and UNIQ_KEY per message
    assert begin_phy == 0 and end_phy > 0 and 0 < begin_ts <= end_ts
    assert 1 <= slot_count <= 7
    # walk every chain from the slots: each entry is reachable exactly once
    seen = set()
    for slot in range(7):
        (n,) = struct.unpack_from(">i", data, 40 + slot * 4)
        while n:
            h, phy, diff, prev = struct.unpack_from(">iqii", data, 40 + 28 + n * 20)
            assert h % 7 == slot and h >= 0 and diff >= 0
            assert n not in seen
            seen.add(n)
            assert prev < n
            n = prev
    assert seen == set(range(1, 21))
    want = {abs(java_hash("t#key-%d" % i)) for i in range(10)}
    got = {struct.unpack_from(">i", data, 40 + 28 + n * 20)[0] for n in seen}
    assert want <= got


def test_checkpoint_abort_lock_and_json(open_cl, store_path):
    s = open_cl(flush="sync")
    s.create_topic("t", partitions=2)
    s.append("t", b"v", partition=1)
    assert os.path.exists(os.path.join(store_path, "abort"))  # while open
    assert os.path.exists(os.path.join(store_path, "lock"))
    s.commit_offset("grp", "t", 1, 1)
    s.close()
    assert not os.path.exists(os.path.join(store_path, "abort"))  # clean close
    ck = open(os.path.join(store_path, "checkpoint"), "rb").read()
    assert len(ck) == 4096
    physic, logics, index = struct.unpack_from(">qqq", ck, 0)
    assert physic > 0 and logics > 0 and index > 0
    topics = json.load(open(os.path.join(store_path, "config", "topics.json")))
    cfg = topics["topicConfigTable"]["t"]
    assert cfg["readQueueNums"] == cfg["writeQueueNums"] == 2
    offsets = json.load(open(os.path.join(store_path, "config", "consumerOffset.json")))
    assert offsets["offsetTable"] == {"t@grp": {"1": 1}}


def test_binary_keys_and_headers_use_the_documented_escape(open_cl, store_path):
    import base64

    s = open_cl()
    s.create_topic("t")
    s.append("t", b"v", key=b"a b", headers={"TAGS": b"\x01x", "plain": b"text"}, tag="t1",
             partition=0)
    s.close()
    data = open(os.path.join(store_path, "commitlog", "%020d" % 0), "rb").read()
    (m,), _ = decode_commitlog_file(data)
    props = parse_props(m["props"])
    assert props["KEYS"] == "\x03" + base64.b64encode(b"a b").decode()  # space: escaped
    assert props["plain"] == "text"  # clean text is stored as is
    esc_name = "\x03" + base64.b64encode(b"TAGS").decode()
    assert props[esc_name] == "\x03" + base64.b64encode(b"\x01x").decode()
    assert props["TAGS"] == "t1"


def test_write_mode_write_produces_the_same_format(open_cl, store_path, tmp_path):
    s = open_cl(path=str(tmp_path / "w"), write_mode="write")
    s.create_topic("t")
    s.append_batch("t", [Message(b"m%d" % i, key=b"k") for i in range(50)], partition=0)
    s.close()
    msgs = []
    d = tmp_path / "w" / "commitlog"
    for n in sorted(os.listdir(d)):
        msgs += decode_commitlog_file(open(d / n, "rb").read())[0]
    assert [m["body"] for m in msgs] == [b"m%d" % i for i in range(50)]
    assert [m["queue_offset"] for m in msgs] == list(range(50))

"""The commitlog batch encoder (``native.cl_encode``) and the IndexFile key hashes
(``native.index_key_hashes``): byte-exact against the pre-batch Python encoder (``encode`` +
``patch``, kept in ``mqstore/_purepy_cl_write.py``), the same on both backends, the same typed
errors for hostile arguments, and the engine writing exactly those bytes."""
from __future__ import annotations

import os
import random
import struct

import numpy as np
import pytest
from nativelogs import NATIVE_MISSING

import mqstore
from mqstore import _purepy_cl_write as ref
from mqstore import native
from mqstore.api import Message
from mqstore.errors import BufferRangeError

needs_native = pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)


def old_engine_encode(topic, values, props, queue_ids, queue_offsets, borns, phys, store_ts,
                      prefix, uniq_first):
    """What the engine wrote before the batch path: one ``encode`` per message (the plain
    values through the UNIQ_KEY template), then ``patch`` at its position."""
    out = bytearray()
    for i, body in enumerate(values):
        p = props[i]
        if p is None:
            p = b"UNIQ_KEY\x01" + prefix + b"%016X\x02" % (uniq_first + i)
        pos = len(out)
        out += ref.encode(topic, queue_ids[i], 0 if borns[i] < 0 else borns[i], body, p)
        ref.patch(out, pos, queue_offsets[i], phys + pos, store_ts,
                  store_ts if borns[i] < 0 else None)
    return bytes(out)


def columns(values, props):
    lens = np.array([len(v) for v in values], dtype=np.int64)
    offs = np.cumsum(lens) - lens
    plist = [b"" if p is None else p for p in props]
    plens = np.array([-1 if p is None else len(p) for p in props], dtype=np.int64)
    poffs = np.cumsum([len(p) for p in plist]) - np.array([len(p) for p in plist])
    return b"".join(values), offs, lens, b"".join(plist), poffs.astype(np.int64), plens


def random_batch(rng, n):
    values = [rng.randbytes(rng.choice([0, 1, 7, 100, 1000])) for _ in range(n)]
    props = [None if rng.random() < 0.5 else
             b"TAGS\x01t%d\x02KEYS\x01k%d\x02UNIQ_KEY\x01X%d\x02h\x01v\x02" % (i, i, i)
             for i in range(n)]
    return values, props


@pytest.mark.parametrize("backend", ["native", "python"])
@pytest.mark.parametrize("seed", range(5))
def test_cl_encode_matches_the_old_encoder(backend, seed):
    if backend == "native" and native.backend != "native":
        pytest.skip(NATIVE_MISSING)
    fn = native.cl_encode if backend == "native" else ref.cl_encode
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    values, props = random_batch(rng, n)
    qids = [rng.randrange(8) for _ in range(n)]
    qoffs = [rng.randrange(1 << 40) for _ in range(n)]
    borns = [-1 if rng.random() < 0.5 else rng.randrange(1 << 42) for _ in range(n)]
    phys, store_ts, prefix, uniq = rng.randrange(1 << 40), rng.randrange(1 << 42), b"AB12", 77
    want = old_engine_encode(b"topic-x", values, props, qids, qoffs, borns, phys, store_ts,
                             prefix, uniq)
    blob, offs, lens, pblob, poffs, plens = columns(values, props)
    got = fn(b"topic-x", blob, offs, lens, pblob, poffs, plens, prefix, uniq, qids, qoffs,
             borns, phys, store_ts)
    assert bytes(got) == want
    sizes = native.cl_encoded_sizes(7, lens, plens, len(prefix))
    assert int(sizes.sum()) == len(want)


def test_cl_encode_all_plain_and_one():
    values = [b"v%d" % i for i in range(10)]
    want = old_engine_encode(b"t", values, [None] * 10, [3] * 10, list(range(5, 15)),
                             [-1] * 10, 4096, 123456, b"PFX", 1000)
    blob, offs, lens, *_ = columns(values, [None] * 10)
    for fn in (native.cl_encode, ref.cl_encode):
        got = fn(b"t", blob, offs, lens, None, None, None, b"PFX", 1000, [3] * 10,
                 list(range(5, 15)), None, 4096, 123456)
        assert bytes(got) == want
    one = old_engine_encode(b"t", [b"x"], [None], [2], [9], [-1], 77, 5, b"PFX", 3)
    assert bytes(native.cl_encode_one(b"t", b"x", b"PFX", 3, 2, 9, 77, 5)) == one
    assert bytes(native.cl_encode_one_reference(b"t", b"x", b"PFX", 3, 2, 9, 77, 5)) == one


HOSTILE = [
    # (description, argument overrides)
    ("negative body length", {"body_lengths": [-1]}),
    ("body past the blob", {"body_offsets": [2]}),
    ("props past the blob", {"props_offsets": [5], "props_lengths": [3]}),
    ("queue id outside int32", {"queue_ids": [1 << 31]}),
    ("topic over 255 bytes", {"topic": b"t" * 256}),
    ("properties over 32767 bytes", {"props": b"p" * 40000, "props_lengths": [40000]}),
    ("negative uniq number", {"uniq_first": -1}),
    ("negative physical offset", {"phys_offset": -5}),
]


def _args(**over):
    a = dict(topic=b"t", bodies=b"abc", body_offsets=[0], body_lengths=[3], props=b"xyz",
             props_offsets=[0], props_lengths=[-1], uniq_prefix=b"P", uniq_first=0,
             queue_ids=[0], queue_offsets=[0], born_timestamps=None, phys_offset=0,
             store_timestamp=1)
    a.update(over)
    return a


@needs_native
@pytest.mark.parametrize("what,over", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_cl_encode_hostile_arguments_same_error(what, over):
    errs = []
    for fn in (native.cl_encode, ref.cl_encode):
        with pytest.raises(ValueError) as exc:
            fn(**_args(**over))
        errs.append(str(exc.value))
    assert errs[0] == errs[1]


def _java_hash(s: str) -> int:
    h = 0
    units = s.encode("utf-16-le")
    for u in struct.unpack("<%dH" % (len(units) // 2), units):
        h = (31 * h + u) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


@pytest.mark.parametrize("backend", ["native", "python"])
def test_index_key_hashes(backend):
    if backend == "native" and native.backend != "native":
        pytest.skip(NATIVE_MISSING)
    fn = native.index_key_hashes if backend == "native" else ref.index_key_hashes
    keys = [b"abc", b"", b"with space", "ключ".encode(), b"x" * 300, b"\x03QUJD"]
    buf = b"".join(keys)
    lens = [len(k) for k in keys]
    pos = list(np.cumsum(lens) - np.array(lens))
    topics = ["topic", "t2", "topic", "topic", "a" * 50, "t"]
    got = fn(buf, pos, lens, [_java_hash(t + "#") for t in topics])
    for g, k, t in zip(got.tolist(), keys, topics):
        text = k.decode()
        if " " in text or any(b >= 0x80 for b in k):
            assert g == -1
        else:
            h = _java_hash(t + "#" + text)
            assert g == (0 if h == -(1 << 31) else abs(h))


@needs_native
@pytest.mark.parametrize("pos,lens,pref,err", [
    ([5], [10], [0], BufferRangeError),
    ([0], [-1], [0], BufferRangeError),
    ([-1], [1], [0], BufferRangeError),
    ([0], [1], [1 << 31], ValueError),
])
def test_index_key_hashes_hostile_same_error(pos, lens, pref, err):
    msgs = []
    for fn in (native.index_key_hashes, ref.index_key_hashes):
        with pytest.raises(err) as exc:
            fn(b"abcdefgh", pos, lens, pref)
        msgs.append(str(exc.value))
    assert msgs[0] == msgs[1]


def test_engine_writes_the_old_encoders_bytes(tmp_path):
    """Every message a store writes (mixed batches, several queues, file rolls) re-encodes
    to the same bytes with the old encoder from its decoded fields."""
    from mqstore.engines.commitlog import message as msgcodec

    path = str(tmp_path / "s")
    s = mqstore.open(path, "commitlog", mapped_file_size=4096, cq_units_per_file=16,
                     hash_slots=64, index_entries=128)
    try:
        s.create_topic("t", 3)
        rng = random.Random(3)
        for b in range(12):
            msgs = [rng.randbytes(rng.randrange(0, 300)) for _ in range(rng.randint(1, 15))]
            if b % 3 == 1:
                msgs = [Message(v, key=b"k%d" % i if i % 2 else None, tag="tg" if i % 3 else None,
                                headers={"h": b"v"} if i % 4 == 0 else None,
                                timestamp_ms=1000 + i if i % 5 else None)
                        for i, v in enumerate(msgs)]
            s.append_batch("t", msgs, partition=None if b % 2 else b % 3)
            s.append("t", b"single", partition=b % 3)
        s.flush()
        files = sorted(os.listdir(os.path.join(path, "commitlog")))
        assert len(files) > 2  # rolls happened
        checked = 0
        for name in files:
            data = open(os.path.join(path, "commitlog", name), "rb").read()
            base = int(name)
            pos = 0
            while pos + 8 <= len(data):
                size, magic = struct.unpack_from(">iI", data, pos)
                if size == 0 or magic != 0xDAA320A7:
                    break
                m = msgcodec.decode(data, pos)
                lay = msgcodec.layout(data, pos, len(data))
                raw_props = data[lay.props_pos:pos + size - 20]
                again = bytearray(ref.encode(m.topic.encode(), m.queue_id, m.born_timestamp,
                                             m.body, raw_props))
                ref.patch(again, 0, m.queue_offset, base + pos, m.store_timestamp, None)
                assert bytes(again) == data[pos:pos + size]
                assert m.physical_offset == base + pos
                pos += size
                checked += 1
        assert checked == s.stats()["appended_records"]
    finally:
        s.close()


@pytest.mark.parametrize("backend", ["native", "python"])
def test_cl_encode_into_a_buffer(backend):
    """With ``out`` the same bytes land at ``out_pos`` (the mapped file) and nothing else
    changes; a buffer too small is refused with the same error on both backends."""
    if backend == "native" and native.backend != "native":
        pytest.skip(NATIVE_MISSING)
    fn = native.cl_encode if backend == "native" else ref.cl_encode
    one = native.cl_encode_one if backend == "native" else native.cl_encode_one_reference
    values, props = random_batch(random.Random(9), 6)
    blob, offs, lens, pblob, poffs, plens = columns(values, props)
    args = (b"tp", blob, offs, lens, pblob, poffs, plens, b"PF", 4, [1] * 6, list(range(6)),
            None, 500, 99)
    want = bytes(fn(*args))
    out = bytearray(b"\xee" * (len(want) + 30))
    assert fn(*args, out, 10) == len(want)
    assert out[10:10 + len(want)] == want
    assert out[:10] == b"\xee" * 10 and out[10 + len(want):] == b"\xee" * 20
    single = bytes(one(b"t", b"v", b"P", 1, 0, 0, 7, 8))
    out = bytearray(len(single) + 3)
    assert one(b"t", b"v", b"P", 1, 0, 0, 7, 8, out, 3) == len(single)
    assert out[3:] == single
    with pytest.raises(ValueError):
        fn(*args, bytearray(len(want) - 1), 0)


@pytest.mark.parametrize("backend", ["native", "python"])
def test_scan_checks_the_record_crc(backend):
    """scan_commitlog checks ``__CRC32#`` (the body CRC only for a message without it): a
    flipped record CRC digit, a non-digit or a flipped header byte is CORRUPT; a BODYCRC
    field that disagrees is not looked at when the record CRC covers the message."""
    if backend == "native" and native.backend != "native":
        pytest.skip(NATIVE_MISSING)
    from mqstore import _purepy
    scan = native.scan_commitlog if backend == "native" else _purepy.scan_commitlog
    msg = bytes(ref.cl_encode(b"t", b"body", [0], [4], None, None, None, b"P", 1, [0], [0],
                              None, 0, 5))
    n = len(msg)
    assert scan(msg, 0, n).status == 0 and len(scan(msg, 0, n).positions) == 1

    def flip(at, value):
        b = bytearray(msg)
        b[at] = value
        return bytes(b)

    digit = msg[n - 11]
    for bad in (flip(n - 11, 48 + (digit - 48 + 1) % 10), flip(n - 5, ord("x")),
                flip(13, msg[13] ^ 1)):
        got = scan(bad, 0, n)
        assert got.status == 2 and len(got.positions) == 0
    # a wrong BODYCRC field under a sound record CRC: the record CRC is what counts
    body_crc_wrong = bytearray(msg)
    body_crc_wrong[8:12] = b"\x00\x00\x00\x01"
    ref.patch(body_crc_wrong, 0, 0, 0, 5, None)  # re-sign the record
    assert scan(bytes(body_crc_wrong), 0, n).status == 0
    # without the property the body CRC is checked
    plain = bytes(ref.cl_encode(b"t", b"body", [0], [4], b"", [0], [0], b"P", 1, [0], [0],
                                None, 0, 5))
    unsigned = bytearray(plain[:-20])
    unsigned[0:4] = struct.pack(">i", len(unsigned))
    unsigned[-2:] = b"\x00\x00"  # PROPERTIES length 0
    assert scan(bytes(unsigned), 0, len(unsigned)).status == 0
    unsigned[8] ^= 1
    assert scan(bytes(unsigned), 0, len(unsigned)).status == 2

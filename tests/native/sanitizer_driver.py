"""Drive every native function over many damaged inputs, checking native == python.

Run by test_native_sanitizers.py under valgrind or with an AddressSanitizer build (it is not
a test module itself). Every buffer is a fresh ``bytes`` object (with PYTHONMALLOC=malloc
each one is its own heap block, so the tools see a read past it), and half of them are also
passed as guarded views ending at an inaccessible page. Covered: every function
``mqstore.native`` exports (the scans over V1 / V2 messages with IPv4 / IPv6 hosts, the
index kernels, the record and batch decoders and encoders, the commitlog write and read
kernels), the CRC-32 / CRC-32C kernels on both of their paths over unaligned views,
``mqstore._rows`` (native/rows.c) with bad positions, and (``sanitizer_write_rounds.py``)
``mqstore._seg_write``, ``mqstore._cl_write`` and ``record_crc_rule`` with hostile
arguments, a list changed by another thread and ``__index__`` hooks. Usage::

    python tests/native/sanitizer_driver.py [ROUNDS]
"""
from __future__ import annotations

import array
import os
import random
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nativelogs import (
    consume_queue,
    guarded_view,
    kafka_log,
    kafka_record,
    offset_index,
    rocketmq_log,
    rocketmq_message,
    time_index,
)

import numpy as np
from sanitizer_write_rounds import write_rounds

from mqstore import _purepy, _purepy_batches, _purepy_cl_read, _purepy_cl_write, native

try:
    from mqstore import _rows  # native/rows.c
except ImportError:  # pragma: no cover - depends on the build
    _rows = None


def damaged(rng: random.Random, log: bytes) -> bytes:
    buf = bytearray(log)
    for _ in range(rng.randrange(4)):
        if buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    if rng.random() < 0.3 and len(buf) >= 4:  # a hostile length field
        struct.pack_into(">i", buf, rng.randrange(len(buf) - 3),
                         rng.choice([-1, 0, 48, 49, 90, 91, 1 << 30, -(1 << 31)]))
    if rng.random() < 0.5:
        del buf[rng.randrange(len(buf) + 1):]
    return bytes(buf)


def check(name: str, buf: bytes, *args) -> None:
    try:
        expected = getattr(_purepy, name)(buf, *args)
    except Exception as exc:  # noqa: BLE001
        for view in (bytes(buf), guarded_view(buf)):
            try:
                getattr(native, name)(view, *args)
            except type(exc):
                continue
            raise AssertionError(f"{name}{args}: native did not raise {type(exc).__name__}")
        return
    for view in (bytes(buf), guarded_view(buf)):
        got = getattr(native, name)(view, *args)
        if isinstance(expected, tuple):  # BatchScan, RecordScan, RecordFields
            ok = got[:2] == expected[:2] and all(
                a.tolist() == b.tolist() for a, b in zip(got[2:], expected[2:]))
        elif hasattr(expected, "tolist"):
            ok = got.tolist() == expected.tolist()
        else:
            ok = got == expected
        if not ok:
            raise AssertionError(f"{name}{args}: native {got!r} != python {expected!r}")


# ----- the functions added after the first driver: a generic native-vs-reference check -----
BIG = (1 << 63) - 1
#: MQSTORE_SANITIZER_KNOWN=1 adds the inputs of the open findings (see FINDINGS)
KNOWN = os.environ.get("MQSTORE_SANITIZER_KNOWN") == "1"
FINDINGS = """
Open native != python differences on hostile inputs (the int64 overflows are defined here:
the helper is built with CPython's -fwrapv, so UBSan does not flag them; they would be UB in
a build without it):
cl_encode / cl_encode_one with phys_offset near INT64_MAX: native/cl_encode.c computes
PHYSICALOFFSET as phys_offset + pos in int64 (line 90) and writes the wrapped value, where
the reference raises (struct.error). Kept out of the default run.
native.cl_encode without ``out`` and a hostile body or properties length (1 << 62): the
wrapper (mqstore/native.py) sizes its destination from the lengths before the C checks the
spans, so it raises MemoryError (or allocates that much) where the reference raises
ValueError. Only with ``out`` in the default run.
native.decode_batches with a window far past the buffer (end = INT64_MAX, or pos = INT64_MIN):
the wrapper sizes its output arrays from ``end - pos`` before the C checks the window, so
numpy raises ValueError ("array is too big") or allocates gigabytes, where the reference
raises BufferRangeError. Only ``end = len + 1`` / ``pos = -1`` in the default run.
cl_gather with taken_bytes near INT64_MAX (the first message is taken whatever the budget):
native/cl_read.c adds its body length in int64 (``g->taken_bytes += body_len``, signed
overflow) and returns a wrapped negative taken_bytes where the reference returns the sum.
cl_gather with first_queue_offset near INT64_MAX: ``first_queue_offset + rel`` (cl_read.c,
the stop unit's queue offset) overflows int64 and the stop_queue_offset comes back wrapped.
native.cl_gather with a huge rows_cap (1 << 40): the wrapper allocates the rows array of that
capacity up front (MemoryError) where the reference gathers what there is.
"""
_HUGE_WINDOW = [BIG] if KNOWN else []
_HUGE_TAKEN = [BIG] if KNOWN else []
_HUGE_Q0 = [BIG] if KNOWN else []
_HUGE_CAP = [1 << 40] if KNOWN else []
_HUGE_START = [-BIG - 1] if KNOWN else []
_PHYS_NEAR_MAX = [BIG - 10] if KNOWN else []
_AFTER_CRC = struct.Struct(">hiqqqhii")
_PREFIX = struct.Struct(">qiibI")
_TAG = b"mqstore.tag"


def _normal(r):
    """A result in a comparable form (arrays as shape + items, buffers as bytes)."""
    if isinstance(r, np.ndarray):
        return ("array", r.shape, r.tolist())
    if isinstance(r, (bytes, bytearray, memoryview)):
        return ("bytes", bytes(r))
    if isinstance(r, (tuple, list)):
        return tuple(_normal(x) for x in r)
    return int(r) if isinstance(r, (int, np.integer)) else r


def _outcome(fn, args):
    try:
        return _normal(fn(*args))
    except Exception as exc:  # noqa: BLE001 - the type is the result
        return ("raised", type(exc).__name__)


def ro(data: bytes, guard: bool):
    """A read-only input: a fresh bytes object, or a view ending at an inaccessible page."""
    return guarded_view(data) if guard else bytes(data)


def rw(data: bytes, guard: bool):
    """A writable output: a fresh bytearray, or a guarded view (writable, it is an mmap)."""
    return guarded_view(data) if guard else bytearray(data)


def agree(name: str, reference, candidate, build) -> None:
    """``build(guard)`` -> (args, outs): the reference on plain buffers and the native
    function on plain and on guarded ones give the same result (or error type) and, when
    they return, the same bytes in the output buffers ``outs``."""
    args, outs = build(False)
    want = _outcome(reference, args)
    want_out = [bytes(o) for o in outs]
    for guard in (False, True):
        args, outs = build(guard)
        got = _outcome(candidate, args)
        if got != want:
            raise AssertionError(f"{name}: native {got!r:.600} != python {want!r:.600}")
        returned = not (isinstance(want, tuple) and want[:1] == ("raised",))
        if returned and [bytes(o) for o in outs] != want_out:
            raise AssertionError(f"{name}: native output bytes differ from python's")


def pick(rng: random.Random, sound, *hostile, p: float = 0.08):
    """``sound`` (a value, or a list to choose from), or with probability ``p`` one of the
    ``hostile`` values."""
    if hostile and rng.random() < p:
        return rng.choice(hostile)
    return rng.choice(sound) if isinstance(sound, list) else sound


def _wrap64(v: int) -> int:
    return ((v + (1 << 63)) % (1 << 64)) - (1 << 63)


def kafka_batch_of(rng: random.Random, base: int) -> tuple[bytes, int]:
    """A magic-2 batch with keys, headers, tags, control / compressed / log-append-time
    attributes, sometimes a hostile lastOffsetDelta or record count; and the next base."""
    n = rng.randrange(1, 5)
    recs = b"".join(
        kafka_record(i, rng.choice([None, b"", b"v" * rng.randrange(40)]),
                     rng.choice([None, b"", b"key"]),
                     rng.choice([[], [(b"h", b"1")], [(_TAG, b"t"), (b"h", None)],
                                 [(b"\xff", b"x")], [(_TAG, b"\xc3")], [(_TAG, None)]]),
                     timestamp_delta=rng.randrange(-5, 5))
        for i in range(n))
    attributes = rng.choice([0, 0, 0, 0x08, 0x20, 0x01, 0x10])
    lod = n - 1 if rng.random() < 0.9 else rng.choice([-1, n, 1 << 30])
    count = n if rng.random() < 0.9 else rng.choice([-1, 0, n + 1, (1 << 31) - 1])
    body = _AFTER_CRC.pack(attributes, lod, 1000, 2000, -1, -1, -1, count) + recs
    base = _wrap64(base)
    return (_PREFIX.pack(base, len(body) + 9, 0, 2, _purepy.crc32c(body)) + body,
            base + max(lod, 0) + 1)


def segments_round(rng: random.Random) -> None:
    first = rng.choice([0, 7, BIG - 40])  # batches ending at INT64_MAX are bad headers
    parts, base = [], first
    for _ in range(rng.randrange(5)):
        b, base = kafka_batch_of(rng, base if rng.random() < 0.9 else base + 1)
        parts.append(b)
    log = damaged(rng, b"".join(parts))
    pos = pick(rng, [0, 0, rng.randrange(len(log) + 1)], -1, *_HUGE_START)
    end = pick(rng, [len(log), rng.randrange(max(pos, 0), len(log) + 1)], len(log) + 1,
               *_HUGE_WINDOW)
    args = (pos, end, rng.choice([-1, first, first, rng.randrange(-3, 30)]),
            rng.choice([-BIG - 1, first, first + rng.randrange(8)]),
            rng.choice([BIG, 1 << 63, first + rng.randrange(12), 0]),
            rng.random() < 0.7, rng.choice([BIG, 1 << 64, rng.randrange(-1, 10)]),
            rng.choice([BIG, 1 << 64, rng.randrange(-1, 200)]))
    agree("decode_batches", _purepy_batches.decode_batches, native.decode_batches,
          lambda g: ((ro(log, g), *args), ()))
    span_args = (pos, end, rng.choice([BIG, 1 << 63, first + rng.randrange(12)]))
    agree("batch_span", _purepy_batches.batch_span, native.batch_span,
          lambda g: ((ro(log, g), *span_args), ()))
    # the record encoders of the write path
    n = rng.randrange(10)
    values = [os.urandom(rng.choice([0, 1, 50, 200])) for _ in range(n)]
    keys = [rng.choice([None, b"", b"k" * rng.randrange(30)]) for _ in range(n)]
    deltas = [rng.choice([0, -1, 1 << 40, -(1 << 63), BIG]) for _ in range(n)]
    extras = [rng.choice([b"", b"\x02\x02h\x021", os.urandom(5)]) for _ in range(n)]
    hostile = rng.random()
    if hostile < 0.05 and n:
        keys = keys[1:]  # the columns differ in length
    elif hostile < 0.1 and n:
        deltas[0] = 1 << 63  # outside int64
    elif hostile < 0.15 and n:
        values[0] = memoryview(array.array("i", [1, 2, 3]))  # len() is not the byte count
    agree("encode_records", _purepy_batches.encode_records, native.encode_records,
          lambda g: (([ro(v, g) if isinstance(v, bytes) else v for v in values],
                      [None if k is None else ro(k, g) for k in keys], deltas,
                      [ro(e, g) for e in extras]), ()))
    lead = rng.choice([0, 61, 3])
    def after_lead(fn):  # the lead bytes are free space (the scratch's old bytes in C)
        return lambda *a: (lambda v: (len(v), bytes(v[lead:])))(fn(*a))

    agree("encode_value_records_view", after_lead(_purepy_batches.encode_value_records_view),
          after_lead(native.encode_value_records_view),
          lambda g: (([ro(v, g) if isinstance(v, bytes) else v for v in values], lead), ()))
    agree("encode_value_records", _purepy.encode_value_records, native.encode_value_records,
          lambda g: (([ro(v, g) if isinstance(v, bytes) else v for v in values],), ()))


_CL_PROPS = [b"TAGS\x01t1\x02KEYS\x01k1\x02UNIQ_KEY\x01X1\x02h\x01v\x02", b"", b"\x02",
             b"KEYS\x01a b\x02", b"p" * 300]


def commitlog_write_round(rng: random.Random) -> None:
    n = rng.randrange(8)
    values = [os.urandom(rng.choice([0, 1, 7, 100, 1000])) for _ in range(n)]
    props = [None if rng.random() < 0.5 else rng.choice(_CL_PROPS) for _ in range(n)]
    lens = [len(v) for v in values]
    offs = [sum(lens[:i]) for i in range(n)]
    plist = [b"" if p is None else p for p in props]
    plens = [-1 if p is None else len(p) for p in props]
    poffs = [sum(len(p) for p in plist[:i]) for i in range(n)]
    a = dict(topic=b"topic-x", bodies=b"".join(values), body_offsets=offs, body_lengths=lens,
             props=b"".join(plist), props_offsets=poffs, props_lengths=plens,
             uniq_prefix=b"AB12", uniq_first=rng.randrange(1 << 20),
             queue_ids=[rng.randrange(8) for _ in range(n)],
             queue_offsets=[rng.randrange(1 << 40) for _ in range(n)],
             born_timestamps=rng.choice([None, [rng.choice([-1, rng.randrange(1 << 42)])
                                                for _ in range(n)]]),
             phys_offset=rng.randrange(1 << 40), store_timestamp=rng.randrange(1 << 42))
    if rng.random() < 0.3:
        # plain properties for all, or (hostile) lengths without offsets
        a["props_offsets"] = a["props_lengths"] = \
            None if rng.random() < 0.5 else a["props_lengths"]
    if rng.random() < 0.5:
        out_len = rng.choice([0, 10, rng.randrange(4000), 20000])
        out_pos = rng.choice([0, rng.randrange(out_len + 1), out_len + 1])
    else:
        out_len = out_pos = None
    if rng.random() < 0.4 and n:  # one hostile argument
        i = rng.randrange(n)
        key, value = rng.choice([
            ("body_lengths", -1), ("body_lengths", len(a["bodies"]) + 1),
            ("body_lengths", 1 << 62), ("body_offsets", len(a["bodies"]) + 1),
            ("body_offsets", -1), ("body_offsets", BIG), ("props_offsets", -1),
            ("props_offsets", len(a["props"]) + 1), ("props_lengths", 1 << 62),
            ("props_lengths", 40000), ("queue_ids", 1 << 31), ("queue_ids", -(1 << 31) - 1),
            ("topic", b"t" * 256), ("uniq_prefix", b"u" * 40000), ("uniq_first", -1),
            ("uniq_first", BIG), ("phys_offset", -5),
            *[("phys_offset", v) for v in _PHYS_NEAR_MAX],
            ("queue_ids", "short")])
        if value == 1 << 62 and out_len is None and not KNOWN:
            pass
        elif key in ("topic", "uniq_prefix", "uniq_first", "phys_offset"):
            a[key] = value
        elif value == "short":
            a[key] = a[key][:-1]
        elif a.get(key) is not None:
            a[key] = list(a[key])
            a[key][i] = value

    def build(g):
        args = [a["topic"], ro(a["bodies"], g), a["body_offsets"], a["body_lengths"],
                None if a["props"] is None else ro(a["props"], g), a["props_offsets"],
                a["props_lengths"], a["uniq_prefix"], a["uniq_first"], a["queue_ids"],
                a["queue_offsets"], a["born_timestamps"], a["phys_offset"],
                a["store_timestamp"]]
        if out_len is None:
            return args, ()
        out = rw(bytes(out_len), g)
        return args + [out, out_pos], (out,)

    agree("cl_encode", _purepy_cl_write.cl_encode, native.cl_encode, build)
    one = (pick(rng, [b"t", b"topic"], b"t" * 256, b""),
           os.urandom(rng.choice([0, 5, 300, 2000])),
           pick(rng, [b"", b"PFX"], b"u" * 40000, b"u" * 32767), pick(rng, [0, 3], -1, BIG),
           pick(rng, [0, 2], 1 << 31, -1, -(1 << 31) - 1), pick(rng, [0, 9], -1, BIG),
           pick(rng, [0, 4096], -5, *_PHYS_NEAR_MAX), rng.randrange(1 << 42))
    out_len = rng.choice([None, None, 400, 1000, 3000, 50000, 0, 50, 200])
    out_pos = 0 if out_len is None else pick(rng, [0, rng.randrange(out_len + 1)],
                                             out_len + 1, -1)

    def build_one(g):
        if out_len is None:
            return one, ()
        out = rw(bytes(out_len), g)
        return (*one, out, out_pos), (out,)

    agree("cl_encode_one", native.cl_encode_one_reference, native.cl_encode_one, build_one)
    # IndexFile key hashes
    buf = bytes(rng.choice(b"ab c\x80\xffz0") for _ in range(rng.randrange(120)))
    m = rng.randrange(10)
    pos = [rng.randrange(len(buf) + 1) for _ in range(m)]
    lens = [rng.randrange(len(buf) - p + 1) for p in pos]
    pref = [rng.randrange(-(1 << 31), 1 << 31) for _ in range(m)]
    if rng.random() < 0.4 and m:
        i = rng.randrange(m)
        col, value = rng.choice([(pos, len(buf) + 1), (pos, -1), (pos, BIG), (lens, -1),
                                 (lens, len(buf) - pos[i] + 1), (lens, BIG), (lens, 1 << 62),
                                 (pref, 1 << 31), (pref, -(1 << 31) - 1), (pref, 1 << 63)])
        col[i] = value
    agree("index_key_hashes", _purepy_cl_write.index_key_hashes, native.index_key_hashes,
          lambda g: ((ro(buf, g), pos, lens, pref), ()))


def signed(msg: bytes) -> bytes:
    """A V1 message with the __CRC32# record CRC appended (as test_native_cl_read.py)."""
    out = bytearray(msg)
    body_len = struct.unpack_from(">i", msg, 84)[0]
    p = 88 + body_len
    p += 1 + msg[p]
    plen = struct.unpack_from(">h", msg, p)[0]
    struct.pack_into(">i", out, 0, len(msg) + 20)
    struct.pack_into(">h", out, len(msg) - 2 - plen, plen + 20)
    crc = zlib.crc32(out) & 0x7FFFFFFF
    return bytes(out) + b"__CRC32#\x01" + (b"%d" % crc)[::-1].ljust(10, b"0") + b"\x02"


def rocketmq5_message(queue_id: int, queue_offset: int, phys: int, body: bytes, props: bytes,
                      *, v2: bool, born_v6: bool, store_v6: bool, with_crc: bool) -> bytes:
    """A message as RocketMQ 5 writes it: V2 magic (2-byte topic length), IPv6 hosts
    (SYSFLAG 0x10 / 0x20), the __CRC32# property (as tests/commitlog/test_foreign_store.py)."""
    t, p = b"TopicV2", props
    if with_crc:
        p += b"__CRC32#\x01" + b"0" * 10 + b"\x02"
    sysflag = (0x10 if born_v6 else 0) | (0x20 if store_v6 else 0)
    born = bytes(range(16)) + struct.pack(">i", 54321) if born_v6 else \
        bytes([10, 0, 0, 7]) + struct.pack(">i", 54321)
    store = bytes(15) + b"\x01" + struct.pack(">i", 10911) if store_v6 else \
        bytes([10, 0, 0, 1]) + struct.pack(">i", 10911)
    topic_len = struct.pack(">h", len(t)) if v2 else bytes([len(t)])
    store_ts = 1_700_000_000_000 + queue_offset
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


_READ_PROPS = [b"UNIQ_KEY\x01AB01\x02", b"TAGS\x01even\x02KEYS\x01k-1\x02UNIQ_KEY\x01A\x02",
               b"KEYS\x01\x03AAE=\x02h\x01v\x02", b"", b"TAGS\x01\x03dGFn\x02TAGS\x01last\x02",
               b"TAGS\x01a", b"\x01\x02\x02", b"KEYS\x01caf\xc3\xa9 x\x02", b"__CRC32#\x01"]


def mixed_commitlog(rng: random.Random, file_from: int, queue_id: int = 3, q0: int = 10,
                    v2_share: float = 0.15):
    """A CommitLog file of V1 (signed or not), V2 and IPv6 messages with some padding, and
    the ConsumeQueue units pointing at its messages (fillers among them)."""
    out = bytearray(bytes(rng.choice([0, 0, 7])))
    units = bytearray()
    for i in range(rng.randrange(1, 7)):
        if rng.random() < 0.2:
            units += struct.pack(">qiq", 0, 0x7FFFFFFF, 0)  # a filler (takes a queue offset)
        qoff = q0 + len(units) // 20
        body = os.urandom(rng.choice([0, 5, 60, 300]))
        props = rng.choice(_READ_PROPS)
        if rng.random() < v2_share:
            m = rocketmq5_message(queue_id, qoff, file_from + len(out), body, props,
                                  v2=rng.random() < 0.5, born_v6=rng.random() < 0.5,
                                  store_v6=rng.random() < 0.5, with_crc=rng.random() < 0.5)
        else:
            m = rocketmq_message(queue_id, qoff, file_from + len(out), body, properties=props)
            if rng.random() < 0.7:
                m = signed(m)
        units += struct.pack(">qiq", file_from + len(out), len(m), rng.randrange(-3, 3))
        out += m
    return bytes(out), bytes(units)


def commitlog_read_round(rng: random.Random) -> None:
    file_from = rng.choice([0, 4096, 1 << 40])
    buf, units = mixed_commitlog(rng, file_from)
    if rng.random() < 0.4:
        buf = damaged(rng, buf)
    if rng.random() < 0.25:
        units = damaged(rng, units)
    total_units = len(units) // 20
    first = rng.choice([0, 0, rng.randrange(total_units + 1)])
    n = pick(rng, [total_units - first, total_units - first, rng.randrange(total_units - first
                                                                          + 1)],
             total_units - first + 1, -1, BIG)
    select = None
    if rng.random() < 0.3 and n > 0:
        select = sorted(rng.sample(range(min(n, 64)), rng.randrange(min(n, 64) + 1)))
        if rng.random() < 0.1:
            select.append(rng.choice([-1, n, 1 << 40]))
    n_iter = (max(n, 0) if select is None else len(select))
    start = pick(rng, [0, 0, rng.randrange(n_iter + 1)], n_iter + 1, -1)
    limit = pick(rng, [len(buf), len(buf), rng.randrange(len(buf) + 1)], len(buf) + 1, -1)
    out_pos = pick(rng, [0, 0, rng.randrange(64)], 1 << 20, -1)
    out_len = max(0, rng.choice([len(buf) + out_pos, len(buf) + out_pos, rng.randrange(400)]))
    args = (first, n, select, start, pick(rng, 10, 9, 11, -1, *_HUGE_Q0), None, limit,
            pick(rng, file_from, file_from + 7, 0, -1), pick(rng, 3, 4, -1),
            rng.random() < 0.8, rng.choice([BIG, BIG, 0, file_from + rng.randrange(600)]),
            rng.choice([0, 0, 1]), rng.choice([0, 0, rng.randrange(1000), *_HUGE_TAKEN]),
            rng.choice([BIG, 1 << 40, rng.randrange(600), 0]),
            pick(rng, [100, 100, 0, 1, 3], -1, *_HUGE_CAP))

    def build(g):
        out = rw(bytes(out_len), g)
        a = list(args)
        a[5] = ro(buf, g)
        return (ro(units, g), *a, out, out_pos), (out,)

    agree("cl_gather", _purepy_cl_read.cl_gather, native.cl_gather, build)
    plan = (first, n, start if select is None else pick(rng, [0, n], n + 1, -1),
            pick(rng, file_from, file_from + 7, 0, -1, BIG), limit,
            rng.choice([BIG, rng.randrange(800), 0]), rng.choice([0, 0, rng.randrange(500)]),
            rng.choice([0, 1]), pick(rng, [16, 16, 0, 1, 2], -1))
    agree("cl_transfer_plan", _purepy_cl_read.cl_transfer_plan, native.cl_transfer_plan,
          lambda g: ((ro(units, g), *plan), ()))


def v2_scan_round(rng: random.Random) -> None:
    """scan_commitlog / dispatch_fields over V2 and IPv6 messages, damaged or with SYSFLAG
    bits that do not match the layout."""
    buf, _units = mixed_commitlog(rng, rng.choice([0, 4096]), v2_share=0.6)
    buf = bytearray(buf)
    if rng.random() < 0.3 and len(buf) >= 40:  # IPv6 flags on whatever sits there
        pos = rng.choice([0, rng.randrange(len(buf) - 39)])
        buf[pos + 36:pos + 40] = struct.pack(">i", rng.choice([0x10, 0x20, 0x30, -1]))
    if rng.random() < 0.2 and len(buf) >= 8:  # a V2 magic on a V1 message (or anything)
        pos = rng.choice([0, rng.randrange(len(buf) - 7)])
        buf[pos + 4:pos + 8] = struct.pack(">I", 0xDAA320AB)
    buf = damaged(rng, bytes(buf)) if rng.random() < 0.7 else bytes(buf)
    for name in ("scan_commitlog", "dispatch_fields"):
        check(name, buf, 0, len(buf))
        check(name, buf, rng.randrange(len(buf) + 1), len(buf))


def _crc_views(data: bytes, raw: bytes, start: int):
    yield data
    yield guarded_view(data)  # ends at the guard page, starts wherever len(data) puts it
    yield guarded_view(raw)[start:start + len(data)]  # unaligned start, guard after raw


def crc_round(rng: random.Random) -> None:
    """mq_crc32 (PCLMULQDQ for 64+ bytes) against zlib.crc32, and CRC-32C on both paths, on
    odd lengths, unaligned guarded views and continued CRCs; the software paths too."""
    ffi, lib = native._ffi, native._lib
    u8 = ffi.typeof("uint8_t[]")
    n = rng.choice([rng.randrange(64), rng.randrange(64, 300), rng.randrange(300, 20000),
                    63, 64, 65, 79, 80, 81, 127, 128, 129, 191, 255, 256, 257])
    start = rng.randrange(16)
    raw = os.urandom(start + n + rng.randrange(3))
    data = raw[start:start + n]
    seed = rng.choice([0, 0xFFFFFFFF, rng.randrange(1 << 32)])
    want32, want32c = zlib.crc32(data, seed), _purepy.crc32c(data, seed)
    force_sw = os.environ.get("MQSTORE_CRC32C_HW", "").lower() in ("off", "0", "false")
    for software in (False, True):
        lib.mq_init(1 if software or force_sw else 0)
        try:
            for view in _crc_views(data, raw, start):
                p = ffi.from_buffer(u8, view)
                got = lib.mq_crc32(seed, p, n)
                if got != want32:
                    raise AssertionError(f"mq_crc32 of {n} bytes from +{start} "
                                         f"(software={software}): {got:#x} != {want32:#x}")
                if lib.mq_crc32c(seed, p, n) != want32c or \
                        lib.mq_crc32c_software(seed, p, n) != want32c:
                    raise AssertionError(f"CRC-32C of {n} bytes from +{start} differs")
                cut = rng.randrange(n + 1)  # chunked continuation
                if lib.mq_crc32(lib.mq_crc32(seed, p, cut), p + cut, n - cut) != want32:
                    raise AssertionError(f"mq_crc32 continued at {cut} of {n} differs")
                if native.crc32c(view, seed) != want32c:
                    raise AssertionError("native.crc32c differs")
        finally:
            lib.mq_init(1 if force_sw else 0)


def rows_round(rng: random.Random) -> None:
    """mqstore._rows (native/rows.c): values() and records() with good and bad positions
    (a bad one raises ValueError, a bad column TypeError / ValueError, never a read out)."""
    if _rows is None:
        return
    from mqstore.records import EMPTY_HEADERS, Record

    data = os.urandom(rng.randrange(200))
    n = rng.randrange(8)
    starts = [rng.randrange(len(data) + 1) for _ in range(n)]
    sizes = [rng.randrange(len(data) - s + 1) for s in starts]
    if rng.random() < 0.5 and n:
        i = rng.randrange(n)
        col, value = rng.choice([
            (starts, -1), (starts, len(data) + 1), (starts, BIG), (starts, -BIG - 1),
            (sizes, -1), (sizes, len(data) - starts[i] + 1), (sizes, BIG), (sizes, 1 << 62)])
        col[i] = value
    ok = all(0 <= s <= len(data) and 0 <= z <= len(data) - s for s, z in zip(starts, sizes))
    want = [data[s:s + z] for s, z in zip(starts, sizes)] if ok else None
    st, sz = np.array(starts, dtype=np.int64), np.array(sizes, dtype=np.int64)
    offs, stamps = np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64) * 10
    keys = rng.choice([None, [b"k"] * n])
    tags = rng.choice([None, ["t"] * n])
    for view in (data, guarded_view(data)):
        try:
            got = _rows.values(view, st, sz)
        except ValueError:
            got = None
        if got != want:
            raise AssertionError(f"_rows.values{starts, sizes}: {got!r} != {want!r}")
        try:
            recs = _rows.records(Record, "t", 0, view, offs, stamps, st, sz, keys, None, tags,
                                 EMPTY_HEADERS)
        except ValueError:
            recs = None
        if (None if recs is None else [r.value for r in recs]) != want:
            raise AssertionError(f"_rows.records{starts, sizes}: values differ")
        for bad in ((view, st.astype(np.int32), sz), (view, st, sz[:-1] if n else sz[:0]),
                    (view, st.reshape(-1, 1), sz)):
            try:
                _rows.values(*bad)
            except (TypeError, ValueError):
                continue
            if len(bad[1]) != len(bad[2]) or bad[1].dtype != np.int64:
                raise AssertionError("_rows.values took a bad column")
        if n:
            try:
                _rows.records(Record, "t", 0, view, offs, stamps, st, sz, [b"k"] * (n - 1),
                              None, None, EMPTY_HEADERS)
            except TypeError:
                pass
            else:
                raise AssertionError("_rows.records took a short keys column")


def main(rounds: int) -> int:
    assert native.backend == "native", "the compiled helper is not loaded"
    rng = random.Random(20261122)
    for _ in range(rounds):
        k = damaged(rng, kafka_log(rng.randrange(5), rng.randrange(1, 4), rng.randrange(40),
                                   base_offset=rng.choice([0, 5, (1 << 63) - 2])))
        pos = rng.randrange(len(k) + 1)
        end = rng.randrange(pos, len(k) + 1)
        check("scan_batches", k, 0, len(k))
        check("scan_batches", k, pos, end)
        check("find_batch", k, pos, len(k), rng.randrange(-5, 20))
        c = damaged(rng, rocketmq_log(rng.randrange(4), 2, rng.randrange(30))
                    + (struct.pack(">iI", 16, 0xCBD43194) + bytes(8) if rng.random() < 0.3
                       else bytes(rng.randrange(10))))
        check("scan_commitlog", c, 0, len(c))
        check("scan_commitlog", c, rng.randrange(len(c) + 1), len(c))
        check("dispatch_fields", c, 0, len(c))
        keys = sorted(rng.randrange(-100, 5000) for _ in range(rng.randrange(1200)))
        idx = damaged(rng, offset_index(keys))
        check("offset_index_floor", idx, rng.randrange(-2, len(keys) + 2),
              rng.randrange(-200, 6000))
        tidx = damaged(rng, time_index(keys))
        check("time_index_floor", tidx, rng.randrange(-2, len(keys) + 2),
              rng.randrange(-200, 6000))
        cq = damaged(rng, consume_queue([rng.randrange(-3, 3) for _ in range(rng.randrange(60))]))
        check("cq_tag_scan", cq, rng.randrange(-1, 30), rng.randrange(-1, 60),
              [rng.randrange(-3, 3) for _ in range(rng.randrange(12))])
        recs = b"".join(kafka_record(i, rng.choice([None, b"v" * rng.randrange(20)]),
                                     rng.choice([None, b"k"]),
                                     [(b"h", rng.choice([None, b"x"]))] * rng.randrange(3))
                        for i in range(rng.randrange(5)))
        recs = damaged(rng, recs)
        check("decode_records", recs, 0, len(recs), rng.randrange(-1, 7))
        values = [os.urandom(rng.randrange(300)) for _ in range(rng.randrange(30))]
        assert native.encode_value_records(values) == _purepy.encode_value_records(values)
        slots, entries = rng.randrange(1, 9), rng.randrange(0, 30)
        start = os.urandom(40 + slots * 4 + entries * 20)
        keys = [(rng.randrange(-(1 << 31), 1 << 31), rng.randrange(1 << 40),
                 rng.randrange(-5, 1 << 42)) for _ in range(rng.randrange(40))]
        cols = [list(c) for c in zip(*keys)] or [[], [], []]
        state = (rng.randrange(-1, 32), rng.randrange(9), rng.randrange(-5, 1 << 42), 0)
        ref = bytearray(start)
        expected = _purepy.index_put_keys(ref, slots, entries, state, *cols)
        for target in (bytearray(start), guarded_view(start)):
            assert native.index_put_keys(target, slots, entries, state, *cols) == expected
            assert bytes(target) == bytes(ref)
        cut_state = (rng.randrange(-2, 40), rng.randrange(-2, 9))
        cut_at = rng.choice([0, 1 << 39, rng.randrange(1 << 40)])
        ref = bytearray(start)
        expected = _purepy.index_truncate_from(ref, slots, entries, cut_state, cut_at)
        for target in (bytearray(start), guarded_view(start)):
            assert native.index_truncate_from(target, slots, entries, cut_state, cut_at) == \
                expected
            assert bytes(target) == bytes(ref)
        texts = ["".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0xD800, 0xE000),
                                         rng.randrange(0x10000, 0x10FFFF)]))
                         for _ in range(rng.randrange(12))) for _ in range(rng.randrange(9))]
        assert native.java_string_hashes(texts).tolist() == \
            _purepy.java_string_hashes(texts).tolist()
        raw = os.urandom(rng.randrange(3000))
        start = rng.randrange(9)
        assert native.crc32c(raw[start:]) == _purepy.crc32c(raw[start:])
        assert native.murmur2(raw[:200]) == _purepy.murmur2(raw[:200])
        segments_round(rng)
        commitlog_write_round(rng)
        commitlog_read_round(rng)
        v2_scan_round(rng)
        crc_round(rng)
        rows_round(rng)
        write_rounds(rng)
    print(f"sanitizer driver: {rounds} rounds, native == python, no crash")
    return 0


if __name__ == "__main__":
    code = main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown: valgrind reports only what ran before

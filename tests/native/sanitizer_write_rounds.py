"""The rounds of ``sanitizer_driver.py`` for the write kernels added after it (issue 10):
``mqstore._seg_write`` (native/seg_write_ext.c), ``mqstore._cl_write`` (native/cl_write_ext.c
over cl_encode.c) and ``native.record_crc_rule`` (native/cl_recover.c).

Each call goes to the reference (``_purepy_batches``, ``_purepy_cl_write``,
``_purepy_cl_recover``) and to the native function on plain and on guarded buffers, with at
most one hostile argument: numbers at and past the int32 / int64 limits, wrong types, bytes
subclasses, empty and non-list sequences, read-only, short, multi-byte-item and
non-contiguous destinations. Both give the same result, or raise the same exception class,
and write the same bytes. Two checks are native-only (they only have to end without a
report): arguments whose ``__index__`` empties the values list while the C parses them, and
``values_batch_into`` on big batches (built without the GIL) while another thread swaps,
appends and pops the list's items; what it wrote must then be a batch with a good CRC whose
records are the values of one state of the list.
"""
from __future__ import annotations

import os
import random
import struct
import threading

import numpy as np
from nativelogs import guarded_view

from mqstore import _purepy_batches, _purepy_cl_recover, _purepy_cl_write, native

BIG = (1 << 63) - 1
I32 = (1 << 31) - 1


class Bytes(bytes):
    """A bytes subclass (the plain-value paths take exactly bytes, the rest any bytes)."""


class List(list):
    """A list subclass (append_batch passes one on as it is)."""


class IteratesOther(list):
    """A list subclass whose iteration yields other values than it holds (and reports
    another length)."""

    def __iter__(self):
        return iter([b"x" * 5000, b"", b"y" * 70000])

    def __len__(self):
        return 7


class Tuple(tuple):
    """A tuple subclass."""


class Index:
    """An integer argument whose ``__index__`` runs ``hook`` first (PyLong_AsLongLong calls
    it): Python code running while the C parses its arguments."""

    def __init__(self, value: int, hook) -> None:
        self.value, self.hook = value, hook

    def __index__(self) -> int:
        self.hook()
        return self.value


def _normal(r):
    if isinstance(r, (bytes, bytearray, memoryview)):
        return ("bytes", bytes(r))
    if isinstance(r, tuple):
        return tuple(_normal(x) for x in r)
    return int(r) if isinstance(r, (int, np.integer)) else r


def _outcome(fn, args):
    try:
        return _normal(fn(*args))
    except Exception as exc:  # noqa: BLE001 - the class is the result
        return ("raised", type(exc).__name__)


def _raw(o) -> bytes:
    return o.tobytes() if isinstance(o, np.ndarray) else bytes(o)


def agree(name: str, reference, candidate, build) -> None:
    """``build(guard)`` -> (args, outs): the same outcome (result or exception class) from
    the reference on plain buffers and the candidate on plain and guarded ones, and the
    same bytes in ``outs`` when they return."""
    args, outs = build(False)
    want = _outcome(reference, args)
    want_out = [_raw(o) for o in outs]
    for guard in (False, True):
        args, outs = build(guard)
        got = _outcome(candidate, args)
        if got != want:
            raise AssertionError(f"{name}: native {got!r:.300} != python {want!r:.300} "
                                 f"(args {[type(a).__name__ for a in args]})")
        if not (isinstance(want, tuple) and want[:1] == ("raised",)) and [_raw(o) for o in outs] != want_out:
            raise AssertionError(f"{name}: native output bytes differ from python's")


def one_hostile(rng: random.Random, sound: dict, hostile: dict, p: float = 0.35) -> dict:
    """``sound`` with, with probability ``p``, one argument replaced by one of its hostile
    values."""
    out = dict(sound)
    keys = [k for k in hostile if hostile[k]]
    if keys and rng.random() < p:
        k = rng.choice(keys)
        out[k] = rng.choice(hostile[k])
    return out


def destination(kind: str, data: bytes, guard: bool):
    """A destination buffer holding ``data`` (``kind``: rw, ro, mv-ro, numpy, strided)."""
    if kind == "rw":
        return guarded_view(data) if guard else bytearray(data)
    if kind == "ro":
        return bytes(data)
    if kind == "mv-ro":
        return memoryview(bytes(data))
    if kind == "numpy":  # 8-byte items: the length in bytes is what counts
        return np.frombuffer(bytearray(data + bytes(-len(data) % 8)), dtype=np.int64).copy()
    return memoryview(bytearray(data * 2))[::2]  # not contiguous


_DEST_KINDS = ["rw"] * 8 + ["ro", "mv-ro", "numpy", "strided"]
_INT_HOSTILE = [BIG + 1, -BIG - 2, 1.5, "7", None]


def _varint_len(z: int) -> int:
    return max(1, (z.bit_length() + 6) // 7)


def _record_size(i: int, n: int) -> int:
    body = 4 + _varint_len(2 * i) + _varint_len(2 * n) + n
    return _varint_len(2 * body) + body


_BIG_VALUE = None


def _near_batch_limit(rng: random.Random) -> list:
    """Values whose batch is INT32_MAX bytes or one more (127 references to one 16 MiB
    object and a last value sized to land there)."""
    global _BIG_VALUE
    if _BIG_VALUE is None:
        _BIG_VALUE = bytes(1 << 24)
    values = [_BIG_VALUE] * 127
    size = 61 + sum(_record_size(i, len(v)) for i, v in enumerate(values))
    goal = I32 + rng.choice([0, 1])
    n = goal - size - 12
    while size + _record_size(127, n + 1) <= goal:
        n += 1
    while size + _record_size(127, n) > goal:
        n -= 1
    return values + [bytes(n)]


def _values(rng: random.Random, big: bool = False) -> list:
    if big:  # >= 256 KiB: built without the GIL
        return [os.urandom(rng.choice([1, 100, 70000]))
                for _ in range(rng.randrange(4, 7))] + [os.urandom(1 << 18)]
    return [os.urandom(rng.choice([0, 1, 5, 63, 64, 127, 128, 300, 2000, 16400]))
            for _ in range(rng.choice([1, 1, 2, 5, 20, 64, 130]))]


def _values_variant(rng: random.Random, values: list):
    """A sequence argument: the list, its tuple, or a hostile one."""
    v = rng.choice([values] * 6 + [tuple(values)] + [None] * 2)
    if v is not None:
        return v
    kind = rng.choice(["empty", "etuple", "subclass", "bytearray", "str", "gen", "none",
                       "memoryview", "dict", "List", "IteratesOther", "Tuple"])
    if kind in ("List", "IteratesOther", "Tuple"):
        return globals()[kind](values)
    if kind in ("subclass", "bytearray", "str", "memoryview") and values:
        out, i = list(values), rng.randrange(len(values))
        out[i] = {"subclass": Bytes, "bytearray": bytearray, "memoryview": memoryview,
                  "str": lambda b: b.decode("latin-1")}[kind](values[i])
        return out
    return {"empty": [], "etuple": (), "gen": (x for x in values), "none": None,
            "dict": {0: b"x"}}.get(kind, [])


# ----- mqstore._seg_write -----
def seg_write_round(rng: random.Random) -> None:
    value = os.urandom(rng.choice([0, 1, 63, 64, 127, 128, 300, 16400, 70000]
                                  if rng.random() < 0.9 else [1 << 18, 300000]))
    a = one_hostile(rng, dict(base=rng.choice([0, 7, rng.randrange(1 << 40), BIG, -BIG - 1]),
                              ts=rng.choice([0, rng.randrange(1 << 42), -1, BIG, -BIG - 1]),
                              value=value),
                    dict(base=_INT_HOSTILE, ts=_INT_HOSTILE,
                         value=[Bytes(value), bytearray(value), memoryview(value), None,
                                value.decode("latin-1")]))
    agree("value_batch", _purepy_batches.value_batch, native.value_batch,
          lambda g: ((a["base"], a["ts"], a["value"]), ()))
    values = _values(rng, big=rng.random() < 0.08)
    seq = _values_variant(rng, values)
    if rng.random() < 0.004:
        seq = _near_batch_limit(rng)
    agree("values_batch_size", _purepy_batches.values_batch_size, native.values_batch_size,
          lambda g: ((seq,), ()))
    if isinstance(seq, list) and len(seq) > 127:
        return  # the near-limit list: no 2 GiB destination
    seq = _values_variant(rng, values)
    try:  # the size of what the values are taken as (a subclass: its iteration)
        size = _purepy_batches.values_batch_size(seq)
    except (TypeError, ValueError, OverflowError):
        size = 0
    b = one_hostile(rng, dict(base=rng.choice([0, rng.randrange(1 << 40), BIG]),
                              ts=rng.choice([0, rng.randrange(1 << 42), -BIG - 1]),
                              size=size, extra=rng.choice([0, 0, 1, 9]), kind="rw"),
                    dict(base=_INT_HOSTILE, ts=_INT_HOSTILE,
                         size=[size - 1, size + 1, 0, -1, BIG, BIG + 1, "7", 1.0 * size],
                         extra=[-1, -size], kind=_DEST_KINDS))

    junk = os.urandom(max(0, size + b["extra"]))  # what the batch overwrites

    def build(g):
        dest = destination(b["kind"], junk, g)
        return (dest, b["base"], b["ts"], seq, b["size"]), (dest,)

    if not isinstance(seq, type(x for x in ())):
        agree("values_batch_into", _purepy_batches.values_batch_into,
              native.values_batch_into, build)


def seg_write_threads_round(rng: random.Random) -> None:
    """values_batch_into on a big batch (GIL released while it is built) while another
    thread changes the list: every call either refuses (the size changed) or writes the
    batch of one state of the list (good CRC, record i is one of the values held at i)."""
    n = rng.randrange(2, 12)
    lengths = [rng.choice([10, 5000, 40000, 120000]) for _ in range(n)]
    lengths[0] = max(lengths[0], 300000)
    orig = [os.urandom(k) for k in lengths]
    alt = [os.urandom(k) for k in lengths]
    lst = list(orig)
    stop = threading.Event()

    def mutate():
        r = random.Random(rng.random())
        while not stop.is_set():
            i = r.randrange(n)
            lst[i] = alt[i] if lst[i] is orig[i] else orig[i]
            if r.random() < 0.05:
                lst.append(b"tail")
                lst.pop()
            if r.random() < 0.02:
                lst.append(b"x")
                lst.pop()

    t = threading.Thread(target=mutate)
    t.start()
    try:
        size = native.values_batch_size(list(orig))
        buf = bytearray(size)
        for _ in range(6):
            try:
                got = native.values_batch_into(buf, 5, 9, lst, size)
            except ValueError:
                continue
            assert got == size
            check_value_batch(bytes(buf), orig, alt)
    finally:
        stop.set()
        t.join()


def check_value_batch(batch: bytes, orig: list, alt: list) -> None:
    crc = struct.unpack_from(">I", batch, 17)[0]
    if native.crc32c(batch[21:]) != crc:  # (checked against the reference in crc_round)
        raise AssertionError("values_batch_into under a changing list: bad CRC")
    if struct.unpack_from(">i", batch, 57)[0] != len(orig):
        raise AssertionError("values_batch_into under a changing list: wrong count")
    pos = 61
    for i, (a, b) in enumerate(zip(orig, alt)):
        lead = _record_size(i, len(a)) - len(a) - 1  # the bytes before the value
        v = batch[pos + lead:pos + lead + len(a)]
        if v != a and v != b:
            raise AssertionError(f"values_batch_into under a changing list: record {i} is "
                                 "neither value held there")
        pos += _record_size(i, len(a))
    if pos != len(batch):
        raise AssertionError("values_batch_into under a changing list: wrong size")


# ----- mqstore._cl_write -----
_CLW = ("values_scan", "values_fit", "encode_values_into", "encode_one_into")
_OVERHEAD = 91 + 20


def cl_write_round(rng: random.Random) -> None:
    values = _values(rng)[:rng.choice([0, 1, 3, 40])]
    n = len(values)
    seq = _values_variant(rng, values)
    ref, nat = _purepy_cl_write, native
    limit = rng.choice([0, 100, 400, 3000, BIG, -1, -BIG - 1])
    a = one_hostile(rng, dict(overhead=rng.choice([0, _OVERHEAD, I32]), limit=limit),
                    dict(overhead=[-1, I32 + 1, BIG, *_INT_HOSTILE], limit=_INT_HOSTILE))
    agree("cl_values_scan", ref.values_scan, nat.cl_values_scan,
          lambda g: ((seq, a["overhead"], a["limit"]), ()))
    f = one_hostile(rng, dict(first=rng.randrange(n + 1), overhead=rng.choice([0, _OVERHEAD]),
                              room=rng.choice([0, 150, 3000, 1 << 20, BIG])),
                    dict(first=[-1, n + 1, BIG, *_INT_HOSTILE],
                         overhead=[-1, I32 + 1, *_INT_HOSTILE],
                         room=[-1, -BIG - 1, *_INT_HOSTILE]))
    agree("cl_values_fit", ref.values_fit, nat.cl_values_fit,
          lambda g: ((seq, f["first"], f["overhead"], f["room"]), ()))
    first = rng.randrange(n + 1)
    count = rng.randrange(n - first + 1)
    topic, prefix = rng.choice([b"t", b"topic-x", b"", b"t" * 255]), rng.choice([b"", b"AB12"])
    sizes = [_purepy_cl_write.encoded_size(len(topic), len(v), -1, len(prefix))
             for v in values[first:first + count]]
    pos = rng.choice([0, 0, rng.randrange(100)])
    e = one_hostile(rng, dict(
        pos=pos, topic=topic, first=first, count=count, prefix=prefix,
        uniq=rng.choice([0, rng.randrange(1 << 40), BIG - count]), qid=rng.choice([0, 3, I32]),
        qoff=rng.choice([0, rng.randrange(1 << 40), BIG - count]),
        phys=rng.choice([0, rng.randrange(1 << 40)]), ts=rng.choice([0, rng.randrange(1 << 42)]),
        extra=rng.choice([0, 0, 5]), kind="rw"), dict(
        pos=[-1, BIG, *_INT_HOSTILE], topic=[b"t" * 256, Bytes(b"tp"), "tp", bytearray(b"t"),
                                             None],
        first=[-1, n + 1, *_INT_HOSTILE], count=[-1, n - first + 1, BIG, *_INT_HOSTILE],
        prefix=[b"u" * 32768, b"u" * 32767, Bytes(b"P"), "P", None],
        uniq=[-1, BIG - count + 1, *_INT_HOSTILE], qid=[I32 + 1, -I32 - 2, -1, *_INT_HOSTILE],
        qoff=[-1, BIG - count + 1, *_INT_HOSTILE], phys=[-1, BIG, *_INT_HOSTILE],
        ts=_INT_HOSTILE, extra=[-1, -sum(sizes) - 1], kind=_DEST_KINDS))
    e["phys_near"] = rng.random() < 0.05  # phys_offset + the room after pos at INT64_MAX

    def build(g):
        cap = max(0, (e["pos"] if isinstance(e["pos"], int) and 0 <= e["pos"] < 1 << 20
                      else pos) + sum(sizes) + e["extra"])
        dest = destination(e["kind"], bytes(cap), g)
        phys = BIG - (cap - pos) + rng_bit if e["phys_near"] else e["phys"]
        return (dest, e["pos"], e["topic"], seq, e["first"], e["count"], e["prefix"],
                e["uniq"], e["qid"], e["qoff"], phys, e["ts"]), (dest,)

    rng_bit = rng.choice([0, 1])
    agree("cl_encode_values_into", ref.encode_values_into, nat.cl_encode_values_into, build)
    body = rng.choice(values) if values else b""
    o = dict(e, body=rng.choice([body] * 8 + [Bytes(body), bytearray(body), None]))
    o["phys_near"] = False
    sizes = [_purepy_cl_write.encoded_size(len(topic), len(body), -1, len(prefix))]

    def build_one(g):
        args, outs = build(g)
        return (args[0], args[1], args[2], o["body"], args[6], args[7], args[8], args[9],
                args[10], args[11]), outs

    agree("cl_encode_one_into", ref.encode_one_into, nat.cl_encode_one_into, build_one)


def index_hook_round(rng: random.Random) -> None:
    """Native-only: an integer argument whose __index__ empties (or refills with other
    objects) the values list while the C module parses its arguments. Any result or
    exception will do; a read of a freed item is what ASan / valgrind would report."""
    values = [os.urandom(rng.choice([10, 300, 5000])) for _ in range(rng.randrange(1, 30))]

    def case():
        lst = list(values)
        hook = rng.choice([lst.clear, lambda: lst.__setitem__(slice(None), [1] * 1000),
                           lambda: lst.extend([b"y"] * 5000)])
        return lst, hook

    lst, hook = case()
    calls = [
        (native.cl_values_scan, lambda: (lst, Index(10, hook), Index(5, hook))),
        (native.cl_values_fit, lambda: (lst, Index(0, hook), Index(10, hook), 1 << 30)),
        (native.cl_encode_values_into, lambda: (
            bytearray(1 << 20), Index(0, hook), b"t", lst, 0, Index(len(values), hook), b"P",
            Index(0, hook), Index(0, hook), Index(0, hook), Index(0, hook), Index(0, hook))),
        (native.values_batch_into, lambda: (
            bytearray(1 << 20), Index(0, hook), Index(0, hook), lst,
            Index(native.values_batch_size(values), hook))),
    ]
    for fn, args in calls:
        lst, hook = case()
        try:
            fn(*args())
        except (TypeError, ValueError, OverflowError):
            pass


# ----- native.record_crc_rule (cl_recover.c) -----
_TAIL = b"__CRC32#\x01" + b"0123456789" + b"\x02"


def record_crc_round(rng: random.Random) -> None:
    buf = bytearray(os.urandom(rng.choice([0, 50, 400, 3000])))
    m = rng.randrange(12) if buf else 0
    pos, size = [], []
    for _ in range(m):
        p = rng.randrange(len(buf))
        s = rng.randrange(1, len(buf) - p + 1)
        if s >= 20 and rng.random() < 0.7:
            buf[p + s - 20:p + s] = _TAIL
        pos.append(p)
        size.append(s)
    if rng.random() < 0.3 and m:
        i = rng.randrange(m)
        col, value = rng.choice([(pos, -1), (pos, len(buf)), (pos, BIG), (pos, -BIG - 1),
                                 (size, 0), (size, -1), (size, len(buf) + 1), (size, BIG),
                                 (size, len(buf) - pos[i] + 1)])
        col[i] = value
    r = one_hostile(rng, dict(min_size=rng.choice([20, 20, 25, 111, 9]), reserved=20,
                              required=rng.random() < 0.5, cols="list"),
                    dict(min_size=[19, 8, -1, BIG], reserved=[9, 8, 0, -1, 21, BIG],
                         cols=["int32", "short"]), p=0.25)
    if r["reserved"] == 20 and r["min_size"] == 9:
        r["min_size"] = 20

    def build(g):
        data = guarded_view(bytes(buf)) if g else bytes(buf)
        p, s = pos, size
        if r["cols"] == "int32":
            p = np.array([x if -(1 << 31) <= x <= I32 else 0 for x in pos], dtype=np.int32)
        elif r["cols"] == "short" and m:
            s = size[:-1]
        return (data, p, s, r["min_size"], r["reserved"], r["required"]), ()

    agree("record_crc_rule", _purepy_cl_recover.record_crc_rule, native.record_crc_rule,
          build)


def write_rounds(rng: random.Random) -> None:
    seg_write_round(rng)
    cl_write_round(rng)
    record_crc_round(rng)
    if rng.random() < 0.1:
        index_hook_round(rng)
    if rng.random() < 0.03:
        seg_write_threads_round(rng)

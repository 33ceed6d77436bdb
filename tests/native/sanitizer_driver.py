"""Drive every native function over many damaged inputs, checking native == python.

Run by test_native_sanitizers.py under valgrind or with an AddressSanitizer build (it is not
a test module itself). Every buffer is a fresh ``bytes`` object (with PYTHONMALLOC=malloc
each one is its own heap block, so the tools see a read past it), and half of them are also
passed as guarded views ending at an inaccessible page. Usage::

    python tests/native/sanitizer_driver.py [ROUNDS]
"""
from __future__ import annotations

import os
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nativelogs import (
    consume_queue,
    guarded_view,
    kafka_log,
    kafka_record,
    offset_index,
    rocketmq_log,
    time_index,
)

from mqstore import _purepy, native


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
    print(f"sanitizer driver: {rounds} rounds, native == python, no crash")
    return 0


if __name__ == "__main__":
    code = main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown: valgrind reports only what ran before

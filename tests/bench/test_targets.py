"""Consumers read columns: the stamps and sizes of a poll equal those of its values."""
from __future__ import annotations

import random

import numpy as np
import pytest

import mqstore
from mqstore.api import Message
from mqstore.bench.payloads import read_stamp, read_stamps, stamp
from mqstore.bench.targets import StoreTarget, polled_from_values, poll_store


def _values(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        size = rng.choice([0, 1, 7, 8, 9, 100, 1024])
        out.append(stamp(rng.randbytes(size), rng.randrange(1 << 62)))
    return out


def test_read_stamps_equals_read_stamp_of_each_value():
    values = _values(300, 1)
    sizes = np.array([len(v) for v in values], dtype=np.int64)
    got = read_stamps(b"".join(values), np.cumsum(sizes) - sizes, sizes)
    want = [-1 if read_stamp(v) is None else read_stamp(v) for v in values]
    assert got.tolist() == want
    assert read_stamps(b"", np.empty(0, np.int64), np.empty(0, np.int64)).tolist() == []


@pytest.mark.parametrize("engine_name", ["segments", "commitlog"])
def test_poll_store_equals_the_values_it_reads(engine_name, tmp_path):
    values = _values(200, 2)
    with mqstore.open(tmp_path / engine_name, engine_name, flush="os") as store:
        store.create_topic("t", 1)
        store.append_batch("t", values, partition=0)
        pos, stamps, sizes = 0, [], []
        while pos < 200:
            polled = poll_store(store, "t", 0, pos, 64)
            recs = store.read("t", 0, pos, max_records=64)
            want = polled_from_values(recs.values(), int(recs.offsets[-1]) + 1)
            assert polled.stamps.tolist() == want.stamps.tolist()
            assert polled.sizes.tolist() == want.sizes.tolist()
            assert polled.next_position == want.next_position
            stamps += polled.stamps.tolist()
            sizes += polled.sizes.tolist()
            pos = polled.next_position
        assert sizes == [len(v) for v in values]
        end = poll_store(store, "t", 0, 200, 64)
        assert len(end.sizes) == 0 and end.next_position == 200


def test_a_batch_of_one_goes_through_append(tmp_path, monkeypatch):
    target = StoreTarget("segments", str(tmp_path / "s"), "os", 1000)
    try:
        target.create_topic("t", 1)
        calls = []
        monkeypatch.setattr(target.store, "append_batch",
                            lambda *a, **k: calls.append("append_batch"))
        target.produce("t", [Message(b"x" * 16, key=b"k", tag="A")])
        assert calls == []
        got = target.store.read("t", 0, 0)
        assert got[0].key == b"k" and got[0].tag == "A" and got[0].value == b"x" * 16
        target.produce("t", [Message(b"y")] * 2)
        assert calls == ["append_batch"]
    finally:
        target.close()

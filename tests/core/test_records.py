"""mqstore.records: the Records / BatchMetadata sequences on their own, and the C row builder
(mqstore._rows) against the pure-Python path it replaces."""
from __future__ import annotations

import numpy as np
import pytest

from mqstore import records as rec_mod
from mqstore.records import (EMPTY_HEADERS, BatchMetadata, Record, RecordMetadata, Records,
                             count_within)


def _make(n, *, keys=False, headers=False, tags=False, nulls=False):
    vals = [b"v%05d" % i * (i % 4) for i in range(n)]
    buf = b"".join(vals)
    sizes = np.array([len(v) for v in vals], dtype=np.int64)
    starts = np.cumsum(sizes) - sizes
    lengths = sizes.copy()
    if nulls:
        lengths[::7] = -1
    recs = Records("t", 3, buf, np.arange(100, 100 + n), np.arange(n) * 2 + 5, starts, lengths,
                   keys=(lambda: [b"k%d" % i if i % 2 else None for i in range(n)]) if keys
                   else None,
                   headers=[{"h": b"%d" % i} if i % 3 == 0 else EMPTY_HEADERS
                            for i in range(n)] if headers else None,
                   tags=[f"t{i % 5}" for i in range(n)] if tags else None)
    expected = [Record("t", 3, 100 + i, i * 2 + 5,
                       (b"k%d" % i if i % 2 else None) if keys else None,
                       b"" if nulls and i % 7 == 0 else vals[i],
                       ({"h": b"%d" % i} if i % 3 == 0 else {}) if headers else {},
                       f"t{i % 5}" if tags else None)
                for i in range(n)]
    return recs, expected


@pytest.fixture(params=["rows", "python"])
def row_builder(request, monkeypatch):
    """Every test runs with the C row builder (when built) and with the Python path."""
    if request.param == "python":
        monkeypatch.setattr(rec_mod, "_rows", None)
    elif rec_mod._rows is None:
        pytest.skip("mqstore._rows is not built (MQSTORE_NATIVE=off or no compiler)")
    return request.param


@pytest.mark.parametrize("n", [0, 1, 255, 256, 257, 1000])
@pytest.mark.parametrize("cols", [{}, {"keys": True, "headers": True, "tags": True},
                                  {"nulls": True}])
def test_iteration_values_and_indexing_agree(row_builder, n, cols):
    recs, expected = _make(n, **cols)
    assert list(recs) == expected
    assert recs.values() == [r.value for r in expected]
    assert recs.keys() == [r.key for r in expected]
    assert recs.headers() == [r.headers for r in expected]
    assert recs.tags() == [r.tag for r in expected]
    for i in (0, n // 2, n - 1, -1):
        if n:
            assert recs[i] == expected[i]
    assert recs.value_sizes.tolist() == [len(r.value) for r in expected]


def test_strided_slices_and_take(row_builder):
    recs, expected = _make(600, keys=True, tags=True)
    assert list(recs[::3]) == expected[::3]
    assert recs[::3].values() == [r.value for r in expected[::3]]
    assert list(recs[500:100:-2]) == expected[500:100:-2]
    picked = recs.take([5, 1, 599])
    assert list(picked) == [expected[5], expected[1], expected[599]]


def test_records_made_in_c_are_real_records():
    if rec_mod._rows is None:
        pytest.skip("mqstore._rows is not built")
    recs, expected = _make(3, headers=True)
    got = list(recs)
    assert all(type(r) is Record for r in got)
    assert got[0].headers == {"h": b"0"} and got[1].headers is EMPTY_HEADERS
    assert got[2]._replace(offset=7).offset == 7 and repr(got[2]).startswith("Record(")


def test_row_builder_refuses_positions_outside_the_buffer():
    if rec_mod._rows is None:
        pytest.skip("mqstore._rows is not built")
    one = np.array([1], dtype=np.int64)
    with pytest.raises(ValueError, match="outside"):
        rec_mod._rows.values(b"abc", np.array([2], dtype=np.int64), np.array([5],
                                                                            dtype=np.int64))
    with pytest.raises(ValueError, match="outside"):
        rec_mod._rows.values(b"abc", np.array([-1], dtype=np.int64), one)
    with pytest.raises(TypeError, match="int64"):
        rec_mod._rows.values(b"abc", np.array([0], dtype=np.int32), one)
    with pytest.raises(ValueError, match="items"):
        rec_mod._rows.values(b"abc", np.array([0, 1], dtype=np.int64), one)
    with pytest.raises(TypeError, match="list"):
        rec_mod._rows.records(Record, "t", 0, b"abc", one, one, one, one, (b"k",), None, None,
                              EMPTY_HEADERS)
    with pytest.raises(TypeError, match="tuple subclass"):
        rec_mod._rows.records(dict, "t", 0, b"abc", one, one, one, one, None, None, None,
                              EMPTY_HEADERS)


def test_columns_must_have_one_length():
    with pytest.raises(ValueError):
        Records("t", 0, b"ab", [0, 1], [0], [0, 1], [1, 1])


def test_count_within_keeps_the_first_record_and_the_byte_limit():
    sizes = np.array([100, 100, 100, 100], dtype=np.int64)
    assert count_within(sizes, 10, 250) == 2
    assert count_within(sizes, 10, 10) == 1
    assert count_within(sizes, 3, 10_000) == 3
    assert count_within(sizes[:0], 10, 10) == 0
    assert count_within(sizes, 0, 10) == 0


def test_batch_metadata_forms_agree():
    single = BatchMetadata.single("t", 2, 40, 5, 99)
    arrays = BatchMetadata("t", [2] * 5, range(40, 45), [99] * 5)
    assert single == arrays == [RecordMetadata("t", 2, o, 99) for o in range(40, 45)]
    assert single.ranges == arrays.ranges == {2: (40, 5)}
    assert list(single[1:3]) == list(arrays[1:3])
    assert single[-5] == RecordMetadata("t", 2, 40, 99)
    with pytest.raises(IndexError):
        single[5]
    with pytest.raises(TypeError):
        single[1.0]
    assert "t-2@40+5" in repr(single)


def test_records_and_records_without_headers_pickle_and_copy(row_builder):
    import copy
    import pickle

    recs, expected = _make(300, keys=True, headers=True, tags=True)
    plain, plain_expected = _make(5)
    for r in (recs, plain):
        back = pickle.loads(pickle.dumps(r))
        assert back == r and back.values() == r.values() and back.keys() == r.keys()
    assert pickle.loads(pickle.dumps(plain[0])) == plain_expected[0]
    assert copy.deepcopy(plain[1]) == plain_expected[1]
    assert pickle.loads(pickle.dumps(EMPTY_HEADERS)) == {}


def test_headers_of_a_read_cannot_be_changed(row_builder):
    recs, _expected = _make(10, headers=True)
    h = recs[0].headers
    assert h == {"h": b"0"} and isinstance(h, dict)
    for change in (lambda: h.__setitem__("x", b"1"), lambda: h.update(x=b"1"),
                   lambda: h.pop("h"), lambda: h.clear(), lambda: h.setdefault("y", b"")):
        with pytest.raises(TypeError):
            change()
    assert recs[0].headers == {"h": b"0"} and dict(h) == {"h": b"0"}
    with pytest.raises(TypeError):
        recs[1].headers["x"] = b"1"  # EMPTY_HEADERS


def test_value_sizes_are_read_only_whatever_the_null_hint():
    recs = Records("t", 0, b"hello", [0], [0], [0], np.array([5], dtype=np.int64),
                   null_values=False)
    with pytest.raises(ValueError):
        recs.value_sizes[0] = 2
    assert recs.values() == [b"hello"]


def test_take_accepts_integers_only():
    recs, expected = _make(4)
    assert list(recs.take([-1, 0])) == [expected[3], expected[0]]
    assert list(recs.take(np.array([2], dtype=np.uint8))) == [expected[2]]
    assert list(recs.take([])) == []
    for bad in ([1.5], ["1"], [True, False], [[0]]):
        with pytest.raises(TypeError):
            recs.take(bad)
    for bad in ([4], [-5]):
        with pytest.raises(IndexError):
            recs.take(bad)


def test_batch_metadata_ranges_refuse_a_stepped_slice():
    md = BatchMetadata.single("t", 1, 0, 6, 5)
    assert md[2:5].ranges == {1: (2, 3)}
    with pytest.raises(ValueError, match="contiguous"):
        md[::2].ranges
    many = BatchMetadata("t", list(range(300)), [0] * 300, [1] * 300)
    assert len(repr(many)) < 200

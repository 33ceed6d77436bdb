"""Property test: random appends, batches, reopens and crash images against a list model."""
from __future__ import annotations

import shutil
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

import mqstore
from mqstore import Message
from mqstore.engines.segments.store import SegmentsStore

OPTS = {"segment_bytes": 700, "index_interval_bytes": 90, "segment_index_bytes": 120}

op = st.one_of(
    st.tuples(st.just("append"), st.binary(max_size=120), st.one_of(st.none(), st.binary(max_size=8)),
              st.sampled_from([None, "a", "b"])),
    st.tuples(st.just("batch"), st.lists(st.binary(max_size=60), min_size=1, max_size=12)),
    st.tuples(st.just("reopen")),
    st.tuples(st.just("crash")),
)


def _check(s, model):
    assert s.end_offset("t", 0) == len(model)
    got, off = [], 0
    while off < len(model):
        page = s.read("t", 0, off, max_records=7)
        got += page
        off = page[-1].offset + 1
    assert [(r.offset, r.value, r.key, r.tag) for r in got] == \
        [(i, v, k, t) for i, (v, k, t) in enumerate(model)]
    for probe in range(0, len(model), 5):
        assert s.read("t", 0, probe, max_records=1)[0].value == model[probe][0]


@settings(max_examples=30, deadline=None)
@given(st.lists(op, min_size=1, max_size=25))
def test_random_operations_match_a_list(ops):
    root = tempfile.mkdtemp(prefix="mq-model-")
    try:
        path = root + "/s"
        s = mqstore.open(path, "segments", **OPTS)
        s.create_topic("t")
        model: list[tuple[bytes, bytes | None, str | None]] = []
        n_crash = 0
        for o in ops:
            if o[0] == "append":
                md = s.append("t", o[1], key=o[2], tag=o[3], partition=0)
                assert md.offset == len(model)
                model.append((o[1], o[2], o[3]))
            elif o[0] == "batch":
                mds = s.append_batch("t", [Message(v, partition=0) for v in o[1]])
                assert [m.offset for m in mds] == list(range(len(model), len(model) + len(o[1])))
                model += [(v, None, None) for v in o[1]]
            elif o[0] == "reopen":
                s.close()
                s = mqstore.open(path, "segments", **OPTS)
            else:  # a crash after a flush: copy the live directory and continue from the copy
                s.flush()
                n_crash += 1
                img = f"{root}/crash{n_crash}"
                shutil.copytree(path, img)
                s.close()
                path = img
                s = mqstore.open(path, "segments", **OPTS)
            _check(s, model)
        s.close()
        assert SegmentsStore.verify_files(path) == []
    finally:
        shutil.rmtree(root, ignore_errors=True)

"""A model check: random appends, batches, clean reopens, simulated crashes (the process dies
with everything in the page cache: nothing flushed, the dispatcher stopped mid-way) and
retention, compared with a plain Python model after every step."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mqstore
from mqstore import Message

OPTS = {"mapped_file_size": 2000,  # not a multiple of the page size
        "cq_units_per_file": 8, "hash_slots": 4,
        "index_entries": 16}
PARTS = 3
TAGS = [None, "a", "b", "中"]

op = st.one_of(
    st.tuples(st.just("append"), st.integers(0, PARTS - 1), st.integers(0, 300),
              st.integers(0, 3), st.integers(0, 4)),
    st.tuples(st.just("batch"), st.integers(0, PARTS - 1), st.integers(1, 12),
              st.integers(0, 3), st.integers(0, 4)),
    st.tuples(st.just("reopen")), st.tuples(st.just("crash")), st.tuples(st.just("retain")),
)


def _crash(s):
    """Abandon the store as a killed process would: no flush, no final dispatch, abort kept."""
    s._closed = True
    s._release()


#: MQSTORE_MODEL_EXAMPLES=400 for a longer hunt
EXAMPLES = int(os.environ.get("MQSTORE_MODEL_EXAMPLES", "25"))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=25), dispatch=st.sampled_from(["sync", "async"]),
       write_mode=st.sampled_from(["mmap", "write"]))
def test_store_matches_the_model(tmp_path_factory, ops, dispatch, write_mode):
    path = str(tmp_path_factory.mktemp("model") / "s")
    model: list[list] = [[] for _ in range(PARTS)]  # per partition: (value, key, tag) or None
    start = [0] * PARTS
    s = mqstore.open(path, "commitlog", dispatch=dispatch, write_mode=write_mode, **OPTS)
    s.create_topic("t", partitions=PARTS)
    n = 0
    try:
        for o in ops:
            if o[0] == "append":
                _, p, size, tag, key = o
                v = b"%d:" % n + b"v" * size
                md = s.append("t", v, partition=p, tag=TAGS[tag],
                              key=None if key == 0 else b"k%d" % key)
                assert md.offset == len(model[p])
                model[p].append((v, None if key == 0 else b"k%d" % key, TAGS[tag]))
                n += 1
            elif o[0] == "batch":
                _, p, count, tag, key = o
                msgs = [Message(b"%d:b" % (n + i), key=None if key == 0 else b"k%d" % key,
                                tag=TAGS[tag]) for i in range(count)]
                mds = s.append_batch("t", msgs, partition=p)
                assert [m.offset for m in mds] == list(range(len(model[p]),
                                                             len(model[p]) + count))
                model[p] += [(m.value, m.key, m.tag) for m in msgs]
                n += count
            elif o[0] in ("reopen", "crash"):
                if o[0] == "reopen":
                    s.close()
                else:
                    _crash(s)
                    assert os.path.exists(os.path.join(path, "abort"))
                s = mqstore.open(path, "commitlog", dispatch=dispatch, write_mode=write_mode,
                                 **OPTS)
                assert s.recovery["abnormal"] == (o[0] == "crash")
                assert s.recovery["damage"] == []
            else:
                s.apply_retention(now_ms=mqstore.api.now_ms() + 10 * 24 * 3600 * 1000)
                for p in range(PARTS):
                    start[p] = s.start_offset("t", p)
            for p in range(PARTS):
                assert s.end_offset("t", p) == len(model[p])
                assert s.start_offset("t", p) == start[p]
                got, off = [], start[p]
                while off < len(model[p]):
                    page = s.read("t", p, off, max_records=7)
                    got += [(r.value, r.key, r.tag) for r in page]
                    off = page[-1].offset + 1
                assert got == model[p][start[p]:]
                tagged = s.read("t", p, start[p], tags=["a", "中"], max_records=10_000)
                assert [(r.value, r.key, r.tag) for r in tagged] == [
                    m for m in model[p][start[p]:] if m[2] in ("a", "中")]
        for k in range(1, 5):
            want = sorted(m[0] for p in range(PARTS) for m in model[p][start[p]:]
                          if m[1] == b"k%d" % k)
            assert sorted(r.value for r in s.lookup_key("t", b"k%d" % k, limit=10_000)) == want
    finally:
        s.close()

"""The child of the SIGKILL loop: append seeded records until killed, reporting each one.

``python -m mqstore.torture.kill_child PATH ENGINE FLUSH SEED SEQ_START MAX_RECORDS
FLUSH_EVERY`` opens the store, creates the workload's topics if needed, then appends records
``SEQ_START, SEQ_START+1, ...`` of workload ``SEED`` (single records and small batches). It
reports on stdout, one ``os.write`` per line (atomic on a pipe), so the parent knows exactly
what was acknowledged when the SIGKILL lands:

- ``R`` ready (store open, topics present);
- ``T <seq>`` about to append records up to ``seq`` (they may appear after the kill);
- ``A <seq> <topic> <partition> <offset>`` append returned for that record;
- ``F`` a ``flush()`` returned: every ``A`` line before it is durable;
- ``D`` the records are all appended (it then waits to be killed);
- ``X <error>`` an exception (the child exits with status 2).
"""
from __future__ import annotations

import os
import random
import sys
import time
import traceback


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main(argv: list[str]) -> int:
    path, engine, flush, seed, seq_start, max_records, flush_every = argv
    seed_i, seq, max_n, every = int(seed), int(seq_start), int(max_records), int(flush_every)
    from mqstore.torture.common import TOPICS, ensure_topics, make_message, open_store

    try:
        store = open_store(path, engine, flush=flush, flush_interval_ms=20)
        ensure_topics(store)
        for name, parts in TOPICS.items():
            if store.partitions(name) != parts:
                raise RuntimeError(f"topic {name} reopened with {store.partitions(name)} "
                                   f"partitions, not {parts}")
        _say("R")
        rng = random.Random(seed_i * 7919 + seq)
        end = seq + max_n
        since_flush = 0
        while seq < end:
            if rng.random() < 0.15:
                n = rng.randrange(2, 6)
                first = make_message(seed_i, seq)
                batch = [first] + [make_message(seed_i, s) for s in range(seq + 1, seq + n)]
                # a batch goes to one partition of one topic: keep only records that agree
                batch = [m for m in batch
                         if (m.topic, m.partition) == (first.topic, first.partition)]
                if len(batch) > 1:
                    _say(f"T {batch[-1].seq}")
                    mds = store.append_batch(first.topic, [m.message() for m in batch])
                    for m, md in zip(batch, mds):
                        _say(f"A {m.seq} {md.topic} {md.partition} {md.offset}")
                    seq += n
                    since_flush += len(batch)
                    continue
            m = make_message(seed_i, seq)
            _say(f"T {m.seq}")
            md = store.append(m.topic, m.value, key=m.key, partition=m.partition,
                              timestamp_ms=m.timestamp_ms, headers=m.headers or None, tag=m.tag)
            _say(f"A {m.seq} {md.topic} {md.partition} {md.offset}")
            seq += 1
            since_flush += 1
            if every and since_flush >= every:
                store.flush()
                _say("F")
                since_flush = 0
        _say("D")
        while True:
            time.sleep(1)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which classifies it
        _say("X " + " | ".join(traceback.format_exception_only(type(exc), exc)).strip()
             .replace("\n", " "))
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

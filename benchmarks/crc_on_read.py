"""What reading with ``check_crcs=True`` (the default) costs against ``check_crcs=False``.

For each engine: one partition of N records written once, then full sequential reads with the
check on and off, interleaved and repeated; prints the best read rate of each and the on/off
ratio (1.0 = free).

    python benchmarks/crc_on_read.py [--records 200000] [--value-size 100] [--batch 100]
                                     [--repeat 5] [--engine segments,commitlog]

Run it with ``MQSTORE_NATIVE=off`` to see the pure-Python CRC.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import mqstore
from mqstore import native


def _write(root: str, engine: str, records: int, size: int, batch: int) -> None:
    with mqstore.open(root, engine) as s:
        s.create_topic("t")
        value = b"x" * size
        for _ in range(records // batch):
            s.append_batch("t", [value] * batch, partition=0)


def _read_rate(root: str, engine: str, check: bool, records: int) -> float:
    with mqstore.open(root, engine, check_crcs=check) as s:
        t0 = time.perf_counter()
        off = n = 0
        end = s.end_offset("t", 0)
        while off < end:
            page = s.read("t", 0, off, max_records=5000, max_bytes=1 << 24)
            n += len(page)
            off = page[-1].offset + 1
        elapsed = time.perf_counter() - t0
    if n != records:
        raise SystemExit(f"{engine}: read {n} records, wrote {records}")
    return n / elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--engine", default="segments,commitlog")
    args = p.parse_args(argv)
    records = args.records // args.batch * args.batch
    for engine in args.engine.split(","):
        root = tempfile.mkdtemp(prefix=f"crc-{engine}-")
        try:
            _write(root, engine, records, args.value_size, args.batch)
            best = {True: 0.0, False: 0.0}
            for _ in range(args.repeat):
                for check in (True, False):
                    best[check] = max(best[check], _read_rate(root, engine, check, records))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(f"{engine:9s} backend={native.backend} records={records} "
              f"value={args.value_size}B batch={args.batch}: check_crcs on "
              f"{best[True]:,.0f} rec/s, off {best[False]:,.0f} rec/s, "
              f"on/off = {best[True] / best[False]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Append and read rates of each engine next to a raw ``os.write`` of the same bytes.

For every engine (``--engine``, default: all registered) and message size (100 B and 1 KiB by
default), in a fresh temporary directory with ``flush="os"``:

- ``append``: one ``Store.append`` per message, into one partition;
- ``batch``: ``Store.append_batch`` of ``--batch`` (100) messages per call;
- ``read``: ``Store.read`` from offset 0 to the end (default ``max_records``) after each;
- ``raw``: in the same run, the same payloads written to one file with ``os.write`` (one call per
  message for ``append``, one call per batch of ``--batch`` for ``batch``), then read back with
  ``os.read`` in 1 MiB chunks.

Each timing is the best of ``--repeat`` runs (default 3). Rates count payload bytes only (the same bytes for the engine and the raw baseline), so the
ratio column is engine rate / raw rate measured seconds apart on the same machine. Prints a
table; ``--json`` writes the numbers too. Not a test: run it by hand::

    python benchmarks/engine_rates.py --count 20000
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

import mqstore


def _payloads(count: int, size: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    block = rnd.randbytes(size * 64)
    return [block[(i % 64) * size:(i % 64 + 1) * size] for i in range(count)]


def _raw_write(path: str, payloads: list[bytes], batch: int) -> float:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        t0 = time.perf_counter()
        if batch <= 1:
            for p in payloads:
                os.write(fd, p)
        else:
            for i in range(0, len(payloads), batch):
                os.write(fd, b"".join(payloads[i:i + batch]))
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def _raw_read(path: str) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        while os.read(fd, 1 << 20):
            pass
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def _engine_run(engine: str, root: str, payloads: list[bytes], batch: int,
                flush: str = "os") -> tuple[float, float]:
    """(append seconds, read seconds) for one engine and one append mode."""
    with mqstore.open(root, engine, flush=flush) as store:
        store.create_topic("bench")
        t0 = time.perf_counter()
        if batch <= 1:
            append = store.append
            for p in payloads:
                append("bench", p, partition=0)
        else:
            for i in range(0, len(payloads), batch):
                store.append_batch("bench", payloads[i:i + batch], partition=0)
        t_append = time.perf_counter() - t0
        end = store.end_offset("bench", 0)
        assert end == len(payloads), (end, len(payloads))
        t0 = time.perf_counter()
        off, got = 0, 0
        while off < end:
            page = store.read("bench", 0, off)
            got += len(page)
            off = page[-1].offset + 1
        t_read = time.perf_counter() - t0
        assert got == len(payloads)
    return t_append, t_read


def _one(engine: str, payloads: list[bytes], batch: int, flush: str) -> tuple[float, ...]:
    """(engine append s, engine read s, raw write s, raw read s), back to back in one temp dir."""
    tmp = tempfile.mkdtemp(prefix="mqstore-rates-")
    try:
        t_app, t_read = _engine_run(engine, os.path.join(tmp, "store"), payloads, batch, flush)
        raw_path = os.path.join(tmp, "raw.bin")
        t_raw_w = _raw_write(raw_path, payloads, batch)
        t_raw_r = _raw_read(raw_path)
        return t_app, t_read, t_raw_w, t_raw_r
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(engines: list[str], sizes: list[int], count: int, batch: int, seed: int,
            flush: str = "os", repeat: int = 1) -> list[dict]:
    """One row per (size, engine, mode). With ``repeat`` > 1 each of the four timings is the
    best of its repeats (timeit's rule: the minimum is the least disturbed by other load)."""
    rows = []
    for size in sizes:
        payloads = _payloads(count, size, seed)
        nbytes = count * size
        for engine in engines:
            for mode, b in (("append", 1), (f"batch{batch}", batch)):
                try:
                    runs = [_one(engine, payloads, b, flush) for _ in range(max(repeat, 1))]
                except Exception as exc:  # report and continue with the other engines
                    rows.append({"engine": engine, "size": size, "mode": mode,
                                 "error": f"{type(exc).__name__}: {exc}"})
                    continue
                t_app, t_read, t_raw_w, t_raw_r = (min(col) for col in zip(*runs))
                rows.append({
                    "engine": engine, "size": size, "mode": mode, "count": count,
                    "repeat": repeat,
                    "append_msgs_s": count / t_app, "append_mb_s": nbytes / t_app / 1e6,
                    "raw_write_msgs_s": count / t_raw_w, "raw_write_mb_s": nbytes / t_raw_w / 1e6,
                    "append_vs_raw": t_raw_w / t_app,
                    "read_msgs_s": count / t_read, "read_mb_s": nbytes / t_read / 1e6,
                    "raw_read_mb_s": nbytes / t_raw_r / 1e6,
                    "read_vs_raw": t_raw_r / t_read,
                })
    return rows


def _print(rows: list[dict]) -> None:
    head = (f"{'engine':<10} {'size':>5} {'mode':<9} {'append msg/s':>13} {'MB/s':>7} "
            f"{'raw write MB/s':>15} {'ratio':>7} {'read msg/s':>12} {'MB/s':>7} "
            f"{'raw read MB/s':>14} {'ratio':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['engine']:<10} {r['size']:>5} {r['mode']:<9} ERROR {r['error']}")
            continue
        print(f"{r['engine']:<10} {r['size']:>5} {r['mode']:<9} {r['append_msgs_s']:>13,.0f} "
              f"{r['append_mb_s']:>7.1f} {r['raw_write_mb_s']:>15.1f} "
              f"{r['append_vs_raw']:>7.3f} {r['read_msgs_s']:>12,.0f} {r['read_mb_s']:>7.1f} "
              f"{r['raw_read_mb_s']:>14.1f} {r['read_vs_raw']:>7.3f}")
    print("ratio = engine rate / raw os.write (or os.read) rate of the same payload bytes, "
          "same run")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", action="append", help="engine name (repeatable); default all")
    ap.add_argument("--sizes", default="100,1024", help="message sizes in bytes, comma-separated")
    ap.add_argument("--count", type=int, default=20_000, help="messages per measurement")
    ap.add_argument("--batch", type=int, default=100, help="messages per append_batch call")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per measurement; the best of each timing is kept")
    ap.add_argument("--flush", default="os", choices=["os", "async", "sync"],
                    help="the stores' flush mode (the raw baseline never fsyncs)")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    engines = args.engine or mqstore.engines()
    sizes = [int(x) for x in args.sizes.split(",")]
    from mqstore import native

    print(f"mqstore {mqstore.__version__}, native backend: {native.backend}, "
          f"python {sys.version.split()[0]}, count {args.count}, flush {args.flush}, "
          f"best of {args.repeat}")
    rows = measure(engines, sizes, args.count, args.batch, args.seed, args.flush,
                   args.repeat)
    _print(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"native_backend": native.backend, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

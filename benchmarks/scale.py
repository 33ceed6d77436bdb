"""Scale (issue 10): one store with many partitions or many topics, measured through the
public API only. Not a test; run it by hand::

    python benchmarks/scale.py [--engine commitlog] [--partitions 1000] [--topics 10000]
                               [--quick] [--json out.json] [--dir /tmp] [--repeat 3]

For each engine it measures, at ``--partitions N`` (one topic of N partitions, one message
of 100 B per partition unless ``--messages`` says more):

- ``build_s``: create the topic and append round robin to every partition, then close;
- ``open_clean_s``: open after that clean close (a fresh child process, so nothing is
  cached in Python; the page cache is warm);
- ``idle_kib_per_partition``: the child's RSS after the open less its RSS before it,
  divided by N; ``py_kib_per_partition``: the same with ``tracemalloc`` (Python objects
  only);
- ``fds_after_touch``: descriptors the child holds (``/proc/self/fd``) after reading one
  record from every partition, and ``fds_after_open`` before that;
- ``reopen_after_kill_s``: a child appends one more message to every partition, syncs
  (``flush()``) and SIGKILLs itself; another child times the open (recovery included);
- ``append_ratio``: ``append_batch`` of ``--batch`` x 100 B round robin over N partitions
  vs the same at 1 partition, messages/s, ``--repeat`` interleaved pairs (best / median);
  the first batch of each partition is untimed, the commitlog's timing ends when its
  dispatcher has caught up (as ``perf_goals.py`` P6);

and at ``--topics T`` (T topics of 1 partition): ``create_topics_s`` (``create_topics``),
``create_topic_loop_s`` for a tenth of T (one ``create_topic`` call each, in a fresh store)
and ``open_topics_s`` (a child opens the T-topic store). A step that fails (for example too
many open files) is reported with its error instead of a figure; ``--partitions 0`` or
``--topics 0`` skips that half.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import mqstore

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOPIC = "t"
VALUE = bytes(range(100))


def _child(code: str, timeout: float = 1800) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    proc = subprocess.run([sys.executable, "-c", _PRELUDE + textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"rc={proc.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


_PRELUDE = """
import gc, json, os, sys, time, tracemalloc
import mqstore
def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
def fds():
    return len(os.listdir("/proc/self/fd"))
"""


def measure_open(engine: str, path: str, topic: str | None, touch: bool) -> dict:
    """Open ``path`` in a child: time, RSS and tracemalloc deltas, descriptors (after
    reading one record of every partition of ``topic`` when ``touch``)."""
    return _child(f"""
    try:
        warm = {path!r} + ".warm"  # imports and first-use costs land outside the figures
        w = mqstore.open(warm, {engine!r})
        w.create_topic("w")
        w.append("w", b"x")
        w.read("w", 0, 0)
        w.close()
        w = mqstore.open(warm, {engine!r})
        w.close()
        import shutil
        shutil.rmtree(warm)
        gc.collect()
        r0, f0 = rss_kib(), fds()
        tracemalloc.start()
        t0 = time.perf_counter()
        s = mqstore.open({path!r}, {engine!r})
        el = time.perf_counter() - t0
        gc.collect()
        py = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        out = {{"open_s": el, "rss_kib": rss_kib() - r0, "py_kib": py / 1024,
                "fds_after_open": fds() - f0}}
        if {touch!r}:
            n = s.partitions({topic!r})
            got = sum(len(s.read({topic!r}, p, 0, max_records=1)) for p in range(n))
            out["fds_after_touch"] = fds() - f0
            out["touched_records"] = got
        s.close()
    except Exception as exc:
        out = {{"error": f"{{type(exc).__name__}}: {{exc}}"[:300]}}
    print(json.dumps(out))
    """)


def build(engine: str, path: str, partitions: int, messages: int) -> dict:
    """A store of one topic with ``partitions`` partitions, ``messages`` each (child)."""
    return _child(f"""
    try:
        t0 = time.perf_counter()
        s = mqstore.open({path!r}, {engine!r})
        s.create_topic({TOPIC!r}, {partitions})
        for _ in range({messages}):
            for p in range({partitions}):
                s.append({TOPIC!r}, {VALUE!r}, partition=p)
        s.close()
        out = {{"build_s": time.perf_counter() - t0}}
    except Exception as exc:
        out = {{"error": f"{{type(exc).__name__}}: {{exc}}"[:300]}}
    print(json.dumps(out))
    """)


def kill_after_appends(engine: str, path: str) -> dict:
    """Append one message per partition, flush, SIGKILL (child)."""
    res = _child(f"""
    import signal
    s = mqstore.open({path!r}, {engine!r})
    n = s.partitions({TOPIC!r})
    for p in range(n):
        s.append({TOPIC!r}, {VALUE!r}, partition=p)
    s.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    """)
    if "error" in res and "rc=-9" in res["error"]:
        return {}
    return res


def append_rate(engine: str, path: str, partitions: int, batch: int, per_partition: int
                ) -> float:
    """Messages/s of round-robin append_batch (first batch per partition untimed)."""
    shutil.rmtree(path, ignore_errors=True)
    s = mqstore.open(path, engine, flush="os")
    try:
        s.create_topic(TOPIC, partitions)
        values = [VALUE] * batch
        for p in range(partitions):
            s.append_batch(TOPIC, values, partition=p)
        _settle(s)
        rounds = max(1, per_partition)
        total = max(rounds * partitions, 2000)
        t0 = time.perf_counter()
        for j in range(total):
            s.append_batch(TOPIC, values, partition=j % partitions)
        _settle(s)
        el = time.perf_counter() - t0
        got = sum(s.end_offset(TOPIC, p) for p in range(partitions))
        if got != (partitions + total) * batch:
            raise AssertionError(f"{engine} holds {got} records")
        return total * batch / el
    finally:
        s.close()
        shutil.rmtree(path, ignore_errors=True)


def _settle(store, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while store.stats().get("dispatch_lag", 0) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the dispatcher did not catch up")
        time.sleep(0.0002)


def create_topics_run(engine: str, path: str, topics: int, loop: bool) -> dict:
    """Create ``topics`` topics of 1 partition in a fresh store (child), with one
    ``create_topics`` call or, with ``loop``, one ``create_topic`` per topic."""
    return _child(f"""
    try:
        names = ["topic-%07d" % i for i in range({topics})]
        s = mqstore.open({path!r}, {engine!r})
        t0 = time.perf_counter()
        if {loop!r}:
            for n in names:
                s.create_topic(n, 1)
        else:
            s.create_topics([(n, 1) for n in names])
        el = time.perf_counter() - t0
        s.close()
        out = {{"seconds": el, "per_second": len(names) / el}}
    except Exception as exc:
        out = {{"error": f"{{type(exc).__name__}}: {{exc}}"[:300]}}
    print(json.dumps(out))
    """)


def run_partitions(engine: str, base: str, n: int, args) -> dict:
    path = os.path.join(base, f"{engine}-p{n}")
    shutil.rmtree(path, ignore_errors=True)
    out: dict = {"partitions": n}
    out.update(build(engine, path, n, args.messages))
    if "error" in out:
        return out
    m = measure_open(engine, path, TOPIC, touch=True)
    if "error" in m:
        out["open_error"] = m["error"]
    else:
        out.update(open_clean_s=m["open_s"], idle_kib_per_partition=m["rss_kib"] / n,
                   py_kib_per_partition=m["py_kib"] / n, fds_after_open=m["fds_after_open"],
                   fds_after_touch=m["fds_after_touch"])
    k = kill_after_appends(engine, path)
    if "error" in k:
        out["kill_error"] = k["error"]
    else:
        m = measure_open(engine, path, TOPIC, touch=False)
        out["reopen_after_kill_s"] = m.get("open_s")
        if "error" in m:
            out["reopen_error"] = m["error"]
    shutil.rmtree(path, ignore_errors=True)
    rate_path = os.path.join(base, f"{engine}-rate")
    many, one = [], []
    try:
        for _ in range(args.repeat):
            many.append(append_rate(engine, rate_path, n, args.batch, 2))
            one.append(append_rate(engine, rate_path, 1, args.batch, 2 * n))
        out.update(append_rate_n=max(many), append_rate_1=max(one),
                   append_ratio_best=max(many) / max(one),
                   append_ratio_median=statistics.median(many) / statistics.median(one))
    except Exception as exc:
        out["append_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def run_topics(engine: str, base: str, t: int, args) -> dict:
    path = os.path.join(base, f"{engine}-t{t}")
    shutil.rmtree(path, ignore_errors=True)
    out: dict = {"topics": t}
    c = create_topics_run(engine, path, t, loop=False)
    if "error" in c:
        out["create_error"] = c["error"]
    else:
        out.update(create_topics_s=c["seconds"], create_topics_per_s=c["per_second"])
        m = measure_open(engine, path, None, touch=False)
        out["open_topics_s"] = m.get("open_s")
        if "error" in m:
            out["open_error"] = m["error"]
    shutil.rmtree(path, ignore_errors=True)
    loop_n = max(1, t // 10)
    c = create_topics_run(engine, path, loop_n, loop=True)
    out["create_topic_loop_topics"] = loop_n
    if "error" in c:
        out["create_loop_error"] = c["error"]
    else:
        out.update(create_topic_loop_s=c["seconds"], create_topic_loop_per_s=c["per_second"])
    shutil.rmtree(path, ignore_errors=True)
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if v < 100 else f"{v:,.0f}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", action="append", choices=("segments", "commitlog"),
                    help="engine to measure (repeatable); default both")
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--topics", type=int, default=10_000)
    ap.add_argument("--messages", type=int, default=1, help="messages per partition (build)")
    ap.add_argument("--batch", type=int, default=100, help="append_batch size (rate)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved pairs (rate)")
    ap.add_argument("--quick", action="store_true", help="100 partitions, 1,000 topics, 1 pair")
    ap.add_argument("--raise-nofile", action="store_true",
                    help="raise the soft RLIMIT_NOFILE to the hard limit first")
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--dir", help="where to make the stores (default: $TMPDIR)")
    args = ap.parse_args(argv)
    if args.quick:
        args.partitions, args.topics, args.repeat = min(args.partitions, 100), min(
            args.topics, 1000), 1
    engines = args.engine or ["segments", "commitlog"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if args.raise_nofile and soft < hard:  # children inherit it
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    base = tempfile.mkdtemp(prefix="mqstore-scale-", dir=args.dir)
    results = {"python": platform.python_version(), "cpus": os.cpu_count(),
               "rlimit_nofile": [soft, hard], "native": mqstore.native_backend()
               if hasattr(mqstore, "native_backend") else None, "engines": {}}
    try:
        for engine in engines:
            r: dict = {}
            if args.partitions > 0:
                r["partitions"] = run_partitions(engine, base, args.partitions, args)
            if args.topics > 0:
                r["topics"] = run_topics(engine, base, args.topics, args)
            results["engines"][engine] = r
            for part, vals in r.items():
                print(f"{engine} {part}:")
                for k, v in vals.items():
                    print(f"  {k:28s} {_fmt(v)}")
            sys.stdout.flush()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

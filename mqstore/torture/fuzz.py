"""The mutation fuzzer: one seeded mutation of one file of a small store, then open, read,
look up and verify it, classifying what goes wrong.

Templates: for each engine a small store of the seeded workload (:mod:`mqstore.torture.common`),
either cleanly closed (``clean``) or left by a SIGKILL after its appends (``crashed``: abort
and lock markers, unsynced derived files). The *truth* is what an unmutated copy of the
template reads back after a plain open.

Each case picks a file kind present in the store (logs, ``.index``, ``.timeindex``,
checkpoints, ``mqstore.json``, commitlog files, ConsumeQueue, IndexFile, config JSON, markers),
then a file of that kind, then one mutation: bit flip, byte set, swap two bytes, truncate,
extend with zeros, extend with garbage, delete. Positions fall in the used part of a
preallocated file half of the time. In a worker subprocess (so a signal death is a *crash*
and a case over the time limit a *hang*), on two copies of the mutated store:
``mqstore verify`` (``mqstore.cli.verify_store``: the manifest, then the engine's
``verify_files``); open with the default policy; open with ``on_corruption="skip"``; each open
then reads every partition (a ``CorruptRecordError`` from a read *reports* that offset),
runs ``lookup_key`` and ``offset_for_time``, and closes.

Classes (each one a finding):

- ``untyped``: an exception that is not an ``MQStoreError`` from any step;
- ``crash`` / ``hang``: the worker died of a signal / did not answer in time;
- ``wrong``: a record returned that is not the truth record at that offset;
- ``silent_loss``: a truth record neither returned nor reported (the open neither raised nor
  logged a recovery WARNING, no read raised for it, and ``verify`` found nothing). Not
  counted for a log file deleted or truncated in a ``crashed`` store: that is what a crash
  leaves when the file's creation or tail was never synced, and losing it is allowed;
- ``verify_missed``: ``verify_files`` returned nothing although the default open refused or
  lost records;
- ``derived_refused``: the default open refused a store whose only damage is in a derived file
  (index, time index, ConsumeQueue, IndexFile, checkpoint), which must be rebuilt instead.

- ``default_open_dropped``: in a ``clean`` store (everything is below the sync point, there
  is no torn tail) the default open did not refuse but records are missing, logged or not.

Figures also count ``dropped_on_default_open`` (records missing after a default open that
did not raise, in either variant) and ``refused`` (default opens that refused).

Replay: ``<engine>:fuzz-<variant>:<seed>.<case>``.
"""
from __future__ import annotations

import json
import logging
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from mqstore import errors
from mqstore.torture.common import (
    TOPICS, child_env, ensure_topics, make_message, open_store, parse_value, record_problem,
    sub_seed,
)

MUTATIONS = ("bitflip", "byteset", "swap", "truncate", "extend_zeros", "extend_garbage",
             "delete")
DERIVED_KINDS = frozenset({"index", "timeindex", "consumequeue", "indexfile", "checkpoint"})
TEMPLATE_RECORDS = 260


def file_kind(rel: str) -> str:
    """The kind of a store file, from its path relative to the store root."""
    parts = rel.split(os.sep)
    name = parts[-1]
    if name == "mqstore.json":
        return "manifest"
    if name.endswith(".tmp"):
        return "tmp"
    if parts[0] == "commitlog":
        return "commitlog"
    if parts[0] == "consumequeue":
        return "consumequeue"
    if parts[0] == "index":
        return "indexfile"
    if parts[0] == "config":
        return "config"
    if name in ("lock", ".lock"):
        return "lock"
    if name in ("abort", ".kafka_cleanshutdown"):
        return "marker"
    if "checkpoint" in name:
        return "checkpoint"
    if name.endswith(".log"):
        return "offsets-log" if parts[0].startswith("__consumer_offsets") else "log"
    if name.endswith(".timeindex"):
        return "timeindex"
    if name.endswith(".index"):
        return "index"
    return "other"


def store_files(root: str) -> dict[str, list[str]]:
    """Every file of the store, grouped by kind (relative paths, sorted)."""
    out: dict[str, list[str]] = {}
    for d, _, names in os.walk(root):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), root)
            out.setdefault(file_kind(rel), []).append(rel)
    return {k: sorted(v) for k, v in sorted(out.items())}


def _used_length(data: bytes) -> int:
    end = len(data)
    while end > 0 and data[end - 1] == 0:
        end -= 1
    return end


def pick_mutation(root: str, seed: int) -> dict[str, Any]:
    """Choose (seeded) a file and a mutation of it; return a JSON-ready description."""
    rng = random.Random(seed)
    files = store_files(root)
    kind = rng.choice(sorted(files))
    rel = rng.choice(files[kind])
    size = os.path.getsize(os.path.join(root, rel))
    ops = [m for m in MUTATIONS if size > 0 or m in ("extend_zeros", "extend_garbage", "delete")]
    op = rng.choice(ops)
    with open(os.path.join(root, rel), "rb") as f:
        data = f.read()
    used = _used_length(data)
    span = used if used and rng.random() < 0.5 else size
    m: dict[str, Any] = {"file": rel, "kind": kind, "op": op, "size": size}
    if op in ("bitflip", "byteset", "swap") and size:
        m["pos"] = rng.randrange(span)
        if op == "bitflip":
            m["bit"] = rng.randrange(8)
        elif op == "byteset":
            m["byte"] = (data[m["pos"]] + rng.randrange(1, 256)) % 256
        else:
            m["pos2"] = rng.randrange(span)
    elif op == "truncate":
        m["length"] = rng.randrange(span) if span else 0
    elif op in ("extend_zeros", "extend_garbage"):
        m["count"] = rng.choice((1, 7, 64, 512, 4096))
        m["garbage_seed"] = rng.randrange(1 << 30)
    return m


def apply_mutation(root: str, m: dict[str, Any]) -> None:
    path = os.path.join(root, m["file"])
    op = m["op"]
    if op == "delete":
        os.unlink(path)
        return
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        if op == "bitflip":
            data[m["pos"]] ^= 1 << m["bit"]
        elif op == "byteset":
            data[m["pos"]] = m["byte"]
        elif op == "swap":
            a, b = m["pos"], m["pos2"]
            data[a], data[b] = data[b], data[a]
        elif op == "truncate":
            del data[m["length"]:]
        elif op == "extend_zeros":
            data += bytes(m["count"])
        elif op == "extend_garbage":
            data += random.Random(m["garbage_seed"]).randbytes(m["count"])
        f.seek(0)
        f.truncate()
        f.write(data)


# ----- the worker side (runs in a subprocess) -----

class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _read_everything(store: Any, truth: dict[tuple[str, int, int], int], wseed: int,
                     out: dict) -> None:
    returned: dict[tuple[str, int, int], int] = {}
    reported: set[tuple[str, int, int]] = set()
    for topic in store.topics():
        if topic not in TOPICS:
            continue
        for p in range(store.partitions(topic)):
            start, end = store.start_offset(topic, p), store.end_offset(topic, p)
            off, retries = start, 0
            while off < end:
                try:
                    page = store.read(topic, p, off, max_records=200)
                except errors.CorruptRecordError:
                    reported.add((topic, p, off))
                    off += 1
                    retries += 1
                    if retries > 2000:
                        break
                    continue
                if not page:
                    break
                for r in page:
                    prob = record_problem(r)
                    ids = parse_value(bytes(r.value))
                    want = truth.get((topic, p, r.offset))
                    if prob is None and (ids is None or want != ids[1]):
                        prob = f"seq {ids and ids[1]} where the store had seq {want}"
                    if prob is not None:
                        out["wrong"] += 1
                        out.setdefault("wrong_detail", f"{topic}-{p}@{r.offset}: {prob}")
                    else:
                        returned[(topic, p, r.offset)] = ids[1]
                off = max(off + 1, page[-1].offset + 1)
    lost = [w for w in truth if w not in returned and w not in reported]
    out["lost"] = len(lost)
    out["reported_by_read"] = len(reported)
    if lost:
        out["lost_example"] = "%s-%d@%d" % lost[0]
    rng = random.Random(len(truth))
    keyed = [(w, s) for w, s in sorted(truth.items()) if make_message(wseed, s).key]
    for (t, p, off), s in rng.sample(keyed, min(3, len(keyed))):
        exp = make_message(wseed, s)
        for r in store.lookup_key(t, exp.key, limit=64):
            if record_problem(r) is not None or r.key != exp.key:
                out["wrong"] += 1
                out.setdefault("wrong_detail", f"lookup_key({exp.key!r}) returned a bad record")
        for part in range(store.partitions(t)):
            store.offset_for_time(t, part, 0)
            store.offset_for_time(t, part, exp.timestamp_ms)


def _open_and_read(path: str, engine: str, truth: dict, wseed: int,
                   **options: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"open": "ok", "wrong": 0, "lost": 0, "warnings": 0}
    handler = _Warnings()
    log = logging.getLogger("mqstore")
    log.addHandler(handler)
    try:
        try:
            store = open_store(path, engine, **options)
        except errors.MQStoreError as exc:
            out["open"] = f"refused {type(exc).__name__}: {str(exc)[:300]}"
            return out
        out["warnings"] = handler.count
        try:
            _read_everything(store, truth, wseed, out)
        finally:
            store.close()
    except errors.MQStoreError as exc:
        out["typed_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    except Exception as exc:  # noqa: BLE001 - untyped errors are what we look for
        out["untyped"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        out["warnings"] = max(out["warnings"], handler.count)
        log.removeHandler(handler)
    return out


def run_case(req: dict[str, Any]) -> dict[str, Any]:
    """Run one mutation case (in the worker)."""
    from mqstore import registry

    engine, template, work = req["engine"], req["template"], req["work"]
    truth = {tuple(json.loads(k)): v for k, v in req["truth"].items()}
    a, b = os.path.join(work, "a"), os.path.join(work, "b")
    for d in (a, b):
        shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(template, a)
    m = pick_mutation(a, req["seed"])
    apply_mutation(a, m)
    shutil.copytree(a, b)
    res: dict[str, Any] = {"mutation": m}
    try:
        # what ``mqstore verify`` reports (it also checks the manifest), else the engine's own
        try:
            from mqstore.cli import verify_store
        except ImportError:
            damage = registry.load(engine).verify_files(a)
        else:
            damage = verify_store(a)[2]
        res["verify"] = [str(d) for d in damage][:5]
        res["verify_count"] = len(damage)
    except errors.MQStoreError as exc:
        res["verify"] = [f"raised {type(exc).__name__}: {exc}"]
        res["verify_count"] = 1
    except Exception as exc:  # noqa: BLE001
        res["verify_untyped"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        res["verify_count"] = 0
    res["default"] = _open_and_read(a, engine, truth, req["wseed"])
    res["skip"] = _open_and_read(b, engine, truth, req["wseed"], on_corruption="skip")
    if not req.get("keep"):  # a replay keeps the two opened copies for a look
        for d in (a, b):
            shutil.rmtree(d, ignore_errors=True)
    return res


def serve() -> None:
    """Worker loop: one JSON request per stdin line, one JSON answer per stdout line."""
    logging.getLogger("mqstore").propagate = False
    for line in sys.stdin:
        req = json.loads(line)
        try:
            ans = run_case(req)
        except Exception as exc:  # noqa: BLE001 - the harness itself failed on this case
            ans = {"harness_error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(ans) + "\n")
        sys.stdout.flush()


# ----- the parent side -----

class Worker:
    """A persistent ``python -m <module> --serve`` with a per-case time limit."""

    def __init__(self, module: str = "mqstore.torture.fuzz") -> None:
        self.module = module
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--serve"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env(), text=True)
        return self.proc

    def run(self, req: dict[str, Any], timeout: float) -> tuple[str, Any]:
        proc = self.proc if self.proc and self.proc.poll() is None else self._start()
        assert proc.stdin and proc.stdout
        proc.stdin.write(json.dumps(req) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            proc.kill()
            proc.wait()
            self.proc = None
            return "hang", None
        line = proc.stdout.readline()
        if not line:
            rc = proc.wait()
            self.proc = None
            return "crash", rc
        return "ok", json.loads(line)

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def build_template(engine: str, variant: str, path: str, wseed: int) -> None:
    """A small store of the workload: cleanly closed, or killed after its appends."""
    shutil.rmtree(path, ignore_errors=True)
    if variant == "clean":
        store = open_store(path, engine, flush="os")
        ensure_topics(store)
        for seq in range(TEMPLATE_RECORDS):
            m = make_message(wseed, seq)
            store.append(m.topic, m.value, key=m.key, partition=m.partition,
                         timestamp_ms=m.timestamp_ms, headers=m.headers or None, tag=m.tag)
        store.commit_offset("g", "t0", 0, 5)
        store.close()
        return
    cmd = [sys.executable, "-m", "mqstore.torture.kill_child", path, engine, "os", str(wseed),
           "0", str(TEMPLATE_RECORDS), "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=child_env())
    assert proc.stdout is not None
    for raw in proc.stdout:
        if raw.strip() == b"D" or raw.startswith(b"X"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def template_truth(engine: str, template: str, scratch: str) -> tuple[dict, int]:
    """What a plain open of an unmutated copy reads back, ``{(topic, partition, offset):
    seq}``, and how many WARNINGs that open logged (a crashed template logs its recovery)."""
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(template, scratch)
    handler = _Warnings()
    logging.getLogger("mqstore").addHandler(handler)
    try:
        store = open_store(scratch, engine)
    finally:
        logging.getLogger("mqstore").removeHandler(handler)
    truth = {}
    try:
        for topic in TOPICS:
            for p in range(store.partitions(topic)):
                off, end = store.start_offset(topic, p), store.end_offset(topic, p)
                while off < end:
                    page = store.read(topic, p, off, max_records=500)
                    for r in page:
                        truth[(topic, p, r.offset)] = parse_value(bytes(r.value))[1]
                    off = page[-1].offset + 1
    finally:
        store.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return truth, handler.count


@dataclass
class FuzzFigures:
    engine: str
    seed: int
    mutations: int = 0
    untyped: int = 0
    crashes: int = 0
    hangs: int = 0
    wrong: int = 0
    silent_loss: int = 0
    verify_missed: int = 0
    derived_refused: int = 0
    dropped_on_default_open: int = 0
    default_open_dropped: int = 0
    refused: int = 0
    harness_errors: int = 0
    seconds: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def classify(ans: dict[str, Any], base_warnings: int = 0,
             variant: str = "clean") -> list[tuple[str, str]]:
    """The findings of one answered case: (class, detail)."""
    out: list[tuple[str, str]] = []
    m = ans["mutation"]
    # in a killed store, a log file deleted or cut short looks exactly like a crash that lost
    # unsynced bytes or an unsynced file creation: losing those records is allowed
    crash_like = (variant == "crashed" and m["op"] in ("delete", "truncate")
                  and m["kind"] in ("log", "commitlog"))
    if "verify_untyped" in ans:
        out.append(("untyped", "verify_files: " + ans["verify_untyped"]))
    for mode in ("default", "skip"):
        r = ans[mode]
        if "untyped" in r:
            out.append(("untyped", f"{mode} open/read: {r['untyped']}"))
        if r.get("wrong"):
            out.append(("wrong", f"{mode}: {r['wrong']} wrong; {r.get('wrong_detail')}"))
        if (r.get("lost") and r.get("warnings", 0) <= base_warnings
                and not ans.get("verify_count") and not crash_like):
            out.append(("silent_loss", f"{mode}: {r['lost']} records lost without a report "
                                       f"(e.g. {r.get('lost_example')})"))
    d = ans["default"]
    refused = d["open"] != "ok"
    if not ans.get("verify_count") and "verify_untyped" not in ans and (
            refused or (d.get("lost") and not crash_like)):
        why = d["open"] if refused else f"{d['lost']} records lost by the default open"
        out.append(("verify_missed", f"verify found nothing; {why}"))
    if refused and m["kind"] in DERIVED_KINDS:
        out.append(("derived_refused", d["open"]))
    if variant == "clean" and not refused and d.get("lost"):
        # a cleanly closed store has no torn tail: the default policy must refuse, not drop
        out.append(("default_open_dropped", f"default open did not refuse but lost "
                                            f"{d['lost']} records (e.g. {d.get('lost_example')}),"
                                            f" {d.get('warnings')} WARNINGs"))
    return out


def run_fuzz(engine: str, seed: int, mutations: int, workdir: str, *,
             variants: tuple[str, ...] = ("clean", "crashed"), timeout: float = 30.0,
             only_case: int | None = None, keep: bool = False, log: Any = None) -> FuzzFigures:
    """Run ``mutations`` cases of one engine, split over the variants."""
    fig = FuzzFigures(engine, seed)
    t0 = time.monotonic()
    worker = Worker()
    try:
        for vi, variant in enumerate(variants):
            wseed = sub_seed("fuzz", engine, variant, seed) % 1_000_000_007
            template = os.path.join(workdir, f"fuzz-{engine}-{variant}-template")
            try:
                build_template(engine, variant, template, wseed)
                truth, base_warnings = template_truth(engine, template, template + "-scratch")
            except Exception as exc:  # noqa: BLE001 - the engine cannot even build a store
                fig.harness_errors += 1
                _fuzz_finding(fig, "template_failed", f"{engine}:fuzz-{variant}:{seed}.0",
                              f"building the {variant} template: {type(exc).__name__}: {exc}",
                              None, log)
                continue
            req_truth = {json.dumps(list(k)): v for k, v in truth.items()}
            count = mutations // len(variants) + (1 if vi < mutations % len(variants) else 0)
            cases = range(count) if only_case is None else [only_case]
            for i in cases:
                cseed = sub_seed("case", engine, variant, seed, i)
                req = {"engine": engine, "template": template, "truth": req_truth,
                       "wseed": wseed, "seed": cseed, "keep": keep,
                       "work": os.path.join(workdir, f"fuzz-{engine}-case")}
                status, ans = worker.run(req, timeout)
                fig.mutations += 1
                replay = f"{engine}:fuzz-{variant}:{seed}.{i}"
                if status == "hang":
                    fig.hangs += 1
                    _fuzz_finding(fig, "hang", replay, f"no answer in {timeout}s", None, log)
                    continue
                if status == "crash":
                    fig.crashes += 1
                    _fuzz_finding(fig, "crash", replay, f"worker exit status {ans}", None, log)
                    continue
                if "harness_error" in ans:
                    fig.harness_errors += 1
                    _fuzz_finding(fig, "harness_error", replay, ans["harness_error"], None, log)
                    continue
                kind = ans["mutation"]["kind"]
                fig.by_kind[kind] = fig.by_kind.get(kind, 0) + 1
                if ans["default"]["open"] != "ok":
                    fig.refused += 1
                elif ans["default"].get("lost"):
                    fig.dropped_on_default_open += 1
                for cls, detail in classify(ans, base_warnings, variant):
                    setattr(fig, cls, getattr(fig, cls) + 1)
                    _fuzz_finding(fig, cls, replay, detail, ans["mutation"], log)
            shutil.rmtree(template, ignore_errors=True)
    finally:
        worker.close()
    fig.seconds = round(time.monotonic() - t0, 1)
    return fig


def _fuzz_finding(fig: FuzzFigures, cls: str, replay: str, detail: str, m: Any, log: Any) -> None:
    f = {"engine": fig.engine, "loop": "fuzz", "kind": cls, "replay": replay,
         "detail": detail[:1500], "mutation": m}
    fig.findings.append(f)
    if log is not None:
        log(f)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        print("usage: python -m mqstore.torture.fuzz --serve (worker); "
              "run the fuzzer with benchmarks/torture.py fuzz")
        sys.exit(2)

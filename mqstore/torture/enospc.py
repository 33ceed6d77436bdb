"""The full-disk run: fill a small tmpfs with appends and check the store survives it.

Needs root (``mount -t tmpfs -o size=4m``); otherwise it is skipped with the reason. Per
variant (engine, flush mode, and for commitlog ``write_mode`` mmap and write), a child
process (so a SIGBUS is a signal death, not the end of the run) on a fresh 4 MiB tmpfs:

1. writes a 512 KiB filler file, opens the store, appends seeded records (single records
   and batches) until an append raises; that must be ``StoreFullError``;
2. checks the still-open store: every acknowledged record exact (nothing was killed, so every
   acknowledged record counts, whatever the flush mode), dense offsets, nothing never written,
   and that a failed append left nothing behind (the end offsets did not move);
3. closes it, reopens it while the disk is still full, checks again;
4. deletes the filler, appends 40 more records (they must all succeed), checks, closes,
   reopens and checks once more.

Figures: runs, full (StoreFullError reached), untyped (another exception at any step),
signals, lost, wrong, reopen_failed, no_recovery (appends after freeing space failed).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from mqstore import errors
from mqstore.torture.common import (
    check_store, child_env, ensure_topics, make_message, open_store, sub_seed,
)

TMPFS_SIZE = "4m"
FILLER = 512 * 1024


def _append(store: Any, wseed: int, seq: int, acked: dict) -> int:
    m = make_message(wseed, seq)
    md = store.append(m.topic, m.value, key=m.key, partition=m.partition,
                      timestamp_ms=m.timestamp_ms, headers=m.headers or None, tag=m.tag)
    acked[(md.topic, md.partition, md.offset)] = seq
    return seq + 1


def _ends(store: Any) -> dict[str, list[int]]:
    return {t: [store.end_offset(t, p) for p in range(store.partitions(t))]
            for t in store.topics()}


def child_main(argv: list[str]) -> int:
    mount, engine, flush, wseed_s, extra = argv
    wseed = int(wseed_s)
    opts = json.loads(extra)
    out: dict[str, Any] = {"steps": []}
    acked: dict[tuple[str, int, int], int] = {}
    path = os.path.join(mount, "store")
    seq = [0]

    def valid(s: int, q: int) -> bool:
        return s == wseed and q < seq[0] + 8

    def check(store: Any, step: str) -> None:
        res = check_store(store, acked, valid_seq=valid, seed=len(acked))
        out["steps"].append({"step": step, "checked": res.checked, "lost": res.lost,
                             "wrong": res.wrong, "gaps": res.gaps, "problems": res.problems})

    step = "fill"
    try:
        with open(os.path.join(mount, "filler"), "wb") as f:
            f.write(b"\xff" * FILLER)
        store = open_store(path, engine, flush=flush, **opts)
        ensure_topics(store)
        full = None
        while seq[0] < 100_000:
            try:
                if seq[0] % 7 == 3:
                    first = make_message(wseed, seq[0])
                    batch = [make_message(wseed, seq[0] + i) for i in range(4)]
                    batch = [m for m in batch
                             if (m.topic, m.partition) == (first.topic, first.partition)]
                    before = _ends(store)
                    try:
                        mds = store.append_batch(first.topic, [m.message() for m in batch])
                    except BaseException:
                        if _ends(store) != before:
                            out["batch_partly_applied"] = True
                        raise
                    for m, md in zip(batch, mds):
                        acked[(md.topic, md.partition, md.offset)] = m.seq
                    seq[0] += 4
                else:
                    seq[0] = _append(store, wseed, seq[0], acked)
            except errors.StoreFullError as exc:
                full = f"StoreFullError: {exc}"
                break
        out["full"] = full
        out["acked"] = len(acked)
        before = _ends(store)
        step = "second append on a full disk"
        try:
            seq[0] = _append(store, wseed, seq[0], acked)
            out["append_after_full"] = "succeeded"
        except errors.StoreFullError:
            out["append_after_full"] = "StoreFullError"
            if _ends(store) != before:
                out["failed_append_moved_end"] = True
        step = "check while full"
        if acked:
            check(store, step)
        step = "close while full"
        store.close()
        step = "reopen while full"
        store = open_store(path, engine, flush=flush, **opts)
        if acked:
            check(store, step)
        step = "free space"
        os.unlink(os.path.join(mount, "filler"))
        step = "append after freeing space"
        for _ in range(40):
            seq[0] = _append(store, wseed, seq[0], acked)
        check(store, step)
        step = "close"
        store.close()
        step = "final reopen"
        store = open_store(path, engine, **opts)
        check(store, step)
        store.close()
        out["ok"] = True
    except errors.MQStoreError as exc:
        out["error_step"] = step
        out["typed_error"] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - an untyped error is a finding
        out["error_step"] = step
        out["untyped"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


def can_mount() -> str | None:
    """None if a tmpfs can be mounted here, else why not."""
    if os.geteuid() != 0:
        return "not running as root (mount -t tmpfs needs it)"
    d = tempfile.mkdtemp(prefix="mqstore-enospc-probe-")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return f"mount -t tmpfs failed: {r.stderr.strip() or r.returncode}"
        subprocess.run(["umount", d], capture_output=True)
        return None
    except FileNotFoundError:
        return "no mount command"
    finally:
        os.rmdir(d)


@dataclass
class EnospcFigures:
    engine: str
    seed: int
    skipped: str | None = None
    runs: int = 0
    full: int = 0
    untyped: int = 0
    typed_errors: int = 0
    signals: int = 0
    lost: int = 0
    wrong: int = 0
    reopen_failed: int = 0
    no_recovery: int = 0
    acked: int = 0
    seconds: float = 0.0
    findings: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def variants(engine: str, flushes: tuple[str, ...]) -> list[tuple[str, dict]]:
    out = []
    for fl in flushes:
        if engine == "commitlog":
            out += [(fl, {"write_mode": "mmap"}), (fl, {"write_mode": "write"})]
        else:
            out.append((fl, {}))
    return out


def run_enospc(engine: str, seed: int, flushes: tuple[str, ...] = ("sync", "async", "os"),
               log: Any = None) -> EnospcFigures:
    fig = EnospcFigures(engine, seed)
    why = can_mount()
    if why is not None:
        fig.skipped = why
        return fig
    t0 = time.monotonic()
    for flush, opts in variants(engine, flushes):
        mount = tempfile.mkdtemp(prefix="mqstore-enospc-")
        tag = f"{flush}" + (f"-{opts['write_mode']}" if opts else "")
        replay = f"{engine}:enospc-{tag}:{seed}"
        try:
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs",
                                mount], capture_output=True, text=True)
            if r.returncode != 0:
                fig.skipped = f"mount failed: {r.stderr.strip()}"
                break
            wseed = sub_seed("enospc", engine, tag, seed) % 1_000_000_007
            cmd = [sys.executable, "-m", "mqstore.torture.enospc", "--child", mount, engine,
                   flush, str(wseed), json.dumps(opts)]
            try:
                p = subprocess.run(cmd, env=child_env(), capture_output=True, text=True,
                                   timeout=300)
            except subprocess.TimeoutExpired:
                fig.runs += 1
                _en_finding(fig, "hang", replay, "the child did not finish in 300 s", log)
                continue
            fig.runs += 1
            if p.returncode < 0:
                fig.signals += 1
                _en_finding(fig, "signal", replay, f"child died of signal {-p.returncode} "
                            f"({p.stderr.strip()[-300:]})", log)
                continue
            try:
                out = json.loads(p.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                fig.untyped += 1
                _en_finding(fig, "no_result", replay, p.stderr.strip()[-600:], log)
                continue
            _classify(fig, out, replay, log)
        finally:
            subprocess.run(["umount", "-l", mount], capture_output=True)
            shutil.rmtree(mount, ignore_errors=True)
    fig.seconds = round(time.monotonic() - t0, 1)
    return fig


def _classify(fig: EnospcFigures, out: dict, replay: str, log: Any) -> None:
    fig.acked += out.get("acked", 0)
    if out.get("full"):
        fig.full += 1
    if "untyped" in out:
        fig.untyped += 1
        _en_finding(fig, "untyped", replay, f"at step {out['error_step']!r}: {out['untyped']}", log)
    if "typed_error" in out:
        fig.typed_errors += 1
        if out["error_step"] in ("reopen while full", "final reopen"):
            fig.reopen_failed += 1
        if out["error_step"] == "append after freeing space":
            fig.no_recovery += 1
        _en_finding(fig, "error", replay, f"at step {out['error_step']!r}: {out['typed_error']}",
                    log)
    elif out.get("full") is None and "untyped" not in out:
        _en_finding(fig, "never_full", replay, "appends never raised StoreFullError", log)
    for key in ("batch_partly_applied", "failed_append_moved_end"):
        if out.get(key):
            fig.wrong += 1
            _en_finding(fig, key, replay, "a failed append changed the end offsets", log)
    for st in out.get("steps", []):
        fig.lost += st["lost"]
        fig.wrong += st["wrong"] + st["gaps"]
        if st["lost"] or st["wrong"] or st["gaps"]:
            _en_finding(fig, "lost" if st["lost"] else "wrong", replay,
                        f"at step {st['step']!r}: " + "; ".join(st["problems"]), log)


def _en_finding(fig: EnospcFigures, kind: str, replay: str, detail: str, log: Any) -> None:
    f = {"engine": fig.engine, "loop": "enospc", "kind": kind, "replay": replay,
         "detail": detail[:2000]}
    fig.findings.append(f)
    if log is not None:
        log(f)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(child_main(sys.argv[2:]))
    print("usage: python -m mqstore.torture.enospc --child ...; run it with "
          "benchmarks/torture.py enospc")
    sys.exit(2)

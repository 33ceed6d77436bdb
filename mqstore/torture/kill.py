"""The SIGKILL loop: kill a writing child at a seeded random time, reopen, check, continue.

Model: a SIGKILL loses nothing the kernel already has (the page cache survives), so every
record whose ``append`` returned under ``flush="sync"``, and every record acknowledged before
a ``flush()`` that returned under ``"async"``/``"os"``, must read back exactly at its offset.
Acknowledged records not yet covered by a flush are counted apart (``lost_unflushed``): losing
them is allowed by the flush policy, though after a plain kill it should not happen either.

Each round: spawn ``mqstore.torture.kill_child`` on the same store, wait for it to be ready
(or, in one round out of ten, kill it while it is still opening: recovery must survive a
kill too), let it append for a seeded random time, SIGKILL it, reopen the store in this
process and check it (:func:`mqstore.torture.common.check_store`: every durable acknowledged
record exact, dense offsets, nothing never written, ``lookup_key`` and ``offset_for_time``
samples), close it, and go on with the next round. After a close everything present is
durable, so it becomes part of what the next rounds must keep. A store that grows past
``max_store_records`` is replaced by a fresh one (a new epoch).

Replay: ``<engine>:kill-<flush>:<seed>@<round>`` reruns the same loop up to that round; kill
times are wall-clock, so a replay hits the same round structure, not the same instruction.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from mqstore import errors
from mqstore.torture.common import check_store, child_env, open_store, sub_seed

ROUND_SEQS = 1_000_000  # seqs of round r are r * ROUND_SEQS + i


@dataclass
class KillFigures:
    engine: str
    flush: str
    seed: int
    kills: int = 0
    acked: int = 0            # acknowledged records reported by the children
    durable_checked: int = 0  # durable acknowledged records looked for (over all checks)
    lost: int = 0
    wrong: int = 0
    gaps: int = 0
    lost_unflushed: int = 0
    open_failures: int = 0
    child_errors: int = 0
    seconds: float = 0.0
    findings: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["findings"] = list(self.findings)
        return d


def _spawn(path: str, engine: str, flush: str, wseed: int, seq_start: int, max_records: int,
           flush_every: int) -> tuple[subprocess.Popen, list[str], threading.Thread]:
    cmd = [sys.executable, "-m", "mqstore.torture.kill_child", path, engine, flush,
           str(wseed), str(seq_start), str(max_records), str(flush_every)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=child_env())
    lines: list[str] = []
    ready = threading.Event()

    def reader() -> None:
        buf = b""
        assert proc.stdout is not None
        while True:
            chunk = proc.stdout.read1(65536)
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            for raw in done:
                line = raw.decode(errors="replace")
                lines.append(line)
                if line in ("R", "D") or line.startswith("X"):
                    ready.set()
        ready.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.ready = ready  # type: ignore[attr-defined]
    return proc, lines, t


def run_kill_loop(engine: str, flush: str, seed: int, rounds: int, workdir: str, *,
                  max_store_records: int = 12000, max_round_records: int = 3000,
                  stop_round: int | None = None, log: Any = None) -> KillFigures:
    """Run ``rounds`` kill rounds of one engine and flush mode; return the figures."""
    fig = KillFigures(engine, flush, seed)
    t0 = time.monotonic()
    loop_seed = sub_seed("kill", engine, flush, seed)
    wseed = loop_seed % 1_000_000_007
    epoch = 0
    path = os.path.join(workdir, f"kill-{engine}-{flush}-{epoch}")
    shutil.rmtree(path, ignore_errors=True)
    expected: dict[tuple[str, int, int], int] = {}
    attempted: dict[int, int] = {}  # round -> highest seq attempted
    last = rounds if stop_round is None else min(rounds, stop_round + 1)
    for rnd in range(last):
        rng = random.Random(sub_seed(loop_seed, rnd))
        flush_every = 0 if flush == "sync" else rng.choice((5, 20, 60))
        seq_start = rnd * ROUND_SEQS
        proc, lines, reader = _spawn(path, engine, flush, wseed, seq_start, max_round_records,
                                     flush_every)
        if rng.random() < 0.1:
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            reader.ready.wait(60)  # type: ignore[attr-defined]
            time.sleep(rng.uniform(0.0, 0.5))
        try:
            proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        reader.join(10)
        fig.kills += 1
        acked: dict[tuple[str, int, int], int] = {}
        durable: dict[tuple[str, int, int], int] = {}
        pending: list[tuple[tuple[str, int, int], int]] = []
        top = seq_start - 1
        for line in list(lines):
            parts = line.split(" ")
            if parts[0] == "T" and len(parts) == 2:
                top = max(top, int(parts[1]))
            elif parts[0] == "A" and len(parts) == 5:
                where = (parts[2], int(parts[3]), int(parts[4]))
                acked[where] = int(parts[1])
                if flush == "sync":
                    durable[where] = int(parts[1])
                else:
                    pending.append((where, int(parts[1])))
            elif parts[0] == "F":
                durable.update(pending)
                pending.clear()
            elif parts[0] == "X":
                fig.child_errors += 1
                _finding(fig, rnd, "child_error", line[2:], log)
        attempted[rnd] = top
        fig.acked += len(acked)
        for where in durable:
            if where in expected:
                fig.wrong += 1
                _finding(fig, rnd, "offset_reused", f"append acknowledged {where} which "
                         f"already held seq {expected[where]}", log)

        def valid(s: int, q: int, _w=wseed) -> bool:
            r = q // ROUND_SEQS
            return s == _w and r in attempted and q <= attempted[r]

        want = {**expected, **durable}
        try:
            store = open_store(path, engine)
        except errors.MQStoreError as exc:
            fig.open_failures += 1
            fig.lost += len(want)
            _finding(fig, rnd, "open_refused", f"{type(exc).__name__}: {exc}", log)
            epoch, path, expected = _new_epoch(workdir, engine, flush, epoch)
            continue
        except Exception as exc:  # noqa: BLE001 - an untyped error is itself a finding
            fig.open_failures += 1
            fig.lost += len(want)
            _finding(fig, rnd, "open_raised", f"{type(exc).__name__}: {exc}", log)
            epoch, path, expected = _new_epoch(workdir, engine, flush, epoch)
            continue
        try:
            res = check_store(store, want, acked, valid_seq=valid, seed=sub_seed(loop_seed, rnd, 1))
        except Exception as exc:  # noqa: BLE001
            fig.wrong += 1
            _finding(fig, rnd, "check_raised", f"{type(exc).__name__}: {exc}", log)
            store.close()
            epoch, path, expected = _new_epoch(workdir, engine, flush, epoch)
            continue
        try:
            store.close()
        except Exception as exc:  # noqa: BLE001
            _finding(fig, rnd, "close_raised", f"{type(exc).__name__}: {exc}", log)
        fig.durable_checked += res.checked
        fig.lost += res.lost
        fig.wrong += res.wrong
        fig.gaps += res.gaps
        fig.lost_unflushed += res.lost_unflushed
        if res.failed:
            _finding(fig, rnd, "lost" if res.lost else ("wrong" if res.wrong else "gap"),
                     "; ".join(res.problems), log)
        expected = dict(res.present)
        if len(expected) > max_store_records:
            epoch, path, expected = _new_epoch(workdir, engine, flush, epoch)
    shutil.rmtree(path, ignore_errors=True)
    fig.seconds = round(time.monotonic() - t0, 1)
    return fig


def _new_epoch(workdir: str, engine: str, flush: str, epoch: int) -> tuple[int, str, dict]:
    old = os.path.join(workdir, f"kill-{engine}-{flush}-{epoch}")
    shutil.rmtree(old, ignore_errors=True)
    epoch += 1
    path = os.path.join(workdir, f"kill-{engine}-{flush}-{epoch}")
    shutil.rmtree(path, ignore_errors=True)
    return epoch, path, {}


def _finding(fig: KillFigures, rnd: int, kind: str, detail: str, log: Any) -> None:
    f = {"engine": fig.engine, "loop": "kill", "kind": kind, "flush": fig.flush,
         "replay": f"{fig.engine}:kill-{fig.flush}:{fig.seed}@{rnd}", "detail": detail[:2000]}
    fig.findings.append(f)
    if log is not None:
        log(f)

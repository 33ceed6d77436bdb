"""Power-loss images: run the workload under the crash-state recorder
(:mod:`mqstore.torture.crashfs`), stop it at a seeded event, build images of what the disk
may hold, and open each one.

Per *state* (one child run, seed ``sub_seed("powerloss", engine, flush, model, seed, k)``):
the child ``python -m mqstore.torture.powerloss --child ...`` opens a fresh store under the
recorder, creates the workload's topics and appends seeded records (flushing every few
records under ``async``/``os``) until the seeded crash event; it saves the captured state
and exits without closing. Durable acknowledged records are, under ``sync``, every record
whose append returned; under ``async``/``os``, the records acknowledged before a ``flush()``
that returned.

Per *image* (``images_per_state`` of them per state; in every tenth state the first two are
the sanity images "everything written survives" and "only what was synced survives"): a
worker subprocess (so a SIGBUS is a crash, not the end of the run) opens the image with the
default policy and checks it (:func:`mqstore.torture.common.check_store`): every durable
acknowledged record present and exact at its offset, dense offsets, nothing never written.
A refused open (an ``MQStoreError``; the image holds only crash damage, so this is a finding
too) and an untyped exception are counted with their message.

Replay: ``<engine>:powerloss-<flush>-<model>:<seed>.<state>[.<image>]``.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mqstore import errors
from mqstore.torture.common import (
    check_store, child_env, ensure_topics, make_message, open_store, sub_seed,
)
from mqstore.torture.crashfs import MODELS, build_image, load_state, save_state

EVENT_BUDGET = {"sync": 2500, "async": 2000, "os": 1500}


# ----- the child -----

def child_main(argv: list[str]) -> int:
    state_path, path, engine, flush, wseed, crash_event, flush_every, model, max_records = argv
    from mqstore.torture.crashfs import Recorder, save_state

    wseed_i, every = int(wseed), int(flush_every)
    os.makedirs(path, exist_ok=True)
    rec = Recorder(path, int(crash_event), lambda st: save_state(st, state_path), model)
    rec.baseline()
    rec.install()
    try:
        store = open_store(path, engine, flush=flush, flush_interval_ms=15)
        ensure_topics(store)
        rng = random.Random(wseed_i)
        seq = 0
        while seq < int(max_records):
            m = make_message(wseed_i, seq)
            rec.attempted = seq
            md = store.append(m.topic, m.value, key=m.key, partition=m.partition,
                              timestamp_ms=m.timestamp_ms, headers=m.headers or None, tag=m.tag)
            rec.ack(seq, (md.topic, md.partition, md.offset))
            seq += 1
            if every and rng.random() < 1.0 / every:
                n = len(rec.acks)
                store.flush()
                rec.flush_returned(n)
    except BaseException as exc:  # noqa: BLE001 - the parent reports it
        rec.error = f"{type(exc).__name__}: {exc}"
    rec.crash()
    return 0


# ----- the image checker (worker) -----

def check_image(req: dict[str, Any]) -> dict[str, Any]:
    engine, image = req["engine"], req["image"]
    durable = {(t, p, o): s for t, p, o, s in req["durable"]}
    acked = {(t, p, o): s for t, p, o, s in req["acked"]}
    wseed, top = req["wseed"], req["attempted"]
    out: dict[str, Any] = {"open": "ok"}
    try:
        store = open_store(image, engine)
    except errors.MQStoreError as exc:
        out["open"] = "refused"
        out["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
        out["lost"] = len(durable)
        return out
    except Exception as exc:  # noqa: BLE001
        out["open"] = "raised"
        out["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
        out["lost"] = len(durable)
        return out
    try:
        res = check_store(store, durable, acked,
                          valid_seq=lambda s, q: s == wseed and q <= top, seed=req["seed"])
        out.update(checked=res.checked, lost=res.lost, wrong=res.wrong, gaps=res.gaps,
                   lost_unflushed=res.lost_unflushed, problems=res.problems)
    except errors.MQStoreError as exc:
        out.update(open="read_refused", error=f"{type(exc).__name__}: {str(exc)[:400]}",
                   lost=len(durable))
    except Exception as exc:  # noqa: BLE001
        out.update(open="read_raised", error=f"{type(exc).__name__}: {str(exc)[:400]}",
                   lost=len(durable))
    finally:
        try:
            store.close()
        except Exception as exc:  # noqa: BLE001
            out.setdefault("error", f"close: {type(exc).__name__}: {exc}")
    return out


def serve() -> None:
    for line in sys.stdin:
        try:
            ans = check_image(json.loads(line))
        except Exception as exc:  # noqa: BLE001
            ans = {"harness_error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(ans) + "\n")
        sys.stdout.flush()


# ----- the driver -----

@dataclass
class PowerlossFigures:
    engine: str
    flush: str
    model: str
    seed: int
    states: int = 0
    images: int = 0
    flushed_checked: int = 0
    lost: int = 0
    wrong: int = 0
    gaps: int = 0
    lost_unflushed: int = 0
    refused: int = 0
    raised: int = 0
    crashes: int = 0
    hangs: int = 0
    child_errors: int = 0
    seconds: float = 0.0
    refusals: dict[str, int] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_child(workdir: str, engine: str, flush: str, model: str, sseed: int,
              max_records: int = 1200, crash_event: int | None = None) -> dict[str, Any] | None:
    rng = random.Random(sseed)
    path = os.path.join(workdir, "pl-store")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    state_path = os.path.join(workdir, "pl-state.pickle")
    if os.path.exists(state_path):
        os.unlink(state_path)
    seeded_event = rng.randint(1, EVENT_BUDGET[flush])
    crash_event = crash_event or seeded_event
    every = 0 if flush == "sync" else rng.choice((3, 10, 40))
    wseed = sseed % 1_000_000_007
    cmd = [sys.executable, "-m", "mqstore.torture.powerloss", "--child", state_path, path,
           engine, flush, str(wseed), str(crash_event), str(every), model, str(max_records)]
    try:
        subprocess.run(cmd, env=child_env(), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=300)
    except subprocess.TimeoutExpired:
        return None
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.exists(state_path):
        return None
    st = load_state(state_path)
    st["wseed"], st["flush"], st["crash_event"] = wseed, flush, crash_event
    os.replace(state_path, state_path + ".last")  # kept for a look after a replay
    return st


def run_powerloss(engine: str, flush: str, seed: int, images: int, workdir: str, *,
                  model: str = "posix", images_per_state: int = 4, timeout: float = 60.0,
                  only: tuple[int, int | None] | None = None, keep: bool = False,
                  state_file: str | None = None, save_dir: str | None = None,
                  force_mode: str | None = None, crash_event: int | None = None,
                  max_records: int = 1200, log: Any = None) -> PowerlossFigures:
    """Build and check ``images`` crash images of one engine and flush mode.

    ``force_mode`` builds every image in one mode of :func:`~mqstore.torture.crashfs.build_image`
    and ``crash_event`` fixes the crash point (``max_records`` bounds the workload).
    The captured state of a state with a finding is saved to ``save_dir`` (the engines run
    background threads, so rerunning the child does not always reach the same state);
    ``state_file`` rebuilds the images from such a saved state instead of running a child,
    which replays them exactly."""
    from mqstore.torture.fuzz import Worker

    assert model in MODELS
    fig = PowerlossFigures(engine, flush, model, seed)
    t0 = time.monotonic()
    worker = Worker("mqstore.torture.powerloss")
    refusals: Counter[str] = Counter()
    k = only[0] if only else 0
    try:
        while fig.images < images:
            sseed = sub_seed("powerloss", engine, flush, model, seed, k)
            if state_file:
                st = load_state(state_file)
            else:
                st = run_child(workdir, engine, flush, model, sseed, max_records, crash_event)
            saved: list[str] = []
            fig.states += 1
            base = f"{engine}:powerloss-{flush}-{model}:{seed}.{k}"
            if st is None:
                fig.child_errors += 1
                _pl_finding(fig, "child_failed", base, "the recorded child left no state", log)
                k += 1
                continue
            if st.get("error"):
                fig.child_errors += 1
                _pl_finding(fig, "child_error", base, st["error"], log)
            acks = st["acks"]
            durable_acks = acks if flush == "sync" else acks[:st["flushed"]]
            durable = [[*w, s] for s, w in durable_acks]
            acked = [[*w, s] for s, w in acks]
            js = range(images_per_state) if not only or only[1] is None else [only[1]]
            for j in js:
                mode = ("current", "durable")[j] if k % 10 == 0 and j < 2 else "mix"
                mode = force_mode or mode
                image = os.path.join(workdir, "pl-image")
                shutil.rmtree(image, ignore_errors=True)
                build_image(st, image, sub_seed(sseed, j), mode)
                kept = os.path.join(workdir, f"image-{k}-{j}")
                if keep:
                    shutil.rmtree(kept, ignore_errors=True)
                    shutil.copytree(image, kept)
                req = {"engine": engine, "image": image, "durable": durable, "acked": acked,
                       "wseed": st["wseed"], "attempted": st["attempted"],
                       "seed": sub_seed(sseed, j, "check")}
                status, ans = worker.run(req, timeout)
                fig.images += 1
                replay = f"{base}.{j}"
                where = f"crash event {st['crash_event']}, image mode {mode}"
                if status != "ok":
                    setattr(fig, "hangs" if status == "hang" else "crashes",
                            getattr(fig, "hangs" if status == "hang" else "crashes") + 1)
                    _pl_finding(fig, status, replay, f"{where}: worker {status} ({ans})", log)
                    continue
                if "harness_error" in ans:
                    fig.child_errors += 1
                    _pl_finding(fig, "harness_error", replay, ans["harness_error"], log)
                    continue
                fig.flushed_checked += ans.get("checked", len(durable))
                fig.lost += ans.get("lost", 0)
                fig.wrong += ans.get("wrong", 0)
                fig.gaps += ans.get("gaps", 0)
                fig.lost_unflushed += ans.get("lost_unflushed", 0)
                bad = ans["open"] != "ok" or ans.get("lost") or ans.get("wrong") or ans.get("gaps")
                if bad and save_dir and not saved:
                    os.makedirs(save_dir, exist_ok=True)
                    saved.append(os.path.join(save_dir, f"{base.replace(':', '_')}.pickle"))
                    save_state(st, saved[0])
                where = where + (f", state saved to {saved[0]}" if saved else "")
                if ans["open"] != "ok":
                    refused = ans["open"] in ("refused", "read_refused")
                    fig.refused += refused
                    fig.raised += not refused
                    refusals[ans["error"].split(":")[0]] += 1
                    _pl_finding(fig, "open_" + ans["open"], replay,
                                f"{where}: {ans['error']} ({len(durable)} durable records)", log)
                elif ans.get("lost") or ans.get("wrong") or ans.get("gaps"):
                    kind = "lost" if ans.get("lost") else ("wrong" if ans.get("wrong") else "gap")
                    _pl_finding(fig, kind, replay,
                                f"{where}: lost {ans.get('lost')}/{ans.get('checked')}, wrong "
                                f"{ans.get('wrong')}, gaps {ans.get('gaps')}: "
                                + "; ".join(ans.get("problems", [])), log)
                if keep:  # a replay keeps each image (as built, before the open) and its state
                    with open(kept + ".json", "w") as fh:
                        json.dump({"durable": durable, "acked": acked, "answer": ans,
                                   "crash_event": st["crash_event"], "mode": mode}, fh)
                shutil.rmtree(image, ignore_errors=True)
                if fig.images >= images:
                    break
            k += 1
            if only:
                break
    finally:
        worker.close()
    fig.refusals = dict(refusals)
    fig.seconds = round(time.monotonic() - t0, 1)
    return fig


def _pl_finding(fig: PowerlossFigures, kind: str, replay: str, detail: str, log: Any) -> None:
    f = {"engine": fig.engine, "loop": "powerloss", "kind": kind, "flush": fig.flush,
         "model": fig.model, "replay": replay, "detail": detail[:2000]}
    fig.findings.append(f)
    if log is not None:
        log(f)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(child_main(sys.argv[2:]))
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        print("usage: python -m mqstore.torture.powerloss --serve | --child ...; "
              "run it with benchmarks/torture.py powerloss")
        sys.exit(2)

"""Torture loops for every engine, with printed figures (the long runs; CI runs short slices
in tests/faults/test_torture_slices.py).

    python benchmarks/torture.py [kill|powerloss|fuzz|enospc|all] \\
        --engine segments,commitlog --seed N --rounds N --mutations N --images N \\
        --flush sync,async,os [--model posix|ext4] [--json PATH|-] [--findings PATH]
    python benchmarks/torture.py --replay ENGINE:KIND:SEED

- ``kill``: ``--rounds`` SIGKILLs per engine and flush mode (mqstore.torture.kill);
- ``powerloss``: ``--images`` crash images per engine and flush mode, from the crash-state
  model ``--model`` (mqstore.torture.crashfs / powerloss);
- ``fuzz``: ``--mutations`` mutations per engine, half on a cleanly closed store, half on a
  killed one (mqstore.torture.fuzz);
- ``enospc``: a full 4 MiB tmpfs per engine and flush mode (root only; skipped otherwise).

Every loop is bounded and seeded. Each finding is printed with its replay spec, e.g.
``segments:kill-sync:7@12`` (rounds 0..12 of the kill loop, seed 7), ``commitlog:fuzz-clean:7.41``
(case 41), ``commitlog:powerloss-os-posix:7.3.1`` (state 3, image 1),
``commitlog:enospc-sync-write:7``. The exit status is 1 when anything was found.

The engines run background threads, so a rerun child may stop in a different state: the
state of each power-loss finding is saved (``--save-states``, path in the finding) and
``--replay SPEC --state PATH`` rebuilds its images exactly.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mqstore.torture.enospc import run_enospc  # noqa: E402
from mqstore.torture.fuzz import run_fuzz  # noqa: E402
from mqstore.torture.kill import run_kill_loop  # noqa: E402
from mqstore.torture.powerloss import run_powerloss  # noqa: E402

LOOPS = ("kill", "powerloss", "fuzz", "enospc")
COLUMNS = {
    "kill": ["kills", "acked", "durable_checked", "lost", "wrong", "gaps", "lost_unflushed",
             "open_failures", "child_errors", "seconds"],
    "powerloss": ["states", "images", "flushed_checked", "lost", "wrong", "gaps", "refused",
                  "raised", "crashes", "hangs", "child_errors", "lost_unflushed", "seconds"],
    "fuzz": ["mutations", "untyped", "crashes", "hangs", "wrong", "silent_loss",
             "verify_missed", "derived_refused", "default_open_dropped",
             "dropped_on_default_open", "refused",
             "harness_errors", "seconds"],
    "enospc": ["runs", "full", "untyped", "typed_errors", "signals", "lost", "wrong",
               "reopen_failed", "no_recovery", "acked", "seconds"],
}


def signature(f: dict[str, Any]) -> tuple[str, ...]:
    """Findings with the same engine, loop, kind, file kind and error (or message start) are
    one group."""
    m = re.search(r"\b([A-Z]\w*(?:Error|Exception|Warning))\b", f["detail"])
    detail = re.sub(r"\d+", "N", re.sub(r"/\S+", "<path>", f["detail"]))
    detail = m.group(1) + " " + detail[m.end():][:30] if m else detail[:50]
    kind_of_file = (f.get("mutation") or {}).get("kind", "")
    return (f["engine"], f["loop"], f["kind"], kind_of_file, detail)


class Findings:
    """Collects findings (printed as they come with ``--verbose``) and summarises them by
    group, with the first replay specs of each, on the screen and in ``--findings PATH``."""

    def __init__(self, path: str | None, verbose: bool = False):
        self.path, self.verbose, self.items = path, verbose, []

    def __call__(self, f: dict[str, Any]) -> None:
        self.items.append(f)
        if self.verbose:
            line = f"{f['engine']} | {f['loop']} | {f['kind']} | {f['replay']} | {f['detail']}"
            if f.get("mutation"):
                line += f" | mutation {json.dumps(f['mutation'])}"
            print("FINDING", line, flush=True)

    def summary(self, header: str) -> str:
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for f in self.items:
            groups.setdefault(signature(f), []).append(f)
        lines = [f"## {header}", ""]
        for sig, fs in sorted(groups.items(), key=lambda kv: (kv[0][:3], -len(kv[1]))):
            eng, loop, kind, fkind, _ = sig
            first = fs[0]
            replays = ", ".join(f"`{x['replay']}`" for x in fs[:3])
            mut = f" mutation {json.dumps(first['mutation'])}" if first.get("mutation") else ""
            lines.append(f"- **{eng} | {loop} | {kind}**{' (' + fkind + ')' if fkind else ''}"
                         f" x{len(fs)}: {first['detail'][:400]}{mut} -- replay {replays}")
        lines.append("")
        return "\n".join(lines)


def run(loop: str, engines: list[str], flushes: list[str], args: argparse.Namespace,
        work: str, log: Findings) -> list[dict[str, Any]]:
    rows = []
    for engine in engines:
        if loop == "kill":
            for fl in flushes:
                rows.append(run_kill_loop(engine, fl, args.seed, args.rounds, work, log=log))
        elif loop == "powerloss":
            for fl in flushes:
                rows.append(run_powerloss(engine, fl, args.seed, args.images, work,
                                          model=args.model, save_dir=args.save_states,
                                          log=log))
        elif loop == "fuzz":
            rows.append(run_fuzz(engine, args.seed, args.mutations, work, log=log))
        elif loop == "enospc":
            fig = run_enospc(engine, args.seed, tuple(flushes), log=log)
            if fig.skipped:
                print(f"enospc skipped for {engine}: {fig.skipped}")
            rows.append(fig)
    return [r.as_dict() for r in rows]


def print_table(loop: str, rows: list[dict[str, Any]], seed: int, model: str) -> None:
    """One table per loop: a row per figure, a column per engine (and flush mode)."""
    cols = COLUMNS[loop]
    title = f"{loop} (seed {seed}" + (f", model {model}" if loop == "powerloss" else "") + ")"
    heads = [r["engine"] + (f" {r['flush']}" if r.get("flush") else "") for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text without rich
        print(title)
        print("figure".ljust(24), *[h.rjust(16) for h in heads])
        for c in cols:
            print(c.ljust(24), *[str(r.get(c)).rjust(16) for r in rows])
        return
    t = Table(title=title)
    t.add_column("figure")
    for h in heads:
        t.add_column(h, justify="right")
    for c in cols:
        t.add_row(c.replace("_", " "), *[str(r.get(c)) for r in rows])
    Console(width=max(100, 26 + 17 * len(rows))).print(t)


def replay(spec: str, work: str, log: Findings, state: str | None) -> dict[str, Any]:
    engine, kind, seed_part = spec.split(":", 2)
    if kind.startswith("kill-"):
        seed_s, _, rnd = seed_part.partition("@")
        stop = int(rnd) if rnd else 0
        return run_kill_loop(engine, kind[5:], int(seed_s), stop + 1, work, log=log).as_dict()
    if kind.startswith("fuzz-"):
        seed_s, case = seed_part.split(".")
        return run_fuzz(engine, int(seed_s), 1, work, variants=(kind[5:],),
                        only_case=int(case), keep=True, log=log).as_dict()
    if kind.startswith("powerloss-"):
        _, flush, mdl = kind.split("-")
        bits = seed_part.split(".")
        j = int(bits[2]) if len(bits) > 2 else None
        return run_powerloss(engine, flush, int(bits[0]), 1 if j is not None else 4, work,
                             model=mdl, only=(int(bits[1]), j), keep=True, state_file=state,
                             log=log).as_dict()
    if kind.startswith("enospc-"):
        return run_enospc(engine, int(seed_part), (kind.split("-")[1],), log=log).as_dict()
    raise SystemExit(f"unknown replay kind {kind!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("loop", nargs="?", default="all", choices=LOOPS + ("all",))
    ap.add_argument("--engine", default="segments,commitlog")
    ap.add_argument("--flush", default="sync,async,os")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=20, help="kills per engine and flush mode")
    ap.add_argument("--mutations", type=int, default=300, help="mutations per engine")
    ap.add_argument("--images", type=int, default=20, help="images per engine and flush mode")
    ap.add_argument("--model", default="posix", choices=("posix", "ext4"))
    ap.add_argument("--json", nargs="?", const="-", default=None,
                    help="write the figures as JSON to PATH (or stdout with no PATH)")
    ap.add_argument("--findings", default=None,
                    help="append the grouped findings to this markdown file")
    ap.add_argument("--verbose", "-v", action="store_true", help="print every finding")
    ap.add_argument("--replay", default=None, help="ENGINE:KIND:SEED printed by a finding")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--save-states", default=os.path.join(tempfile.gettempdir(),
                                                          "mqstore-torture-states"),
                    help="where the crash states of power-loss findings are saved")
    ap.add_argument("--state", default=None,
                    help="with --replay of a powerloss finding: rebuild its images from this "
                         "saved state (exact) instead of rerunning the child")
    args = ap.parse_args(argv)
    # the engines log every recovery action at WARNING; the loops count them, keep them quiet
    logging.getLogger("mqstore").addHandler(logging.NullHandler())
    logging.getLogger("mqstore").propagate = False
    work = args.workdir or tempfile.mkdtemp(prefix="mqstore-torture-")
    os.makedirs(work, exist_ok=True)
    log = Findings(args.findings, args.verbose)
    out: dict[str, Any] = {"seed": args.seed, "model": args.model, "loops": {}}
    t0 = time.monotonic()
    try:
        if args.replay:
            fig = replay(args.replay, work, log, args.state)
            findings = fig.pop("findings", [])
            print(json.dumps(fig, indent=2, default=str))
            for f in findings:
                print(json.dumps(f, indent=2, default=str))
            return 1 if findings else 0
        engines = [e for e in args.engine.split(",") if e]
        flushes = [f for f in args.flush.split(",") if f]
        for loop in (LOOPS if args.loop == "all" else (args.loop,)):
            rows = run(loop, engines, flushes, args, work, log)
            out["loops"][loop] = rows
            print_table(loop, [{k: v for k, v in r.items() if k != "findings"} for r in rows],
                        args.seed, args.model)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    out["seconds"] = round(time.monotonic() - t0, 1)
    out["findings"] = log.items
    head = (f"torture {args.loop} --engine {args.engine} --flush {args.flush} --seed {args.seed} "
            f"--rounds {args.rounds} --mutations {args.mutations} --images {args.images} "
            f"--model {args.model}: {len(log.items)} findings in {out['seconds']} s")
    text = log.summary(head)
    print(text)
    if args.findings:
        with open(args.findings, "a") as f:
            f.write(text + "\n")
    if args.json:
        text = json.dumps(out, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 1 if log.items else 0


if __name__ == "__main__":
    sys.exit(main())

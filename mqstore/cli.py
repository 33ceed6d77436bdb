"""The ``mqstore`` command: ``bench``, ``inspect`` and ``verify``.

``mqstore bench`` with no arguments runs a quick side-by-side pass of a few suites on every
engine and the references (under a minute on a 2-core machine). ``mqstore bench SUITE ...``
runs named suites; ``mqstore bench WORKLOAD.yaml`` runs an OpenMessaging Benchmark workload
file unchanged (``--duration`` / ``--messages`` shorten it). ``mqstore inspect PATH`` dumps a
store, a partition or a file; ``mqstore verify PATH`` checks every file kind and exits 1
on damage; ``mqstore repair PATH`` applies recovery explicitly (``--dry-run`` first).
Exit codes: 0 success, 1 damage found (verify, repair), 2 bad usage or an error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import mqstore
from mqstore import errors, registry
from mqstore.api import Damage

QUICK_SUITES = ("partitions", "batching", "flush", "lookup", "tags")
WORKLOAD_SUFFIXES = (".yaml", ".yml", ".toml", ".json")

EPILOG = """\
suites (each reproduces one claim of the Kafka-vs-RocketMQ comparison):
  partitions  1..1,000 partitions (10,000 with --full), flush=os and sync
  batching    producer batch 1/16/256/4,096 records, linger 0/5/50 ms
  flush       sync / async / os with 1 and 8 producers (group commit)
  delivery    transfer_to vs read()+sendall over 127.0.0.1 to a receiver process
  catchup     cold reads after posix_fadvise(DONTNEED) vs tailing reads
  lookup      lookup_key and offset_for_time
  tags        tag filtering at 1%, 10%, 50% selectivity
  recovery    reopen time after a crash as the log grows
  all         every suite above

references measured beside the engines (--refs):
  raw-files   os.write of the same bytes, one file per partition
  raw-shared  os.write of the same bytes, one shared file
  sqlite-wal  sqlite3 WAL, a table per topic, synchronous matching the flush policy

examples:
  mqstore bench                                   quick run, both engines + references
  mqstore bench partitions --plot out/            one suite, PNG plot in out/
  mqstore bench all --full --json results/        everything, OMB-shaped JSON per run
  mqstore bench ../omb/workloads/simple-workload.yaml --duration 10 --warmup 0
  mqstore inspect data/ orders-0                  dump one partition of a store
  mqstore verify data/ && echo sound
  mqstore verify --json data/                     machine-readable damage report
  mqstore repair --dry-run data/                  what recovery would drop
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mqstore",
        description="Kafka's and RocketMQ's message-log designs side by side: benchmark "
                    "both engines on this machine, inspect and verify stores.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"mqstore {mqstore.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    b = sub.add_parser(
        "bench", help="run suites or OMB workload files on every engine, side by side",
        description="Run standard suites and/or workload files (OMB YAML, TOML, JSON) on the "
                    "engines and references, each in a fresh temporary directory with the "
                    "same seed. With no ITEM: a quick run of "
                    f"{', '.join(QUICK_SUITES)} (under a minute).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("items", nargs="*", metavar="SUITE|WORKLOAD",
                   help="suite names (see below) or workload files")
    b.add_argument("--engines", default=None,
                   help="comma-separated engines (default: every registered engine that "
                        "loads); a variant NAME[option=value,...] runs an engine with options "
                        "under its own label, e.g. 'commitlog,commitlog[write_mode=write]'")
    b.add_argument("--refs", default="raw-files,raw-shared,sqlite-wal",
                   help="comma-separated references, or 'none' (default: all three)")
    size = b.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="size", const="quick",
                      help="small sizes (default when no ITEM is given)")
    size.add_argument("--full", action="store_const", dest="size", const="full",
                      help="large sizes: 10,000 partitions, bigger logs (minutes)")
    b.add_argument("--json", metavar="DIR", help="write OMB-shaped JSON results into DIR")
    b.add_argument("--plot", metavar="DIR", help="write PNG plots into DIR (plot extra)")
    b.add_argument("--dir", metavar="DIR", help="where the temporary stores go "
                   "(default: the system temp dir); each is removed after its run")
    b.add_argument("--processes", action="store_true",
                   help="consumers as separate processes (read_only stores following the "
                        "writer) instead of threads")
    b.add_argument("--duration", type=float, metavar="S",
                   help="workload files: seconds of measured producing "
                        "(replaces testDurationMinutes)")
    b.add_argument("--messages", type=int, metavar="N",
                   help="workload files: total message count (replaces the duration)")
    b.add_argument("--warmup", type=float, metavar="S",
                   help="workload files: warm-up seconds (replaces warmupDurationMinutes)")
    b.add_argument("--rate", type=int, metavar="MSG_S",
                   help="workload files: producerRate override (0 = unthrottled)")
    b.add_argument("--max-backlog-mb", type=int, metavar="MB", default=64,
                   help="workload files: cap for consumerBacklogSizeGB (default 64)")
    b.add_argument("--max-partitions", type=int, metavar="N",
                   help="partitions suite: stop at N partitions")
    b.add_argument("--scale", type=float, default=1.0, metavar="X",
                   help="multiply every suite's message counts by X (default 1)")
    b.add_argument("--seed", type=int, default=42, help="payload and key seed (default 42)")
    b.add_argument("--list", action="store_true", help="list the suites and their claims")

    i = sub.add_parser("inspect", help="dump a store, a partition or one file (like Kafka's "
                       "dump-log tool)")
    i.add_argument("path", help="the store directory, or a partition / file inside it")
    i.add_argument("target", nargs="?", help="partition or file, relative to the store")

    v = sub.add_parser("verify", help="check every file kind; exit 1 on damage",
                       description="Check every file of a store without changing it: logs "
                       "(sizes, CRCs), indexes, ConsumeQueue, IndexFile, checkpoints and JSON "
                       "metadata. One line per root cause, with the first damaged record and "
                       "how many records recovery would drop. Exit 0 only when nothing is "
                       "damaged, 1 on damage, 2 on an error.")
    v.add_argument("path", help="the store directory")
    v.add_argument("--json", action="store_true", help="print a machine-readable report")

    r = sub.add_parser("repair", help="apply recovery explicitly, after showing what it drops",
                       description="Show what verify finds, then open the store as writer with "
                       "on_corruption=MODE so recovery truncates torn tails, rebuilds derived "
                       "files and handles damage below the sync point; verify again. Exit 0 "
                       "when the store is sound afterwards.")
    r.add_argument("path", help="the store directory")
    r.add_argument("--dry-run", action="store_true", help="show what would be dropped; change "
                   "nothing")
    r.add_argument("--mode", choices=("skip", "truncate"), default="skip",
                   help="skip: drop only damaged records and keep every intact one after them "
                   "(default); truncate: cut each log at its first damage")
    r.add_argument("--json", action="store_true", help="print a machine-readable report")
    return p


def make_console() -> Console:
    """A console that keeps wide tables readable when the output is a file or a pipe."""
    console = Console()
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(width=160)
    return console


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mqstore`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    console = make_console()
    try:
        if args.command == "bench":
            return cmd_bench(args, console)
        if args.command == "inspect":
            return cmd_inspect(args, console)
        if args.command == "verify":
            return cmd_verify(args, console)
        if args.command == "repair":
            return cmd_repair(args, console)
    except errors.MQStoreError as exc:
        console.print(f"[red]error:[/] {type(exc).__name__}: {exc}", highlight=False)
        return 2
    except BrokenPipeError:
        # the reader went away (`mqstore inspect ... | head`): stop quietly, like cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    parser.print_help()
    return 2


# --------------------------------------------------------------------------- inspect/verify
def find_store(path: str) -> tuple[str, str, str | None]:
    """``(engine, store root, target)`` for a path that is a store or lies inside one."""
    p = Path(path).resolve()
    if not p.exists():
        raise errors.ConfigError(f"no such file or directory: {path}")
    for root in (p, *p.parents):
        if not root.is_dir():
            continue
        engine = registry.detect(root)
        if engine:
            target = None if root == p else str(p.relative_to(root))
            return engine, str(root), target
    raise errors.ConfigError(f"{path} is not inside an mqstore store (no engine recognises it)")


def cmd_inspect(args: argparse.Namespace, console: Console) -> int:
    engine, root, target = find_store(args.path)
    if args.target:
        target = args.target
    cls = registry.load(engine)
    out = sys.stdout
    out.write(f"# store {root} (engine {engine})" + (f", target {target}" if target else "")
              + "\n")
    for line in cls.inspect_files(root, target):
        out.write(line + "\n")
    return 0


def verify_store(path: str) -> tuple[str, str, list[Damage]]:
    """``(engine, root, damage)``: every root cause in the store at ``path``. A damaged
    manifest is itself reported (kind "metadata") and the engine is then recognised from its
    files, so the rest of the store is still checked."""
    p = Path(path).resolve()
    if not p.exists():
        raise errors.ConfigError(f"no such file or directory: {path}")
    for root in (p, *p.parents):  # a path inside a store verifies the whole store
        if (root / registry.MANIFEST_NAME).exists() or (
                root.is_dir() and registry.detect_from_files(str(root))):
            p = root
            break
    damage: list[Damage] = []
    try:
        engine = registry.detect(p)
    except errors.ConfigError as exc:
        damage.append(Damage(str(p / registry.MANIFEST_NAME), 0, str(exc), kind="metadata"))
        engine = registry.detect_from_files(str(p))
    if not engine:
        if damage:
            return "unknown", str(p), damage
        raise errors.ConfigError(f"{path} is not an mqstore store (no engine recognises it)")
    cls = registry.load(engine)
    damage.extend(cls.verify_files(str(p)))
    return engine, str(p), damage


def _print_damage(console: Console, engine: str, root: str, damage: list[Damage]) -> None:
    if not damage:
        console.print(f"[green]OK[/]: {escape(root)} ({engine}) has no damage", highlight=False)
        return
    for d in damage:
        console.print(f"[red]DAMAGE[/] {escape(str(d))}", highlight=False)
    known = [d.records_dropped for d in damage if d.records_dropped is not None]
    drop = f"; recovery would drop {sum(known)} records" if known else ""
    console.print(f"{len(damage)} problem(s) in {escape(root)} ({engine}){drop}",
                  highlight=False)


def _damage_json(engine: str, root: str, damage: list[Damage]) -> dict:
    return {"store": root, "engine": engine, "sound": not damage,
            "damage": [d.as_dict() for d in damage]}


def cmd_verify(args: argparse.Namespace, console: Console) -> int:
    engine, root, damage = verify_store(args.path)
    if args.json:
        print(json.dumps(_damage_json(engine, root, damage), indent=2))
    else:
        _print_damage(console, engine, root, damage)
    return 1 if damage else 0


def cmd_repair(args: argparse.Namespace, console: Console) -> int:
    engine, root, before = verify_store(args.path)
    report: dict = {"store": root, "engine": engine, "mode": args.mode,
                    "dry_run": args.dry_run, "before": [d.as_dict() for d in before]}
    if not args.json:
        _print_damage(console, engine, root, before)
    if not before or args.dry_run:
        if args.json:
            print(json.dumps({**report, "after": report["before"]}, indent=2))
        elif before:
            console.print(f"dry run: nothing changed; 'mqstore repair {escape(root)}' would "
                          f"apply recovery with on_corruption={args.mode!r}", highlight=False)
        return 1 if before else 0
    if engine == "unknown":
        raise errors.ConfigError(f"{root}: no engine recognises the files; nothing to repair")
    with mqstore.open(root, engine, on_corruption=args.mode) as store:
        actions = store.stats().get("recovery", {})
    _engine, _root, after = verify_store(root)
    report["recovery"] = actions
    report["after"] = [d.as_dict() for d in after]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        done = ", ".join(f"{k}={v}" for k, v in actions.items() if v) or "nothing"
        console.print(f"repaired with on_corruption={args.mode!r}: {done}", highlight=False)
        _print_damage(console, engine, root, after)
    return 1 if after else 0


# --------------------------------------------------------------------------- bench
def usable_engines(requested: str | None, console: Console) -> list[str]:
    """The engines to run: the requested ones (all must load) or every one that loads."""
    if requested:
        from mqstore.bench.targets import parse_engine_spec

        names = _split_specs(requested)
        for n in names:
            registry.load(parse_engine_spec(n)[0])  # ConfigError with a clear message
        return names
    out = []
    for n in mqstore.engines():
        try:
            registry.load(n)
            out.append(n)
        except errors.ConfigError as exc:
            console.print(f"[yellow]skipping engine {n}[/]: {exc}", highlight=False)
    return out


def _split_specs(text: str) -> list[str]:
    """Split ``a,b[x=1,y=2],c`` at the commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [s for s in out if s]


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from mqstore.bench import suites as suites_mod
    from mqstore.bench.references import REFERENCES

    names = suites_mod.suite_names()
    if args.list:
        t = Table(title="mqstore bench suites")
        t.add_column("suite")
        t.add_column("claim")
        for n in names:
            t.add_row(n, suites_mod.SUITES[n].claim)
        console.print(t)
        return 0
    items = list(args.items) or list(QUICK_SUITES)
    size = args.size or ("quick" if not args.items else "default")
    if "all" in items:
        i = items.index("all")
        items[i:i + 1] = names
    suites, workloads = [], []
    for item in items:
        if item in suites_mod.SUITES:
            suites.append(item)
        elif item.lower().endswith(WORKLOAD_SUFFIXES) or os.path.exists(item):
            workloads.append(item)
        else:
            raise errors.ConfigError(f"{item!r} is neither a suite ({', '.join(names)}) "
                                     "nor a workload file (.yaml, .toml, .json)")
    refs = [] if args.refs.strip().lower() in ("", "none") else \
        [r.strip() for r in args.refs.split(",") if r.strip()]
    for r in refs:
        if r not in REFERENCES:
            raise errors.ConfigError(f"unknown reference {r!r}; known: {', '.join(REFERENCES)}")
    engines = usable_engines(args.engines, console)
    if not engines and not refs:
        raise errors.ConfigError("nothing to run: no engine loads and no reference chosen")
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    from mqstore import native

    console.print(f"[bold]mqstore bench[/] engines: {escape(', '.join(engines)) or 'none'}; "
                  f"references: {', '.join(refs) or 'none'}; size: {size}; "
                  f"CRC backend: {native.backend}; "
                  f"consumers as {'processes' if args.processes else 'threads'}",
                  highlight=False)
    started = time.perf_counter()
    verdicts = []
    for w in workloads:
        _bench_workload(w, engines, refs, args, size, console)
    for name in suites:
        verdicts.append(_bench_suite(name, engines, refs, args, size, console))
    if len(verdicts) > 1:
        console.print(_claims_table(verdicts))
    console.print(f"done in {time.perf_counter() - started:.1f} s", highlight=False)
    return 0


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed:.0f}/{task.total:.0f}"), TimeElapsedColumn(),
                    console=console, transient=True)


def _bench_suite(name: str, engines: list[str], refs: list[str], args, size: str,
                 console: Console):
    from mqstore.bench import report
    from mqstore.bench.suites import SUITES, SuiteContext, run_suite

    ctx = SuiteContext(engines=engines, references=refs, size=size, base_dir=args.dir,
                       processes=args.processes, seed=args.seed, scale=args.scale,
                       max_partitions=args.max_partitions)
    total = SUITES[name].count_steps(ctx)
    with _progress(console) as prog:
        task = prog.add_task(name, total=total)
        state = {"first": True}

        def on_step(label: str) -> None:
            if not state["first"]:
                prog.advance(task)
            state["first"] = False
            prog.update(task, description=label)

        ctx.on_step = on_step
        t0 = time.perf_counter()
        res = run_suite(name, ctx)
        elapsed = time.perf_counter() - t0
        prog.update(task, completed=total)
    console.print(report.suite_table(res))
    console.print(f"  {name}: {elapsed:.1f} s", highlight=False)
    for note in res.notes:
        console.print(f"  note: {note}", highlight=False)
    if args.json:
        report.write_suite_json(args.json, res)
        for row in res.rows:
            if row.result is not None and row.result.spec is not None:
                report.write_omb_json(args.json, row.result, row.result.spec)
    if args.plot and res.plot_x:
        from mqstore.bench.plot import plot_suite

        path = plot_suite(res, args.plot)
        if path:
            console.print(f"  plot: {path}", highlight=False)
    return res


def _bench_workload(path: str, engines: list[str], refs: list[str], args, size: str,
                    console: Console) -> None:
    from mqstore.bench import report
    from mqstore.bench.runner import run_workload
    from mqstore.bench.workload import load_workload

    wl = load_workload(path)
    changes: dict = {"seed": args.seed, "max_backlog_bytes": args.max_backlog_mb * 2**20}
    if args.messages is not None:
        changes["messages"] = args.messages
    if args.duration is not None:
        changes["duration_s"] = args.duration
    if args.warmup is not None:
        changes["warmup_s"] = args.warmup
    if args.rate is not None:
        changes["producerRate"] = args.rate
    if size == "quick" and args.messages is None and args.duration is None:
        changes["duration_s"] = 5.0
        changes.setdefault("warmup_s", 0.0)
    wl = wl.replace(**changes)
    planned = wl.planned_messages()
    how = (f"{planned:,} messages" if planned else
           f"{wl.planned_duration_s():g} s (+{wl.planned_warmup_s():g} s warm-up)")
    console.print(f"[bold]workload[/] {wl.name} ({path}): {wl.topics} topic(s) x "
                  f"{wl.partitionsPerTopic} partitions, {wl.messageSize} B, "
                  f"{wl.producersPerTopic} producer(s)/topic, "
                  f"{wl.subscriptionsPerTopic}x{wl.consumerPerSubscription} consumers/topic, "
                  f"rate {wl.producerRate or 'max'}, {how}", highlight=False)
    for note in wl.header_notes():
        console.print(f"  {note}", highlight=False)
    results = []
    targets = engines + refs
    with _progress(console) as prog:
        for t in targets:
            task = prog.add_task(f"{wl.name} on {t}", total=100)
            r = run_workload(wl, t, base_dir=args.dir, processes=args.processes,
                             progress=lambda f, task=task: prog.update(task, completed=f * 100))
            prog.update(task, completed=100)
            results.append(r)
            if args.json:
                report.write_omb_json(args.json, r, wl)
    console.print(report.run_table(results, f"{wl.name}: side by side"))
    for r in results:
        console.print(f"[bold]{escape(r.target)}[/]", highlight=False)
        console.print("  " + report.kafka_producer_line(r), highlight=False, soft_wrap=True)
        console.print("  " + report.rocketmq_producer_line(r), highlight=False, soft_wrap=True)
        if r.consumed:
            console.print("  " + report.rocketmq_consumer_line(r), highlight=False,
                          soft_wrap=True)
            for line in report.kafka_consumer_line(r).splitlines():
                console.print("  " + line, highlight=False, soft_wrap=True)
        for note in r.notes:
            if note not in wl.header_notes():
                console.print(f"  note: {note}", highlight=False)


def _claims_table(results) -> Table:
    t = Table(title="claims on this machine", title_justify="left")
    t.add_column("suite")
    t.add_column("verdict")
    t.add_column("figures")
    colour = {True: "green", False: "red", None: "yellow"}
    for r in results:
        t.add_row(r.name, f"[{colour[r.verdict.shown]}]{r.verdict.label}[/]",
                  escape(r.verdict.text))
    return t


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

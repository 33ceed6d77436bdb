"""Short seeded slices of the torture loops (mqstore.torture; the full runs are
``python benchmarks/torture.py``). Each slice asserts zero lost, zero wrong and zero untyped
errors. The first tests check the checker itself: a torture tool that reports false losses,
or misses real ones, is worse than none.
"""
from __future__ import annotations

import pytest

from mqstore.torture.common import (
    check_store, ensure_topics, make_message, open_store, record_problem,
)
from mqstore.torture.kill import run_kill_loop



def _fill(store, seed, n):
    ensure_topics(store)
    where = {}
    for seq in range(n):
        m = make_message(seed, seq)
        md = store.append(m.topic, m.value, key=m.key, partition=m.partition,
                          timestamp_ms=m.timestamp_ms, headers=m.headers or None, tag=m.tag)
        where[(md.topic, md.partition, md.offset)] = seq
    return where


def test_checker_passes_a_known_good_store(engine, tmp_path):
    store = open_store(str(tmp_path / "s"), engine)
    where = _fill(store, 7, 300)
    res = check_store(store, where, valid_seq=lambda s, q: s == 7 and q < 300, lookups=10)
    store.close()
    assert (res.checked, res.lost, res.wrong, res.gaps) == (300, 0, 0, 0), res.problems


def test_checker_detects_lost_wrong_and_never_written(engine, tmp_path):
    store = open_store(str(tmp_path / "s"), engine)
    where = _fill(store, 7, 50)
    t, p, off = next(iter(where))
    claimed = dict(where)
    claimed[(t, p, 10_000)] = 99_999                    # acknowledged but not in the store
    claimed[(t, p, off)] = where[(t, p, off)] + 1000    # another record at that offset
    res = check_store(store, claimed, valid_seq=lambda s, q: s == 7 and q < 40)
    store.close()
    assert res.wrong == 10                              # seqs 40..49 were "never written"
    assert res.lost == 2 + 10                           # both claims, and the 10 refused


def test_record_problem_names_the_torn_field():
    m = make_message(3, 5)

    class R:
        topic, partition, key, headers = m.topic, m.partition, m.key, dict(m.headers)
        tag, timestamp_ms, value = "other", m.timestamp_ms, m.value

    assert "tag" in record_problem(R())
    R.tag = m.tag
    assert record_problem(R()) is None
    R.value = m.value[:-1] + bytes([m.value[-1] ^ 1]) if len(m.value) > 24 else b"junk"
    assert record_problem(R()) is not None


@pytest.mark.parametrize("flush", ["sync", "async", "os"])
def test_sigkill_slice_loses_nothing_acknowledged(engine, flush, tmp_path):
    fig = run_kill_loop(engine, flush, seed=20261201, rounds=3, workdir=str(tmp_path),
                        max_round_records=400)
    assert fig.kills == 3
    assert fig.acked > 0  # every seeded slice has a round killed 0.15 s or more after ready
    assert (fig.lost, fig.wrong, fig.gaps, fig.open_failures, fig.child_errors) == (0, 0, 0, 0, 0), \
        fig.findings


# ----- mutation fuzzer slice: one run per engine, several assertions over its figures -----

FUZZ_SLICE = 40
_fuzz_cache: dict = {}


@pytest.fixture
def fuzz_figures(engine, tmp_path_factory):
    from mqstore.torture.fuzz import run_fuzz

    if engine not in _fuzz_cache:
        work = str(tmp_path_factory.mktemp(f"fuzz-{engine}"))
        _fuzz_cache[engine] = run_fuzz(engine, seed=20261201, mutations=FUZZ_SLICE,
                                       workdir=work, timeout=60)
    return _fuzz_cache[engine]


def _of(fig, *kinds):
    return [f for f in fig.findings if f["kind"] in kinds]


def test_fuzz_slice_never_crashes_or_hangs(fuzz_figures):
    assert fuzz_figures.mutations == FUZZ_SLICE
    assert fuzz_figures.harness_errors == 0, _of(fuzz_figures, "harness_error")
    assert (fuzz_figures.crashes, fuzz_figures.hangs) == (0, 0), _of(fuzz_figures, "crash", "hang")


def test_fuzz_slice_raises_only_typed_errors(fuzz_figures):
    assert fuzz_figures.untyped == 0, _of(fuzz_figures, "untyped")


def test_fuzz_slice_returns_nothing_wrong(fuzz_figures):
    assert fuzz_figures.wrong == 0, _of(fuzz_figures, "wrong")


def test_fuzz_slice_loses_nothing_silently(fuzz_figures):
    assert fuzz_figures.silent_loss == 0, _of(fuzz_figures, "silent_loss")


def test_fuzz_slice_verify_sees_what_open_sees(fuzz_figures):
    assert fuzz_figures.verify_missed == 0, _of(fuzz_figures, "verify_missed")


def test_fuzz_slice_derived_damage_never_blocks_the_open(fuzz_figures):
    assert fuzz_figures.derived_refused == 0, _of(fuzz_figures, "derived_refused")


def test_fuzz_slice_default_open_of_a_clean_store_refuses_rather_than_drops(fuzz_figures):
    assert fuzz_figures.default_open_dropped == 0, _of(fuzz_figures, "default_open_dropped")


# ----- power-loss images slice -----

@pytest.mark.parametrize("flush", ["sync", "async", "os"])
def test_powerloss_slice_keeps_every_flushed_record(engine, flush, tmp_path):
    from mqstore.torture.powerloss import run_powerloss

    fig = run_powerloss(engine, flush, seed=20261201, images=8, workdir=str(tmp_path),
                        images_per_state=4)
    assert fig.images == 8 and fig.child_errors == 0, fig.findings
    assert (fig.crashes, fig.hangs, fig.raised) == (0, 0, 0), fig.findings
    assert (fig.lost, fig.wrong, fig.gaps, fig.refused) == (0, 0, 0, 0), fig.findings


# ----- full-disk slice (root only: it mounts a 4 MiB tmpfs) -----

def test_enospc_slice_store_survives_a_full_disk(engine):
    from mqstore.torture.enospc import can_mount, run_enospc

    why = can_mount()
    if why is not None:
        pytest.skip(f"ENOSPC run needs a tmpfs: {why}")
    fig = run_enospc(engine, seed=20261201, flushes=("sync",))
    assert fig.runs >= 1 and fig.full == fig.runs, fig.findings
    assert (fig.signals, fig.untyped, fig.typed_errors) == (0, 0, 0), fig.findings
    assert (fig.lost, fig.wrong, fig.reopen_failed, fig.no_recovery) == (0, 0, 0, 0), fig.findings


@pytest.mark.parametrize("flush", ["sync", "os"])
def test_powerloss_names_not_made_durable_by_a_directory_fsync_are_lost(engine, flush, tmp_path):
    """Images in mode "names" (crashfs): every byte written survives, but every file or
    directory created since the last fsync of its directory is gone (strict POSIX). Crash
    after 300 records, so files have rolled. Everything flushed must still read back."""
    from mqstore.torture.powerloss import run_powerloss

    fig = run_powerloss(engine, flush, seed=5, images=1, workdir=str(tmp_path),
                        force_mode="names", crash_event=10**9, max_records=300)
    assert fig.images == 1 and fig.child_errors == 0, fig.findings
    assert fig.flushed_checked > 0
    assert (fig.lost, fig.wrong, fig.gaps, fig.refused, fig.raised) == (0, 0, 0, 0, 0), fig.findings


def test_powerloss_lost_first_consume_queue_file_is_rebuilt_from_the_log(tmp_path):
    """The image of commitlog:powerloss-sync-posix:2026.4.0 (found on 289191e: 100 flushed
    records of t2-0 lost; passes since e950d30), made deterministic: the same crashed
    sync-mode workload with every byte written, minus the first ConsumeQueue file of the one
    queue that has a second one."""
    import glob
    import os

    from mqstore.torture.common import sub_seed
    from mqstore.torture.crashfs import build_image
    from mqstore.torture.powerloss import check_image, run_child

    sseed = sub_seed("powerloss", "commitlog", "sync", "posix", 2026, 4)
    st = run_child(str(tmp_path), "commitlog", "sync", "posix", sseed, crash_event=1507)
    image = str(tmp_path / "image")
    build_image(st, image, 0, "current")
    firsts = [f for f in sorted(glob.glob(os.path.join(image, "consumequeue", "*", "*", "0" * 20)))
              if len(os.listdir(os.path.dirname(f))) > 1]
    assert firsts
    os.unlink(firsts[0])  # one queue only: with every queue damaged, recovery does rebuild
    durable = [[*w, s] for s, w in st["acks"]]
    ans = check_image({"engine": "commitlog", "image": image, "durable": durable,
                       "acked": durable, "wseed": st["wseed"], "attempted": st["attempted"],
                       "seed": 1})
    assert ans["open"] == "ok", ans
    assert (ans["lost"], ans["wrong"], ans["gaps"]) == (0, 0, 0), ans["problems"]


@pytest.mark.parametrize("eng,case,why", [
    ("segments", 82, "newest segment .log of a cleanly closed store deleted: the default open "
                     "drops its records (one WARNING) instead of refusing"),
    ("commitlog", 173, "a bit flip in a ConsumeQueue unit's commitlog offset (derived data) of a "
                       "clean store: the open refuses ('ConsumeQueue units point past' the "
                       "CommitLog end) and verify reports nothing"),
], ids=["segments-deleted-newest-segment", "commitlog-garbled-cq-offset"])
def test_fuzz_finding_replays(eng, case, why, tmp_path):
    """Single fuzz cases (seed 2030, clean template) found by the full run, fixed since
    (segments 0363fd1, commitlog in the recovery work); each must come back clean."""
    from mqstore.torture.fuzz import run_fuzz

    fig = run_fuzz(eng, seed=2030, mutations=1, workdir=str(tmp_path), variants=("clean",),
                   only_case=case, timeout=60)
    assert fig.mutations == 1
    assert not fig.findings, (why, fig.findings)

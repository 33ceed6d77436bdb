"""The mqstore command: help, bench (suites and OMB files), inspect, verify, exit codes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))

from fakes import fake_engine_registered  # noqa: E402  (in-memory TEST DOUBLE)

import mqstore  # noqa: E402
from mqstore import cli, errors, registry  # noqa: E402
from mqstore.api import Damage  # noqa: E402

OMB = Path(__file__).parents[2] / ".." / "shared" / "fixtures" / "omb"
#: small preallocated files so the test reads kilobytes, not the 1 GiB defaults
SMALL = {"commitlog": {"mapped_file_size": 1 << 20, "hash_slots": 1024,
                       "index_entries": 4096, "cq_units_per_file": 1024},
         "segments": {"segment_index_bytes": 4096}}


def _loads(name: str) -> bool:
    try:
        registry.load(name)
        return True
    except errors.ConfigError:
        return False


def test_help_documents_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for word in ("bench", "inspect", "verify"):
        assert word in out
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    out = capsys.readouterr().out
    for word in ("partitions", "batching", "flush", "delivery", "catchup", "lookup", "tags",
                 "recovery", "--engines", "--quick", "--full", "--json", "--plot", "--dir",
                 "--processes", "--duration", "--messages", "raw-files", "sqlite-wal"):
        assert word in out, word


def test_python_dash_m_runs_the_command():
    r = subprocess.run([sys.executable, "-m", "mqstore", "--version"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and mqstore.__version__ in r.stdout


def test_bench_suite_writes_json(tmp_path, capsys):
    with fake_engine_registered() as fake:
        code = cli.main(["bench", "lookup", "tags", "--engines", fake, "--refs", "sqlite-wal",
                         "--quick", "--scale", "0.05", "--json", str(tmp_path / "j"),
                         "--dir", str(tmp_path / "d")])
    assert code == 0
    out = capsys.readouterr().out
    assert "lookup" in out and "claims on this machine" in out and fake in out
    files = sorted(p.name for p in (tmp_path / "j").iterdir())
    assert any(f.startswith("suite-lookup-") for f in files)
    assert os.listdir(tmp_path / "d") == []  # temporary stores removed


def test_bench_omb_workload_file_unchanged(tmp_path, capsys):
    wl = OMB / "workloads" / "simple-workload.yaml"
    if not wl.is_file():
        pytest.skip("../shared/fixtures/omb is absent")
    before = wl.read_bytes()
    with fake_engine_registered() as fake:
        code = cli.main(["bench", str(wl), "--engines", fake, "--refs", "raw-files",
                         "--messages", "300", "--json", str(tmp_path)])
    assert code == 0
    assert wl.read_bytes() == before
    out = capsys.readouterr().out
    assert "records sent" in out and "[Complete] Send Total: 300" in out
    results = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert {r["driver"] for r in results} == {fake, "raw-files"}
    for r in results:
        assert r["workload"] == "Simple Workload 1 producer on 1 topic"
        assert r["partitions"] == 10 and r["messageSize"] == 1024
        assert r["mqstore"]["produced"] == 300 and r["mqstore"]["consumed"] == 300
        assert r["mqstore"]["workload"]["payloadFile"].endswith("payload-1Kb.data")


def test_unknown_item_and_reference_exit_2(capsys):
    assert cli.main(["bench", "no-such-suite"]) == 2
    assert cli.main(["bench", "tags", "--refs", "nope"]) == 2
    assert "error" in capsys.readouterr().out


class _Damaged:
    """Stand-ins for verify_files results, patched onto the test double."""

    found: list[Damage] = []


def _fake_store(tmp_path, fake):
    root = tmp_path / "store"
    root.mkdir()
    (root / "mqstore.json").write_text(json.dumps({"engine": fake}))
    (root / "part-0").mkdir()
    return root


def test_verify_exit_codes_follow_damage(tmp_path, capsys, monkeypatch):
    with fake_engine_registered() as fake:
        cls = registry.load(fake)
        root = _fake_store(tmp_path, fake)
        monkeypatch.setattr(cls, "verify_files", classmethod(lambda c, p: []), raising=False)
        assert cli.main(["verify", str(root)]) == 0
        assert "no damage" in capsys.readouterr().out
        bad = [Damage(str(root / "part-0" / "x.log"), 4096, "CRC mismatch")]
        monkeypatch.setattr(cls, "verify_files", classmethod(lambda c, p: bad), raising=False)
        assert cli.main(["verify", str(root)]) == 1
        out = capsys.readouterr().out
        assert "x.log@4096: CRC mismatch" in out
    assert cli.main(["verify", str(tmp_path / "missing")]) == 2


def test_inspect_finds_the_store_above_a_partition(tmp_path, capsys, monkeypatch):
    with fake_engine_registered() as fake:
        cls = registry.load(fake)
        root = _fake_store(tmp_path, fake)
        seen = []

        def inspect_files(c, path, target=None):
            seen.append((path, target))
            yield "baseOffset: 0 lastOffset: 0"

        monkeypatch.setattr(cls, "inspect_files", classmethod(inspect_files), raising=False)
        assert cli.main(["inspect", str(root / "part-0")]) == 0
        assert seen == [(str(root), "part-0")]
        assert "baseOffset: 0" in capsys.readouterr().out


def test_inspect_and_verify_a_real_store(engine, tmp_path, capsys):
    if not _loads(engine):
        pytest.skip(f"engine {engine} is not available yet")
    path = tmp_path / "s"
    with mqstore.open(path, engine=engine, **SMALL.get(engine, {})) as s:
        s.create_topic("orders", 2)
        for i in range(20):
            s.append("orders", b"value-%02d" % i, key=b"k%d" % i)
    assert cli.main(["verify", str(path)]) == 0, capsys.readouterr().out
    capsys.readouterr()
    assert cli.main(["inspect", str(path)]) == 0
    assert len(capsys.readouterr().out.splitlines()) > 2
    # flip a byte of a stored value (covered by the CRC in both designs)
    hits = [p for p in path.rglob("*") if p.is_file() and b"value-19" in p.read_bytes()]
    assert hits
    raw = bytearray(hits[0].read_bytes())
    raw[raw.index(b"value-19") + 6] ^= 0xFF
    hits[0].write_bytes(bytes(raw))
    assert cli.main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGE" in out and hits[0].name in out.replace("\n", "")


def test_engine_specs_split_outside_brackets():
    assert cli._split_specs("a,b[x=1,y=2], c") == ["a", "b[x=1,y=2]", "c"]


def test_verify_json_report_and_a_damaged_manifest(engine, tmp_path, capsys):
    if not _loads(engine):
        pytest.skip(f"engine {engine} is not available yet")
    path = tmp_path / "s"
    with mqstore.open(path, engine=engine, **SMALL.get(engine, {})) as s:
        s.create_topic("orders", 2)
        for i in range(20):
            s.append("orders", b"value-%02d" % i, key=b"k%d" % i)
    assert cli.main(["verify", "--json", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == {"store": str(path.resolve()), "engine": engine, "sound": True, "damage": []}
    (path / "mqstore.json").write_bytes(b'{"engine": 7}')
    assert cli.main(["verify", "--json", str(path)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["engine"] == engine  # recognised from its files, and the rest still checked
    assert [d["kind"] for d in doc["damage"]] == ["metadata"]
    assert doc["damage"][0]["path"].endswith("mqstore.json")


def test_repair_dry_run_changes_nothing_then_repair_drops_only_the_damaged_record(
        engine, tmp_path, capsys):
    if not _loads(engine):
        pytest.skip(f"engine {engine} is not available yet")
    path = tmp_path / "s"
    with mqstore.open(path, engine=engine, **SMALL.get(engine, {})) as s:
        s.create_topic("orders")
        for i in range(20):
            s.append("orders", b"value-%02d" % i)
    hits = [p for p in path.rglob("*") if p.is_file() and b"value-09" in p.read_bytes()]
    raw = bytearray(hits[0].read_bytes())
    raw[raw.index(b"value-09") + 6] ^= 0xFF
    hits[0].write_bytes(bytes(raw))
    snapshot = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert cli.main(["repair", "--dry-run", str(path)]) == 1
    assert "DAMAGE" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == snapshot
    assert cli.main(["repair", "--json", str(path)]) == 0, capsys.readouterr().out
    doc = json.loads(capsys.readouterr().out)
    assert doc["before"] and doc["after"] == []
    assert doc["recovery"]["corruption_skipped"] >= 1
    with mqstore.open(path, engine=engine) as s:
        got = []
        off = s.start_offset("orders", 0)
        while off < s.end_offset("orders", 0):
            page = s.read("orders", 0, off)
            got.extend(r.value for r in page)
            off = page[-1].offset + 1
    assert got == [b"value-%02d" % i for i in range(20) if i != 9]

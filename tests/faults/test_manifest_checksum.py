"""The store manifest ``mqstore.json`` carries a CRC-32 of its content.

Torture finding ``segments:fuzz-clean:20261202.92``: a byte swap turned the manifest's
``segment_index_bytes`` from 4096 into 1096. After a clean close every index file is trimmed,
so no other file records the real value: ``mqstore verify`` reported the store sound while
the open refused it with a ConfigError ("conflicts"). With a checksum in the manifest, any
change to it is metadata damage that verify reports and the open refuses, naming the file.
"""
from __future__ import annotations

import json

import pytest

import mqstore
from mqstore import cli, storedir
from mqstore.errors import ConfigError

SMALL = {"segments": {"segment_bytes": 1 << 16, "segment_index_bytes": 4096},
         "commitlog": {"mapped_file_size": 1 << 20, "cq_units_per_file": 1000,
                       "hash_slots": 64, "index_entries": 256}}


def _store(engine, path):
    with mqstore.open(path, engine=engine, **SMALL.get(engine, {})) as s:
        s.create_topic("t", 2)
        for i in range(10):
            s.append("t", b"v%d" % i, key=b"k%d" % i)
    return path / "mqstore.json"


def _shape_value(manifest):
    doc = json.loads(manifest.read_text())
    name = sorted(k for k, v in doc["options"].items() if isinstance(v, int) and v >= 1000)[0]
    return name, doc["options"][name]


def test_a_changed_digit_in_the_manifest_is_reported_by_verify_and_refused_by_open(
        engine, tmp_path, capsys):
    path = tmp_path / "s"
    manifest = _store(engine, path)
    name, value = _shape_value(manifest)
    text = manifest.read_text()
    damaged = text.replace(f'"{name}": {value}', f'"{name}": {str(value).replace(str(value)[0], "1", 1)}1')
    assert damaged != text
    manifest.write_text(damaged)
    assert cli.main(["verify", "--json", str(path)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [d["kind"] for d in doc["damage"]] == ["metadata"]
    assert doc["damage"][0]["path"].endswith("mqstore.json")
    assert "checksum" in doc["damage"][0]["problem"]
    with pytest.raises(ConfigError, match="mqstore.json.*checksum"):
        mqstore.open(path, engine=engine)


def test_a_manifest_without_a_checksum_still_opens(engine, tmp_path, capsys):
    """Stores written before the checksum existed keep opening and verify sound."""
    path = tmp_path / "s"
    manifest = _store(engine, path)
    doc = json.loads(manifest.read_text())
    assert "crc32" in doc
    del doc["crc32"]
    manifest.write_text(json.dumps(doc))
    assert cli.main(["verify", str(path)]) == 0
    with mqstore.open(path, engine=engine) as s:
        assert len(s.read("t", 0, 0)) + len(s.read("t", 1, 0)) == 10


def test_the_checksum_covers_every_field(tmp_path):
    root = str(tmp_path)
    cfg = mqstore.config.StoreConfig(engine="f", options={"size": 10}, explicit={"size"})
    storedir.check_manifest(root, cfg, ("size",))
    manifest = tmp_path / "mqstore.json"
    doc = json.loads(manifest.read_text())
    for field, value in (("engine", "g"), ("format", 2), ("options", {"size": 11})):
        changed = dict(doc, **{field: value})
        manifest.write_text(json.dumps(changed))
        with pytest.raises(ConfigError, match="checksum"):
            storedir.read_manifest(root)
    manifest.write_text(json.dumps(dict(doc, crc32="x")))
    with pytest.raises(ConfigError, match="crc32"):
        storedir.read_manifest(root)

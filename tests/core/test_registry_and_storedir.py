"""Registry, engine detection, manifest and directory lock."""
from __future__ import annotations

import json
import os

import pytest

import mqstore
from mqstore import registry, storedir
from mqstore.config import StoreConfig
from mqstore.errors import ConfigError, EngineMismatchError, StoreLockedError


def test_builtin_engines_are_registered():
    assert {"segments", "commitlog"} <= set(mqstore.engines())
    import mqstore.engines as pkg  # the package is callable too

    assert pkg() == mqstore.engines()


def test_unknown_engine_message():
    with pytest.raises(ConfigError, match="registered engines"):
        registry.load("no-such-engine")


def test_broken_plugin_message():
    registry.register("broken-test", "no_such_module_xyz:Store")
    try:
        with pytest.raises(ConfigError, match="could not be loaded"):
            registry.load("broken-test")
    finally:  # later tests iterate over mqstore.engines(); leave the registry as it was
        registry._known().pop("broken-test", None)


def test_detect_from_manifest(tmp_path):
    assert registry.detect(tmp_path / "absent") is None
    assert registry.detect(tmp_path) is None
    (tmp_path / "mqstore.json").write_text(json.dumps({"engine": "commitlog"}))
    assert registry.detect(tmp_path) == "commitlog"
    (tmp_path / "mqstore.json").write_text("{not json")
    with pytest.raises(ConfigError, match="manifest"):
        registry.detect(tmp_path)


def test_manifest_written_adopted_and_checked(tmp_path):
    root = str(tmp_path)
    cfg = StoreConfig(engine="e", options={"size": 10, "other": 1})
    assert storedir.check_manifest(root, cfg, ("size",)) is cfg
    doc = json.loads((tmp_path / "mqstore.json").read_text())
    assert doc["engine"] == "e" and doc["options"] == {"size": 10}
    default = StoreConfig(engine="e", options={"size": 99, "other": 1})
    assert storedir.check_manifest(root, default, ("size",)).options["size"] == 10
    explicit = StoreConfig(engine="e", options={"size": 99, "other": 1},
                           explicit=frozenset({"size"}))
    with pytest.raises(ConfigError, match="size"):
        storedir.check_manifest(root, explicit, ("size",))
    with pytest.raises(EngineMismatchError, match="'e'"):
        storedir.check_manifest(root, StoreConfig(engine="f"), ())


def test_directory_lock(tmp_path):
    lock = storedir.DirectoryLock(str(tmp_path), ".lock")
    with pytest.raises(StoreLockedError):
        storedir.DirectoryLock(str(tmp_path), ".lock")
    lock.release()
    lock.release()
    storedir.DirectoryLock(str(tmp_path), ".lock").release()


def test_write_atomic_replaces_whole_file(tmp_path):
    p = str(tmp_path / "f.json")
    storedir.write_json_atomic(p, {"a": 1})
    storedir.write_json_atomic(p, {"a": 2})
    assert json.loads(open(p).read()) == {"a": 2}
    assert not os.path.exists(p + ".tmp")


@pytest.mark.parametrize("text", [
    b"\xff\xfe not utf-8", b"[1, 2]", b'{"engine": 5}', b'{"engine": "e", "options": [1]}',
    b'{"engine": "e", "options": {"size": "big"}}', b'{"engine": "e", "options": {"size": 0}}',
    b'{"engine": ["e"]}', b"", b"{", b"null",
])
def test_a_damaged_manifest_is_a_config_error_naming_the_file(tmp_path, text):
    root = str(tmp_path)
    (tmp_path / "mqstore.json").write_bytes(text)
    cfg = StoreConfig(engine="e", options={"size": 10})
    with pytest.raises(ConfigError, match="mqstore.json"):
        storedir.check_manifest(root, cfg, ("size",))
    if text.startswith(b'{"engine": "e", "options": {'):
        assert registry.detect(root) == "e"  # the engine field itself is readable
    else:
        with pytest.raises(ConfigError, match="mqstore.json"):
            registry.detect(root)

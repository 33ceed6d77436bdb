"""The engine registry: names to Store classes, loaded lazily through entry points.

Engines register in the entry-point group ``mqstore.engines`` (``name = "module:Class"``).
The two built-in engines are also known by their import paths, so a source checkout without
installed metadata still works. Nothing is imported until an engine is asked for, and a
missing or broken engine gives a ConfigError that says what to do.
"""
from __future__ import annotations

import importlib
import json
import os
import threading
import zlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from mqstore.errors import ConfigError

if TYPE_CHECKING:
    from mqstore.api import Store

ENTRY_POINT_GROUP = "mqstore.engines"
MANIFEST_NAME = "mqstore.json"
_BUILTIN = {
    "segments": "mqstore.engines.segments.store:SegmentsStore",
    "commitlog": "mqstore.engines.commitlog.store:CommitLogStore",
}
_lock = threading.Lock()
_paths: dict[str, str] | None = None
_loaded: dict[str, type["Store"]] = {}


def _known() -> dict[str, str]:
    global _paths
    with _lock:
        if _paths is None:
            paths = dict(_BUILTIN)
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                paths[ep.name] = ep.value
            _paths = paths
        return _paths


def register(name: str, target: "str | type[Store]") -> None:
    """Register an engine at run time: ``target`` is a class or a ``"module:Class"`` path."""
    known = _known()
    with _lock:
        if isinstance(target, str):
            known[name] = target
            _loaded.pop(name, None)
        else:
            known[name] = f"{target.__module__}:{target.__qualname__}"
            _loaded[name] = target


def names() -> list[str]:
    """Registered engine names, sorted."""
    return sorted(_known())


def load(name: str) -> type["Store"]:
    """The Store class registered as ``name`` (ConfigError if unknown or broken)."""
    if name in _loaded:
        return _loaded[name]
    known = _known()
    if name not in known:
        raise ConfigError(f"unknown engine {name!r}; registered engines: {sorted(known)}")
    module_name, _, attr = known[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"engine {name!r} ({known[name]}) could not be loaded: {exc}. "
            "Reinstall mqstore (pip install -e .) or check the plugin that registers it."
        ) from exc
    _loaded[name] = cls
    return cls


def load_manifest(path: str) -> dict:
    """The parsed manifest file at ``path``, checked for shape: a JSON object with a str
    ``engine`` and, if present, an object ``options``. ConfigError (naming the file) when
    it is unreadable, not UTF-8, not JSON or has the wrong types."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"unreadable store manifest {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("engine"), str):
        raise ConfigError(f"damaged store manifest {path}: no str 'engine' field")
    if not isinstance(doc.get("options", {}), dict):
        raise ConfigError(f"damaged store manifest {path}: 'options' is not an object")
    if "crc32" in doc:  # manifests written before the checksum existed have none
        stored = doc["crc32"]
        if type(stored) is not int:
            raise ConfigError(f"damaged store manifest {path}: 'crc32' is not an int")
        if stored != manifest_checksum(doc):
            raise ConfigError(
                f"damaged store manifest {path}: checksum mismatch (crc32 {stored}, content "
                f"{manifest_checksum(doc)}); a hand edit must delete the 'crc32' field")
    return doc


def manifest_checksum(doc: dict) -> int:
    """CRC-32 (zlib) of the manifest's fields other than ``crc32``, as compact sorted JSON:
    a change to any byte that matters (a digit of a shape option, the engine) is caught."""
    body = {k: v for k, v in doc.items() if k != "crc32"}
    return zlib.crc32(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def detect(path: str | os.PathLike[str]) -> str | None:
    """Which engine wrote the store at ``path`` (dbm.whichdb style), or None if it holds none.

    The manifest (``mqstore.json``) answers first; otherwise each engine is asked whether the
    files look like its own (a Kafka log dir or RocketMQ store written by other software).
    """
    path = os.fspath(path)
    manifest = os.path.join(path, MANIFEST_NAME)
    if os.path.exists(manifest):
        return str(load_manifest(manifest)["engine"])
    if not os.path.isdir(path):
        return None
    return detect_from_files(path)


def detect_from_files(path: str) -> str | None:
    """The engine whose files ``path`` holds, asking each engine (ignores the manifest)."""
    for name in names():
        try:
            cls = load(name)
        except ConfigError:
            continue
        if cls.looks_like(path):
            return name
    return None

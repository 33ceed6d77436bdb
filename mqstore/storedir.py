"""What every engine does to its root directory: the exclusive lock, the manifest, and
atomic small-file writes.

- :class:`DirectoryLock` takes an exclusive, non-blocking ``flock`` on a lock file (Kafka's
  ``.lock``, RocketMQ's ``lock``); a second writer gets StoreLockedError. The OS drops the
  lock when the process dies, so a crash never leaves a stale lock.
- The manifest ``mqstore.json`` records the engine and the options that shape files, so a
  directory of another engine is refused and a reopen with conflicting sizes is caught.
- :func:`write_atomic` writes a temporary file, fsyncs it, renames it over the target and
  fsyncs the directory: a crash leaves the old or the new file, never a torn one.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Mapping
from typing import Any

from mqstore.config import StoreConfig
from mqstore.errors import ConfigError, EngineMismatchError, StoreLockedError
from mqstore.registry import MANIFEST_NAME, load_manifest, manifest_checksum

MANIFEST_FORMAT = 1


def fsync_dir(path: str) -> None:
    """fsync a directory so that creates, renames and deletes in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (tmp, fsync, rename, fsync dir)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON with :func:`write_atomic`."""
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


class DirectoryLock:
    """An exclusive ``flock`` on ``<root>/<name>``, held until :meth:`release`."""

    def __init__(self, root: str, name: str):
        self.path = os.path.join(root, name)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            self._fd = None
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreLockedError(
                    f"{root} is locked by another writer ({self.path}); "
                    "open it with read_only=True to read alongside"
                ) from None
            raise

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def read_manifest(root: str) -> dict[str, Any] | None:
    """The manifest of the store at ``root``, or None if there is none."""
    path = os.path.join(root, MANIFEST_NAME)
    if not os.path.exists(path):
        return None
    return load_manifest(path)


def check_manifest(root: str, config: StoreConfig, shape_options: tuple[str, ...]) -> StoreConfig:
    """Reconcile ``config`` with the manifest at ``root`` and return the config to use.

    - another engine's manifest: EngineMismatchError, nothing touched;
    - a shape option set explicitly to a value other than the stored one: ConfigError;
    - shape options not set explicitly take the stored values;
    - no manifest: one is written (unless read-only) with the config's shape options.
    """
    doc = read_manifest(root)
    if doc is not None:
        if doc["engine"] != config.engine:
            raise EngineMismatchError(
                f"{root} holds a {doc['engine']!r} store; it cannot be opened with engine "
                f"{config.engine!r} (open it with engine={doc['engine']!r})"
            )
        stored: Mapping[str, Any] = doc.get("options", {})
        adopt: dict[str, Any] = {}
        for name in shape_options:
            if name not in stored:
                continue
            want = config.options[name]
            got = stored[name]
            if type(got) is not type(want) or (isinstance(got, int) and got <= 0):
                raise ConfigError(
                    f"damaged store manifest {os.path.join(root, MANIFEST_NAME)}: option "
                    f"{name}={got!r} is not a valid {type(want).__name__}")
            if name in config.explicit and config.options[name] != stored[name]:
                raise ConfigError(
                    f"{name}={config.options[name]!r} conflicts with the existing store at "
                    f"{root}, which was created with {name}={stored[name]!r}"
                )
            adopt[name] = stored[name]
        return config.with_options(**adopt) if adopt else config
    if not config.read_only:
        write_manifest(root, config, shape_options)
    return config


def write_manifest(root: str, config: StoreConfig, shape_options: tuple[str, ...]) -> None:
    """Write ``mqstore.json`` for a new store."""
    doc = {
        "format": MANIFEST_FORMAT,
        "engine": config.engine,
        "options": {name: config.options[name] for name in shape_options},
    }
    doc["crc32"] = manifest_checksum(doc)
    write_json_atomic(os.path.join(root, MANIFEST_NAME), doc)

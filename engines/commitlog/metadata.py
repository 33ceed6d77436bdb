"""The store's JSON metadata: ``config/topics.json`` and ``config/consumerOffset.json``.

Both keep RocketMQ's shapes (``TopicConfigManager``, ``ConsumerOffsetManager``)::

    topics.json          {"topicConfigTable": {"<topic>": {"topicName": ..., "readQueueNums": n,
                           "writeQueueNums": n, "perm": 6, ...}}, "dataVersion": {...}}
    consumerOffset.json  {"offsetTable": {"<topic>@<group>": {"<queueId>": offset}},
                           "dataVersion": {...}}

RocketMQ copies the old file to ``<file>.bak`` and overwrites in place; mqstore writes a
temporary file, fsyncs it and renames it over the old one (``storedir.write_json_atomic``), so
a crash leaves the old or the new file, never a torn one. The previous version is kept as
``<file>.bak`` (a hard link to the old file, made just before the rename: no extra data
write). A read-only follower re-reads a file when its modification time changes.

Damage (not UTF-8, not JSON, not an object, a wrong type at any level): the file is replaced
by its ``.bak`` when that one is valid (RocketMQ's ``ConfigManager`` falls back the same
way), logged and counted as ``metadata_repaired``; a ``topics.json`` with no usable backup is
rebuilt from the ``consumequeue/<topic>/<queueId>`` directories when there are any (topics
without a message then need ``create_topic`` again). Otherwise the open fails with a
``CorruptRecordError`` naming the file. A full disk while writing raises ``StoreFullError``
and leaves the old file (and the table in memory) as they were.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from mqstore import errors
from mqstore.api import TOPIC_NAME_RE
from mqstore.damage import METADATA_REPAIRED, RecoveryLog, translate_full
from mqstore.storedir import fsync_dir, write_json_atomic

logger = logging.getLogger("mqstore")
#: the most queues a topic may have in a loaded topics.json (RocketMQ caps it far lower)
MAX_QUEUES = 1 << 16

PERM_READ_WRITE = 6


def _data_version(counter: int) -> dict:
    return {"counter": counter, "stateVersion": 0, "timestamp": int(time.time() * 1000)}


class MetadataError(ValueError):
    """A metadata document has the wrong shape (the reason is the message)."""


def _int(value: Any, what: str, low: int, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (
            high is not None and value > high):
        raise MetadataError(f"{what} must be an int >= {low}"
                            + (f" and <= {high}" if high is not None else "")
                            + f", not {value!r}")
    return value


def _dict(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise MetadataError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _load(path: str) -> dict:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise MetadataError(f"not JSON ({exc})") from None
    return _dict(doc, "the document")


class _JsonFile:
    def __init__(self, path: str, read_only: bool, log: RecoveryLog | None = None):
        self.path = path
        self.backup = path + ".bak"
        self.read_only = read_only
        self.log = log
        self.lock = threading.Lock()
        self.counter = 0
        self._mtime = -1
        #: the file on disk is valid (so it may become the backup of the next version)
        self._valid = False
        #: the document came from the backup or a rebuild: write it back when writable
        self.repaired = False

    def read(self, parse: Callable[[dict], Any],
             rebuild: Callable[[], Any] | None = None) -> tuple[Any] | None:
        """``(parse(doc),)`` if the file changed since the last read, else None. A damaged
        file falls back to the backup, then to ``rebuild()`` (returning None when it cannot),
        else raises CorruptRecordError naming the file."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        if st.st_mtime_ns == self._mtime:
            return None
        try:
            doc = _load(self.path)
            value = parse(doc)
            self._valid = True
        except (OSError, MetadataError) as exc:
            value, doc = self._repair(parse, rebuild, exc)
        self._mtime = st.st_mtime_ns
        dv = doc.get("dataVersion") if isinstance(doc, dict) else None
        counter = dv.get("counter") if isinstance(dv, dict) else 0
        self.counter = counter if isinstance(counter, int) and counter >= 0 else 0
        return (value,)

    def _repair(self, parse, rebuild, exc) -> tuple[Any, dict]:
        try:
            doc = _load(self.backup)
            value = parse(doc)
            how = f"replaced by {os.path.basename(self.backup)}"
        except (OSError, MetadataError) as bak_exc:
            value = rebuild() if rebuild is not None else None
            if value is None:
                raise errors.CorruptRecordError(
                    f"unreadable JSON metadata: {exc}; no usable backup "
                    f"({os.path.basename(self.backup)}: {bak_exc})", self.path, 0) from None
            doc = {}
            how = "rebuilt from the store's files"
        self.repaired = True
        detail = f"damaged ({exc}): {how}"
        if self.log is not None:
            self.log.record(METADATA_REPAIRED, self.path, 0, detail)
        else:
            logger.warning("recovery: %s: %s", self.path, detail)
        return value, doc

    def changed(self) -> bool:
        try:
            return os.stat(self.path).st_mtime_ns != self._mtime
        except FileNotFoundError:
            return False

    def write(self, doc: dict) -> None:
        """Persist ``doc`` atomically; the version it replaces (if valid) becomes the
        backup. ``StoreFullError`` on a full disk (the old file is kept)."""
        doc["dataVersion"] = _data_version(self.counter + 1)
        with translate_full(f"writing {self.path}"):
            cfg_dir = os.path.dirname(self.path)
            if not os.path.isdir(cfg_dir):  # its entry in the store root must be durable too
                os.makedirs(cfg_dir, exist_ok=True)
                fsync_dir(os.path.dirname(os.path.abspath(cfg_dir)))
            if self._valid and os.path.isfile(self.path):
                tmp = self.backup + ".tmp"
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                os.link(self.path, tmp)
                os.replace(tmp, self.backup)
            try:
                write_json_atomic(self.path, doc)
            except BaseException:
                try:
                    os.unlink(self.path + ".tmp")
                except OSError:
                    pass
                raise
        self.counter += 1
        self._valid = True
        self.repaired = False
        self._mtime = os.stat(self.path).st_mtime_ns


class TopicConfigManager:
    """Topics and their queue counts. Thread-safety: writes under an internal lock."""

    def __init__(self, path: str, *, read_only: bool = False, log: RecoveryLog | None = None):
        self._file = _JsonFile(path, read_only, log)
        self.topics: dict[str, int] = {}
        self.reload()
        if self._file.repaired and not read_only:
            with self._file.lock:
                self._persist()

    @staticmethod
    def _parse(doc: dict) -> dict[str, int]:
        table = _dict(doc.get("topicConfigTable", {}), "topicConfigTable")
        topics = {}
        for name, cfg in table.items():
            if not TOPIC_NAME_RE.fullmatch(name):
                raise MetadataError(f"topic name {name!r} is not valid")
            cfg = _dict(cfg, f"topicConfigTable[{name!r}]")
            n = cfg.get("writeQueueNums", cfg.get("readQueueNums", 1))
            topics[name] = _int(n, f"{name}.writeQueueNums", 1, MAX_QUEUES)
        return topics

    def _rebuild(self) -> dict[str, int] | None:
        """No usable file nor backup: start empty if ``consumequeue/`` has topics (the
        store adopts them from there right after), else None (refuse)."""
        root = os.path.join(os.path.dirname(os.path.dirname(self._file.path)), "consumequeue")
        try:
            found = any(os.path.isdir(os.path.join(root, t)) for t in os.listdir(root))
        except OSError:
            found = False
        return {} if found else None

    def reload(self) -> None:
        """(Re)read the file if it changed."""
        got = self._file.read(self._parse, self._rebuild)
        if got is not None:
            self.topics = got[0]

    def changed(self) -> bool:
        return self._file.changed()

    def add(self, name: str, queues: int) -> None:
        """Record a new topic and persist the table (nothing changes if that fails)."""
        with self._file.lock:
            self.topics[name] = queues
            try:
                self._persist()
            except BaseException:
                del self.topics[name]
                raise

    def adopt(self, found: dict[str, int]) -> None:
        """Add topics found on disk (ConsumeQueue directories) but missing from the file."""
        new = {t: n for t, n in found.items() if self.topics.get(t, 0) < n}
        if new:
            with self._file.lock:
                self.topics.update(new)
                if not self._file.read_only:
                    self._persist()

    def _persist(self) -> None:
        table = {
            name: {"topicName": name, "readQueueNums": n, "writeQueueNums": n,
                   "perm": PERM_READ_WRITE, "topicFilterType": "SINGLE_TAG", "topicSysFlag": 0,
                   "order": False, "attributes": {}}
            for name, n in sorted(self.topics.items())
        }
        self._file.write({"topicConfigTable": table})


class ConsumerOffsetManager:
    """Committed offsets per (group, topic, queue). Thread-safety: internal lock."""

    def __init__(self, path: str, *, read_only: bool = False, log: RecoveryLog | None = None):
        self._file = _JsonFile(path, read_only, log)
        self.table: dict[str, dict[int, int]] = {}
        self.reload()
        if self._file.repaired and not read_only:
            with self._file.lock:
                self._persist()

    @staticmethod
    def _parse(doc: dict) -> dict[str, dict[int, int]]:
        table = _dict(doc.get("offsetTable", {}), "offsetTable")
        out: dict[str, dict[int, int]] = {}
        for key, queues in table.items():
            if "@" not in key:
                raise MetadataError(f"offsetTable key {key!r} is not topic@group")
            queues = _dict(queues, f"offsetTable[{key!r}]")
            row = out[key] = {}
            for q, o in queues.items():
                if not q.isdigit():
                    raise MetadataError(f"offsetTable[{key!r}]: queue id {q!r} is not a number")
                row[int(q)] = _int(o, f"offsetTable[{key!r}][{q}]", 0)
        return out

    def reload(self) -> None:
        got = self._file.read(self._parse)
        if got is not None:
            self.table = got[0]

    def _persist(self) -> None:
        self._file.write({"offsetTable": {k: {str(q): o for q, o in sorted(v.items())}
                                          for k, v in sorted(self.table.items())}})

    @staticmethod
    def _key(group: str, topic: str) -> str:
        return f"{topic}@{group}"

    def commit(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        """Remember ``offset`` and persist the table (atomically) before returning."""
        with self._file.lock:
            row = self.table.setdefault(self._key(group, topic), {})
            old = row.get(queue_id)
            row[queue_id] = offset
            try:
                self._persist()
            except BaseException:  # not persisted: the old value stays the committed one
                if old is None:
                    del row[queue_id]
                else:
                    row[queue_id] = old
                raise

    def get(self, group: str, topic: str, queue_id: int) -> int | None:
        if self._file.read_only and self._file.changed():
            self.reload()
        return self.table.get(self._key(group, topic), {}).get(queue_id)

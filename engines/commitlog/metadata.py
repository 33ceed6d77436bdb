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
import zlib
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
    def __init__(self, path: str, read_only: bool, log: RecoveryLog | None = None,
                 backup_current: bool = False):
        self.path = path
        self.backup = path + ".bak"
        #: the backup is a copy of the version just written, not a link to the one before
        #: (topics.json: the journal entries a fold takes in are gone after it, so the
        #: version before would miss every topic of the last fold)
        self.backup_current = backup_current
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
            if self._mtime != -1 or not os.path.exists(self.backup):
                return None
            # the file is always there once written (the backup is a link to the version
            # before): missing beside its backup, it was lost
            value, doc = self._repair(parse, rebuild, MetadataError("the file is missing"))
            self._mtime = -2
            return (value,)
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
            if self._valid and os.path.isfile(self.path) and not self.backup_current:
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
            if self.backup_current:  # after the file itself: a crash between keeps the old
                write_json_atomic(self.backup, doc)
        self.counter += 1
        self._valid = True
        self.repaired = False
        self._mtime = os.stat(self.path).st_mtime_ns


#: the topic journal beside ``topics.json`` (see :class:`TopicJournal`)
JOURNAL_SUFFIX = ".journal"
#: the journal is folded into ``topics.json`` once it holds more entries than this and than
#: the topics the file held after the last fold (a rewrite costs O(topics) and comes after
#: as many entries: creation stays O(1) amortised, the journal no longer than the table)
COMPACT_ENTRIES = 1024


class TopicJournal:
    """An append-only log of topic-table changes beside ``topics.json`` (mqstore's own file:
    RocketMQ rewrites ``topics.json`` whole on every change, which makes creating T topics
    O(T^2)). ``config/topics.json.journal`` holds one entry per ``create_topic`` /
    ``create_topics`` call, one line each::

        <CRC-32 of the JSON, 8 hex digits> <compact JSON {"topics": {"<name>": n, ...}}>\n

    An entry is written with one ``write`` and synced before the call returns; applying an
    entry sets those topics' queue counts, so replaying one twice changes nothing. The
    journal is folded into ``topics.json`` (atomic rename, ``.bak`` kept) at open, at close
    and whenever it has grown past :data:`COMPACT_ENTRIES` entries and the topic count, then
    truncated; a crash between the two replays entries already folded in, which is harmless.
    (Folding when the journal has more entries than ``topics.json`` had topics doubles the
    table between rewrites: O(1) amortised per topic.)

    Damage: a last line that is incomplete or fails its check is an entry whose call never
    returned (a torn write, or written but not synced before a power loss): the writer cuts
    it off, logged as ``metadata_repaired``. A bad line with good ones after it loses that
    entry's topics (each queue that has messages is found again in ``consumequeue/``): it is
    skipped and logged the same way. A read-only follower never cuts anything."""

    def __init__(self, path: str, read_only: bool, log: RecoveryLog | None = None):
        self.path = path
        self.read_only = read_only
        self.log = log
        self.entries = 0
        self.size = 0
        self._fd = -1
        self._stat: tuple | None = None

    def _record(self, position: int, detail: str) -> None:
        if self.log is not None:
            self.log.record(METADATA_REPAIRED, self.path, position, detail)
        else:
            logger.warning("recovery: %s: %s", self.path, detail)

    @staticmethod
    def encode(topics: dict[str, int]) -> bytes:
        payload = json.dumps({"topics": topics}, separators=(",", ":"),
                             sort_keys=True).encode("ascii")
        return b"%08x %s\n" % (zlib.crc32(payload), payload)

    @staticmethod
    def _decode(line: bytes) -> dict[str, int]:
        if len(line) < 10 or line[8:9] != b" ":
            raise MetadataError("not '<crc> <json>'")
        payload = line[9:]
        try:
            crc = int(line[:8], 16)
        except ValueError:
            raise MetadataError("no CRC") from None
        if zlib.crc32(payload) != crc:
            raise MetadataError("CRC mismatch")
        try:
            doc = json.loads(payload.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise MetadataError(f"not JSON ({exc})") from None
        table = _dict(_dict(doc, "an entry").get("topics"), "an entry's topics")
        for name, n in table.items():
            if not TOPIC_NAME_RE.fullmatch(name):
                raise MetadataError(f"topic name {name!r} is not valid")
            _int(n, f"{name} queues", 1, MAX_QUEUES)
        return table

    def changed(self) -> bool:
        return self._stat != self._stat_now()

    def _stat_now(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def read(self) -> dict[str, int]:
        """The topics the journal sets (later entries win), after cutting a torn tail."""
        self._stat = self._stat_now()
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            self.entries = self.size = 0
            return {}
        tables, skipped, torn = self.scan(raw)
        out: dict[str, int] = {}
        for table in tables:
            out.update(table)
        if not self.read_only:
            for pos, why in skipped:
                self._record(pos, f"damaged entry ({why}) with good entries after it: "
                             "skipped (its topics come back from consumequeue/ when they "
                             "have messages)")
        good_end = len(raw)
        if torn is not None:
            good_end, why = torn
            if not self.read_only:
                self._record(good_end, f"torn last entry ({why}): a topic change that was "
                             f"not acknowledged; {len(raw) - good_end} bytes cut")
                self._truncate(good_end)
                raw = raw[:good_end]
        self.entries = len(tables)
        self.size = len(raw) if not self.read_only else good_end
        return out

    @classmethod
    def scan(cls, raw: bytes) -> tuple[list[dict[str, int]], list[tuple[int, str]],
                                       tuple[int, str] | None]:
        """The journal's bytes, entry by entry (no side effects; the open and ``verify``
        both use it): the good entries' tables in order, the damaged entries that have good
        ones after them as (position, why), and the torn tail as (position, why) or None
        (a bad or incomplete entry with no good one after it)."""
        tables: list[dict[str, int]] = []
        skipped: list[tuple[int, str]] = []
        lines = raw.split(b"\n")
        pos = 0
        for i, line in enumerate(lines):
            last = i == len(lines) - 1
            if last and not line:
                break  # the file ends with a complete entry
            try:
                if last:
                    raise MetadataError("incomplete entry")
                tables.append(cls._decode(line))
            except MetadataError as exc:
                if not any(cls._valid(ln) for ln in lines[i + 1:] if ln):
                    return tables, skipped, (pos, str(exc))
                skipped.append((pos, str(exc)))
            pos += len(line) + 1
        return tables, skipped, None

    @classmethod
    def _valid(cls, line: bytes) -> bool:
        try:
            cls._decode(line)
            return True
        except MetadataError:
            return False

    def _truncate(self, size: int) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        self._stat = self._stat_now()

    def append(self, topics: dict[str, int]) -> None:
        """Write and sync one entry (StoreFullError on a full disk, nothing left behind)."""
        line = self.encode(topics)
        with translate_full(f"writing {self.path}"):
            if self._fd < 0:
                created = not os.path.exists(self.path)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
                if created:
                    fsync_dir(os.path.dirname(os.path.abspath(self.path)))
            try:
                view = memoryview(line)
                at = self.size
                while view:
                    n = os.pwrite(self._fd, view, at)
                    view, at = view[n:], at + n
                os.fdatasync(self._fd)
            except BaseException:
                try:
                    os.ftruncate(self._fd, self.size)
                except OSError:
                    pass
                raise
        self.size += len(line)
        self.entries += 1
        self._stat = self._stat_now()

    def clear(self) -> None:
        """Empty the journal (its entries are durable in ``topics.json`` now)."""
        if self.size == 0 and not os.path.exists(self.path):
            return
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            os.fdatasync(self._fd)
            self._stat = self._stat_now()
        elif os.path.exists(self.path):
            self._truncate(0)
        self.size = self.entries = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class TopicConfigManager:
    """Topics and their queue counts: ``topics.json`` plus its journal (:class:`TopicJournal`;
    a topic change is one journal entry, ``topics.json`` is rewritten only when the journal
    is folded in). Thread-safety: writes under an internal lock."""

    def __init__(self, path: str, *, read_only: bool = False, log: RecoveryLog | None = None):
        self._file = _JsonFile(path, read_only, log, backup_current=True)
        self.journal = TopicJournal(path + JOURNAL_SUFFIX, read_only, log)
        self._from_file: dict[str, int] = {}
        self.topics: dict[str, int] = {}
        self._loaded = False
        self.reload()
        if not read_only:
            with self._file.lock:
                if self._file.repaired:
                    self._persist()
                elif self.journal.size or not os.path.exists(path):
                    self._fold()

    def _fold(self) -> None:
        """:meth:`_persist` when it is only a compaction: on a full disk the journal keeps
        the entries (the store still opens and closes while the disk is full)."""
        try:
            self._persist()
        except errors.StoreFullError:
            logger.warning("%s: not folded into topics.json (the disk is full)",
                           self.journal.path)

    @staticmethod
    def _parse(doc: dict) -> dict[str, int]:
        table = _dict(doc.get("topicConfigTable", {}), "topicConfigTable")
        topics = {}
        match = TOPIC_NAME_RE.fullmatch
        for name, cfg in table.items():  # (100,000 topics: the checks inline, fast path)
            if not match(name):
                raise MetadataError(f"topic name {name!r} is not valid")
            if type(cfg) is not dict:
                _dict(cfg, f"topicConfigTable[{name!r}]")
            n = cfg["writeQueueNums"] if "writeQueueNums" in cfg else cfg.get("readQueueNums", 1)
            if type(n) is not int or not 1 <= n <= MAX_QUEUES:
                _int(n, f"{name}.writeQueueNums", 1, MAX_QUEUES)
            topics[name] = n
        return topics

    def _rebuild(self) -> dict[str, int] | None:
        """No usable file nor backup: start empty if ``consumequeue/`` has topics (the
        store adopts them from there right after) or the journal has entries, else None
        (refuse)."""
        root = os.path.join(os.path.dirname(os.path.dirname(self._file.path)), "consumequeue")
        try:
            found = any(os.path.isdir(os.path.join(root, t)) for t in os.listdir(root))
        except OSError:
            found = False
        return {} if found or self.journal.size else None

    def reload(self) -> None:
        """(Re)read the file and the journal if they changed. The journal is read first: a
        follower that reads while the writer folds it in (``topics.json`` renamed, then the
        journal emptied) sees every topic in one of the two."""
        if not self._loaded or self.journal.changed() or self._file.changed():
            self._loaded = True
            from_journal = self.journal.read()
            got = self._file.read(self._parse, self._rebuild)
            if got is not None:
                self._from_file = got[0]
            self.topics = {**self._from_file, **from_journal}

    def changed(self) -> bool:
        return self._file.changed() or self.journal.changed()

    def add(self, name: str, queues: int) -> None:
        """Record a new topic durably (nothing changes if that fails)."""
        self.add_many({name: queues})

    def add_many(self, new: dict[str, int]) -> None:
        """Record new topics with one journal entry: all of them or, if the write fails,
        none (a torn entry is cut at the next open)."""
        with self._file.lock:
            self.journal.append(new)
            self.topics.update(new)
            if self.journal.entries > max(COMPACT_ENTRIES, len(self._from_file)):
                self._fold()  # (the entries are durable in the journal already)

    def adopt(self, found: dict[str, int]) -> None:
        """Add topics found on disk (ConsumeQueue directories) but missing from the file."""
        new = {t: n for t, n in found.items() if self.topics.get(t, 0) < n}
        if new:
            with self._file.lock:
                self.topics.update(new)
                if not self._file.read_only:
                    self._persist()

    def compact(self) -> None:
        """Fold the journal into ``topics.json`` (close: the next open reads one file)."""
        if self._file.read_only:
            return
        with self._file.lock:
            if self.journal.size:
                self._fold()
            self.journal.close()

    def _persist(self) -> None:
        """Write the whole table to ``topics.json`` (atomic, ``.bak`` kept), then empty the
        journal, whose entries it now holds."""
        table = {
            name: {"topicName": name, "readQueueNums": n, "writeQueueNums": n,
                   "perm": PERM_READ_WRITE, "topicFilterType": "SINGLE_TAG", "topicSysFlag": 0,
                   "order": False, "attributes": {}}
            for name, n in sorted(self.topics.items())
        }
        self._file.write({"topicConfigTable": table})
        self._from_file = dict(self.topics)
        self.journal.clear()


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

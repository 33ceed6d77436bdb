"""The damage model both engines share: what recovery does with bad bytes, how it says so,
and what a full disk turns into.

Three kinds of damage (LevelDB's ``log_reader`` separates them the same way):

- a **torn tail**: anything after the last sync point (a crash cut a write short, or the
  page cache never wrote it). Recovery truncates it silently but for one WARNING, as Kafka's
  ``LogLoader`` and RocketMQ's ``recoverAbnormally`` do. It is never an error.
- **corruption**: damage *below* the last sync point, which a crash cannot cause (media
  errors, a stray write, a bit flip). ``on_corruption`` decides:

  - ``"raise"`` (default): the open fails with :class:`~mqstore.errors.CorruptRecordError`
    naming the file, the position and how many records follow the damage;
  - ``"truncate"``: cut the log at the damage (what Kafka and RocketMQ would do);
  - ``"skip"``: drop only the damaged records and keep every intact one after them (LevelDB's
    reader). Their offsets then read as gaps (see docs/recovery.md).
- **derived damage**: an index, ConsumeQueue, IndexFile or checkpoint is short, missing,
  garbled or inconsistent with the log. These are hints rebuilt from the log; they are never
  a reason to refuse an open.

Every recovery action goes through :meth:`RecoveryLog.record`: one WARNING on the ``mqstore``
logger with the file and position, and a counter that ``stats()`` reports. Never on the hot
path.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mqstore.errors import CorruptRecordError, StoreFullError

logger = logging.getLogger("mqstore")

#: error numbers that mean "the disk (or the quota) is full"
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

#: the kinds of recovery action, as counted in ``stats()["recovery"]``
TORN_TAIL = "torn_tail_truncated"
CORRUPTION_TRUNCATED = "corruption_truncated"
CORRUPTION_SKIPPED = "corruption_skipped"
DERIVED_REBUILT = "derived_rebuilt"
METADATA_REPAIRED = "metadata_repaired"


@dataclass(frozen=True, slots=True)
class RecoveryAction:
    """One thing recovery did: what, to which file, where, and what it cost."""

    kind: str
    path: str
    position: int
    detail: str
    bytes_dropped: int = 0
    records_dropped: int = 0

    def __str__(self) -> str:
        cost = ""
        if self.bytes_dropped or self.records_dropped:
            cost = f" ({self.records_dropped} records, {self.bytes_dropped} bytes dropped)"
        return f"{self.kind}: {self.path}@{self.position}: {self.detail}{cost}"


class RecoveryLog:
    """The recovery actions of one store since it opened. Thread-safe.

    ``stats()`` of both engines reports :meth:`counts` under ``"recovery"``, and the actions
    themselves are kept in :attr:`actions` (bounded) for tools and tests.
    """

    MAX_KEPT = 1000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self.actions: list[RecoveryAction] = []

    def record(self, kind: str, path: str, position: int, detail: str, *,
               bytes_dropped: int = 0, records_dropped: int = 0) -> RecoveryAction:
        """Log one action at WARNING and count it."""
        action = RecoveryAction(kind, str(path), int(position), detail, int(bytes_dropped),
                                int(records_dropped))
        logger.warning("recovery: %s", action)
        with self._lock:
            self._counts[kind] += 1
            if len(self.actions) < self.MAX_KEPT:
                self.actions.append(action)
        return action

    def counts(self) -> dict[str, int]:
        """Actions by kind (every kind present, zero when none happened)."""
        with self._lock:
            return {k: self._counts.get(k, 0) for k in (
                TORN_TAIL, CORRUPTION_TRUNCATED, CORRUPTION_SKIPPED, DERIVED_REBUILT,
                METADATA_REPAIRED)}


def refuse_corruption(policy: str, path: str, position: int, detail: str,
                      records_after: int | None = None) -> None:
    """Raise the default refusal for damage below the sync point, unless ``policy`` (the
    store's ``on_corruption``) says to truncate or skip; then return and let the caller do
    it (and :meth:`RecoveryLog.record` it)."""
    if policy in ("truncate", "skip"):
        return
    after = "" if records_after is None else f"; {records_after} records follow it"
    raise CorruptRecordError(
        f"{detail}: damage below the last sync point (not a torn tail){after}. The store "
        "was not changed. Open with on_corruption='skip' to keep every intact record, "
        "'truncate' to cut the log here, or run 'mqstore repair'", path, position)


def is_full(exc: BaseException) -> bool:
    """True for an OSError that means the disk or the quota is full."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def full_error(exc: OSError, what: str) -> StoreFullError:
    """The typed error for a full disk, keeping the original errno."""
    err = StoreFullError(exc.errno, f"{what}: {os.strerror(exc.errno or errno.ENOSPC)} "
                         "(free space, then retry; nothing of this call was kept)")
    err.filename = getattr(exc, "filename", None)
    return err


@contextmanager
def translate_full(what: str) -> Iterator[None]:
    """Turn ENOSPC / EDQUOT raised inside the block into :class:`StoreFullError`."""
    try:
        yield
    except StoreFullError:
        raise
    except OSError as exc:
        if exc.errno in FULL_ERRNOS:
            raise full_error(exc, what) from exc
        raise


def preallocate(fd: int, offset: int, length: int, what: str) -> None:
    """Reserve ``length`` bytes at ``offset`` so that writing through a memory map there can
    never SIGBUS on a full disk. Raises :class:`StoreFullError` when there is no room.

    ``posix_fallocate`` allocates blocks without writing them (glibc emulates it where the
    file system lacks ``fallocate``)."""
    if length <= 0:
        return
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as exc:
        if exc.errno in FULL_ERRNOS:
            raise full_error(exc, what) from exc
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        # no fallocate at all: make sure the space exists before mapping it
        st = os.fstatvfs(fd)
        if st.f_bavail * st.f_frsize < length:
            raise full_error(OSError(errno.ENOSPC, "no space"), what) from exc

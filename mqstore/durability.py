"""Flush machinery both engines share: group commit and the periodic flusher.

:class:`GroupCommit` implements ``flush="sync"``. Appenders number their writes with
:meth:`GroupCommit.written` (called while the engine still holds its append lock, after the
bytes are in the file) and then wait in :meth:`GroupCommit.wait_durable`. The first waiter
becomes the leader: it notes the highest written number, runs the engine's ``sync`` once, and
wakes everyone whose number it covered. Concurrent appenders therefore share one fsync, as in
RocketMQ's GroupCommitService and a database's group commit.

:class:`PeriodicFlusher` implements ``flush="async"``: a daemon thread that calls the
engine's ``sync`` every ``interval_ms`` while there is something new, like RocketMQ's
FlushRealTimeService or Kafka's ``flush.ms``.
"""
from __future__ import annotations

import threading
from collections.abc import Callable


class GroupCommit:
    """Share fsyncs between concurrent appenders. Thread-safe."""

    def __init__(self, sync: Callable[[], None]):
        self._sync = sync
        self._cond = threading.Condition()
        self._written = 0  # highest write number handed out
        self._durable = 0  # highest write number known durable
        self._leader = False
        self._error: BaseException | None = None
        self._failed_upto = 0  # writes numbered <= this share the last sync failure
        self.group_syncs = 0

    def written(self) -> int:
        """Number a write whose bytes are in the file; call it under the append lock."""
        with self._cond:
            self._written += 1
            return self._written

    def wait_durable(self, ticket: int) -> None:
        """Return once write ``ticket`` is on disk (one caller syncs for the whole group).

        A failed sync raises its error in every waiter whose write it was meant to cover; a
        later write starts a new sync (so a store can take appends again once, say, space
        is freed on a full disk)."""
        with self._cond:
            while self._durable < ticket:
                if self._error is not None and ticket <= self._failed_upto:
                    raise self._error
                if self._leader:
                    self._cond.wait()
                    continue
                self._leader = True
                target = self._written
                self._cond.release()
                try:
                    self._sync()
                except BaseException as exc:  # the group shares the failure
                    self._cond.acquire()
                    self._leader = False
                    self._error = exc
                    self._failed_upto = target
                    self._cond.notify_all()
                    raise
                self._cond.acquire()
                self._leader = False
                self.group_syncs += 1
                if target > self._durable:
                    self._durable = target
                self._cond.notify_all()

    def position(self) -> int:
        """The highest write number handed out so far. An explicit flush takes it *before*
        it syncs and passes it to :meth:`mark_durable` afterwards: writes numbered later may
        not be covered by that sync."""
        with self._cond:
            return self._written

    def mark_durable(self, upto: int) -> None:
        """Record that a sync which started after write ``upto`` was numbered has finished,
        so every write numbered ``<= upto`` is durable (and nothing numbered later)."""
        with self._cond:
            if upto > self._durable:
                self._durable = upto
            self._cond.notify_all()


class PeriodicFlusher:
    """A daemon thread calling ``sync`` every ``interval_ms`` while ``dirty()`` is true."""

    def __init__(self, sync: Callable[[], None], interval_ms: int, dirty: Callable[[], bool],
                 name: str = "mqstore-flusher"):
        self._sync = sync
        self._dirty = dirty
        self._interval = interval_ms / 1000.0
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if self._dirty():
                    self._sync()
            except BaseException as exc:  # keep it for the owner; stop flushing
                self.error = exc
                return

    def stop(self) -> None:
        """Stop the thread and wait for it (idempotent)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

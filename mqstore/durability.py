"""Flush machinery both engines share: group commit and the periodic flusher.

:class:`GroupCommit` implements ``flush="sync"``: appenders number their writes with
:meth:`GroupCommit.written` and wait in :meth:`GroupCommit.wait_durable`; one of them runs the
engine's ``sync`` for everyone whose write came before it started (RocketMQ's
GroupCommitService, a database's group commit). See the class for the hand-offs.

:class:`PeriodicFlusher` implements ``flush="async"``: a daemon thread that calls the
engine's ``sync`` every ``interval_ms`` while there is something new, like RocketMQ's
FlushRealTimeService or Kafka's ``flush.ms``.

:class:`FilesystemSync` makes many files of one filesystem durable with one ``syncfs(2)``
(Linux), for a group sync that covers several partitions' files.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import itertools
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable


class _Group:
    """The waiters of one sync, asleep on one ``eventfd`` (semaphore mode): its runner
    wakes them all with one ``write`` (one syscall, while the GIL is held), where a lock per
    waiter cost one wake-up syscall each (7-9 us apiece on the measured VM, so 50-70 us a
    group during which no woken waiter can take the GIL). Each woken waiter consumes one
    count, so the counter is back at zero once every waiter it was written for has woken.

    Wake-ups are counts, not addressed to a thread: each registered waiter takes exactly
    one, and one is written for each, so nobody is left asleep even if a waiter takes a
    count written for another (that one is then woken by the count written for the
    first; the early riser finds its write not yet durable, looks again under the lock
    and sleeps again). A group object is reused only once every count written to it was
    taken (:attr:`drained`), so that this stays rare: a slow waiter's pending count is not
    met by the waiters of a later sync. Accounting, under the
    :class:`GroupCommit` lock: :attr:`sleepers` is the waiters registered and not yet woken
    (``len()``); :attr:`written` the counts written since the group was last reused; the
    waiters append to :attr:`woken` after they consumed one (``list.append`` is atomic, so
    they need no lock for it)."""

    __slots__ = ("fd", "sleepers", "written", "woken", "released")

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_SEMAPHORE | os.EFD_CLOEXEC)
        self.sleepers = 0
        self.written = 0
        self.woken: list[None] = []
        self.released = False  # the whole group was woken; it takes no new sleepers

    def __len__(self) -> int:
        return self.sleepers

    def sleep(self) -> None:
        """Block until woken (releases the GIL); then count this wake-up as consumed."""
        os.eventfd_read(self.fd)
        self.woken.append(None)

    def claim(self, n: int) -> int:
        """Count ``n`` sleepers as woken (caller holds the GroupCommit lock); :meth:`post`
        then wakes them, after the lock is released."""
        self.sleepers -= n
        self.written += n
        return n

    def claim_all(self) -> int:
        """Count every sleeper as woken and take no new ones; returns how many to post."""
        self.released = True
        return self.claim(self.sleepers)

    def post(self, n: int) -> None:
        """Wake ``n`` sleepers claimed before (one syscall; no lock needed)."""
        os.eventfd_write(self.fd, n)

    def release_all(self) -> None:
        """:meth:`claim_all` and :meth:`post` (rare paths, under the GroupCommit lock)."""
        n = self.claim_all()
        if n:
            self.post(n)

    @property
    def drained(self) -> bool:
        return len(self.woken) == self.written

    def reset(self) -> None:
        self.sleepers = self.written = 0
        self.woken.clear()
        self.released = False

    def close(self) -> None:
        os.close(self.fd)


class _LockGroup(_Group):
    """:class:`_Group` where there is no ``eventfd`` (not Linux): a semaphore."""

    __slots__ = ("_sem",)

    def __init__(self) -> None:  # noqa: D107 - no fd
        self.fd = -1
        self._sem = threading.Semaphore(0)
        self.sleepers = 0
        self.written = 0
        self.woken = []
        self.released = False

    def sleep(self) -> None:
        self._sem.acquire()
        self.woken.append(None)

    def post(self, n: int) -> None:
        self._sem.release(n)

    def close(self) -> None:
        pass


_new_group = _Group if hasattr(os, "eventfd") else _LockGroup


class GroupCommit:
    """Share syncs between concurrent appenders. Thread-safe.

    Protocol: an appender writes its bytes, then (still under the engine's append lock, so
    numbers follow file order) takes a ticket with :meth:`written`, releases the append
    lock and calls :meth:`wait_durable`. A ticket is durable once a ``sync`` that *started*
    after the ticket was handed out has returned: a sync's target is the highest ticket
    handed out when it starts, and it covers exactly the tickets up to it.

    Hand-offs (what the design keeps cheap):

    - No lock is held across ``sync``: not this object's lock, and not the engine's append
      lock (the ticket is taken under it, the wait happens after it is released). The
      fsync inside (``os.fdatasync`` / ``os.fsync``) releases the GIL, so appenders keep
      writing while it runs.
    - The waiters of one sync sleep together on one ``eventfd`` (:class:`_Group`). A
      waiter whose ticket the running sync covers sleeps in that sync's group, a later one
      in the next group. When the sync returns, its runner publishes the new durable
      number (so the woken return without taking this object's lock again), wakes one
      thread of the next group, to run the next sync (the others stay asleep: they are in
      that sync's group), and then its whole group with one ``eventfd`` write. The next
      runner goes first so that it is gathering while the group's appenders, which queue
      for the GIL, number their next writes: a sync then covers 7.0-7.2 writes of 8
      appenders instead of 6.0 (the runner's own wake-up is otherwise behind theirs).
      The wake-ups are counted under this object's lock and written after the runner
      released it, so a woken appender coming straight back finds the lock free. Groups
      are recycled only once every count written to them was taken.
    - Before the next sync takes its target, its runner lets the appenders the previous
      sync just released number their next writes: it yields the GIL (``sched_yield``)
      while new tickets keep arriving, at most once per released appender, until all of
      them have (:meth:`_gather`). Without it two half groups alternate (each sync covers
      the writes made during the other) and 8 appenders cost 0.23 fsyncs per append
      instead of about 0.13. Counts, not timing: a
      caller that does not append again costs one yield. (Measured alternatives, worse
      here: the runner blocking until every released appender has numbered a write, with
      a timeout, 7.8 writes a sync but 2x the idle time between syncs; a dedicated sync
      thread without the gathering, 4 writes a sync.)

    Pipelining: one sync runs at a time, and the next one starts as soon as it returns (or
    its gathering ends), covering every write numbered meanwhile. A second sync is not
    started while one runs, although an ``fdatasync`` started while another runs on the
    same file does cover everything written before it started: on Linux a writeback error
    is reported once per open file description (``errseq_t``,
    ``file_check_and_advance_wb_err``), so of two concurrent ``fdatasync`` calls on one
    descriptor only the first to look sees it, and the other returns 0 for bytes that never
    reached the disk. The engines also serialise the syncs of a file (their flush locks),
    so a second sync would only queue; and measured on this ext4 with 8 appenders and a
    raw ``fdatasync``, allowing two syncs in flight gave the same appends per second as
    one (13.7k vs 13.4k) for 60% more fsyncs (the journal commits them in turn).

    Failures: a failed sync raises its error in every waiter whose ticket it was meant to
    cover (its group, and anyone numbered up to its target arriving later); later tickets
    start a new sync, so a store takes appends again once, say, a full disk has space.
    """

    def __init__(self, sync: Callable[[], None]):
        self._sync = sync
        self._lock = threading.Lock()
        self._next_ticket = itertools.count(1).__next__  # atomic: one C call under the GIL
        self._durable = 0  # every ticket <= this is durable (unless failed)
        self._syncing = False  # a sync runs (its runner holds no lock)
        self._target = 0  # what the running sync covers (_GATHERING before it is taken)
        self._groups: list[_Group] = []  # every group made (their eventfds close with self)
        self._draining: list[_Group] = []  # woken groups whose waiters may still be waking
        self._group = self._new_group()  # waiters the running sync covers
        self._next_group = self._new_group()  # waiters numbered past its target
        self._released = 0  # how many appenders the last sync released
        self._end_ticket = 0  # a number taken when it returned (see _gather)
        self._error: BaseException | None = None
        self._failed_upto = 0  # tickets <= this share the last sync failure
        self.group_syncs = 0
        weakref.finalize(self, _close_groups, self._groups)

    def written(self) -> int:
        """Number a write whose bytes are in the file; call it under the append lock."""
        return self._next_ticket()

    def position(self) -> int:
        """A number above every write numbered so far (no write gets it). An explicit flush
        takes it *before* it syncs and passes it to :meth:`mark_durable` afterwards: writes
        numbered later may not be covered by that sync."""
        return self._next_ticket()

    def mark_durable(self, upto: int) -> None:
        """Record that a sync which started after ``upto`` was taken (:meth:`position`) has
        finished, so every write numbered ``<= upto`` is durable (and nothing later)."""
        with self._lock:
            if upto <= self._durable:
                return
            self._durable = upto
            # rare (explicit flushes): wake the sleepers it may cover, they recheck
            if not self._syncing or upto >= self._target:
                self._wake_all("_group")
            self._wake_all("_next_group")

    def wait_durable(self, ticket: int) -> None:
        """Return once write ``ticket`` is on disk (one caller syncs for the whole group);
        raise the error of the failed sync that was to cover it."""
        if ticket <= self._durable and ticket > self._failed_upto:  # int reads: no lock
            return
        lock = self._lock
        lock.acquire()
        while True:
            try:
                if self._error is not None and ticket <= self._failed_upto:
                    raise self._error
                if ticket <= self._durable:
                    lock.release()
                    return
                syncing = self._syncing
            except BaseException:
                lock.release()
                raise
            if not syncing:
                self._run_sync()  # covers this ticket, or raises the error that did not
                return
            group = self._group if ticket <= self._target else self._next_group
            group.sleepers += 1
            lock.release()
            try:
                group.sleep()
            except BaseException:  # interrupted (KeyboardInterrupt): leave cleanly
                self._abandon(group)
                raise
            if ticket <= self._durable and ticket > self._failed_upto:
                return  # the usual wake-up: covered, no second look under the lock
            lock.acquire()

    def _run_sync(self) -> None:
        """Run one sync covering every ticket handed out when it starts, then wake exactly
        the waiters it covered and, if later tickets wait, one of them to run the next
        sync. Called with ``_lock`` held, which is released while the appenders are
        gathered and while the sync runs; returns (or raises the sync's error) with it
        released. The wake-ups are counted under the lock and written after it is
        released: a woken appender that appends again and comes back to
        :meth:`wait_durable` at once does not find the lock held by the runner (which
        would cost it a futex sleep and wake-up more)."""
        lock = self._lock
        self._syncing = True
        self._target = _GATHERING  # waiters arriving now are covered by this sync
        self._retire(self._group)
        self._group, self._next_group = self._next_group, self._fresh_group()
        if self._released > 1:
            lock.release()
            try:
                self._gather(self._released)
            except BaseException:  # interrupted: no sync ran, the waiters look again
                with lock:
                    self._syncing = False
                    self._wake_all("_group")
                    self._wake_all("_next_group")
                raise
            lock.acquire()
        self._target = target = self._next_ticket() - 1  # under the lock: see wait_durable
        lock.release()
        error: BaseException | None = None
        try:
            self._sync()
        except BaseException as exc:  # the group shares the failure
            error = exc
        lock.acquire()
        self._end_ticket = self._next_ticket()  # the released number theirs after this
        self._syncing = False
        group = self._group
        self._released = len(group) + 1  # and the runner
        nxt = self._next_group
        if error is None:
            self.group_syncs += 1
            if target > self._durable:
                self._durable = target  # before the wake-ups: they look without the lock
            # the next sync's runner first: it gathers while the group wakes (one wake-up;
            # the others stay asleep, in that sync's group)
            runner = nxt.claim(1) if nxt.sleepers else 0
            covered = group.claim_all()
            lock.release()
            _post((nxt, runner), (group, covered))
            return
        self._error = error
        if target > self._failed_upto:
            self._failed_upto = target
        covered = group.claim_all()
        later = nxt.claim_all()  # not covered: they look again and start a new sync
        self._retire(nxt)
        self._next_group = self._fresh_group()
        lock.release()
        _post((group, covered), (nxt, later))
        raise error

    def _wake_all(self, which: str) -> None:
        """Wake every sleeper of ``self._group`` or ``self._next_group`` (they recheck), and
        put a fresh group in its place (caller holds ``_lock``)."""
        group = getattr(self, which)
        if group.sleepers or group.written:
            group.release_all()
            self._retire(group)
            setattr(self, which, self._fresh_group())

    def _retire(self, group: _Group) -> None:
        """Keep a woken group until its waiters have all woken (then it is reused)."""
        if group.drained and not group.sleepers:
            group.reset()
        self._draining.append(group)

    def _fresh_group(self) -> _Group:
        """A group no waiter sleeps on and no wake-up is pending for (caller holds _lock)."""
        draining = self._draining
        for i, g in enumerate(draining):
            if not g.sleepers and g.drained:
                del draining[i]
                g.reset()
                return g
        return self._new_group()

    def _new_group(self) -> _Group:
        g = _new_group()
        self._groups.append(g)
        return g

    def _gather(self, released: int) -> None:
        """Let the appenders the last sync released number their next writes before this
        sync takes its target: yield the GIL while new tickets keep arriving, at most once
        per released appender, and stop as soon as as many tickets were numbered since
        that sync returned as it released appenders (counts, not timing: when nobody comes
        back it costs one yield; when all are back, none more). The count stop saves the
        last, empty yield: 50 us of the 110 us between the last write and the target in the
        commitlog engine, where the dispatcher thread also takes the GIL."""
        seen = self._next_ticket()
        back = self._end_ticket + released  # reached when every released one numbered a write
        looks = 1
        for _ in range(released):
            if seen - looks >= back:  # all back: nobody left to wait for
                return
            _yield()
            now = self._next_ticket()
            looks += 1
            if now == seen + 1:  # no ticket since the last look
                return
            seen = now

    def _abandon(self, group: _Group) -> None:
        """Forget a waiter interrupted while asleep on ``group``. Wake-ups are counts, not
        addressed to a thread: while more waiters are registered than counts were written
        for them (``sleepers``), the written ones (the next runner's among them) go to the
        others, and this one just unregisters; otherwise one of the written counts is its
        own, and it takes it (at once), so that the group's accounting stays exact."""
        with self._lock:
            if group.sleepers and not group.released:
                group.sleepers -= 1
                return
            group.sleep()


def _post(*wakes: tuple[_Group, int]) -> None:
    """Write the wake-ups counted for each group, in order; if one write is interrupted
    (KeyboardInterrupt), the others are still written: a claimed count that is never
    written would leave its waiter asleep for good."""
    done = 0
    try:
        for group, n in wakes:
            if n:
                group.post(n)
            done += 1
    finally:
        for group, n in wakes[done + 1:]:
            if n:
                group.post(n)


def _close_groups(groups: list[_Group]) -> None:
    for g in groups:
        g.close()


_GATHERING = sys.maxsize  # _target while a sync gathers: every ticket so far is covered
_yield = getattr(os, "sched_yield", lambda: time.sleep(0))  # releases the GIL


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


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs``, where it reports writeback errors: Linux 5.8 and later (before,
    it returned 0 whatever failed, so it cannot stand in for fsync)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return None
    if (major, minor) < (5, 8):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    fn = ctypes.CDLL(name, use_errno=True).syncfs  # a CDLL call releases the GIL
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_syncfs = _load_syncfs()


class FilesystemSync:
    """One ``syncfs(2)`` on the filesystem holding ``root``: every file there that has dirty
    pages or metadata is written and the journal committed, in about the time of one
    fsync (measured here: 8 partition files, each with an append, in 250-400 us by one
    syncfs, 500-1000 us by 8 fdatasyncs in parallel threads, 1.2-2.4 ms one after another).

    Errors: ``syncfs`` reports a writeback error recorded on the filesystem since *this*
    descriptor last looked (``sb->s_wb_err``, Linux >= 5.8), so the descriptor is opened
    once and kept, and :meth:`ready` is False the first time: the caller syncs file by file
    that once, which covers every write made before the descriptor existed; every error
    after it is reported by the next ``syncfs`` (also for files of other programs: a
    spurious failure, never a missed one). ``available`` is False where there is no
    ``syncfs`` that reports errors; then callers always sync file by file.

    Cost: ``syncfs`` also writes back every other program's dirty data on that
    filesystem, so on a busy shared filesystem a sync can take longer than the fsyncs it
    replaces; it pays off when the store has a filesystem of its own, as a log broker's
    data directory usually does.

    Thread-safety: calls may run concurrently (the kernel serialises what it must); the
    descriptor is closed when this object is collected or by :meth:`close`.
    """

    available = _syncfs is not None

    def __init__(self, root: str):
        self.root = root
        self._fd = -1
        self._dev = -1
        self._same_fs: dict[str, bool] = {}
        self._finalizer: weakref.finalize | None = None

    def ready(self) -> bool:
        """Open the descriptor if needed; True if a :meth:`sync` now covers every write."""
        if not self.available:
            return False
        if self._fd >= 0:
            return True
        fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        self._dev = os.fstat(fd).st_dev
        self._fd = fd
        self._finalizer = weakref.finalize(self, os.close, fd)
        return False

    def covers(self, directory: str) -> bool:
        """True if ``directory`` is on this filesystem (remembered per directory)."""
        same = self._same_fs.get(directory)
        if same is None:
            same = self._same_fs[directory] = os.stat(directory).st_dev == self._dev
        return same

    def sync(self) -> None:
        """``syncfs``; raises OSError (ENOSPC, EIO, ...) for a failed writeback."""
        assert _syncfs is not None and self._fd >= 0
        if _syncfs(self._fd) != 0:
            err = ctypes.get_errno() or errno.EIO
            raise OSError(err, f"syncfs of {self.root}: {os.strerror(err)}")

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
            self._fd = -1

"""Dispatcher: builds the ConsumeQueues and the IndexFile from the CommitLog
(RocketMQ's ReputMessageService and its CommitLogDispatchers).

It reads the CommitLog from ``reput_from_offset`` up to the confirm offset (the flushed offset
under ``flush="sync"``, the written offset otherwise, as RocketMQ's ``getConfirmOffset``),
parses each message (header, topic and properties; the body is skipped and not CRC-checked,
as in RocketMQ) and writes its ConsumeQueue unit and index keys. Both writes are idempotent,
so recovery may re-dispatch a range that was already dispatched.

A pass works on columns, not messages (``_dispatch_rows``): one ``native.dispatch_fields``
call walks the range (per message: size, queue id and offset, physical offset, store time,
where the topic and the TAGS / KEYS / UNIQ_KEY values are); topics and tags are decoded once
per distinct value (tag hashes: Java ``String.hashCode``); each (topic, queue)'s units are
written as one 20-byte-unit block per ConsumeQueue file (``ConsumeQueue.put_array``); the
IndexFile keys ``topic#key`` are hashed in C (``native.index_key_hashes``; a key with a
space or non-ASCII text goes through the decoded strings) and put with one
``native.index_put_keys`` call (``IndexService.put_hashes``). The units and slots are those
the per-message dispatch (``_dispatch_one``) writes, byte for byte
(tests/faults/test_commitlog_batch_writes.py).

``mode="async"`` runs a background thread woken by appends, which lets them accumulate for
up to 1 ms before each pass (RocketMQ's reput sleeps 1 ms between passes) unless a reader is
waiting;
``mode="sync"`` dispatches inline in the appending thread. Either way :meth:`wait_until`
gives read-your-writes: a read past the dispatched position waits for the dispatcher.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from mqstore import errors, native

from . import format as fmt
from . import message as msgcodec
from .commitlog import CommitLog
from .consume_queue import ConsumeQueue, put_runs
from .index_file import IndexService

_HEADER = fmt.MSG_HEADER
_SKIPPED_TOPIC = fmt.SKIPPED_TOPIC


def _tag_text(raw: bytes) -> str:
    """A TAGS property value as text (what message.dispatch_fields returns for it)."""
    tag = raw.decode("utf-8", "replace")
    return msgcodec.unescape_value(tag).decode("utf-8") if tag.startswith(fmt.ESCAPE) else tag


def _distinct_spans(u8: np.ndarray, pos: np.ndarray, lens: np.ndarray
                    ) -> tuple[np.ndarray, list[bytes]]:
    """The distinct byte strings among spans ``u8[pos[i]:pos[i] + lens[i]]`` (``pos < 0``:
    absent) and, per span, the index of its string (-1 when absent): one numpy comparison
    per distinct length, no per-span Python."""
    n = len(pos)
    ids = np.full(n, -1, dtype=np.int64)
    found: list[bytes] = []
    present = pos >= 0
    if not present.any():
        return ids, found
    pidx = np.flatnonzero(present)
    plens = lens[pidx]
    for length in np.unique(plens).tolist():
        idx = pidx[plens == length]
        if length == 0:
            ids[idx] = len(found)
            found.append(b"")
            continue
        mat = u8[pos[idx][:, None] + np.arange(length)]
        if not (mat != mat[0]).any():
            ids[idx] = len(found)
            found.append(mat[0].tobytes())
            continue
        uniq, inverse = np.unique(mat, axis=0, return_inverse=True)
        ids[idx] = len(found) + inverse.ravel()
        found.extend(row.tobytes() for row in uniq)
    return ids, found


#: how long the background dispatcher lets appends accumulate before a pass
COALESCE_S = 0.001


class Dispatcher:
    """The reput service. Thread-safety: :meth:`dispatch` is serialised by an internal lock,
    so inline dispatch from several appenders, the background thread and recovery may all
    call it; :meth:`wait_until` may be called from any thread."""

    def __init__(self, commitlog: CommitLog, consume_queue: Callable[[str, int], ConsumeQueue],
                 index: IndexService | None, confirm_offset: Callable[[], int], *,
                 mode: str = "async", queues: dict | None = None):
        self.commitlog = commitlog
        self.consume_queue = consume_queue
        self.queues = queues if queues is not None else {}
        self.index = index
        self.confirm_offset = confirm_offset
        self.mode = mode
        self.reput_from_offset = 0
        self.last_dispatched_timestamp = 0
        self.dispatched_messages = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._progress = threading.Condition()
        self._waiters = 0
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._tag_hashes: dict[str, int] = {}
        #: set by recovery while it re-dispatches: units already present are compared with
        #: the messages and rewritten when wrong (ConsumeQueue.verify_put)
        self.verify_units = False
        #: set by recovery while it re-dispatches: called with the offset of a bad message
        #: below the end of the log; returns where to go on (or raises CorruptRecordError)
        self.on_damage: Callable[[int], int] | None = None

    # ----- the background service -----
    def start(self) -> None:
        """Start the background thread (``mode="async"`` only)."""
        if self.mode == "async" and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mqstore-reput", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(0.01)
            if not self._urgent.is_set() and not self._stop:
                # coalesce: let appends accumulate for up to 1 ms (RocketMQ's reput sleeps
                # 1 ms between passes), unless a reader is waiting
                self._urgent.wait(COALESCE_S)
            self._wake.clear()
            self._urgent.clear()
            try:
                self.dispatch()
            except BaseException as exc:  # keep it: reads and appends report it
                self.error = exc
                with self._progress:
                    self._progress.notify_all()
                return

    def wakeup(self) -> None:
        """Tell the background thread there is something new (or dispatch inline)."""
        if self.mode == "sync":
            self.dispatch()
        elif not self._wake.is_set():
            self._wake.set()

    def stop(self) -> None:
        """Stop the thread after it dispatched everything confirmed so far."""
        self._stop = True
        self._wake.set()
        self._urgent.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.error is None:
            self.dispatch()

    def halt(self) -> None:
        """Stop the thread without a final pass (used when the store is abandoned)."""
        self._stop = True
        self._urgent.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def check(self) -> None:
        """Raise the error that stopped the dispatcher, if any."""
        if self.error is not None:
            raise errors.CorruptRecordError(f"the dispatcher stopped: {self.error!r}") \
                from self.error

    @property
    def lag(self) -> int:
        """CommitLog bytes written but not yet dispatched (RocketMQ ``dispatchBehindBytes``)."""
        return max(0, self.commitlog.max_offset - self.reput_from_offset)

    def wait_until(self, offset: int, timeout: float = 30.0) -> None:
        """Block until everything below commitlog ``offset`` is dispatched."""
        if self.reput_from_offset >= offset:
            return
        if self.mode == "sync" or self._thread is None:
            self.dispatch(offset)
            return
        self._urgent.set()
        self._wake.set()
        with self._progress:
            self._waiters += 1
            try:
                ok = self._progress.wait_for(
                    lambda: self.reput_from_offset >= offset or self.error is not None, timeout)
            finally:
                self._waiters -= 1
        self.check()
        if not ok:
            raise TimeoutError(f"dispatcher did not reach offset {offset} in {timeout} s")

    # ----- the work -----
    def dispatch(self, end: int | None = None) -> int:
        """Dispatch every message from ``reput_from_offset`` up to ``end`` (default: the
        confirm offset); return how many were dispatched."""
        with self._lock:
            if end is None:
                end = self.confirm_offset()
            return self._do_reput(end)

    def _do_reput(self, end: int) -> int:
        cl = self.commitlog
        off = self.reput_from_offset
        if off < cl.min_offset:  # files deleted while lagging: RocketMQ jumps forward too
            off = cl.min_offset
        done = 0
        while off < end:
            mf = cl.find_file(off)
            if mf is None:
                break
            pos = off - mf.file_from_offset
            limit = min(mf.file_size, end - mf.file_from_offset)
            if cl.skipped:  # ranges recovery kept under on_corruption="skip"
                jump = self._skip_range(off)
                if jump is not None and jump[0] <= off:
                    off = jump[1]
                    continue
                if jump is not None and jump[0] < mf.file_from_offset + limit:
                    limit = jump[0] - mf.file_from_offset
            n, pos, blank = self._dispatch_block(mf.mm, pos, limit)
            done += n
            off = mf.file_end_offset if blank else mf.file_from_offset + pos
            self._publish(off)
            if not blank and pos < limit:
                size = self._dispatch_one(mf, pos, limit)
                if size:  # the Python decoder's second opinion on where the walk stopped
                    done += 1
                    off += size
                    self._publish(off)
                    continue
                if self.on_damage is not None and mf.file_from_offset + pos < end:
                    # recovery re-dispatching below the end of the sound log: not a
                    # partial message but damage recovery's scan did not cover
                    off = self.on_damage(mf.file_from_offset + pos)
                    self._publish(off)
                    continue
                break  # a partial message: stop, retry later
        self._publish(off)
        return done

    def _skip_range(self, off: int) -> tuple[int, int] | None:
        """The first skipped range that ends after ``off``."""
        for r in self.commitlog.skipped:
            if r[1] > off:
                return r
        return None

    def _dispatch_one(self, mf, pos: int, limit: int) -> int:
        """Dispatch the one message at ``pos`` in Python; its size, or 0 if there is no
        whole sound message there (yet)."""
        try:
            d = msgcodec.dispatch_fields(mf.mm, pos, limit)
        except msgcodec.BadMessage:
            return 0
        if d.topic == _SKIPPED_TOPIC:
            return d.size
        units = [(d.queue_offset, d.physical_offset, d.size,
                  0 if d.tag is None else self._tag_hash(d.tag))]
        key = (d.topic, d.queue_id)
        cq = self.queues.get(key)
        if cq is None:
            cq = self.consume_queue(*key)
        if self.verify_units:
            cq.verify_put(units)
        else:
            cq.put_many(units)
        if self.index is not None and (d.keys_text is not None or d.uniq_key):
            keys = [k for k in (d.keys_text or "").split(fmt.KEY_SEPARATOR) if k]
            if d.uniq_key:
                keys.append(d.uniq_key)
            self.index.build_many([(d.topic, d.physical_offset, d.store_timestamp, keys)])
        self.last_dispatched_timestamp = d.store_timestamp
        self.dispatched_messages += 1
        return d.size

    def _dispatch_block(self, mm, pos: int, limit: int) -> tuple[int, int, bool]:
        """Dispatch the run of messages native.dispatch_fields walks from ``pos`` (one C
        call: sizes, queue ids and offsets, topic / TAGS / KEYS / UNIQ_KEY spans); returns
        (messages dispatched, end of the run, whether it ended at the file's blank)."""
        scan = native.dispatch_fields(mm, pos, limit)
        rows = scan.fields
        n = self._dispatch_rows(mm, rows) if len(rows) else 0
        return n, scan.valid_end, scan.status == native.SCAN_BLANK

    def _dispatch_rows(self, mm, rows) -> int:
        """ConsumeQueue units and IndexFile keys of a run of messages, as columns: strings
        are decoded once per distinct topic and tag, each queue's units are written with one
        copy per file, and the keys are hashed in C and put in one ``index_put_keys`` call."""
        u8 = np.frombuffer(mm, dtype=np.uint8)
        try:
            topic_ids, topic_raw = _distinct_spans(u8, rows[:, 6], rows[:, 7])
            tag_ids, tag_raw = _distinct_spans(u8, rows[:, 8], rows[:, 9])
        finally:
            del u8  # no view of the map outlives the pass (a kept traceback would pin it)
        topics = [t.decode("utf-8", "replace") for t in topic_raw]
        if _SKIPPED_TOPIC in topics:  # recovery's marker over a skipped damaged range
            keep = topic_ids != topics.index(_SKIPPED_TOPIC)
            if not keep.all():
                rows, topic_ids, tag_ids = rows[keep], topic_ids[keep], tag_ids[keep]
                if not len(rows):
                    return 0
        n = len(rows)
        if tag_raw:
            hashes = np.array([self._tag_hash(_tag_text(t)) for t in tag_raw] + [0],
                              dtype=np.int64)
            tag_hashes = hashes[tag_ids]  # id -1 (no tag) takes the trailing 0
        else:
            tag_hashes = np.zeros(n, dtype=np.int64)
        if self.index is not None:
            self._index_rows(mm, rows, topic_ids, topics)
        qids = rows[:, 2]
        keys = topic_ids * (1 << 32) + (qids & 0xFFFFFFFF)
        if n == 1 or not (keys != keys[0]).any():
            groups = [(0, n, None)]
        else:
            order = np.argsort(keys, kind="stable")
            sk = keys[order]
            starts = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1]))).tolist()
            groups = [(a, b, order) for a, b in zip(starts, starts[1:] + [n])]
        queues = self.queues
        if not self.verify_units:
            order = groups[0][2]

            def queue_at(row: int) -> ConsumeQueue:
                key = (topics[int(topic_ids[row])], int(qids[row]))
                return queues.get(key) or self.consume_queue(*key)
            put_runs(rows[:, 3], rows[:, 4], rows[:, 1], tag_hashes, order,
                     [a for a, _b, _o in groups], queue_at)
            groups = []
        for a, b, order in groups:
            sel = slice(a, b) if order is None else order[a:b]
            first = a if order is None else int(order[a])
            key = (topics[int(topic_ids[first])], int(qids[first]))
            cq = queues.get(key)
            if cq is None:
                cq = self.consume_queue(*key)
            units = (rows[sel, 3], rows[sel, 4], rows[sel, 1], tag_hashes[sel])
            if self.verify_units:
                cq.verify_put(np.column_stack(units))
            else:
                cq.put_array(*units)
        self.last_dispatched_timestamp = int(rows[-1, 5])
        self.dispatched_messages += n
        return n

    def _index_rows(self, mm, rows, topic_ids, topics) -> None:
        """IndexFile keys of a run: for each message its KEYS value then its UNIQ_KEY, as
        ``topic#key`` (RocketMQ ``IndexService#buildIndex``)."""
        new = rows[:, 4] > self.index.indexed_end  # (a verifying re-dispatch: keys kept)
        if not new.all():
            rows, topic_ids = rows[new], topic_ids[new]
            if not len(rows):
                return
        kp, up, ul = rows[:, 10], rows[:, 12], rows[:, 13]
        has_k, has_u = kp >= 0, ul > 0
        if not (has_k.any() or has_u.any()):
            return
        # KEYS spans at 2i, UNIQ_KEY spans at 2i + 1: message order, KEYS first
        n = len(rows)
        pos = np.empty(2 * n, dtype=np.int64)
        lens = np.empty(2 * n, dtype=np.int64)
        want = np.empty(2 * n, dtype=bool)
        pos[0::2], pos[1::2] = kp, up
        lens[0::2], lens[1::2] = rows[:, 11], ul
        want[0::2], want[1::2] = has_k, has_u
        if want.all():
            msg = np.arange(2 * n) >> 1
        else:
            msg = np.flatnonzero(want) >> 1
            pos, lens = pos[want], lens[want]
        prefix = np.array([native.java_string_hash(t + fmt.INDEX_KEY_SEPARATOR)
                           for t in topics], dtype=np.int64)
        hashes = native.index_key_hashes(mm, pos, lens, prefix[topic_ids[msg]])
        if (hashes < 0).any():  # a key with a space (several keys) or non-ASCII text
            self._index_rows_slow(mm, rows, topic_ids, topics)
            return
        self.index.put_hashes(hashes, rows[msg, 4], rows[msg, 5])

    def _index_rows_slow(self, mm, rows, topic_ids, topics) -> None:
        """:meth:`_index_rows` through the decoded key strings (IndexService.build_many)."""
        entries = []
        for (tid, (kp, kl, up, ul), phys, store_ts) in zip(
                topic_ids.tolist(), rows[:, 10:14].tolist(), rows[:, 4].tolist(),
                rows[:, 5].tolist()):
            keys_text = None if kp < 0 else bytes(mm[kp:kp + kl]).decode("utf-8", "replace")
            uniq = None if up < 0 else bytes(mm[up:up + ul]).decode("utf-8", "replace")
            if keys_text is not None:
                # RocketMQ indexes every space-separated element of KEYS (mqstore's own
                # keys never hold a bare space: it is escaped)
                keys = [k for k in keys_text.split(fmt.KEY_SEPARATOR) if k] \
                    if fmt.KEY_SEPARATOR in keys_text else [keys_text]
                if uniq:
                    keys.append(uniq)
                entries.append((topics[tid], phys, store_ts, keys))
            elif uniq:
                entries.append((topics[tid], phys, store_ts, [uniq]))
        if entries:
            self.index.build_many(entries)

    def _tag_hash(self, tag: str) -> int:
        h = self._tag_hashes.get(tag)
        if h is None:
            h = native.java_string_hash(tag)
            if len(self._tag_hashes) < 4096:
                self._tag_hashes[tag] = h
        return h

    def _publish(self, off: int) -> None:
        if off != self.reput_from_offset:
            self.reput_from_offset = off
            if self._waiters:  # set under the condition's lock: a waiter never misses this
                with self._progress:
                    self._progress.notify_all()

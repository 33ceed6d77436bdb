"""The recovery half of :class:`~.store.CommitLogStore` (RocketMQ
``DefaultMessageStore#recover``) under mqstore's damage model: the CommitLog first
(``recovery.py``), then what must agree with it (the checkpoint, ``logStart.json``),
then the derived files (ConsumeQueues, IndexFiles), rebuilt by re-dispatching from where
they stop agreeing with the log. Mixed into the store; uses its ``commitlog``, ``index``,
``dispatcher``, ``checkpoint``, ``_queues``, ``recovery_log`` and ``config``.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mqstore.damage import (CORRUPTION_SKIPPED, CORRUPTION_TRUNCATED, DERIVED_REBUILT,
                            METADATA_REPAIRED, refuse_corruption)

from . import cq_check, index_check, recovery
from . import format as fmt
from . import message as msgcodec
from .recovery import RecoveryResult

if TYPE_CHECKING:
    from .checkpoint import StoreCheckpoint
    from .commitlog import CommitLog
    from .dispatcher import Dispatcher
    from .index_file import IndexService
    from mqstore.damage import RecoveryLog


class StoreRecovery:
    """``_recover`` and its checks (see the module docstring)."""

    commitlog: "CommitLog"
    index: "IndexService"
    dispatcher: "Dispatcher"
    checkpoint: "StoreCheckpoint"
    recovery_log: "RecoveryLog"
    recovery: dict[str, Any]
    _queues: dict
    _queue_next: dict
    #: the last recovery started the derived files at the checkpoint's durable offset
    _durable_trusted = False

    def _recover(self) -> None:
        """RocketMQ ``DefaultMessageStore#recover`` with mqstore's damage model: the
        CommitLog first (normal or abnormal start, ``recovery.py``: a torn tail is cut,
        corruption goes to ``on_corruption``), then the derived files: ConsumeQueues and
        IndexFiles are checked, cut to the log, and rebuilt by re-dispatching from the
        recovery start, after a crash from the checkpoint's durable offset when it is a
        message boundary (or from further back where they are damaged); every unit whose
        message is re-dispatched is compared with it and rewritten if wrong."""
        cl = self.commitlog
        log = self.recovery_log
        abnormal = os.path.exists(os.path.join(self.path, fmt.ABORT_FILE))
        ck = self.checkpoint
        durable = self._durable_start() if abnormal else None
        self._durable_trusted = durable is not None
        if abnormal:
            start_idx = cl.recovery_start_abnormal(ck.min_timestamp())
            if durable is not None:  # the CRC scan covers the durable offset too
                start_idx = min(start_idx, (durable - cl.files[0].file_from_offset)
                                // cl.file_size)
        else:
            start_idx = cl.recovery_start_normal()
        # the CommitLog's CRC scan keeps its window (every message of the file the
        # timestamps point into: damage below the sync point is found at open, as before);
        # the derived files are checked and re-dispatched only from the durable offset
        res: RecoveryResult = recovery.recover(
            cl, start_idx, policy=self.config.on_corruption, clean=not abnormal,
            sync_timestamp=ck.physic_msg_timestamp, log=log,
            covered_timestamp=ck.covered_timestamp() if abnormal else 0,
            sync_offset=(ck.flushed_offset or 0) if durable is not None else 0)
        derived_from = res.start_offset if durable is None else max(res.start_offset,
                                                                    durable)
        # after a crash IndexFile keys are redone only from the first message the checkpoint
        # does not cover (its timestamps, or its durable offset when it has one): the keys
        # before it were put and synced before the checkpoint was written
        redo = res.valid_end if res.uncovered_from is None else res.uncovered_from
        self._check_log_end(res, abnormal)
        self._check_log_start(abnormal)
        # derived files: damaged ConsumeQueue tails and IndexFiles are rebuilt from the log
        # (after a crash everything from the durable offset, else from the recovery start,
        # is re-dispatched, comparing each unit with its message; after a clean close the
        # units of the window are checked against it and re-dispatched only from the first
        # wrong or missing one)
        reput = derived_from if abnormal else res.valid_end
        for cq in self._queues.values():
            rebuild = cq.recover(log, cl.min_offset, trusted_below=durable)
            if rebuild is not None:
                reput = min(reput, rebuild)
            cq.truncate_dirty(res.valid_end)
            if durable is not None and self._head_lost(cq):
                reput = min(reput, cl.min_offset)
        if self.config.options["message_index"]:
            rebuild = index_check.recover(self.index, log, derived_from, cl.min_offset,
                                          trusted_below=durable)
            if rebuild is not None:
                reput = min(reput, rebuild)
        # abnormal: index entries the checkpoint does not cover are redone; normal: only those
        # pointing past the end of the log
        cut = redo if abnormal else res.valid_end
        if durable is not None:  # entries below the durable offset were synced
            cut = min(max(cut, durable), res.valid_end)
        if res.skipped_from is not None:  # entries of skipped messages go too
            cut = min(cut, res.skipped_from)
        removed = self.index.truncate_from(cut, self._store_timestamp_at)
        if not abnormal:
            bad = cq_check.first_mismatch(cl, self._queues, res.start_offset, res.valid_end,
                                          self.dispatcher._tag_hash)
            if bad is not None:
                reput = min(reput, bad)
        reput = min(reput, cut)  # index entries removed from ``cut`` are rebuilt
        # queues behind the recovery start (or none at all: rebuilt from the first file)
        ends = [cq.max_phys_end for cq in self._queues.values() if cq.max_units]
        reput = min(reput, max(ends, default=cl.min_offset))
        if self.config.options["message_index"]:  # an IndexFile behind the queues
            reput = min(reput, self.index.indexed_end if self.index.indexed_end >= 0
                        else cl.min_offset)
        reput = max(min(reput, res.valid_end), cl.min_offset)
        mf = cl.find_file(reput) if reput < res.valid_end else None
        if mf is not None and msgcodec.check(
                mf.mm, reput - mf.file_from_offset, mf.file_size,
                physical_offset=reput) is not None:
            # a derived file's idea of a position, not a message: start at its file
            reput = mf.file_from_offset
        self.dispatcher.reput_from_offset = reput
        redispatch_from = reput
        self.dispatcher.verify_units = True
        self.dispatcher.on_damage = self._redispatch_damage
        try:
            redispatched = self.dispatcher.dispatch(res.valid_end)
        finally:
            self.dispatcher.verify_units = False
            self.dispatcher.on_damage = None
        repaired = 0
        for cq in list(self._queues.values()):
            repaired += cq.finish_verify(redispatch_from, res.valid_end)
        if repaired:
            log.record(DERIVED_REBUILT, os.path.join(self.path, fmt.CONSUMEQUEUE_DIR),
                       redispatch_from, f"{repaired} ConsumeQueue units did not match the "
                       "messages they point at and were rewritten from the CommitLog")
        found: dict[str, int] = {}
        for (topic, qid), cq in self._queues.items():
            cq.correct_min_offset(cl.min_offset)
            self._queue_next[(topic, qid)] = cq.max_units
            found[topic] = max(found.get(topic, 0), qid + 1)
        self.topic_config.adopt(found)  # queues rebuilt from a log written elsewhere
        self.recovery = {
            "abnormal": abnormal, "start_offset": res.start_offset, "end_offset": res.valid_end,
            "durable_offset": durable,
            "scanned_messages": res.scanned_messages, "redispatched_messages": redispatched,
            "redispatched_from": redispatch_from, "units_rewritten": repaired,
            "index_entries_removed": removed, "damage": [str(d) for d in res.damage],
            "skipped": list(cl.skipped),
        }
        if redispatched or removed or res.damage or repaired:
            self._flush_logics()

    def _durable_start(self) -> int | None:
        """The checkpoint's durable offset if recovery may start there: in the log and at a
        message boundary (the start of a file, a message that says it is there, the blank
        that ends its file, or the end of the data). Otherwise None, and recovery starts at
        a file boundary from the timestamps, as without an offset (logged as a repair of
        the checkpoint). One below the first file (retention) also gives None."""
        cl, ck = self.commitlog, self.checkpoint
        p = ck.durable_offset
        if p is None or not cl.files or p < cl.min_offset:
            return None
        if p > 0 and ck.physic_msg_timestamp == 0:
            return None  # its timestamps say nothing was flushed: an older checkpoint's
        problem = recovery.boundary_problem(cl, p)
        if problem is None:
            return p
        self.recovery_log.record(DERIVED_REBUILT, ck.path, 0, f"checkpoint durable offset "
                                 f"{p} {problem}: ignored, recovery starts at a file boundary")
        return None

    def _head_lost(self, cq) -> bool:
        """A queue whose first file is not its first (queue offset 0) but whose first unit
        points at or after the start of the log: the files before it were not deleted by
        retention (which deletes a ConsumeQueue file only once its last unit points below
        the log's start), so they were lost. The re-dispatch from the durable offset would
        not recreate them: the caller re-dispatches from the start of the log (verifying,
        which recreates head files)."""
        q = cq.first_unit
        if not cq.files or q == 0:
            return False
        for k in range(q, min(q + 16, cq.max_units)):
            phys, size, _tag = cq.unit(k)
            if size != fmt.CQ_FILLER_SIZE:
                return phys > self.commitlog.min_offset
        return False

    def _check_log_end(self, res: RecoveryResult, abnormal: bool) -> None:
        """The log must still hold what the checkpoint and, after a clean close, the
        ConsumeQueues say was durable: a deleted or truncated last file is not a torn tail
        but lost data below the sync point, so ``on_corruption`` decides (cut to what is
        left with "truncate" or "skip")."""
        cl = self.commitlog
        if any(d.kind == "corruption" for d in res.damage):
            return  # on_corruption already decided where the log ends
        ck = self.checkpoint.physic_msg_timestamp
        flushed = self.checkpoint.flushed_offset if self._durable_trusted else None
        def units_past() -> int:  # a scan of every queue: only when it is needed
            return sum(cq.units_past(res.valid_end) for cq in self._queues.values())

        why = None
        past = None
        if flushed is not None and flushed > res.valid_end and cl.files:
            why = f"the checkpoint says the log was flushed up to {flushed}"
        elif ck > 0 and ck > cl.last_store_timestamp:
            why = (f"the checkpoint says messages stored up to {ck} are durable, the log ends "
                   f"with one stored at {cl.last_store_timestamp}")
        elif not abnormal:
            past = units_past()
            if past:
                why = f"after a clean close {past} ConsumeQueue units point past it"
        if why is None:
            return
        if past is None:
            past = units_past()
        detail = (f"the CommitLog ends at {res.valid_end} but {why}: a deleted or truncated "
                  "file lost durable messages")
        refuse_corruption(self.config.on_corruption, cl.dir, res.valid_end, detail,
                          past or None)
        self.recovery_log.record(CORRUPTION_TRUNCATED, cl.dir, res.valid_end, detail,
                                 records_dropped=past)

    def _check_log_start(self, abnormal: bool) -> None:
        """The CommitLog must still start where retention left it (logStart.json):
        a first file after that one was lost, not deleted by retention. After a crash the
        record may lag an interrupted retention, so it is only brought up to date."""
        cl = self.commitlog
        start, rec = cl.min_offset, recovery.read_log_start(self.path)
        if not cl.files:  # the first file will start at max_offset
            if rec is None:
                recovery.write_log_start(self.path, cl.max_offset)
            return
        if rec is not None and start > rec:
            detail = (f"the CommitLog starts at {start}, retention left it at {rec}: the "
                      f"files of [{rec}, {start}) were lost, not deleted by retention")
            if abnormal:
                self.recovery_log.record(METADATA_REPAIRED, cl.dir, start, detail + " (or "
                                         "the crash interrupted a retention): record updated")
            else:
                refuse_corruption(self.config.on_corruption, cl.dir, start, detail)
                self.recovery_log.record(CORRUPTION_TRUNCATED, cl.dir, start, detail,
                                         bytes_dropped=start - rec)
        if rec != start:
            recovery.write_log_start(self.path, start)

    def _redispatch_damage(self, offset: int) -> int:
        """A bad message met while rebuilding derived files from before the recovery
        window (which recovery validated): corruption below the sync point, so
        ``on_corruption`` decides; with "truncate" or "skip" it is skipped for this process
        (the log is not changed; reads of units pointing at it raise CorruptRecordError)."""
        cl = self.commitlog
        mf = cl.find_file(offset)
        pos = offset - mf.file_from_offset
        problem = msgcodec.check(mf.mm, pos, mf.file_size) or "bad message"
        nxt = recovery.resync(cl, offset, offset >= cl.crc_required_from)
        refuse_corruption(self.config.on_corruption, mf.path, pos,
                          f"corrupt message met while rebuilding derived files: {problem}")
        end = nxt if nxt is not None else cl.max_offset
        self.recovery_log.record(CORRUPTION_SKIPPED, mf.path, pos, f"corrupt message met "
                                 f"while rebuilding derived files: {problem}; not indexed, "
                                 f"dispatch resumes at {end}", bytes_dropped=end - offset,
                                 records_dropped=1)
        cl.skipped = sorted(cl.skipped + [(offset, end)])
        return end

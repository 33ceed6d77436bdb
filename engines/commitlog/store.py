"""CommitLogStore: RocketMQ's store design behind mqstore's ``Store`` contract.

Layout under the store root (FORMATS.md, "commitlog engine")::

    commitlog/<20-digit offset>                    CommitLog files (mapped_file_size, sparse)
    consumequeue/<topic>/<queueId>/<20-digit>      ConsumeQueue files (cq_units_per_file x 20 B)
    index/<yyyyMMddHHmmssSSS>                      IndexFiles
    checkpoint                                     StoreCheckpoint (4 KiB)
    abort                                          exists while a writer has the store open
    lock                                           the writer's exclusive lock
    config/topics.json, config/consumerOffset.json metadata (atomic JSON)
    mqstore.json                                   mqstore's manifest (engine, shape options)

A partition is a RocketMQ queue (queueId). Appends of every topic go to the one CommitLog
under one lock; a dispatcher builds the ConsumeQueues and the IndexFile from it.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

from mqstore import api, errors, native, registry
from mqstore.api import Damage, Store, validate_topic_name
from mqstore.config import StoreConfig
from mqstore.damage import RecoveryLog, is_full, translate_full
from mqstore.durability import GroupCommit, PeriodicFlusher
from mqstore.storedir import DirectoryLock, check_manifest, fsync_dir

from . import format as fmt
from . import message as msgcodec
from . import recovery
from .appends import CommitLogAppends
from .checkpoint import StoreCheckpoint
from .commitlog import CommitLog
from .consume_queue import ConsumeQueue, sync_dirs
from .dispatcher import Dispatcher
from .follower import Follower
from .index_file import IndexService
from .metadata import MAX_QUEUES, ConsumerOffsetManager, TopicConfigManager
from .reads import ConsumeQueueReads
from .store_recovery import StoreRecovery



class CommitLogStore(CommitLogAppends, StoreRecovery, ConsumeQueueReads, Store):
    """RocketMQ's broker store: one CommitLog, ConsumeQueues, IndexFiles, a dispatcher.

    Thread-safety: appends from any number of threads (one CommitLog put lock, queue offsets
    assigned under it, group commit outside it); reads, lookups and transfers from any number
    of threads; ``close`` once. ``read_only=True`` opens a follower that takes no lock, runs
    no recovery and never writes; it sees the units the writer's dispatcher has completed.
    """

    engine_name = "commitlog"
    OPTIONS = {
        "mapped_file_size": 1 << 30,         # mappedFileSizeCommitLog
        "cq_units_per_file": 300_000,        # mappedFileSizeConsumeQueue / 20
        "hash_slots": 5_000_000,             # maxHashSlotNum
        "index_entries": 20_000_000,         # maxIndexNum
        "dispatch": "async",                 # "async": ReputMessageService thread; "sync"
        "write_mode": "mmap",                # "mmap" or "write" (writeWithoutMmap)
        "message_index": True,               # messageIndexEnable: build the IndexFile
        "file_reserved_time_hours": 72,      # fileReservedTime
        "file_reserved_time_ms": 0,          # overrides the hours when > 0
        "retention_bytes": 0,                # cap on CommitLog bytes (0 = none)
        "flush_consume_queue_interval_ms": 1000,  # flushIntervalConsumeQueue + checkpoint
    }
    SHAPE_OPTIONS = ("mapped_file_size", "cq_units_per_file", "hash_slots", "index_entries")
    supports_key_index = True
    supports_zero_copy = True
    supports_tag_index = True
    #: queue ids fit 16 bits in RocketMQ's topic table (``writeQueueNums``)
    max_partitions = MAX_QUEUES

    @classmethod
    def looks_like(cls, path: str) -> bool:
        """A RocketMQ store: ``commitlog/`` plus ``checkpoint`` or ``consumequeue/``."""
        return os.path.isdir(os.path.join(path, fmt.COMMITLOG_DIR)) and (
            os.path.isfile(os.path.join(path, fmt.CHECKPOINT_FILE))
            or os.path.isdir(os.path.join(path, fmt.CONSUMEQUEUE_DIR)))

    @classmethod
    def inspect_files(cls, path: str, target: str | None = None) -> Iterator[str]:
        from .tools import inspect_files
        return inspect_files(path, target)

    @classmethod
    def verify_files(cls, path: str) -> list[Damage]:
        from .tools import verify_files
        return verify_files(path)

    # ----- open -----
    def __init__(self, path: str, config: StoreConfig):
        super().__init__(path, config)
        if not os.path.exists(os.path.join(path, registry.MANIFEST_NAME)):
            other = registry.detect(path)
            if other is not None and other != self.engine_name:
                raise errors.EngineMismatchError(
                    f"{path} holds a {other!r} store; it cannot be opened with engine "
                    f"{self.engine_name!r}")
            config = self._shape_from_files(path, config)
        self.config = config = check_manifest(path, config, self.SHAPE_OPTIONS)
        self._validate_options(config)
        o = config.options
        self._read_only = config.read_only
        self._dir_lock = None if config.read_only else DirectoryLock(path, fmt.LOCK_FILE)
        self._gc: GroupCommit | None = None
        self._flushers: list[PeriodicFlusher] = []
        self._queues: dict[tuple[str, int], ConsumeQueue] = {}
        self._queue_next: dict[tuple[str, int], int] = {}
        self._uniq_prefix = os.urandom(8).hex().upper()
        self._uniq_prefix_b = self._uniq_prefix.encode("ascii")
        #: UNIQ_KEY numbers: each append takes a run under ``_uniq_lock``
        self._uniq_next = 0
        self._uniq_lock = threading.Lock()
        self._topic_b: dict[str, bytes] = {}
        #: encoded size of a plain value's message, topic and body excluded
        self._plain_overhead = (fmt.MSG_FIXED_OVERHEAD + fmt.CRC32_RESERVED_LEN
                                + native.cl_plain_props_len(len(self._uniq_prefix)))
        self._size_limit = min(config.max_message_bytes,
                               o["mapped_file_size"] - fmt.END_FILE_MIN_BLANK_LENGTH)
        self.appended_records = 0
        self.appended_bytes = 0
        self.fsyncs = 0
        self._fsyncs_lock = threading.Lock()  # counted from appenders and both flushers
        self._logics_lock = threading.Lock()  # one _flush_logics at a time
        self._queues_lock = threading.Lock()  # one ConsumeQueue object per (topic, queue)
        self.recovery: dict[str, Any] = {}  # what the last recovery scanned (details)
        self.recovery_log = RecoveryLog()  # every recovery action: stats()["recovery"]
        self.dispatcher: Dispatcher | None = None
        self.follower: Follower | None = None
        self.commitlog = CommitLog(os.path.join(path, fmt.COMMITLOG_DIR), o["mapped_file_size"],
                                   write_mode=o["write_mode"], read_only=config.read_only)
        self.index = IndexService(os.path.join(path, fmt.INDEX_DIR), o["hash_slots"],
                                  o["index_entries"], read_only=config.read_only)
        try:
            self._open()
        except BaseException:
            self._release()
            raise

    @staticmethod
    def _shape_from_files(path: str, config: StoreConfig) -> StoreConfig:
        """A store without a manifest (a RocketMQ-written one, or a lost ``mqstore.json``):
        the CommitLog and ConsumeQueue file sizes come from the files (the largest of each
        kind: every file has the full size), so the open never resizes them to the
        defaults. An explicit option that disagrees is a ConfigError, nothing touched."""
        found: dict[str, int] = {}
        cl_dir = os.path.join(path, fmt.COMMITLOG_DIR)
        if os.path.isdir(cl_dir):
            sizes = [os.path.getsize(os.path.join(cl_dir, f)) for f in os.listdir(cl_dir)
                     if f.isdigit() and len(f) == 20]
            if sizes and max(sizes) > 0:
                found["mapped_file_size"] = max(sizes)
        cq_root = os.path.join(path, fmt.CONSUMEQUEUE_DIR)
        for dirpath, _dirs, files in os.walk(cq_root) if os.path.isdir(cq_root) else ():
            sizes = [os.path.getsize(os.path.join(dirpath, f)) for f in files
                     if f.isdigit() and len(f) == 20]
            if sizes and max(sizes) % fmt.CQ_UNIT_SIZE == 0 and max(sizes) > 0:
                found["cq_units_per_file"] = max(sizes) // fmt.CQ_UNIT_SIZE
                break
        for name, value in found.items():
            if name in config.explicit and config.options[name] != value:
                raise errors.ConfigError(
                    f"{name}={config.options[name]!r} conflicts with the files of the store "
                    f"at {path} (no mqstore.json), which are {value!r}")
        adopt = {k: v for k, v in found.items() if k not in config.explicit}
        return config.with_options(**adopt) if adopt else config

    @staticmethod
    def _validate_options(config: StoreConfig) -> None:
        o = config.options
        if not fmt.MSG_FIXED_OVERHEAD + 8 <= o["mapped_file_size"] <= 0x7FFFFFFF:
            raise errors.ConfigError(
                f"mapped_file_size: must be between {fmt.MSG_FIXED_OVERHEAD + 8} and 2^31-1 "
                f"bytes, got {o['mapped_file_size']}")
        for name, low in (("cq_units_per_file", 1), ("hash_slots", 1), ("index_entries", 2),
                          ("flush_consume_queue_interval_ms", 1)):
            if o[name] < low:
                raise errors.ConfigError(f"{name}: must be at least {low}, got {o[name]}")
        if o["dispatch"] not in ("async", "sync"):
            raise errors.ConfigError(f"dispatch: must be 'async' or 'sync', not {o['dispatch']!r}")
        if o["write_mode"] not in ("mmap", "write"):
            raise errors.ConfigError(
                f"write_mode: must be 'mmap' or 'write', not {o['write_mode']!r}")

    def _open(self) -> None:
        path, o = self.path, self.config.options
        cfg_dir = os.path.join(path, fmt.CONFIG_DIR)
        log = getattr(self, "recovery_log", None)
        self.topic_config = TopicConfigManager(os.path.join(cfg_dir, fmt.TOPICS_FILE),
                                               read_only=self._read_only, log=log)
        self.offsets = ConsumerOffsetManager(os.path.join(cfg_dir, fmt.CONSUMER_OFFSET_FILE),
                                             read_only=self._read_only, log=log)
        self.commitlog.load(self.recovery_log)
        self._load_queues()
        self.index.load(self.recovery_log)
        self.checkpoint = StoreCheckpoint(os.path.join(path, fmt.CHECKPOINT_FILE),
                                          read_only=self._read_only, log=log)
        if self._read_only:
            self.follower = Follower(self)
            return
        self.dispatcher = Dispatcher(
            self.commitlog, self._consume_queue,
            self.index if o["message_index"] else None, self._confirm_offset,
            mode=o["dispatch"], queues=self._queues)
        self._recover()
        self._create_abort()
        mode = self.config.flush.mode
        if mode == "sync":
            self._gc = GroupCommit(self._sync_commitlog)
        elif mode == "async":
            self._flushers.append(PeriodicFlusher(
                self._sync_commitlog, self.config.flush.interval_ms, self.commitlog.dirty,
                name="mqstore-flush-commitlog"))
        if mode != "os":
            self._flushers.append(PeriodicFlusher(
                self._flush_logics, o["flush_consume_queue_interval_ms"], self._logics_dirty,
                name="mqstore-flush-consumequeue"))
        self.dispatcher.start()

    def _load_queues(self) -> None:
        root = os.path.join(self.path, fmt.CONSUMEQUEUE_DIR)
        found: dict[str, int] = {}
        if os.path.isdir(root):
            for topic in sorted(os.listdir(root)):
                tdir = os.path.join(root, topic)
                if not os.path.isdir(tdir):
                    continue
                for qid in os.listdir(tdir):
                    if not qid.isdigit():
                        continue
                    cq = ConsumeQueue(root, topic, int(qid), self.config.options[
                        "cq_units_per_file"], read_only=self._read_only)
                    cq.load(self.recovery_log)
                    self._queues[(topic, int(qid))] = cq
                    found[topic] = max(found.get(topic, 0), int(qid) + 1)
        self.topic_config.adopt(found)

    def _consume_queue(self, topic: str, queue_id: int) -> ConsumeQueue:
        """The ConsumeQueue of (topic, queue), created on first use."""
        cq = self._queues.get((topic, queue_id))
        if cq is None:
            with self._queues_lock:  # the append path and the dispatcher may both ask
                cq = self._queues.get((topic, queue_id))
                if cq is None:
                    cq = ConsumeQueue(os.path.join(self.path, fmt.CONSUMEQUEUE_DIR), topic,
                                      queue_id, self.config.options["cq_units_per_file"],
                                      read_only=self._read_only)
                    cq.load()
                    self._queues[(topic, queue_id)] = cq
        return cq

    def _store_timestamp_at(self, phys: int) -> int:
        mf = self.commitlog.find_file(phys)
        if mf is None:
            return 0
        return msgcodec.store_timestamp(mf.mm, phys - mf.file_from_offset, mf.file_size)

    def _create_abort(self) -> None:
        """Create the ``abort`` marker. Only its existence matters: on a full disk the pid
        it holds for humans is left out, so a store reopens while the disk is full."""
        p = os.path.join(self.path, fmt.ABORT_FILE)
        with translate_full(f"creating {p}"):
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, str(os.getpid()).encode())
        except OSError as exc:
            if not is_full(exc):
                raise
        finally:
            os.close(fd)
        fsync_dir(self.path)

    # ----- flushing -----
    def _confirm_offset(self) -> int:
        """How far the dispatcher may go: flushed under flush="sync" (RocketMQ's confirm
        offset: a consumer never sees an unflushed message), written otherwise."""
        if self._gc is not None:
            return self.commitlog.flushed_offset
        return self.commitlog.max_offset

    def _count_fsyncs(self, n: int) -> None:
        """Add to ``stats()["fsyncs"]``: appenders (group commit), the two flusher threads
        and ``flush()`` all count, so the read-modify-write is locked."""
        with self._fsyncs_lock:
            self.fsyncs += n

    def _sync_commitlog(self) -> None:
        with translate_full("syncing the commitlog"):
            self._count_fsyncs(self.commitlog.flush())

    def _logics_dirty(self) -> bool:
        d = self.dispatcher
        ck = self.checkpoint
        # the durable offset too: one append_batch's messages share a store timestamp, so
        # the timestamps can stand still while the offset moves (cl-recovery)
        return d is not None and (
            d.last_dispatched_timestamp != ck.logics_msg_timestamp
            or self.commitlog.flushed_store_timestamp != ck.physic_msg_timestamp
            or (not self.index.stalled and ck.durable_offset != min(
                d.reput_from_offset, self.commitlog.flushed_offset)))

    def _flush_logics(self) -> None:
        """Flush ConsumeQueues and IndexFiles, then record how far each part is durable in
        the checkpoint (RocketMQ's FlushConsumeQueueService + checkpoint flush).

        Serialised (``_logics_lock``): the periodic flusher, ``flush()``, ``close()`` and
        recovery may call it at once, and the checkpoint must never claim more than the
        syncs that completed before it was written (nor move backwards)."""
        with self._logics_lock:
            ts = self.dispatcher.last_dispatched_timestamp if self.dispatcher else 0
            # units and keys below this were written before the syncs below (cl-recovery)
            dispatched = self.dispatcher.reput_from_offset if self.dispatcher else 0
            syncs = 0
            dirs: set[str] = set()
            for cq in list(self._queues.values()):
                syncs += cq.flush(dirs)
            syncs += sync_dirs(dirs)  # new queues' entries: durable before the checkpoint
            idx_syncs, _ = self.index.flush()
            ck = self.checkpoint
            if ts:
                ck.logics_msg_timestamp = ts
                if not self.index.stalled:  # keys skipped on a full disk: redo them
                    ck.index_msg_timestamp = ts
            ck.physic_msg_timestamp = self.commitlog.flushed_store_timestamp
            flushed = self.commitlog.flushed_offset
            ck.flushed_offset = flushed
            if not self.index.stalled:
                ck.durable_offset = min(dispatched, flushed)
            ck.flush()
            self._count_fsyncs(syncs + idx_syncs + 1)

    def flush(self) -> None:
        """Sync the CommitLog, then the ConsumeQueues, IndexFiles and checkpoint. Raises the
        error of a background flusher or of the dispatcher, if one failed."""
        self._check_open()
        if self._read_only:
            return
        for f in self._flushers:
            if f.error is not None:
                raise f.error
        self.dispatcher.check()
        upto = self._gc.position() if self._gc is not None else 0
        self._sync_commitlog()
        if self._gc is not None:
            self._gc.mark_durable(upto)
        self.dispatcher.dispatch()
        self._flush_logics()

    # ----- topics -----
    def _refresh_topics(self) -> None:
        if self._read_only and self.topic_config.changed():
            self.topic_config.reload()

    def create_topic(self, name: str, partitions: int = 1) -> None:
        validate_topic_name(name)
        self._check_partition_count(name, partitions)
        self._check_writable()
        with self.commitlog.put_lock:
            if name in self.topic_config.topics:
                raise errors.TopicExistsError(f"topic {name!r} already exists")
            self.topic_config.add(name, partitions)

    def create_topics(self, topics) -> None:
        """Create many topics with one journal entry (``metadata.TopicJournal``): all of
        them or, on any error (a check, a full disk, a crash), none."""
        self._check_writable()
        with self.commitlog.put_lock:
            pairs = self._check_new_topics(topics)
            if pairs:
                self.topic_config.add_many(dict(pairs))

    def topics(self) -> list[str]:
        self._check_open()
        self._refresh_topics()
        return sorted(self.topic_config.topics)

    def partitions(self, topic: str) -> int:
        self._check_open()
        n = self.topic_config.topics.get(topic)
        if n is None:
            self._refresh_topics()
            n = self.topic_config.topics.get(topic)
            if n is None:
                raise errors.TopicNotFoundError(f"topic {topic!r} does not exist")
        return n

    # ----- consumer offsets -----
    def commit_offset(self, group: str, topic: str, partition: int, offset: int) -> None:
        """Persist ``offset`` in config/consumerOffset.json (written atomically)."""
        self._check_writable()
        self._check_group(group)
        self._check_partition(topic, partition, self.partitions(topic))
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise errors.OffsetOutOfRangeError(f"offset must be an int >= 0: {offset!r}")
        self.offsets.commit(group, topic, partition, offset)

    def committed_offset(self, group: str, topic: str, partition: int) -> int | None:
        self._check_open()
        self._check_group(group)
        self._check_partition(topic, partition, self.partitions(topic))
        return self.offsets.get(group, topic, partition)

    @staticmethod
    def _check_group(group: object) -> None:
        if not isinstance(group, str) or not group:
            raise errors.InvalidRecordError(f"group must be a non-empty str: {group!r}")

    # ----- retention -----
    def apply_retention(self, now_ms: int | None = None) -> int:
        """Delete CommitLog files oldest first while older than the reserved time or while
        the log exceeds ``retention_bytes`` (never the last file, never leaving a hole), then
        the ConsumeQueue and index files entirely below the new minimum offset."""
        self._check_writable()
        o = self.config.options
        now = now_ms if now_ms is not None else api.now_ms()
        reserved = o["file_reserved_time_ms"] or o["file_reserved_time_hours"] * 3_600_000
        cl = self.commitlog
        self.dispatcher.wait_until(self._confirm_offset())
        with cl.put_lock:
            deleted = cl.delete_expired_files(now, reserved, o["retention_bytes"],
                                              self.dispatcher.reput_from_offset)
            if deleted:
                self._count_fsyncs(cl.flush())
                recovery.write_log_start(self.path, cl.min_offset)  # (_check_log_start)
                for cq in list(self._queues.values()):
                    deleted += cq.delete_expired(cl.min_offset)
                deleted += self.index.delete_expired(cl.min_offset)
        return deleted

    # ----- stats, close -----
    def stats(self) -> dict[str, Any]:
        self._check_open()
        cl = self.commitlog
        queues = list(self._queues.values())
        cq_files = sum(len(cq.files) for cq in queues)
        return {
            "engine": self.engine_name,
            "bytes_on_disk": cl.allocated_bytes() + sum(cq.allocated_bytes() for cq in queues)
            + self.index.allocated_bytes(),
            "files": len(cl.files) + cq_files + len(self.index.files),
            "fsyncs": self.fsyncs,
            "appended_records": self.appended_records,
            "appended_bytes": self.appended_bytes,
            "dispatch_lag": self.dispatcher.lag if self.dispatcher else 0,
            "dispatched_messages": self.dispatcher.dispatched_messages if self.dispatcher else 0,
            "commitlog_files": len(cl.files),
            "commitlog_min_offset": cl.min_offset,
            "commitlog_max_offset": cl.max_offset,
            "commitlog_flushed_offset": cl.flushed_offset,
            "consume_queues": len(queues),
            "consume_queue_files": cq_files,
            "index_files": len(self.index.files),
            "group_syncs": self._gc.group_syncs if self._gc else 0,
            "write_mode": cl.write_mode,
            "dispatch": self.config.options["dispatch"],
            "recovery": self.recovery_log.counts(),
            "recovery_scan": dict(self.recovery),
        }

    def close(self) -> None:
        """Stop the flushers, let the dispatcher catch up, flush everything, write the
        checkpoint, delete ``abort`` (only if dispatch caught up) and release the lock."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._read_only:
                for f in self._flushers:
                    f.stop()
                clean = False
                if self.dispatcher is not None:
                    with self.commitlog.put_lock:  # appends already past their checks finish
                        self._count_fsyncs(self.commitlog.flush())
                    self.dispatcher.stop()
                    clean = self.dispatcher.error is None and self.dispatcher.lag == 0
                    self._flush_logics()
                self.topic_config.compact()
                if clean:
                    try:
                        os.unlink(os.path.join(self.path, fmt.ABORT_FILE))
                        fsync_dir(self.path)
                    except FileNotFoundError:
                        pass
        finally:
            self._release()

    def _release(self) -> None:
        for f in self._flushers:
            f.stop()
        if self.dispatcher is not None:
            self.dispatcher.halt()
        for cq in list(self._queues.values()):
            cq.close()
        self.index.close()
        self.commitlog.close()
        ck = getattr(self, "checkpoint", None)
        if ck is not None:
            ck.close()
        tc = getattr(self, "topic_config", None)
        if tc is not None:
            tc.journal.close()
        if self._dir_lock is not None:
            self._dir_lock.release()
            self._dir_lock = None
        self._closed = True


"""``SegmentsStore``: Kafka's log design behind the mqstore contract.

Files (all Kafka's, see FORMATS.md "segments engine")::

    <root>/.lock                               exclusive flock of the writer
    <root>/mqstore.json                        mqstore's manifest (engine, segment_index_bytes)
    <root>/recovery-point-offset-checkpoint    flushed-up-to offset per partition
    <root>/log-start-offset-checkpoint         first offset kept per partition (retention)
    <root>/.kafka_cleanshutdown                present only after a clean close
    <root>/.creating/<topic>                   only while create_topic runs (or cut by a crash)
    <root>/<topic>-<partition>/<20-digit base>.log / .index / .timeindex

Topics are their partition directories: ``create_topic`` makes ``<topic>-0`` ..
``<topic>-<n-1>``, each with an empty first segment, so the partition count is read back from
the directory names (Kafka keeps it in its controller; mqstore needs no other metadata file).
``create_topic`` is all or nothing across a crash: its marker ``.creating/<topic>`` is durable
before the first directory and removed after the last; an open that finds one removes the
topic's directories. Recovery follows mqstore's damage model (``PartitionLog``,
docs/segments.md); every action goes through the store's ``RecoveryLog``
(``stats()["recovery"]``).
Committed consumer offsets are records of the internal topic ``__consumer_offsets`` (one
partition; key ``group/topic/partition``, value the offset as text), read back at open.

Thread-safety: appends are thread-safe (one lock per partition: offsets stay dense and in
append order); reads run in any number of threads alongside appends. ``create_topic``,
retention and ``close`` serialise on a store lock.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any


from mqstore import errors, native
from mqstore.api import (
    check_lookup_args,
    check_read_args,
    check_timestamp_arg,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_RECORDS,
    Damage,
    Record,
    Store,
    validate_topic_name,
)
from mqstore.config import StoreConfig
from mqstore.damage import METADATA_REPAIRED, RecoveryLog, is_full, translate_full
from mqstore.durability import FilesystemSync, GroupCommit, PeriodicFlusher
from mqstore.engines.segments import format as fmt
from mqstore.engines.segments.checkpoint import (
    read_hint,
    take_clean_shutdown,
    write_checkpoint,
    write_checkpoints,
    write_clean_shutdown,
)
from mqstore.records import Records
from mqstore.engines.segments.offsets_topic import encode_commit, replay_commits
from mqstore.engines.segments.partition_log import LogConfig, PartitionLog, parse_log_dir_name
from mqstore.engines.segments import topic_dirs
from mqstore.engines.segments.appends import ONE_RECORD_OVERHEAD, SegmentsAppends
from mqstore.storedir import DirectoryLock, check_manifest

logger = logging.getLogger("mqstore")
GiB = 1024 ** 3
MiB = 1024 ** 2
WEEK_MS = 7 * 24 * 3600 * 1000
#: under flush="sync" / "async", checkpoints are rewritten at most this often (seconds)
CHECKPOINT_INTERVAL_S = 1.0


class SegmentsStore(SegmentsAppends, Store):
    """Kafka's storage design: a directory of segments per topic-partition.

    Each ``append`` / ``append_batch`` group becomes one RecordBatch v2 (CRC-32C) appended with
    one ``pwritev`` to the active segment; sparse ``.index`` / ``.timeindex`` entries are added
    on Kafka's cadence (every ``index_interval_bytes``). Reads go offset index -> batch headers
    -> records; ``transfer_to`` is ``os.sendfile`` of whole batches; ``lookup_key`` scans (Kafka
    has no key index). See the module docstring for files and thread-safety.
    """

    engine_name = "segments"
    OPTIONS: Mapping[str, Any] = {
        "segment_bytes": 1 * GiB,
        "segment_ms": WEEK_MS,
        "index_interval_bytes": 4096,
        "segment_index_bytes": 10 * MiB,
        "retention_ms": WEEK_MS,
        "retention_bytes": -1,
    }
    SHAPE_OPTIONS = ("segment_index_bytes",)
    supports_key_index = False
    supports_zero_copy = True
    supports_tag_index = False

    def __init__(self, path: str, config: StoreConfig):
        super().__init__(path, config)
        self._store_lock = threading.RLock()
        self._dirlock: DirectoryLock | None = None
        self._flusher: PeriodicFlusher | None = None
        self._gc: GroupCommit | None = None
        self._topics: dict[str, list[PartitionLog]] = {}
        self._committed: dict[tuple[str, str, int], int] = {}
        self._offsets_read_to = 0
        self._fsyncs = 0
        self._read_only = config.read_only
        self._writable = not config.read_only
        self._recovery = RecoveryLog()
        self._checkpoint_lock = threading.Lock()  # one writer of the checkpoint files
        self._last_checkpoint = time.monotonic()
        if self._writable:
            self._dirlock = DirectoryLock(self.path, fmt.LOCK_FILE)
        try:
            self.config = check_manifest(self.path, config, self.SHAPE_OPTIONS)
            self._log_config = dataclasses.replace(
                LogConfig.from_options(self.config.options),
                on_corruption=self.config.on_corruption, check_crcs=self.config.check_crcs)
            self._max_message_bytes = self.config.max_message_bytes
            #: a plain value up to this size surely fits max_message_bytes as a one-record batch
            self._max_plain_value = self._max_message_bytes - ONE_RECORD_OVERHEAD
            self._open_logs()
            self._load_committed()
            mode = self.config.flush.mode
            if self._writable and mode == "sync":
                self._gc = GroupCommit(self._background_sync)
            elif self._writable and mode == "async":
                self._flusher = PeriodicFlusher(self._background_sync,
                                                self.config.flush.interval_ms,
                                                self._any_unflushed, name="segments-flusher")
        except BaseException:
            for logs in self._topics.values():  # close what was opened, write nothing
                for log in logs:
                    for seg in log.segments:
                        seg.close_handles()
            self._release()
            raise

    # ----- opening -----
    def _discover(self) -> dict[str, int]:
        return topic_dirs.discover(self.path)

    def _roll_back_half_created_topics(self) -> None:
        """A crash during ``create_topic`` left its marker: remove the partitions it made, so
        the topic does not exist and creating it again works (``topic_dirs``)."""
        for topic in sorted(topic_dirs.being_created(self.path)):
            topic_dirs.remove_topic_dirs(self.path, topic)
            self._recovery.record(
                METADATA_REPAIRED, os.path.join(self.path, fmt.CREATING_DIR, topic), 0,
                f"create_topic({topic!r}) did not finish (a crash): its partition "
                "directories were removed; create it again")

    def _read_hint(self, name: str) -> dict[tuple[str, int], int] | None:
        return read_hint(os.path.join(self.path, name),
                         self._recovery if self._writable else None)

    def _open_logs(self) -> None:
        clean = True
        if self._writable:
            clean = take_clean_shutdown(self.path)
            self._roll_back_half_created_topics()
        points = self._read_hint(fmt.RECOVERY_POINT_CHECKPOINT)
        starts = self._read_hint(fmt.LOG_START_OFFSET_CHECKPOINT)
        rewrite = not clean or points is None or starts is None
        # "truncate" / "skip" are the repair modes: they validate every segment, so they find
        # (and fix) what verify_files reports in segments an ordinary open trusts
        scan_all = points is None or self.config.on_corruption != "raise"
        try:
            for topic, count in sorted(self._discover().items()):
                logs = []
                self._topics[topic] = logs
                for p in range(count):
                    log = PartitionLog(self.path, topic, p, self._log_config,
                                       writable=self._writable, recovery=self._recovery)
                    log.load(clean=clean, recovery_point=(points or {}).get((topic, p), 0),
                             log_start_offset=None if starts is None
                             else starts.get((topic, p), 0),
                             scan_all=scan_all)
                    logs.append(log)
        except errors.CorruptRecordError:
            if self._writable and clean:  # refused, logs untouched: still a clean shutdown
                write_clean_shutdown(self.path)
            raise
        if self._writable and rewrite:
            try:
                self._write_checkpoints()
            except errors.StoreFullError as exc:  # hints: the old ones stay, the open goes on
                logger.warning("%s: could not rewrite the checkpoints at open (%s)", self.path,
                               exc)

    def _rediscover(self) -> None:
        """Read-only follower: pick up topics the writer created since."""
        for topic, count in self._discover().items():
            have = self._topics.get(topic, [])
            if len(have) >= count:
                continue
            logs = list(have)
            for p in range(len(have), count):
                log = PartitionLog(self.path, topic, p, self._log_config, writable=False)
                log.load(clean=True)
                logs.append(log)
            self._topics[topic] = logs

    # ----- identification and offline tools -----
    @classmethod
    def looks_like(cls, path: str) -> bool:
        """A Kafka log dir: a checkpoint file, or a ``<topic>-<n>/`` holding ``.log`` files."""
        if os.path.exists(os.path.join(path, fmt.RECOVERY_POINT_CHECKPOINT)):
            return True
        try:
            entries = list(os.scandir(path))
        except OSError:
            return False
        for e in entries:
            if parse_log_dir_name(e.name) and e.is_dir():
                try:
                    if any(n.endswith(fmt.LOG_SUFFIX) for n in os.listdir(e.path)):
                        return True
                except OSError:
                    continue
        return False

    @classmethod
    def inspect_files(cls, path: str, target: str | None = None) -> Iterator[str]:
        from mqstore.engines.segments.tools import inspect_files

        return inspect_files(path, target)

    @classmethod
    def verify_files(cls, path: str) -> list[Damage]:
        from mqstore.engines.segments.tools import verify_files

        return verify_files(path)

    # ----- topics -----
    def create_topic(self, name: str, partitions: int = 1) -> None:
        self._check_writable()
        validate_topic_name(name)
        if name == fmt.CONSUMER_OFFSETS_TOPIC:
            raise errors.InvalidTopicError(f"{name!r} is reserved for committed offsets")
        self._check_partition_count(name, partitions)
        self._create(name, partitions)

    def _create(self, name: str, partitions: int) -> list[PartitionLog]:
        """Make the topic's partition directories, all or none across a crash: a marker
        ``.creating/<topic>`` is made durable first and removed (durably) last; an open
        that finds one removes the partitions (:meth:`_roll_back_half_created_topics`)."""
        with self._store_lock:
            if name in self._topics:
                raise errors.TopicExistsError(f"topic {name!r} already exists")
            logs: list[PartitionLog] = []
            try:
                with translate_full(f"creating topic {name!r}"):
                    topic_dirs.begin_create(self.path, name, partitions)
                    for p in range(partitions):
                        log = PartitionLog(self.path, name, p, self._log_config, writable=True,
                                           recovery=self._recovery)
                        logs.append(log)
                        log.create()
                    topic_dirs.finish_create(self.path, name)
            except BaseException:
                for log in logs:
                    for seg in log.segments:
                        seg.close_handles()
                try:
                    topic_dirs.remove_topic_dirs(self.path, name)
                except OSError as exc:  # the next open rolls it back from the marker
                    logger.warning("create_topic(%r) failed and could not be undone now (%s)",
                                   name, exc)
                raise
            self._topics[name] = logs
            return logs

    def topics(self) -> list[str]:
        self._check_open()
        if self._read_only:
            self._rediscover()
        return sorted(t for t in self._topics if t != fmt.CONSUMER_OFFSETS_TOPIC)

    def partitions(self, topic: str) -> int:
        return len(self._logs(topic))

    def _logs(self, topic: str) -> list[PartitionLog]:
        self._check_open()
        logs = self._topics.get(topic)
        if logs is None:
            if self._read_only:
                self._rediscover()
                logs = self._topics.get(topic)
            if logs is None:
                if not isinstance(topic, str):
                    raise errors.InvalidTopicError(f"topic name must be str, not {topic!r}")
                raise errors.TopicNotFoundError(f"topic {topic!r} does not exist")
        return logs

    def _log(self, topic: str, partition: int) -> PartitionLog:
        logs = self._logs(topic)
        log = logs[self._check_partition(topic, partition, len(logs))]
        if self._read_only:
            log.refresh()
        return log

    # ----- reads -----
    def read(self, topic: str, partition: int, offset: int, *,
             max_records: int = DEFAULT_MAX_RECORDS, max_bytes: int = DEFAULT_MAX_BYTES,
             tags: Iterable[str] | None = None) -> Records:
        wanted = check_read_args(offset, max_records, max_bytes, tags)
        log = self._log(topic, partition)
        if max_records < 1:
            log.check_offset(offset)
            return Records.empty(topic, partition)
        return log.read(offset, max_records, max_bytes, wanted)

    def start_offset(self, topic: str, partition: int) -> int:
        return self._log(topic, partition).log_start_offset

    def end_offset(self, topic: str, partition: int) -> int:
        return self._log(topic, partition).next_offset

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int | None:
        check_timestamp_arg("timestamp_ms", timestamp_ms)
        return self._log(topic, partition).offset_for_time(timestamp_ms)

    def lookup_key(self, topic: str, key: bytes, *, start_ms: int | None = None,
                   end_ms: int | None = None, limit: int = 64) -> list[Record]:
        """Scan every partition of ``topic`` (Kafka has no key index): cost is proportional
        to the bytes between the time bounds; batches not containing the key's bytes are
        skipped undecoded. Order: partition, then offset."""
        logs = self._logs(topic)
        check_lookup_args(limit, start_ms, end_ms)
        if not isinstance(key, (bytes, bytearray, memoryview)):
            raise errors.InvalidRecordError(f"key must be bytes-like, not {type(key).__name__}")
        key = bytes(key)
        out: list[Record] = []
        for p, log in enumerate(logs):
            if len(out) >= limit:
                break
            if self._read_only:
                log.refresh()
            for r in log.scan_key(key, start_ms, end_ms, limit - len(out)):
                out.append(Record(topic, p, r.offset, r.timestamp_ms, r.key, r.value,
                                  r.headers, r.tag))
        return out

    def transfer_to(self, sock: socket.socket, topic: str, partition: int, offset: int,
                    max_bytes: int) -> tuple[int, int]:
        """``os.sendfile`` whole batches (Kafka's bytes on disk) from the batch holding
        ``offset``; the first batch is sent even if larger than ``max_bytes``."""
        log = self._log(topic, partition)
        return log.transfer_to(sock.fileno(), offset, max_bytes)

    # ----- consumer offsets -----
    def _offsets_log(self, create: bool) -> PartitionLog | None:
        logs = self._topics.get(fmt.CONSUMER_OFFSETS_TOPIC)
        if logs is None and self._read_only:
            self._rediscover()
            logs = self._topics.get(fmt.CONSUMER_OFFSETS_TOPIC)
        if logs is None:
            if not create:
                return None
            try:
                logs = self._create(fmt.CONSUMER_OFFSETS_TOPIC, 1)
            except errors.TopicExistsError:
                logs = self._topics[fmt.CONSUMER_OFFSETS_TOPIC]
        return logs[0]

    def _load_committed(self) -> None:
        """Replay ``__consumer_offsets`` from where the last call stopped (latest wins)."""
        log = self._offsets_log(create=False)
        if log is None:
            return
        log.refresh()
        self._offsets_read_to = replay_commits(log, self._offsets_read_to, self._committed)

    def commit_offset(self, group: str, topic: str, partition: int, offset: int) -> None:
        self._check_writable()
        if not isinstance(group, str) or not group:
            raise errors.InvalidRecordError(f"group must be a non-empty str: {group!r}")
        logs = self._logs(topic)
        self._check_partition(topic, partition, len(logs))
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise errors.InvalidRecordError(f"offset must be a non-negative int: {offset!r}")
        log = self._offsets_log(create=True)
        assert log is not None
        body = encode_commit(group, topic, partition, offset)
        gc = self._gc
        with log.lock:
            if self._closed:
                raise errors.StoreClosedError(f"store at {self.path} is closed")
            log.append(body)
            self._committed[(group, topic, partition)] = offset
            ticket = gc.written() if gc is not None else 0
        if gc is not None:
            gc.wait_durable(ticket)

    def committed_offset(self, group: str, topic: str, partition: int) -> int | None:
        self._check_open()
        if self._read_only:
            self._load_committed()
        return self._committed.get((group, topic, partition))

    # ----- maintenance -----
    def _all_logs(self) -> list[PartitionLog]:
        return [log for logs in list(self._topics.values()) for log in logs]

    def _any_unflushed(self) -> bool:
        return any(log.has_unflushed for log in self._all_logs())

    def _sync_all(self) -> None:
        """fsync every log written since its last flush. Several dirty logs on the store's
        filesystem are made durable together by one ``syncfs`` (``FilesystemSync``): a
        group sync then costs about one fsync whatever the partition count, and counts as
        one in ``stats()["fsyncs"]``. A single dirty log, or a platform without a syncfs
        that reports errors, is fsynced log by log."""
        dirty = [log for log in self._all_logs() if log.has_unflushed]
        if len(dirty) > 1:
            fs = getattr(self, "_fs_sync", None)  # made at the first multi-log sync
            if fs is None:
                fs = self._fs_sync = FilesystemSync(self.path)
            if fs.ready():  # False the first time: this sync goes log by log
                together = [log for log in dirty if fs.covers(log.dir)]
                if len(together) > 1:
                    together.sort(key=lambda lg: (lg.topic, lg.partition))  # lock order
                    with translate_full(f"syncing {len(together)} partitions in {self.path}"):
                        PartitionLog.flush_together(together, fs.sync)
                    self._fsyncs += 1
                    dirty = [log for log in dirty if log not in together]
        for log in dirty:
            log.flush()

    def _background_sync(self) -> None:
        """The group commit's and the async flusher's sync: the logs, and the checkpoints
        at most every ``CHECKPOINT_INTERVAL_S`` (Kafka:
        ``log.flush.offset.checkpoint.interval.ms``), so that recovery knows the sync point
        and can tell a torn tail from corruption. A checkpoint that cannot be written (full
        disk) stays as it was: it is a lower bound."""
        self._sync_all()
        if time.monotonic() - self._last_checkpoint < CHECKPOINT_INTERVAL_S or self._closed:
            return
        try:
            self._write_checkpoints()
        except errors.StoreFullError as exc:
            logger.warning("%s: checkpoints not written (%s)", self.path, exc)

    def _write_checkpoints(self) -> None:
        with self._checkpoint_lock:
            write_checkpoints(self.path, self._all_logs())
            self._fsyncs += 6  # two files and the directory each time (write_atomic)
            self._last_checkpoint = time.monotonic()

    def flush(self) -> None:
        """fsync every segment written since the last sync and write the checkpoints. Raises
        the background flusher's error, if it failed (flush="async")."""
        self._check_open()
        if self._read_only:
            return
        if self._flusher is not None and self._flusher.error is not None:
            raise self._flusher.error
        upto = self._gc.position() if self._gc is not None else 0
        with self._store_lock:
            self._sync_all()
            self._write_checkpoints()
        if self._gc is not None:
            self._gc.mark_durable(upto)

    def apply_retention(self, now_ms: int | None = None) -> int:
        self._check_writable()
        from mqstore.api import now_ms as _now

        now = _now() if now_ms is None else now_ms
        freed = 0
        with self._store_lock:
            plans = []
            for topic, logs in list(self._topics.items()):
                if topic == fmt.CONSUMER_OFFSETS_TOPIC:
                    continue  # Kafka compacts it; mqstore keeps it whole
                for log in logs:
                    doomed = log.detach_old_segments(now)
                    if doomed:
                        plans.append((log, doomed))
            if plans:  # the new log starts are durable before any file goes
                try:
                    with self._checkpoint_lock, \
                            translate_full(f"writing the checkpoints of {self.path}"):
                        write_checkpoint(
                            os.path.join(self.path, fmt.LOG_START_OFFSET_CHECKPOINT),
                            {(lg.topic, lg.partition): lg.log_start_offset
                             for lg in self._all_logs()})
                except BaseException:  # files kept: they come back at the next open
                    for log, doomed in plans:
                        log._graveyard += doomed
                    raise
            for log, doomed in plans:
                freed += log.delete_detached(doomed)
        return freed

    def stats(self) -> dict[str, Any]:
        self._check_open()
        logs = self._all_logs()
        files = 0
        on_disk = 0
        apparent = 0
        for root, _dirs, names in os.walk(self.path):
            for n in names:
                try:
                    st = os.stat(os.path.join(root, n))
                except FileNotFoundError:
                    continue
                files += 1
                on_disk += st.st_blocks * 512
                apparent += st.st_size
        user = [lg for lg in logs if lg.topic != fmt.CONSUMER_OFFSETS_TOPIC]
        return {
            "engine": self.engine_name,
            "native_backend": native.backend,
            "bytes_on_disk": on_disk,
            "bytes_apparent": apparent,
            "log_bytes": sum(lg.size_bytes for lg in logs),
            "files": files,
            "fsyncs": self._fsyncs + sum(lg.fsyncs for lg in logs),
            "group_syncs": self._gc.group_syncs if self._gc is not None else 0,
            "appended_records": sum(lg.appended_records for lg in user),
            "appended_bytes": sum(lg.appended_bytes for lg in user),
            "segments": sum(len(lg.segments) for lg in logs),
            "partitions": len(user),
            "topics": len({lg.topic for lg in user}),
            "recovered_bytes_truncated": sum(lg.recovered_bytes for lg in logs),
            "recovery": self._recovery.counts(),
        }

    def close(self) -> None:
        if self._closed:
            return
        with self._store_lock:
            if self._closed:
                return
            self._closed = True  # appends check it under their partition lock: none start now
            if self._flusher is not None:
                self._flusher.stop()
            try:
                if self._writable:
                    failed: errors.StoreFullError | None = None
                    for log in self._all_logs():
                        try:
                            log.close()
                            log.recovery_point = log.next_offset
                        except errors.StoreFullError as exc:  # not synced: say so, go on
                            failed = failed or exc
                    clean = failed is None and not any(
                        seg.dirty_tail for log in self._all_logs() for seg in log.segments)
                    try:
                        self._write_checkpoints()
                        if clean:  # else the next open recovers (and drops a partial batch)
                            write_clean_shutdown(self.path)
                    except OSError as exc:
                        if not is_full(exc):
                            raise
                        logger.warning("%s: closed without checkpoints (%s); the next open "
                                       "recovers from the last ones", self.path, exc)
                    if failed is not None:
                        raise failed
                else:
                    for log in self._all_logs():
                        log.close()
            finally:
                self._closed = True
                if self._gc is not None:  # close synced every write numbered so far
                    self._gc.mark_durable(self._gc.position())
                self._release()

    def _release(self) -> None:
        if self._flusher is not None:
            self._flusher.stop()
        fs = getattr(self, "_fs_sync", None)
        if fs is not None:  # the syncfs descriptor of the group sync
            fs.close()
        if self._dirlock is not None:
            self._dirlock.release()
            self._dirlock = None

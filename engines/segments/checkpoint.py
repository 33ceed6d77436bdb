"""Kafka's offset checkpoint files (``recovery-point-offset-checkpoint``,
``log-start-offset-checkpoint``) and the clean-shutdown marker.

Checkpoint text (Kafka's ``CheckpointFile`` / ``OffsetCheckpointFile``)::

    0                       format version
    2                       number of entries
    orders 0 1234           <topic> <partition> <offset>
    orders 1 998

Written to ``<name>.tmp``, fsynced, renamed over the old file (``storedir.write_atomic``), so a
crash leaves the old or the new file. Reading refuses a version or count mismatch, bytes that
are not UTF-8, or a malformed line (a duplicate, a negative number, anything but exactly
``<topic> <partition> <offset>``) with CorruptRecordError; the store treats such a file as
absent (a hint: every log is then validated from its start) and rewrites it.

``.kafka_cleanshutdown`` holds ``{"version":0,"brokerEpoch":0}`` and exists only between a
clean close and the next open. Functions only; callers serialise writes.
"""
from __future__ import annotations

import json
import os

from mqstore import errors
from mqstore.damage import METADATA_REPAIRED, RecoveryLog, translate_full
from mqstore.engines.segments import format as fmt
from mqstore.storedir import fsync_dir, write_atomic


def read_checkpoint(path: str) -> dict[tuple[str, int], int]:
    """The entries of a checkpoint file (empty if the file does not exist)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}
    try:
        lines = raw.decode("utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not lines or int(lines[0]) != fmt.CHECKPOINT_VERSION:
            raise ValueError(f"unknown version line {lines[:1]!r}")
        count = int(lines[1])
        body = [ln for ln in lines[2:] if ln.strip()]
        if len(body) != count:
            raise ValueError(f"expected {count} entries, found {len(body)}")
        out: dict[tuple[str, int], int] = {}
        for ln in body:
            topic, part, off = ln.split(" ")
            if (topic, int(part)) in out or int(part) < 0 or int(off) < 0:
                raise ValueError(f"bad entry {ln!r}")
            out[(topic, int(part))] = int(off)
        return out
    except (ValueError, IndexError) as exc:  # UnicodeDecodeError is a ValueError
        raise errors.CorruptRecordError(f"malformed checkpoint: {exc}", path, 0) from None


def read_hint(path: str, recovery: RecoveryLog | None) -> dict[tuple[str, int], int] | None:
    """:func:`read_checkpoint`, but a garbled file is None (recorded in ``recovery`` when
    given): a checkpoint is a hint, and the caller recovers as if it were absent."""
    try:
        return read_checkpoint(path)
    except errors.CorruptRecordError as exc:
        if recovery is not None:
            recovery.record(METADATA_REPAIRED, path, 0, f"{exc}; ignored and rewritten (every "
                            "log is validated from its start)")
        return None


def write_checkpoints(root: str, logs) -> None:
    """Both checkpoint files for ``logs`` (PartitionLogs: recovery point, log start); a full
    disk is StoreFullError."""
    with translate_full(f"writing the checkpoints of {root}"):
        write_checkpoint(os.path.join(root, fmt.RECOVERY_POINT_CHECKPOINT),
                         {(lg.topic, lg.partition): lg.recovery_point for lg in logs})
        write_checkpoint(os.path.join(root, fmt.LOG_START_OFFSET_CHECKPOINT),
                         {(lg.topic, lg.partition): lg.log_start_offset for lg in logs})


def write_checkpoint(path: str, entries: dict[tuple[str, int], int]) -> None:
    """Replace the checkpoint at ``path`` atomically and durably."""
    lines = [str(fmt.CHECKPOINT_VERSION), str(len(entries))]
    lines += [f"{t} {p} {o}" for (t, p), o in sorted(entries.items())]
    write_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))


def write_clean_shutdown(root: str) -> None:
    """Write ``.kafka_cleanshutdown`` (fsynced, directory fsynced)."""
    write_atomic(os.path.join(root, fmt.CLEAN_SHUTDOWN_FILE),
                 json.dumps({"version": 0, "brokerEpoch": 0}).encode("utf-8"))


def take_clean_shutdown(root: str) -> bool:
    """True if the marker was there; remove it at once so a crash while open counts as
    unclean at the next open (KAFKA-10471)."""
    path = os.path.join(root, fmt.CLEAN_SHUTDOWN_FILE)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(root)
    return True

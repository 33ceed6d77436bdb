"""Kafka's ``LogLoader`` for one partition, with mqstore's damage model: what the open does
with a partition's segments after a crash or a clean shutdown.

After a crash (no clean-shutdown marker) every segment from the one holding the recovery
point is validated batch by batch (``LogSegment.scan``); older ones, and every segment after a
clean shutdown, are trusted as far as their indexes agree with their log (an index that does
not is rebuilt: DERIVED_REBUILT). Each segment's base offset must follow the previous
segment's last offset. Damage whose first lost offset is at or past the recovery point (after
a crash) is a torn tail: cut there, later segments deleted (TORN_TAIL). Damage below it, or
anywhere after a clean shutdown, is corruption: ``on_corruption`` refuses the open (default,
nothing changed), truncates (CORRUPTION_TRUNCATED) or skips the damaged batches, keeping
every intact one; the offsets they held are filled by one empty batch and read as a gap
(CORRUPTION_SKIPPED). The checks after the segments: the log-start checkpoint below the first
segment (segments missing at the head), a log start that is no segment boundary (a garbled
hint: METADATA_REPAIRED), and a log that ends before the recovery point (synced records
gone). Every action is recorded in the store's ``RecoveryLog``. Used under the partition's
load, single-threaded.
"""
from __future__ import annotations

import bisect
import os
from typing import TYPE_CHECKING

from mqstore.damage import (
    CORRUPTION_SKIPPED,
    CORRUPTION_TRUNCATED,
    DERIVED_REBUILT,
    METADATA_REPAIRED,
    TORN_TAIL,
    refuse_corruption,
)
from mqstore.engines.segments import format as fmt
from mqstore.engines.segments.log_scan import LogScan
from mqstore.engines.segments.segment import LogSegment
from mqstore.storedir import fsync_dir

if TYPE_CHECKING:
    from mqstore.engines.segments.partition_log import PartitionLog


class LogLoader:
    """Recovery of one partition's segments (see the module docstring)."""

    def __init__(self, log: "PartitionLog", clean: bool, recovery_point: int,
                 known_start: int | None, scan_all: bool):
        self.log = log
        self.dir, self.topic, self.partition = log.dir, log.topic, log.partition
        self.config = log.config
        self.recovery = log.recovery
        self.clean = clean
        self.recovery_point = recovery_point
        self.known_start = known_start  # the log-start checkpoint's entry (None: unknown)
        self.scan_all = scan_all  # the recovery-point checkpoint was unreadable
        self.recovered_bytes = 0
        self._reported_loss = False
        self._index_past_end = False

    def recover(self, segs: list[LogSegment], log_start_offset: int
                ) -> tuple[list[LogSegment], int]:
        """The segments to keep, and the log start offset to use."""
        before = self.recovery.counts()
        segs = self._check_and_recover(segs)
        known = self.known_start
        if known is not None and known < segs[0].base_offset:
            self._on_missing_head(segs[0], known)
        elif known is not None and known > segs[0].base_offset and \
                known not in {s.base_offset for s in segs}:
            # retention moves the log start to a segment's base, nothing else does
            self.recovery.record(
                METADATA_REPAIRED, os.path.join(os.path.dirname(self.dir),
                                                fmt.LOG_START_OFFSET_CHECKPOINT), 0,
                f"log start {known} of {self.topic}-{self.partition} is not a segment "
                f"boundary; the log starts at {segs[0].base_offset} instead")
            log_start_offset = segs[0].base_offset
        after = self.recovery.counts()
        if self.recovery_point > segs[-1].next_offset and not self._reported_loss and all(
                after[k] == before[k] for k in after if k != DERIVED_REBUILT):
            self._on_short_log(segs[-1], self.recovery_point)
        return segs, log_start_offset

    def _check_and_recover(self, segs: list[LogSegment]) -> list[LogSegment]:
        """Kafka's ``LogLoader`` with mqstore's damage model.

        After a crash (no clean-shutdown marker) every segment from the one holding the
        recovery point is validated batch by batch; older ones, and every segment after a
        clean shutdown, are trusted as far as their indexes agree with their log (an index
        that does not is rebuilt: DERIVED_REBUILT). Each segment's base offset must follow
        the previous segment's last offset. Damage whose first lost offset is at or past the
        recovery point (after a crash) is a torn tail: cut there, later segments deleted
        (TORN_TAIL). Damage below it, or anywhere after a clean shutdown, is corruption:
        ``on_corruption`` refuses the open (default), truncates (CORRUPTION_TRUNCATED) or
        skips the damaged batches, keeping every intact one (CORRUPTION_SKIPPED)."""
        clean, recovery_point = self.clean, self.recovery_point
        durable = None if clean else recovery_point  # damage at/after it is a torn tail
        first_unflushed = len(segs)
        if self.scan_all:
            first_unflushed = 0
        elif not clean:
            first_unflushed = max(bisect.bisect_right([s.base_offset for s in segs],
                                                      recovery_point) - 1, 0)
        for i, seg in enumerate(segs):
            if i and seg.base_offset != segs[i - 1].next_offset:
                if self._on_offset_gap(segs[i - 1], segs[i:], durable) == "cut":
                    return self._cut(segs, i)
            why = seg.load()
            if why is None and i < first_unflushed:
                continue
            if why and not seg.tail_incomplete:
                self.recovery.record(DERIVED_REBUILT, seg.index_path, 0,
                                     f"{why}: indexes rebuilt from the log")
                if i == len(segs) - 1 and "past the end of the log" in why:
                    self._index_past_end = True  # evidence that the log lost its end
            if self._recover_segment(seg, seg.scan(), segs[i + 1:], durable) == "cut":
                return self._cut(segs, i + 1)
        return segs

    def _cut(self, segs: list[LogSegment], keep: int) -> list[LogSegment]:
        for later in segs[keep:]:
            later.delete_files()
            later.close_handles()
        if keep < len(segs):
            fsync_dir(self.dir)
        return segs[:keep]

    @staticmethod
    def _records_in(segs: list[LogSegment]) -> tuple[int, int, int | None]:
        """(intact records, bytes, last offset seen) of whole segments that recovery is
        about to drop."""
        records = size = 0
        last = None
        for seg in segs:
            scan = seg.scan()
            records += scan.records
            size += scan.file_size
            last = scan.last_offset if scan.last_offset is not None else last
        return records, size, last

    @staticmethod
    def _offsets_dropped(first: int, scan: LogScan, position: int,
                         later_last: int | None) -> int:
        """Offsets a cut at ``position`` (first lost offset ``first``) drops: up to the last
        intact batch seen after it (the torn batches' own count is unknowable)."""
        last = later_last
        if last is None and scan.rows and scan.rows[-1][0] >= position:
            last = scan.rows[-1][3]
        return 0 if last is None else last - first + 1

    def _recover_segment(self, seg: LogSegment, scan: LogScan, later: list[LogSegment],
                         durable: int | None) -> str:
        """Apply the damage model to one scanned segment; "cut" if later segments must go."""
        policy = self.config.on_corruption
        kept: list[tuple[int, int, int, int, int]] = []
        rows = scan.rows
        for d in scan.damaged:
            kept += [r for r in rows if (kept[-1][0] if kept else -1) < r[0] < d.start]
            where = f"{d.detail} (first offset lost: {d.first_offset})"
            records, size, later_last = self._records_in(later)
            dropped = self._offsets_dropped(d.first_offset, scan, d.start, later_last)
            if durable is not None and d.first_offset >= durable:  # after the last sync
                self.recovered_bytes += seg.rebuild(kept, d.start)
                self.recovery.record(TORN_TAIL, seg.log_path, d.start, where,
                                     bytes_dropped=scan.file_size - d.start + size,
                                     records_dropped=dropped)
                return "cut"
            refuse_corruption(policy, seg.log_path, d.start, where,
                              scan.records_after(d.start) + records)
            if policy == "truncate" or (d.next_base is None and not later):
                self.recovered_bytes += seg.rebuild(kept, d.start)
                self.recovery.record(
                    CORRUPTION_TRUNCATED, seg.log_path, d.start,
                    where + ("" if policy == "truncate" else "; no intact batch follows"),
                    bytes_dropped=scan.file_size - d.start + size, records_dropped=dropped)
                return "cut"
            ts = kept[-1][4] if kept else fmt.NO_TIMESTAMP
            if d.next_base is not None:  # skip: an empty batch where the damage was
                kept.append(seg.fill_with_empty_batch(d.start, d.end, d.first_offset,
                                                      d.next_base - 1, ts))
                self.recovery.record(CORRUPTION_SKIPPED, seg.log_path, d.start,
                                     f"{where}; offsets {d.first_offset}..{d.next_base - 1} "
                                     "now read as a gap", bytes_dropped=d.end - d.start,
                                     records_dropped=d.next_base - d.first_offset)
                continue
            # skip, and the damage runs to the end of a segment that is not the last
            self.recovered_bytes += seg.rebuild(kept, d.start)
            lost_to = later[0].base_offset - 1
            if lost_to >= d.first_offset:
                seg.append_empty_batch(d.first_offset, lost_to)
            self.recovery.record(CORRUPTION_SKIPPED, seg.log_path, d.start,
                                 f"{where}; offsets {d.first_offset}..{lost_to} now read as "
                                 "a gap", bytes_dropped=scan.file_size - d.start,
                                 records_dropped=max(lost_to - d.first_offset + 1, 0))
            return "keep"
        kept += [r for r in rows if (kept[-1][0] if kept else -1) < r[0]]
        self.recovered_bytes += seg.rebuild(kept, kept[-1][0] + kept[-1][1] if kept else 0)
        return "keep"

    def on_no_segments(self, log_start: int) -> None:
        """The partition directory holds no ``.log`` at all (a crash cannot remove one: the
        directory was fsynced when it was made). Synced records gone are corruption; else
        what was lost lay after the last sync point."""
        clean, recovery_point = self.clean, self.recovery_point
        where = f"{self.dir} holds no segment; an empty one is created at offset {log_start}"
        lost = max(recovery_point - log_start, 0)
        if lost:
            refuse_corruption(self.config.on_corruption, self.dir, 0,
                              f"{where}, but offsets up to {recovery_point - 1} were synced", 0)
        self.recovery.record(TORN_TAIL if not clean and not lost else CORRUPTION_TRUNCATED,
                             self.dir, 0, where, records_dropped=lost)
        self._reported_loss = True

    def _on_missing_head(self, seg: LogSegment, log_start: int) -> None:
        """The first segment starts above the checkpointed log start: segments were lost
        at the head (retention writes the checkpoint before it deletes, so not a crash)."""
        where = (f"the log starts at offset {seg.base_offset} but the log-start checkpoint "
                 f"says {log_start}: segments are missing at the head")
        refuse_corruption(self.config.on_corruption, seg.log_path, 0, where, None)
        self.recovery.record(CORRUPTION_SKIPPED if self.config.on_corruption == "skip"
                             else CORRUPTION_TRUNCATED, seg.log_path, 0,
                             where + f"; the log now starts at {seg.base_offset}",
                             records_dropped=seg.base_offset - log_start)

    def _on_short_log(self, seg: LogSegment, recovery_point: int) -> None:
        """The log ends, at whole batches, before the recovery point. Either the checkpoint
        entry is wrong (a hint: METADATA_REPAIRED) or synced records are gone (a file cut
        short; a crash cannot do it). Only when the last segment's index also pointed past
        the end of its log is it taken for the latter: corruption."""
        where = (f"the log ends at offset {seg.next_offset - 1} but the recovery-point "
                 f"checkpoint says offsets up to {recovery_point - 1} were synced")
        lost = recovery_point - seg.next_offset
        orphans = [n for n in self.log.orphan_index_files
                   if int(n.partition(".")[0]) >= seg.next_offset]
        if orphans:  # a later segment existed: its .log is gone, its indexes are not
            where += (f"; the index files {', '.join(orphans)} of a later segment remain, "
                      "its log is gone: synced records are lost")
            refuse_corruption(self.config.on_corruption, seg.log_path, seg.size, where, 0)
            self.recovery.record(CORRUPTION_TRUNCATED, seg.log_path, seg.size, where,
                                 records_dropped=lost)
            return
        if not self._index_past_end:
            self.recovery.record(METADATA_REPAIRED, seg.log_path, seg.size,
                                 where + "; the checkpoint entry is taken to be wrong (else "
                                 "those records were lost) and rewritten",
                                 records_dropped=lost)
            return
        where += " and the index pointed past the end of the log: synced records are gone"
        refuse_corruption(self.config.on_corruption, seg.log_path, seg.size, where, 0)
        self.recovery.record(CORRUPTION_TRUNCATED, seg.log_path, seg.size,
                             where + "; the log is kept as it is", records_dropped=lost)

    def _on_offset_gap(self, prev: LogSegment, segs: list[LogSegment],
                       durable: int | None) -> str:
        """``segs[0]`` does not start where ``prev`` ends (a rolled segment lost its unsynced
        tail while a newer one survived, or damage); "cut" if ``segs`` must go."""
        seg, first = segs[0], prev.next_offset
        kind = "gap" if seg.base_offset > first else "overlap"
        where = (f"segment starts at offset {seg.base_offset} but the previous segment ends "
                 f"at {first - 1} (offset {kind})")
        records, size, last = self._records_in(segs)
        dropped = 0 if last is None else last - first + 1
        if durable is not None and first >= durable:
            self.recovery.record(TORN_TAIL, seg.log_path, 0,
                                 where + "; the previous segment lost its unsynced tail",
                                 bytes_dropped=size, records_dropped=dropped)
            return "cut"
        refuse_corruption(self.config.on_corruption, seg.log_path, 0, where, records)
        if self.config.on_corruption == "skip" and kind == "gap":
            prev.append_empty_batch(first, seg.base_offset - 1)
            self.recovery.record(CORRUPTION_SKIPPED, seg.log_path, 0,
                                 f"{where}; offsets {first}..{seg.base_offset - 1} now read "
                                 "as a gap", records_dropped=seg.base_offset - first)
            return "keep"
        self.recovery.record(CORRUPTION_TRUNCATED, seg.log_path, 0, where,
                             bytes_dropped=size, records_dropped=dropped)
        return "cut"

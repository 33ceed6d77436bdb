"""``mqstore verify`` for a commitlog store: read every file kind, change nothing, and
report one :class:`~mqstore.api.Damage` per root cause.

- CommitLog: every message from the first file (not only the recovery window) with the
  recovery walk (``recovery.walk``: magic, lengths, record / body CRC), classified as
  recovery would (torn tail after the last sync point of a crashed store, else corruption);
  after a corruption the walk resyncs and goes on, so later damage is reported too.
  ``records_dropped`` is what ``on_corruption="truncate"`` (or the torn-tail cut) drops:
  the sound messages up to the next damage; ``first_offset`` the damaged commitlog offset.
- ConsumeQueue ("derived"): files contiguous and full size, units up to the first empty
  one, none written after it, and every unit matches the message it points at (sound,
  size, queue, queue offset, topic, tag hash); a queue behind the log.
- IndexFile ("derived"): header and chains (``IndexFile.validate``), every entry points at
  a sound message of its topic carrying a key with its hash, every keyed message indexed.
- checkpoint ("derived") and ``config/topics.json`` / ``consumerOffset.json`` ("metadata").
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from mqstore import errors, native
from mqstore.api import Damage
from mqstore.storedir import read_manifest

from . import format as fmt
from . import message as msgcodec
from . import recovery
from .checkpoint import StoreCheckpoint
from .commitlog import CommitLog
from .index_file import IndexFile, key_hash
from .mapped_file import MappedFile, parse_file_name
from .metadata import (JOURNAL_SUFFIX, ConsumerOffsetManager, MetadataError,
                       TopicConfigManager, TopicJournal)

_DEFAULTS = {"mapped_file_size": 1 << 30, "cq_units_per_file": 300_000,
             "hash_slots": 5_000_000, "index_entries": 20_000_000}


def _shape(root: str) -> dict[str, int]:
    shape = dict(_DEFAULTS)
    try:
        doc = read_manifest(root)
    except Exception:  # noqa: BLE001 - a bad manifest is the core's to report
        doc = None
    opts = doc.get("options", {}) if isinstance(doc, dict) else {}
    shape["known"] = True
    for k in _DEFAULTS:
        if isinstance(opts.get(k), int):
            shape[k] = opts[k]
        else:
            shape["known"] = False
    d = os.path.join(root, fmt.COMMITLOG_DIR)
    if not isinstance(opts.get("mapped_file_size"), int) and os.path.isdir(d):
        sizes = [os.path.getsize(os.path.join(d, n)) for n in sorted(os.listdir(d))
                 if parse_file_name(n) is not None]
        if sizes:
            shape["mapped_file_size"] = max(sizes)
    return shape


class _Log:
    """The CommitLog mapped read-only, with what its walk learnt per message."""

    def __init__(self, root: str, file_size: int, damage: list[Damage]):
        self.cl = CommitLog(os.path.join(root, fmt.COMMITLOG_DIR), file_size, read_only=True)
        d = self.cl.dir
        names = sorted(n for n in os.listdir(d) if parse_file_name(n) is not None) \
            if os.path.isdir(d) else []
        for name in names:
            path = os.path.join(d, name)
            size = os.path.getsize(path)
            if self.cl.files and parse_file_name(name) != self.cl.files[-1].file_end_offset:
                damage.append(Damage(path, 0, "commitlog files are not contiguous: the open "
                                     "refuses them"))
                break
            if size != file_size:
                if size != 0 or name != names[-1]:
                    damage.append(Damage(path, min(size, file_size),
                                         f"commitlog file is {size} bytes, {file_size} "
                                         "expected (recovery extends a short one with zeros)",
                                         kind="torn_tail" if size < file_size else "corruption"))
                break
            self.cl.files.append(MappedFile(path, file_size, read_only=True))

    def close(self) -> None:
        self.cl.close()


def _verify_commitlog(log: _Log, clean: bool, sync_ts: int, damage: list[Damage]
                      ) -> tuple[int, list[tuple[int, int]]]:
    """Walk the whole log; return (end of its data, the damaged ranges). A ConsumeQueue
    unit or IndexFile entry pointing into a damaged range is a consequence of that damage,
    not a root cause of its own."""
    cl = log.cl
    if not cl.files:
        return 0, []
    st = recovery._State(False, None)
    offset = cl.files[0].file_from_offset
    ranges: list[tuple[int, int]] = []
    while True:
        bad, problem = recovery.walk(cl, offset, st)
        cl.crc_required_from = st.first_crc if st.first_crc is not None else 1 << 62
        if problem is None:
            return bad, ranges
        mf = recovery._file_at(cl, bad)
        pos = bad - mf.file_from_offset
        nxt = recovery.resync(cl, bad, st.crc_required)
        follow = recovery._State(st.crc_required, st.first_crc)
        if nxt is not None:
            recovery.walk(cl, nxt, follow)
            nmf = recovery._file_at(cl, nxt)
            ts_after = msgcodec.store_timestamp(nmf.mm, nxt - nmf.file_from_offset,
                                                cl.file_size)
        else:
            ts_after = 0
        torn = not (clean or 0 < ts_after < sync_ts)
        if torn:
            damage.append(Damage(mf.path, pos, f"torn tail: {problem}", kind="torn_tail",
                                 records_dropped=follow.count, first_offset=bad))
            ranges.append((bad, 1 << 62))
            return bad, ranges
        damage.append(Damage(mf.path, pos, f"corrupt message: {problem}; the open refuses "
                             "it by default", records_dropped=follow.count, first_offset=bad))
        ranges.append((bad, nxt if nxt is not None else 1 << 62))
        if nxt is None:
            return bad, ranges
        offset = nxt


def _in_ranges(phys: int, ranges: list[tuple[int, int]]) -> bool:
    return any(a <= phys < b for a, b in ranges)


def _log_records(cl: CommitLog) -> tuple[dict, dict]:
    """{(topic, queue): highest queue offset} and {commitlog offset: (topic, keys)} of the
    sound V1 messages (what native.dispatch_fields walks)."""
    tops: dict[tuple[str, int], int] = {}
    keyed: dict[int, tuple[str, list[str]]] = {}
    for mf in cl.files:
        mm = mf.mm
        scan = native.dispatch_fields(mm, 0, cl.file_size)
        for (_p, _s, qid, qoff, phys, _ts, tp, tl, _gp, _gl, kp, kl, up, ul) in \
                scan.fields.tolist():
            topic = bytes(mm[tp:tp + tl]).decode("utf-8", "replace")
            if topic == fmt.SKIPPED_TOPIC:
                continue
            k = (topic, qid)
            if tops.get(k, -1) < qoff:
                tops[k] = qoff
            keys = []
            if kp >= 0:
                keys += [x for x in bytes(mm[kp:kp + kl]).decode("utf-8", "replace").split(
                    fmt.KEY_SEPARATOR) if x]
            if up >= 0 and ul > 0:
                keys.append(bytes(mm[up:up + ul]).decode("utf-8", "replace"))
            if keys:
                keyed[phys] = (topic, keys)
    return tops, keyed


def _message_at(cl: CommitLog, phys: int, log_end: int):
    """(mapped file, position, problem) of the message at ``phys``."""
    mf = cl.find_file(phys) if cl.files else None
    if mf is None:
        return None, 0, None  # deleted by retention
    pos = phys - mf.file_from_offset
    if _in_ranges(phys, getattr(cl, "damaged_ranges", [])):
        return None, 0, None  # a consequence of damage reported on the CommitLog
    if phys >= log_end:
        return mf, pos, f"points past the end of the log ({log_end})"
    return mf, pos, msgcodec.check(mf.mm, pos, cl.file_size, phys >= cl.crc_required_from)


def _verify_queue(root: str, topic: str, qid: int, qdir: str, upf: int | None,
                  cl: CommitLog, log_end: int, tops: dict, damage: list[Damage]) -> None:
    names = sorted(n for n in os.listdir(qdir) if parse_file_name(n) is not None)
    if upf is None:  # no manifest to say: the queue's first file does
        upf = max(1, os.path.getsize(os.path.join(qdir, names[0])) // fmt.CQ_UNIT_SIZE) \
            if names else 1
    size = upf * fmt.CQ_UNIT_SIZE
    reported = len(damage)
    first_bad = None  # (path, pos, queue offset, problem)
    bad_units = 0
    last_q = -1
    expect = None
    tag_hashes: dict[str, int] = {}
    for name in names:
        path = os.path.join(qdir, name)
        base = parse_file_name(name)
        if expect is not None and base != expect:
            damage.append(Damage(path, 0, "ConsumeQueue files are not contiguous (recovery "
                                 "deletes the later ones and rebuilds them)", kind="derived"))
            return
        expect = base + size
        with open(path, "rb") as f:
            data = f.read(size)
        if len(data) != size or os.path.getsize(path) != size:
            damage.append(Damage(path, min(len(data), size), f"ConsumeQueue file is "
                                 f"{os.path.getsize(path)} bytes, {size} expected (recovery "
                                 "resizes it and rebuilds its units)", kind="derived"))
        arr = np.frombuffer(data[:len(data) - len(data) % fmt.CQ_UNIT_SIZE], dtype=native.CQ_UNIT)
        empty = np.flatnonzero((arr["offset"] < 0) | (arr["size"] <= 0))
        n = int(empty[0]) if empty.size else len(arr)
        units = arr[:n].tolist()
        for i, (phys, usize, tag) in enumerate(units):
            q = base // fmt.CQ_UNIT_SIZE + i
            last_q = q
            if usize == fmt.CQ_FILLER_SIZE:
                continue
            mf, pos, problem = _message_at(cl, phys, log_end)
            if mf is None:
                continue
            if problem is None:
                m = msgcodec.decode(mf.mm, pos, cl.file_size)
                want_tag = 0
                if m.properties.tag is not None:
                    want_tag = tag_hashes.get(m.properties.tag)
                    if want_tag is None:
                        want_tag = tag_hashes[m.properties.tag] = native.java_string_hash(
                            m.properties.tag)
                if (m.total_size, m.queue_id, m.queue_offset, m.topic, want_tag) != (
                        usize, qid, q, topic, tag):
                    problem = (f"the message there is size {m.total_size}, {m.topic}/"
                               f"{m.queue_id}@{m.queue_offset}, tag hash {want_tag}; the unit "
                               f"says size {usize}, {topic}/{qid}@{q}, tag hash {tag}")
            if problem is not None:
                bad_units += 1
                if first_bad is None:
                    first_bad = (path, i * fmt.CQ_UNIT_SIZE, q, f"unit {q} -> commitlog "
                                 f"{phys}: {problem}")
        if n < len(arr):
            rest = arr[n + 1:]
            if np.any(rest["size"] != 0) or name != names[-1]:
                q = base // fmt.CQ_UNIT_SIZE + n
                damage.append(Damage(path, n * fmt.CQ_UNIT_SIZE, f"unit {q} is empty but "
                                     "units were written after it (a torn unit: recovery "
                                     "cuts the queue there and rebuilds it)", kind="derived",
                                     first_offset=q))
                break
            break
    if first_bad is not None:
        path, pos, q, problem = first_bad
        damage.append(Damage(path, pos, f"{problem} ({bad_units} bad units in this queue; "
                             "recovery rewrites the ones it re-dispatches)", kind="derived",
                             first_offset=q))
    top = tops.get((topic, qid), -1)
    if top > last_q and len(damage) == reported:  # (else a consequence of that damage)
        damage.append(Damage(qdir, 0, f"the ConsumeQueue ends at {last_q + 1} but the "
                             f"CommitLog holds offset {top} of {topic}/{qid} (recovery "
                             "re-dispatches it)", kind="derived", first_offset=last_q + 1))


def _verify_queues(root: str, upf: int | None, cl: CommitLog, log_end: int, tops: dict,
                   damage: list[Damage]) -> None:
    d = os.path.join(root, fmt.CONSUMEQUEUE_DIR)
    seen = set()
    if os.path.isdir(d):
        for topic in sorted(os.listdir(d)):
            tdir = os.path.join(d, topic)
            if not os.path.isdir(tdir):
                continue
            for qid in sorted(os.listdir(tdir)):
                if qid.isdigit():
                    seen.add((topic, int(qid)))
                    _verify_queue(root, topic, int(qid), os.path.join(tdir, qid), upf, cl,
                                  log_end, tops, damage)
    for (topic, qid), top in sorted(tops.items()):
        if (topic, qid) not in seen:
            damage.append(Damage(os.path.join(d, topic, str(qid)), 0, f"no ConsumeQueue for "
                                 f"{topic}/{qid}, which the CommitLog holds (recovery "
                                 "rebuilds it)", kind="derived", first_offset=0))


def _verify_index(root: str, shape: dict, cl: CommitLog, log_end: int, keyed: dict,
                  damage: list[Damage]) -> None:
    d = os.path.join(root, fmt.INDEX_DIR)
    names = sorted(n for n in os.listdir(d) if len(n) == 17 and n.isdigit()) \
        if os.path.isdir(d) else []
    if not names:
        return
    slots, entries = shape["hash_slots"], shape["index_entries"]
    indexed: set[int] = set()
    for name in names:
        path = os.path.join(d, name)
        try:
            f = IndexFile(path, slots, entries, read_only=True)
        except errors.CorruptRecordError as exc:
            damage.append(Damage(path, 0, f"{exc} (recovery deletes and rebuilds it)",
                                 kind="derived"))
            return
        try:
            status, why = f.validate(repair=False)
            if status != "ok":
                damage.append(Damage(path, 0, f"IndexFile {why} (recovery "
                                     f"{'repairs' if status == 'repaired' else 'rebuilds'} it)",
                                     kind="derived"))
                if status == "damaged":
                    return
            n = f.index_count - 1
            e = np.frombuffer(f.mm, dtype=fmt.INDEX_ENTRY_DTYPE, count=n,
                              offset=f.entries_pos + fmt.INDEX_ENTRY_SIZE).tolist() if n else []
            bad, first = 0, None
            for i, (h, phy, _diff, _prev) in enumerate(e, start=1):
                indexed.add(phy)
                got = keyed.get(phy)
                if _in_ranges(phy, getattr(cl, "damaged_ranges", [])):
                    continue
                if got is None and phy < log_end:
                    mf, pos, problem = _message_at(cl, phy, log_end)
                    if mf is None:
                        continue  # retention deleted the message
                    if problem is None:
                        topic, props = msgcodec.topic_and_properties(mf.mm, pos, cl.file_size)
                        ks = [k for k in (props.keys_text or "").split(fmt.KEY_SEPARATOR) if k]
                        got = (topic, ks + ([props.uniq_key] if props.uniq_key else []))
                if got is None or h not in {key_hash(got[0] + fmt.INDEX_KEY_SEPARATOR + k)
                                            for k in got[1]}:
                    bad += 1
                    if first is None:
                        first = (i, phy)
            if first is not None:
                damage.append(Damage(path, f.entries_pos + first[0] * fmt.INDEX_ENTRY_SIZE,
                                     f"entry {first[0]} -> commitlog {first[1]}: no sound "
                                     f"message with a key of that hash there ({bad} such "
                                     "entries; recovery rebuilds the IndexFile)",
                                     kind="derived"))
        finally:
            f.close()
    missing = sorted(p for p in keyed if p not in indexed and p < log_end)
    if missing:
        damage.append(Damage(d, 0, f"{len(missing)} keyed messages are not in the IndexFile, "
                             f"the first at commitlog {missing[0]} (recovery re-indexes them)",
                             kind="derived", first_offset=missing[0]))


def _verify_json(root: str, damage: list[Damage]) -> None:
    """The config JSON files, checked by the same parsers the open uses (an open that would
    refuse or fall back to the ``.bak`` is damage here)."""
    cfg = os.path.join(root, fmt.CONFIG_DIR)
    for name, parse in ((fmt.TOPICS_FILE, TopicConfigManager._parse),
                        (fmt.CONSUMER_OFFSET_FILE, ConsumerOffsetManager._parse)):
        path = os.path.join(cfg, name)
        if not os.path.exists(path):
            if os.path.exists(path + ".bak"):  # always there once written: lost
                damage.append(Damage(path, 0, "missing beside its .bak (the open falls back "
                                     "to the backup)", kind="metadata"))
            continue
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read().decode("utf-8"))
            if not isinstance(doc, dict):
                raise MetadataError("the document is not a JSON object")
            parse(doc)
        except (OSError, ValueError) as exc:  # MetadataError, JSON and UTF-8 errors
            damage.append(Damage(path, 0, f"unreadable metadata: {exc}", kind="metadata"))


def _verify_topic_journal(root: str, damage: list[Damage]) -> None:
    """``config/topics.json.journal``, entry by entry with the open's decoder: a bad last
    entry is a torn tail (a create_topic that never returned; the open cuts it), a bad
    entry with good ones after it is metadata damage (the open skips it: its topics come
    back only if they have messages)."""
    path = os.path.join(root, fmt.CONFIG_DIR, fmt.TOPICS_FILE + JOURNAL_SUFFIX)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return
    except OSError as exc:
        damage.append(Damage(path, 0, f"unreadable topic journal: {exc}", kind="metadata"))
        return
    _tables, skipped, torn = TopicJournal.scan(raw)
    for pos, why in skipped:
        damage.append(Damage(path, pos, f"damaged topic journal entry ({why}) with good "
                             "entries after it: the open skips it and its topics",
                             kind="metadata"))
    if torn is not None:
        pos, why = torn
        damage.append(Damage(path, pos, f"torn last topic journal entry ({why}): the open "
                             f"cuts {len(raw) - pos} bytes", kind="torn_tail"))


def verify_files(root: str) -> list[Damage]:
    """Check every file kind of the commitlog store at ``root`` (module docstring)."""
    damage: list[Damage] = []
    shape = _shape(root)
    _verify_json(root, damage)
    _verify_topic_journal(root, damage)
    ck_path = os.path.join(root, fmt.CHECKPOINT_FILE)
    ck = StoreCheckpoint(ck_path, read_only=True)
    why = getattr(ck, "garbled", None)
    stamps = (ck.physic_msg_timestamp, ck.logics_msg_timestamp, ck.index_msg_timestamp)
    if why is None and any(t < 0 or t > time.time() * 1000 + 86_400_000 for t in stamps):
        why = f"holds impossible timestamps {stamps}"
    if why:
        damage.append(Damage(ck_path, 0, f"checkpoint {why} (recovery ignores it and "
                             "scans the whole CommitLog after a crash)", kind="derived"))
    clean = not os.path.exists(os.path.join(root, fmt.ABORT_FILE))
    log = _Log(root, shape["mapped_file_size"], damage)
    try:
        cl = log.cl
        rec = recovery.read_log_start(root)
        if clean and rec is not None and cl.files and cl.min_offset > rec:
            damage.append(Damage(cl.dir, cl.min_offset, f"the CommitLog starts at "
                                 f"{cl.min_offset}, retention left it at {rec}: the files "
                                 f"of [{rec}, {cl.min_offset}) were lost; the open refuses "
                                 "it by default", first_offset=rec))
        log_end, ranges = _verify_commitlog(log, clean, ck.physic_msg_timestamp, damage)
        cl.damaged_ranges = ranges
        tops, keyed = _log_records(cl)
        _verify_queues(root, shape["cq_units_per_file"] if shape["known"] else None, cl,
                       log_end, tops, damage)
        if shape["known"]:  # the IndexFile's shape is only in the manifest
            _verify_index(root, shape, cl, log_end, keyed, damage)
    finally:
        log.close()
    return damage

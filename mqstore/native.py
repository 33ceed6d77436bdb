"""The one place that imports the compiled helper (``mqstore._native``), with the fallback.

``backend`` is ``"native"`` when the cffi module is loaded and ``"python"`` otherwise.
``MQSTORE_NATIVE=off`` forces the pure-Python fallback (``mqstore._purepy``), which defines
the behaviour every function must have; ``MQSTORE_NATIVE=force`` makes a missing compiled
module an ImportError instead of a warning. ``MQSTORE_CRC32C_HW=off`` keeps the native
CRC-32C on its portable table path (``crc32c_hardware`` says which one runs). Engines call
only the names exported here.

Buffers (bytes, bytearray, memoryview including unaligned slices, mmap, numpy arrays) reach
the C code without a copy through ``ffi.from_buffer``. An argument the C side cannot take
(a non-contiguous buffer, an integer outside int64) goes to the reference implementation,
so it gets exactly the reference's result or error. A C error code (a window outside the
buffer, a bad argument) is handed to the reference too (``_from_reference``): it raises the
same typed error with the same message on both builds, so a damaged length never reads
differently depending on the build (tests/faults/test_native_parity.py).

Thread-safety: every function is pure over caller-owned memory; the C code keeps no state
after import. Calls keep the GIL (cheaper for the small kernels); CRC-32C and the scans
release it for inputs of 256 KiB or more (native/mqstore_gil.h).
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from mqstore import _purepy
from mqstore._purepy import (  # noqa: F401  (re-exported: status codes and result types)
    BATCH_OVERHEAD,
    BLANK_MAGIC,
    CQ_UNIT,
    DISPATCH_COLUMNS,
    MESSAGE_MAGIC_V1,
    MSG_FIXED_OVERHEAD,
    SCAN_BLANK,
    SCAN_CORRUPT,
    SCAN_OK,
    SCAN_TORN,
    SCAN_ZERO,
    BatchScan,
    DispatchScan,
    IndexPut,
    IndexTruncate,
    RecordFields,
    RecordScan,
)

_mode = os.environ.get("MQSTORE_NATIVE", "auto").lower()
_lib = None
_ffi = None
if _mode not in ("off", "0", "false", "python"):
    try:
        from mqstore._native import ffi as _ffi  # type: ignore[import-not-found]
        from mqstore._native import lib as _lib
    except ImportError as exc:  # pragma: no cover - depends on the build
        if _mode == "force":
            raise
        warnings.warn(
            f"mqstore's native helper is not built ({exc}); using the slow pure-Python "
            "fallback. Fix: install a C compiler and the Python headers, then reinstall "
            "with `pip install -e .` (or `pip install --force-reinstall mqstore`); set "
            "MQSTORE_NATIVE=off to silence this warning.",
            RuntimeWarning,
            stacklevel=2,
        )

backend = "native" if _lib is not None else "python"
crc32c_hardware = False  # True when CRC-32C runs on the SSE4.2 crc32 instruction

__all__ = [
    "DISPATCH_COLUMNS",
    "SCAN_BLANK",
    "SCAN_CORRUPT",
    "SCAN_OK",
    "SCAN_TORN",
    "SCAN_ZERO",
    "BatchScan",
    "DispatchScan",
    "IndexPut",
    "IndexTruncate",
    "RecordFields",
    "RecordScan",
    "backend",
    "cq_tag_scan",
    "crc32c",
    "crc32c_hardware",
    "decode_records",
    "dispatch_fields",
    "encode_value_records",
    "find_batch",
    "index_put_keys",
    "index_truncate_from",
    "java_string_hash",
    "java_string_hashes",
    "murmur2",
    "offset_index_floor",
    "scan_batches",
    "scan_commitlog",
    "time_index_floor",
]

# ----- C return codes (from native/mqstore_native.h) -----
_ERR_RANGE = -2
_ERR_ARG = -3
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_SCAN_FULL = 5  # the output arrays are full: call again from next_pos (never leaves this file)
_EMPTY = np.empty(0, dtype=np.int64)
_BAD_BUFFER = (TypeError, BufferError, ValueError)  # what ffi.from_buffer raises
if _ffi is not None:
    _U8_ARRAY = _ffi.typeof("uint8_t[]")
    _I64_ARRAY = _ffi.typeof("int64_t[]")
    _from_buffer = _ffi.from_buffer


def _from_reference(code: int, held, reference, *args):
    """A C call returned the error ``code``: release the ``held`` buffers (so that a kept
    traceback does not keep an mmap from being closed) and let the reference run on the same
    arguments. It checks them first and raises its typed error (``BufferRangeError`` for
    ``_ERR_RANGE``, ``ValueError`` for ``_ERR_ARG``) with its message; should it accept
    them, its result is the answer (the reference defines the behaviour)."""
    del code  # the reference finds the problem again and names it
    for cdata in held:
        _ffi.release(cdata)
    return reference(*args)


def _crc32c_native(data, crc: int = 0) -> int:
    """CRC-32C of ``data`` (any buffer), continuing from ``crc`` for chunked updates."""
    if type(data) is bytes:  # cffi passes a bytes object's own memory: the cheapest call
        return _lib.mq_crc32c(crc & 0xFFFFFFFF, data, len(data))
    try:
        p = _from_buffer(_U8_ARRAY, data)
    except _BAD_BUFFER:
        return _purepy.crc32c(data, crc)
    return _lib.mq_crc32c(crc & 0xFFFFFFFF, p, len(p))


def _java_string_hash_native(s: str) -> int:
    """Java ``String.hashCode``: over UTF-16 code units, 32-bit wrap, signed result."""
    if not isinstance(s, str):
        return _purepy.java_string_hash(s)
    units = s.encode("utf-16-le", "surrogatepass")
    return _lib.mq_java_string_hash(units, len(units) // 2)


def _java_string_hashes_native(strings) -> np.ndarray:
    """``java_string_hash`` of each string, as an int64 array (for a run of keys)."""
    if not isinstance(strings, (list, tuple)):
        strings = list(strings)
    try:
        joined = "".join(strings)
    except TypeError:
        return _purepy.java_string_hashes(strings)
    units = joined.encode("utf-16-le", "surrogatepass")
    if len(units) == 2 * len(joined):  # no surrogate pairs: one code unit per character
        lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    else:
        lengths = np.fromiter((len(s.encode("utf-16-le", "surrogatepass")) // 2
                               for s in strings), dtype=np.int64, count=len(strings))
    out = np.empty(len(strings), dtype=np.int64)
    status = _lib.mq_java_string_hashes(units, len(units) // 2,
                                        _from_buffer(_I64_ARRAY, lengths), len(strings),
                                        _from_buffer(_I64_ARRAY, out))
    if status < 0:
        return _from_reference(status, (), _purepy.java_string_hashes, strings)
    return out


def _murmur2_native(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` (seed 0x9747b28c), as a signed 32-bit int."""
    if type(data) is bytes:
        return _lib.mq_murmur2(data, len(data))
    try:
        p = _from_buffer(_U8_ARRAY, data)
    except _BAD_BUFFER:
        return _purepy.murmur2(data)
    return _lib.mq_murmur2(p, len(p))


def _index_floor(c_function, reference, entry_bytes: int, buf, n_entries: int, target: int):
    try:
        p = _from_buffer(_U8_ARRAY, buf)
        if target < _INT64_MIN:  # rare: let the reference decide (range error or -1)
            return reference(buf, n_entries, target)
        slot = c_function(p, len(p), n_entries, min(target, _INT64_MAX))
    except (*_BAD_BUFFER, OverflowError):
        return reference(buf, n_entries, target)
    if slot < -1:
        return _from_reference(slot, (p,), reference, buf, n_entries, target)
    return slot


def _offset_index_floor_native(buf, n_entries: int, target: int) -> int:
    """Slot of the largest ``.index`` entry whose relative offset <= ``target``, or -1."""
    return _index_floor(_lib.mq_offset_index_floor, _purepy.offset_index_floor, 8,
                        buf, n_entries, target)


def _time_index_floor_native(buf, n_entries: int, target: int) -> int:
    """Slot of the largest ``.timeindex`` entry whose timestamp <= ``target``, or -1."""
    return _index_floor(_lib.mq_time_index_floor, _purepy.time_index_floor, 12,
                        buf, n_entries, target)


def _find_batch_native(buf, pos: int, end: int, target_offset: int) -> int:
    """Position of the first batch at or after ``pos`` whose last offset >= target, or -1."""
    try:
        p = _from_buffer(_U8_ARRAY, buf)
        found = _lib.mq_find_batch(p, len(p), pos, end, target_offset)
    except (*_BAD_BUFFER, OverflowError):
        return _purepy.find_batch(buf, pos, end, target_offset)
    if found < -1:
        return _from_reference(found, (p,), _purepy.find_batch, buf, pos, end, target_offset)
    return found


def _scan(c_function, reference, min_entry: int, buf, pos: int, end: int):
    """Run a C scan, growing its five output columns until the scan stops; returns the
    reference's result instead for arguments the C side cannot take."""
    count = _ffi.new("int64_t[2]")  # count, next_pos
    chunks = []
    cap = 0
    start = pos
    while True:
        cap = min(cap * 4, 1 << 20) if cap else max(1, min(max(end - pos, 0) // min_entry + 1,
                                                           4096))
        cols = np.empty((5, cap), dtype=np.int64)
        ptrs = [_from_buffer(_I64_ARRAY, cols[i]) for i in range(5)]
        if not chunks:
            try:
                p = _from_buffer(_U8_ARRAY, buf)
                status = c_function(p, len(p), pos, end, cap, *ptrs, count, count + 1)
            except (*_BAD_BUFFER, OverflowError):
                return reference(buf, pos, end)
        else:
            status = c_function(p, len(p), pos, end, cap, *ptrs, count, count + 1)
        if status < 0:
            return _from_reference(status, (p,), reference, buf, start, end)
        pos = int(count[1])
        chunks.append(cols[:, :count[0]])
        if status != _SCAN_FULL:
            break
    rows = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=1)
    return pos, status, rows


def _scan_batches_native(buf, pos: int, end: int) -> BatchScan:
    """Validate Kafka batches from ``pos`` (size >= 61, magic 2, CRC-32C) up to ``end``."""
    got = _scan(_lib.mq_scan_batches, _purepy.scan_batches, BATCH_OVERHEAD, buf, pos, end)
    if isinstance(got, BatchScan):
        return got
    valid_end, status, rows = got
    return BatchScan(valid_end, status, *rows)


def _scan_commitlog_native(buf, pos: int, end: int) -> RecordScan:
    """Validate RocketMQ V1 messages from ``pos``: size, magic, body CRC, recomputed length."""
    got = _scan(_lib.mq_scan_commitlog, _purepy.scan_commitlog, MSG_FIXED_OVERHEAD,
                buf, pos, end)
    if isinstance(got, RecordScan):
        return got
    valid_end, status, rows = got
    return RecordScan(valid_end, status, *rows)


def _cq_tag_scan_native(buf, start_unit: int, n_units: int, tag_hashes) -> np.ndarray:
    """Indexes (relative to ``start_unit``) of the ConsumeQueue units among ``n_units`` whose
    tag hash is one of ``tag_hashes``, as an int64 array."""
    wanted = np.unique(np.asarray(list(tag_hashes), dtype=np.int64))
    try:
        p = _from_buffer(_U8_ARRAY, buf)
        if n_units <= 0:
            return _EMPTY.copy()
        out = np.empty(n_units, dtype=np.int64)
        k = _lib.mq_cq_tag_scan(p, len(p), start_unit, n_units,
                                _from_buffer(_I64_ARRAY, wanted), len(wanted),
                                _from_buffer(_I64_ARRAY, out))
    except (*_BAD_BUFFER, OverflowError, MemoryError):
        return _purepy.cq_tag_scan(buf, start_unit, n_units, wanted.tolist())
    if k < 0:
        return _from_reference(k, (p,), _purepy.cq_tag_scan, buf, start_unit, n_units,
                               wanted.tolist())
    return out[:k].copy() if k < len(out) // 2 else out[:k]


def _decode_records_native(buf, pos: int, end: int, count: int) -> RecordFields:
    """Parse ``count`` magic-2 records from ``buf[pos:end)``: positions and lengths of their
    fields (see ``_purepy.decode_records``)."""
    try:
        p = _from_buffer(_U8_ARRAY, buf)
        span = max(end - pos, 0)
        records_cap = max(0, min(count, span // 7))  # a record takes at least 7 bytes
        headers_cap = 2 * records_cap + 8
        out = _ffi.new("int64_t[3]")  # records, headers, next_pos
        while True:
            records = np.empty((records_cap, 9), dtype=np.int64)
            headers = np.empty((headers_cap, 4), dtype=np.int64)
            status = _lib.mq_decode_records(
                p, len(p), pos, end, count, records_cap, _from_buffer(_I64_ARRAY, records),
                headers_cap, _from_buffer(_I64_ARRAY, headers), out, out + 1, out + 2)
            if status != _SCAN_FULL:
                break
            headers_cap = span // 2 + 1  # a header takes at least 2 bytes: always enough
    except (*_BAD_BUFFER, OverflowError):
        return _purepy.decode_records(buf, pos, end, count)
    if status < 0:
        return _from_reference(status, (p,), _purepy.decode_records, buf, pos, end, count)
    return RecordFields(status, int(out[2]), records[:out[0]], headers[:out[1]])


def _dispatch_fields_native(buf, pos: int, end: int) -> DispatchScan:
    """What the dispatcher needs from each message from ``pos`` (see
    ``_purepy.dispatch_fields``)."""
    count = _ffi.new("int64_t[2]")  # count, next_pos
    chunks = []
    cap = 0
    start = pos
    while True:
        cap = min(cap * 4, 1 << 18) if cap else \
            max(1, min(max(end - pos, 0) // MSG_FIXED_OVERHEAD + 1, 4096))
        rows = np.empty((cap, len(DISPATCH_COLUMNS)), dtype=np.int64)
        if not chunks:
            try:
                p = _from_buffer(_U8_ARRAY, buf)
                status = _lib.mq_dispatch_fields(p, len(p), pos, end, cap,
                                                 _from_buffer(_I64_ARRAY, rows),
                                                 count, count + 1)
            except (*_BAD_BUFFER, OverflowError):
                return _purepy.dispatch_fields(buf, pos, end)
        else:
            status = _lib.mq_dispatch_fields(p, len(p), pos, end, cap,
                                             _from_buffer(_I64_ARRAY, rows),
                                             count, count + 1)
        if status < 0:
            return _from_reference(status, (p,), _purepy.dispatch_fields, buf, start, end)
        pos = int(count[1])
        chunks.append(rows[:count[0]])
        if status != _SCAN_FULL:
            break
    return DispatchScan(pos, status, chunks[0] if len(chunks) == 1 else np.concatenate(chunks))


def _encode_value_records_native(values) -> bytes:
    """The records section of a magic-2 batch holding ``values`` (see
    ``_purepy.encode_value_records``). Its own buffer, not the thread's scratch that
    ``encode_value_records_view`` reuses, so a view handed out earlier stays intact."""
    if not isinstance(values, (list, tuple)):
        values = list(values)
    try:
        blob = b"".join(values)
    except TypeError:
        return _purepy.encode_value_records(values)
    n = len(values)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
    cap = len(blob) + 19 * n
    out = _ffi.new("uint8_t[]", cap)
    written = _lib.mq_encode_value_records(blob, len(blob), _from_buffer(_I64_ARRAY, lengths),
                                           n, out, cap)
    if written < 0:  # _ERR_ARG: len() is not the byte length (a memoryview of int32s)
        return _from_reference(written, (), _purepy.encode_value_records, values)
    return _ffi.buffer(out, written)[:]


def _index_put_keys_native(buf, hash_slots: int, index_entries: int, state, key_hashes,
                           phy_offsets, store_timestamps) -> IndexPut:
    """RocketMQ ``IndexFile.putKey`` for a run of keys, in place (see
    ``_purepy.index_put_keys``)."""
    try:
        hashes = np.ascontiguousarray(key_hashes, dtype=np.int64)
        phys = np.ascontiguousarray(phy_offsets, dtype=np.int64)
        stamps = np.ascontiguousarray(store_timestamps, dtype=np.int64)
        if not (hashes.ndim == phys.ndim == stamps.ndim == 1
                and len(hashes) == len(phys) == len(stamps)):
            raise TypeError
        p = _from_buffer(_U8_ARRAY, buf, require_writable=True)
        st = _ffi.new("int64_t[4]", list(state))
        put = _lib.mq_index_put_keys(p, len(p), hash_slots, index_entries, st,
                                     _from_buffer(_I64_ARRAY, hashes),
                                     _from_buffer(_I64_ARRAY, phys),
                                     _from_buffer(_I64_ARRAY, stamps), len(hashes))
    except (*_BAD_BUFFER, OverflowError):
        return _purepy.index_put_keys(buf, hash_slots, index_entries, state, key_hashes,
                                      phy_offsets, store_timestamps)
    if put < 0:  # the reference names the bad argument or range
        return _from_reference(put, (p,), _purepy.index_put_keys, buf, hash_slots,
                               index_entries, state, key_hashes, phy_offsets, store_timestamps)
    return IndexPut(put, st[0], st[1], st[2], st[3])


def _index_truncate_from_native(buf, hash_slots: int, index_entries: int, state,
                                phy_offset: int) -> IndexTruncate:
    """Undo IndexFile entries at or after ``phy_offset`` in place (see
    ``_purepy.index_truncate_from``)."""
    try:
        p = _from_buffer(_U8_ARRAY, buf, require_writable=True)
        st = _ffi.new("int64_t[2]", list(state))
        last = _ffi.new("int64_t *")
        removed = _lib.mq_index_truncate_from(p, len(p), hash_slots, index_entries, st,
                                              phy_offset, last)
    except (*_BAD_BUFFER, OverflowError):
        return _purepy.index_truncate_from(buf, hash_slots, index_entries, state, phy_offset)
    if removed < 0:
        return _from_reference(removed, (p,), _purepy.index_truncate_from, buf, hash_slots,
                               index_entries, state, phy_offset)
    return IndexTruncate(removed, st[0], st[1], last[0])


if _lib is None:
    crc32c = _purepy.crc32c
    java_string_hash = _purepy.java_string_hash
    java_string_hashes = _purepy.java_string_hashes
    murmur2 = _purepy.murmur2
    offset_index_floor = _purepy.offset_index_floor
    time_index_floor = _purepy.time_index_floor
    find_batch = _purepy.find_batch
    scan_batches = _purepy.scan_batches
    scan_commitlog = _purepy.scan_commitlog
    cq_tag_scan = _purepy.cq_tag_scan
    decode_records = _purepy.decode_records
    dispatch_fields = _purepy.dispatch_fields
    encode_value_records = _purepy.encode_value_records
    index_put_keys = _purepy.index_put_keys
    index_truncate_from = _purepy.index_truncate_from
else:
    _force_sw = os.environ.get("MQSTORE_CRC32C_HW", "").lower() in ("off", "0", "false")
    crc32c_hardware = bool(_lib.mq_init(1 if _force_sw else 0))
    crc32c = _crc32c_native
    java_string_hash = _java_string_hash_native
    java_string_hashes = _java_string_hashes_native
    murmur2 = _murmur2_native
    offset_index_floor = _offset_index_floor_native
    time_index_floor = _time_index_floor_native
    find_batch = _find_batch_native
    scan_batches = _scan_batches_native
    scan_commitlog = _scan_commitlog_native
    cq_tag_scan = _cq_tag_scan_native
    decode_records = _decode_records_native
    dispatch_fields = _dispatch_fields_native
    encode_value_records = _encode_value_records_native
    index_put_keys = _index_put_keys_native
    index_truncate_from = _index_truncate_from_native


# ===== [segments read] wrappers of native/batch_decode.c (reference: mqstore/_purepy_batches.py)
import threading  # noqa: E402

from mqstore import _purepy_batches  # noqa: E402
from mqstore._purepy_batches import BatchRecords  # noqa: E402,F401  (re-exported)


def _decode_batches_native(buf, pos: int, end: int, expect: int, min_offset: int,
                           end_offset: int, check_crcs: bool, max_records: int,
                           max_bytes: int) -> BatchRecords:
    """Walk and decode the batches of ``buf[pos:end)`` in one C call (more only when the
    output arrays fill up); see ``_purepy_batches.decode_batches``."""
    args = (buf, pos, end, expect, min_offset, end_offset, check_crcs, max_records, max_bytes)
    try:
        p = _from_buffer(_U8_ARRAY, buf)
    except _BAD_BUFFER:
        return _purepy_batches.decode_batches(*args)
    span = max(end - pos, 0)
    records_cap = span // 64 + 16
    headers_cap = records_cap
    state = _ffi.new("int64_t[5]")
    rec_parts, hdr_parts = [], []
    n_headers = value_bytes = 0
    max_records = min(max_records, _INT64_MAX)
    max_bytes = min(max_bytes, _INT64_MAX)
    try:
        while True:
            records = np.empty((records_cap, 9), dtype=np.int64)
            headers = np.empty((headers_cap, 4), dtype=np.int64)
            state[0] = expect
            status = _lib.mq_decode_batches(
                p, len(p), pos, end, min_offset, min(end_offset, _INT64_MAX),
                1 if check_crcs else 0, max_records, max_bytes,
                records_cap, _from_buffer(_I64_ARRAY, records),
                headers_cap, _from_buffer(_I64_ARRAY, headers), state)
            if status < 0:
                break
            n, h = state[1], state[2]
            got = records[:n]
            if n_headers and n:
                got[:, 6] += n_headers
                got[:, 8] = np.where(got[:, 8] >= 0, got[:, 8] + n_headers, -1)
            rec_parts.append(got)
            hdr_parts.append(headers[:h])
            n_headers += h
            value_bytes += state[4]
            expect, pos = state[0], state[3]
            if status != _SCAN_FULL:
                break
            max_records -= n
            max_bytes -= state[4]
            span = max(end - pos, 0)
            if n == 0:  # not even one batch fitted: room for anything
                records_cap, headers_cap = span // 7 + 2, span // 2 + 2
            else:
                records_cap, headers_cap = records_cap * 4, headers_cap * 4
    except OverflowError:  # an argument outside int64: the reference decides
        return _purepy_batches.decode_batches(*args)
    if status < 0:
        return _from_reference(status, (p,), _purepy_batches.decode_batches, *args)
    return BatchRecords(
        status, pos, expect, value_bytes,
        rec_parts[0] if len(rec_parts) == 1 else np.concatenate(rec_parts),
        hdr_parts[0] if len(hdr_parts) == 1 else np.concatenate(hdr_parts))


def _batch_span_native(buf, pos: int, end: int, end_offset: int) -> tuple[int, int, int]:
    """``(count, stop, next_offset)`` of the whole batches a transfer sends from ``pos``
    (see ``_purepy_batches.batch_span``)."""
    try:
        p = _from_buffer(_U8_ARRAY, buf)
        out = _ffi.new("int64_t[2]")
        n = _lib.mq_batch_span(p, len(p), pos, end, min(end_offset, _INT64_MAX), out)
    except (*_BAD_BUFFER, OverflowError):
        return _purepy_batches.batch_span(buf, pos, end, end_offset)
    if n < 0:
        return _from_reference(n, (p,), _purepy_batches.batch_span, buf, pos, end, end_offset)
    return n, out[0], out[1]


def _encode_records_native(values, keys, timestamp_deltas, extras) -> bytes:
    """The records section of a batch of mqstore messages in one C call (see
    ``_purepy_batches.encode_records``)."""
    n = len(values)
    try:
        if not len(keys) == len(timestamp_deltas) == len(extras) == n:
            raise TypeError
        vblob = b"".join(values)
        kblob = b"".join([k for k in keys if k is not None])
        eblob = b"".join(extras)
        vlen = np.fromiter(map(len, values), dtype=np.int64, count=n)
        klen = np.fromiter((-1 if k is None else len(k) for k in keys), dtype=np.int64,
                           count=n)
        elen = np.fromiter(map(len, extras), dtype=np.int64, count=n)
        deltas = np.ascontiguousarray(timestamp_deltas, dtype=np.int64)
    except (TypeError, OverflowError, ValueError):
        return _purepy_batches.encode_records(values, keys, timestamp_deltas, extras)
    cap = len(vblob) + len(kblob) + len(eblob) + 32 * n
    out = _ffi.new("uint8_t[]", cap)
    written = _lib.mq_encode_records(vblob, len(vblob), _from_buffer(_I64_ARRAY, vlen),
                                     kblob, len(kblob), _from_buffer(_I64_ARRAY, klen),
                                     _from_buffer(_I64_ARRAY, deltas), eblob, len(eblob),
                                     _from_buffer(_I64_ARRAY, elen), n, out, cap)
    if written < 0:  # len() is not the byte length (a memoryview of int32s): the reference
        return _from_reference(written, (), _purepy_batches.encode_records, values, keys,
                               timestamp_deltas, extras)
    return _ffi.buffer(out, written)[:]


_scratch = threading.local()
_SCRATCH_KEPT = 16 * 1024 * 1024  # the largest scratch buffer a thread keeps between calls


def _encode_value_records_view_native(values, lead: int) -> memoryview:
    """``lead`` free bytes, then the records section of a batch of plain ``values``, in this
    thread's scratch buffer (see ``_purepy_batches.encode_value_records_view``): no fresh
    megabyte per call (a new buffer's page faults cost more than the encoding)."""
    if not isinstance(values, (list, tuple)):
        values = list(values)
    try:
        blob = b"".join(values)
    except TypeError:
        return _purepy_batches.encode_value_records_view(values, lead)
    n = len(values)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
    cap = len(blob) + 19 * n
    buf = getattr(_scratch, "buf", None)
    if buf is None or len(buf) < lead + cap:
        buf = bytearray(max(lead + cap, 64 * 1024))
        if len(buf) <= _SCRATCH_KEPT:  # a larger one is not kept by the thread
            _scratch.buf = buf
    written = _lib.mq_encode_value_records(blob, len(blob), _from_buffer(_I64_ARRAY, lengths),
                                           n, _from_buffer(_U8_ARRAY, buf) + lead, cap)
    if written < 0:  # _ERR_ARG: len() is not the byte length (a memoryview of int32s)
        return _from_reference(written, (), _purepy_batches.encode_value_records_view,
                               values, lead)
    return memoryview(buf)[:lead + written]


if _lib is not None:
    encode_value_records_view = _encode_value_records_view_native
    encode_records = _encode_records_native
    decode_batches = _decode_batches_native
    batch_span = _batch_span_native
else:
    decode_batches = _purepy_batches.decode_batches
    batch_span = _purepy_batches.batch_span
    encode_records = _purepy_batches.encode_records
    encode_value_records_view = _purepy_batches.encode_value_records_view
__all__ += ["BatchRecords", "batch_span", "decode_batches", "encode_records",
            "encode_value_records_view"]


# ===== [commitlog write] wrappers of native/cl_encode.c (reference: mqstore/_purepy_cl_write.py)
from mqstore import _purepy_cl_write  # noqa: E402  (the reference of this section)

#: bytes of each message of a batch (numpy, the same for both backends)
cl_encoded_sizes = _purepy_cl_write.encoded_sizes
cl_plain_props_len = _purepy_cl_write.plain_props_len


def _i64_or_none(a):
    return None if a is None else np.ascontiguousarray(a, dtype=np.int64)


def _cl_encode_native(topic: bytes, bodies, body_offsets, body_lengths, props, props_offsets,
                      props_lengths, uniq_prefix: bytes, uniq_first: int, queue_ids,
                      queue_offsets, born_timestamps, phys_offset: int,
                      store_timestamp: int, out=None, out_pos: int = 0):
    """One append_batch run of messages encoded back to back from ``phys_offset`` (see
    ``_purepy_cl_write.cl_encode``): one C call, no per-message Python. With ``out`` (a
    writable buffer: the mapped file) the messages go straight to ``out[out_pos:]`` and the
    byte count is returned."""
    args = (topic, bodies, body_offsets, body_lengths, props, props_offsets, props_lengths,
            uniq_prefix, uniq_first, queue_ids, queue_offsets, born_timestamps, phys_offset,
            store_timestamp, out, out_pos)
    try:
        boffs, blens = _i64_or_none(body_offsets), _i64_or_none(body_lengths)
        poffs, plens = _i64_or_none(props_offsets), _i64_or_none(props_lengths)
        qids, qoffs = _i64_or_none(queue_ids), _i64_or_none(queue_offsets)
        borns = _i64_or_none(born_timestamps)
        n = len(blens)
        if not (len(boffs) == len(qids) == len(qoffs) == n) \
                or (borns is not None and len(borns) != n) \
                or (plens is not None and (poffs is None or len(plens) != n
                                           or len(poffs) != n)):
            raise TypeError
        if out is None:
            sizes = cl_encoded_sizes(len(topic), blens, plens, len(uniq_prefix))
            dest = bytearray(int(sizes.sum()) if n else 0)
            op = _from_buffer(_U8_ARRAY, dest, require_writable=True)
            cap = len(op)
        else:
            op = _from_buffer(_U8_ARRAY, out, require_writable=True)
            if not 0 <= out_pos <= len(op):
                raise TypeError
            cap = len(op) - out_pos
            op += out_pos
        bp = _from_buffer(_U8_ARRAY, bodies)
        pp = _from_buffer(_U8_ARRAY, props if props is not None else b"")
        written = _lib.mq_cl_encode(
            topic, len(topic), bp, len(bp), _from_buffer(_I64_ARRAY, boffs),
            _from_buffer(_I64_ARRAY, blens), pp, len(pp),
            _ffi.NULL if poffs is None else _from_buffer(_I64_ARRAY, poffs),
            _ffi.NULL if plens is None else _from_buffer(_I64_ARRAY, plens),
            uniq_prefix, len(uniq_prefix), uniq_first, _from_buffer(_I64_ARRAY, qids),
            _from_buffer(_I64_ARRAY, qoffs),
            _ffi.NULL if borns is None else _from_buffer(_I64_ARRAY, borns), n, phys_offset,
            store_timestamp, op, cap)
    except (*_BAD_BUFFER, OverflowError):
        return _purepy_cl_write.cl_encode(*args)
    if written < 0:
        return _from_reference(written, (bp, pp, op), _purepy_cl_write.cl_encode, *args)
    return dest if out is None else written


def _cl_encode_one_native(topic: bytes, body: bytes, uniq_prefix: bytes, uniq_number: int,
                          queue_id: int, queue_offset: int, phys_offset: int,
                          store_timestamp: int, out=None, out_pos: int = 0):
    """:func:`cl_encode` of one plain value (the single ``append()`` path); with ``out``,
    written at ``out[out_pos:]`` and the byte count returned."""
    args = (topic, body, uniq_prefix, uniq_number, queue_id, queue_offset, phys_offset,
            store_timestamp, out, out_pos)
    if type(body) is not bytes:
        return cl_encode_one_reference(*args)
    try:
        if out is None:
            size = _lib.mq_cl_encoded_size(len(topic), len(body), -1, len(uniq_prefix))
            dest = bytearray(size if size > 0 else 0)
            op = _from_buffer(_U8_ARRAY, dest)
            cap = len(op)
        else:
            op = _from_buffer(_U8_ARRAY, out, require_writable=True)
            if not 0 <= out_pos <= len(op):
                raise TypeError
            cap = len(op) - out_pos
            op += out_pos
        written = _lib.mq_cl_encode_one(topic, len(topic), body, len(body), uniq_prefix,
                                        len(uniq_prefix), uniq_number, queue_id, queue_offset,
                                        phys_offset, store_timestamp, op, cap)
    except (*_BAD_BUFFER, OverflowError):
        written = -1
    if written < 0:
        return cl_encode_one_reference(*args)
    return dest if out is None else written


def cl_encode_one_reference(topic: bytes, body, uniq_prefix: bytes, uniq_number: int,
                            queue_id: int, queue_offset: int, phys_offset: int,
                            store_timestamp: int, out=None, out_pos: int = 0):
    """The reference of ``cl_encode_one``: :func:`cl_encode` of a one-message batch."""
    return _purepy_cl_write.cl_encode(topic, body, [0], [len(body)], None, None, None,
                                      uniq_prefix, uniq_number, [queue_id], [queue_offset],
                                      None, phys_offset, store_timestamp, out, out_pos)


def _index_key_hashes_native(buf, positions, lengths, prefix_hashes) -> np.ndarray:
    """IndexFile hashes of ``prefix + key`` for key spans of ``buf`` (see
    ``_purepy_cl_write.index_key_hashes``)."""
    try:
        pos = np.ascontiguousarray(positions, dtype=np.int64)
        lens = np.ascontiguousarray(lengths, dtype=np.int64)
        pref = np.ascontiguousarray(prefix_hashes, dtype=np.int64)
        if not (pos.ndim == lens.ndim == pref.ndim == 1 and len(pos) == len(lens) == len(pref)):
            raise TypeError
        p = _from_buffer(_U8_ARRAY, buf)
        out = np.empty(len(pos), dtype=np.int64)
        status = _lib.mq_index_key_hashes(p, len(p), _from_buffer(_I64_ARRAY, pos),
                                          _from_buffer(_I64_ARRAY, lens),
                                          _from_buffer(_I64_ARRAY, pref), len(pos),
                                          _from_buffer(_I64_ARRAY, out))
    except (*_BAD_BUFFER, OverflowError):
        return _purepy_cl_write.index_key_hashes(buf, positions, lengths, prefix_hashes)
    if status < 0:
        return _from_reference(status, (p,), _purepy_cl_write.index_key_hashes, buf,
                               positions, lengths, prefix_hashes)
    return out


if _lib is not None:
    cl_encode = _cl_encode_native
    cl_encode_one = _cl_encode_one_native
    index_key_hashes = _index_key_hashes_native
else:
    cl_encode = _purepy_cl_write.cl_encode
    cl_encode_one = cl_encode_one_reference
    index_key_hashes = _purepy_cl_write.index_key_hashes
__all__ += ["cl_encode", "cl_encode_one", "cl_encoded_sizes", "cl_plain_props_len",
            "index_key_hashes"]


# ===== [commitlog read] wrappers of native/cl_read.c (reference: mqstore/_purepy_cl_read.py)
from mqstore import _purepy_cl_read  # noqa: E402  (the reference of this section)
from mqstore._purepy_cl_read import (  # noqa: E402,F401  (re-exported: statuses, flags, columns)
    CLR_COLUMNS,
    CLR_CORRUPT,
    CLR_FOREIGN,
    CLR_FULL,
    CLR_HAS_HEADERS,
    CLR_HAS_KEY,
    CLR_HAS_TAG,
    CLR_KEY_OTHER,
    CLR_KEY_PLAIN,
    CLR_LIMIT,
    CLR_MISMATCH,
    CLR_OK,
    CLR_OTHER_FILE,
    CLR_TAG_PLAIN,
    ClGather,
    TransferPlan,
)


def _cl_gather_native(units, first_unit: int, n_units: int, select, start: int,
                      first_queue_offset: int, buf, limit: int, file_from: int, queue_id: int,
                      check_crcs: bool, crc_required_from: int, taken: int, taken_bytes: int,
                      max_bytes: int, rows_cap: int, out, out_pos: int) -> ClGather:
    """Walk ConsumeQueue units and gather the messages they point at in one CommitLog file,
    in one C call (see ``_purepy_cl_read.cl_gather``)."""
    try:
        if select is None:
            sel, n_select = _ffi.NULL, 0
        else:
            sel_a = np.ascontiguousarray(select, dtype=np.int64)
            if sel_a.ndim != 1:
                raise TypeError("select must be one-dimensional")
            sel, n_select = _from_buffer(_I64_ARRAY, sel_a), len(sel_a)
        u = _from_buffer(_U8_ARRAY, units)
        p = _from_buffer(_U8_ARRAY, buf)
        o = _from_buffer(_U8_ARRAY, out, require_writable=True)
        rows = np.empty((CLR_COLUMNS, max(rows_cap, 0)), dtype=np.int64)
        st = _ffi.new("int64_t[8]", [start, out_pos, taken_bytes])
        status = _lib.mq_cl_gather(u, len(u), first_unit, n_units, sel, n_select,
                                   first_queue_offset, p, len(p), limit, file_from, queue_id,
                                   1 if check_crcs else 0, crc_required_from, taken, max_bytes,
                                   o, len(o), _from_buffer(_I64_ARRAY, rows), rows_cap, st)
    except (*_BAD_BUFFER, OverflowError):
        return _purepy_cl_read.cl_gather(units, first_unit, n_units, select, start,
                                         first_queue_offset, buf, limit, file_from, queue_id,
                                         check_crcs, crc_required_from, taken, taken_bytes,
                                         max_bytes, rows_cap, out, out_pos)
    if status < 0:
        return _from_reference(status, (u, p, o), _purepy_cl_read.cl_gather, units,
                               first_unit, n_units, select, start, first_queue_offset, buf,
                               limit, file_from, queue_id, check_crcs, crc_required_from,
                               taken, taken_bytes, max_bytes, rows_cap, out, out_pos)
    nxt, out_end, taken_bytes, k, flags, stop_phys, stop_size, stop_q = _ffi.unpack(st, 8)
    return ClGather(status, nxt, out_end, taken_bytes, flags, stop_phys, stop_size, stop_q,
                    rows if k == rows_cap else rows[:, :k])


cl_gather = _cl_gather_native if _lib is not None else _purepy_cl_read.cl_gather


def _cl_transfer_plan_native(units, first_unit: int, n_units: int, start: int,
                             file_from: int, limit: int, max_bytes: int, total: int,
                             have: int, cap: int) -> TransferPlan:
    """The slices a transfer_to sends from one CommitLog file, in one C call (see
    ``_purepy_cl_read.cl_transfer_plan``)."""
    try:
        u = _from_buffer(_U8_ARRAY, units)
        slices = np.empty((max(cap, 0), 2), dtype=np.int64)
        st = _ffi.new("int64_t[6]", [start, total, have])
        status = _lib.mq_cl_transfer_plan(u, len(u), first_unit, n_units, file_from, limit,
                                          max_bytes, _from_buffer(_I64_ARRAY, slices), cap, st)
    except (*_BAD_BUFFER, OverflowError):
        return _purepy_cl_read.cl_transfer_plan(units, first_unit, n_units, start, file_from,
                                                limit, max_bytes, total, have, cap)
    if status < 0:
        return _from_reference(status, (u,), _purepy_cl_read.cl_transfer_plan, units,
                               first_unit, n_units, start, file_from, limit, max_bytes, total,
                               have, cap)
    nxt, total, have, k, stop_phys, stop_size = _ffi.unpack(st, 6)
    return TransferPlan(status, nxt, total, have, stop_phys, stop_size, slices[:k])


cl_transfer_plan = (_cl_transfer_plan_native if _lib is not None
                    else _purepy_cl_read.cl_transfer_plan)
__all__ += ["CLR_COLUMNS", "CLR_FULL", "CLR_HAS_HEADERS", "CLR_HAS_KEY", "CLR_HAS_TAG",
            "CLR_KEY_OTHER", "CLR_LIMIT", "CLR_OK", "CLR_OTHER_FILE", "CQ_UNIT", "cl_gather",
            "cl_transfer_plan"]


# ----- [cl-write] (native/cl_write_ext.c: mqstore._cl_write; reference _purepy_cl_write)
#: commitlog messages of plain values encoded from the bytes objects into a writable buffer
#: (the mapped file or the transient pool buffer): cl_values_scan(values, overhead, limit),
#: cl_values_fit(values, first, overhead, room), cl_encode_values_into(buf, pos, topic,
#: values, first, count, uniq_prefix, uniq_first, queue_id, queue_offset, phys_offset,
#: store_timestamp), cl_encode_one_into(buf, pos, topic, body, uniq_prefix, uniq_number,
#: queue_id, queue_offset, phys_offset, store_timestamp)
_cl_write = None
if _lib is not None:
    try:
        from mqstore import _cl_write  # type: ignore[attr-defined,no-redef]
    except ImportError:  # pragma: no cover - an old build: the reference runs
        _cl_write = None
_clw = _cl_write if _cl_write is not None else _purepy_cl_write
cl_values_scan = _clw.values_scan
cl_values_fit = _clw.values_fit
cl_encode_values_into = _clw.encode_values_into
cl_encode_one_into = _clw.encode_one_into
del _clw
__all__ += ["cl_encode_one_into", "cl_encode_values_into", "cl_values_fit", "cl_values_scan"]


# ----- [seg-write] (native/seg_write_ext.c: mqstore._seg_write; reference _purepy_batches)
#: whole RecordBatches of plain values built from the Python objects (segments appends):
#: value_batch(base_offset, timestamp, value) -> bytes, values_batch_size(values) -> int,
#: values_batch_into(buffer, base_offset, timestamp, values, size) -> int
_seg_write = None
if _lib is not None:
    try:
        from mqstore import _seg_write  # type: ignore[attr-defined,no-redef]
    except ImportError as exc:  # pragma: no cover - a build older than seg_write_ext.c
        _seg_write = None
        warnings.warn(f"mqstore._seg_write is not built ({exc}); segments appends of plain "
                      "values use the slow pure-Python reference. Fix: reinstall with "
                      "`pip install -e .`", RuntimeWarning, stacklevel=2)
_seg = _seg_write if _seg_write is not None else _purepy_batches
value_batch = _seg.value_batch
values_batch_size = _seg.values_batch_size
values_batch_into = _seg.values_batch_into
del _seg
__all__ += ["value_batch", "values_batch_into", "values_batch_size"]


# ----- [cl-recovery] (native/cl_recover.c) -----

from mqstore import _purepy_cl_recover  # noqa: E402  (the reference of this section)


def _record_crc_rule_native(buf, positions, sizes, min_size: int, reserved: int,
                            required: bool) -> tuple[int, int | None]:
    """``_purepy_cl_recover.record_crc_rule`` in C (``mq_cl_record_crc_rule``)."""
    pos = np.ascontiguousarray(positions, dtype=np.int64)
    size = np.ascontiguousarray(sizes, dtype=np.int64)
    if len(pos) != len(size):
        raise ValueError("record_crc_rule: positions and sizes differ in length")
    state = _ffi.new("int64_t[2]", [1 if required else 0, -1])
    try:
        p = _from_buffer(_U8_ARRAY, buf)
    except _BAD_BUFFER:
        return _purepy_cl_recover.record_crc_rule(buf, pos, size, min_size, reserved, required)
    got = _lib.mq_cl_record_crc_rule(p, len(p), _from_buffer(_I64_ARRAY, pos),
                                     _from_buffer(_I64_ARRAY, size), len(pos), min_size,
                                     reserved, state, state + 1)
    if got < -1:
        return _from_reference(got, (p,), _purepy_cl_recover.record_crc_rule, buf, pos, size,
                               min_size, reserved, required)
    first = int(state[1]) if not required and state[0] else None
    return int(got), first


record_crc_rule = _record_crc_rule_native if backend == "native" \
    else _purepy_cl_recover.record_crc_rule
__all__ += ["record_crc_rule"]

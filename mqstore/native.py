"""The one place that imports the compiled helper (``mqstore._native``), with the fallback.

``backend`` is ``"native"`` when the cffi module is loaded and ``"python"`` otherwise.
``MQSTORE_NATIVE=off`` forces the pure-Python fallback (``mqstore._purepy``), which defines
the behaviour every function must have. Engines call only the names exported here.
"""
from __future__ import annotations

import os
import warnings

from mqstore import _purepy
from mqstore._purepy import (  # noqa: F401  (re-exported: status codes and result types)
    BATCH_OVERHEAD,
    BLANK_MAGIC,
    CQ_UNIT,
    MESSAGE_MAGIC_V1,
    MSG_FIXED_OVERHEAD,
    SCAN_BLANK,
    SCAN_CORRUPT,
    SCAN_OK,
    SCAN_TORN,
    SCAN_ZERO,
    BatchScan,
    RecordScan,
)

_mode = os.environ.get("MQSTORE_NATIVE", "auto").lower()
_lib = None
if _mode not in ("off", "0", "false", "python"):
    try:
        from mqstore import _native as _compiled  # type: ignore[attr-defined]

        _lib = _compiled
    except ImportError as exc:  # pragma: no cover - depends on the build
        warnings.warn(
            f"mqstore's native helper is not built ({exc}); using the slow pure-Python "
            "fallback. Fix: pip install -e . with a C compiler present.",
            RuntimeWarning,
            stacklevel=2,
        )

backend = "native" if _lib is not None else "python"

crc32c = _purepy.crc32c
java_string_hash = _purepy.java_string_hash
murmur2 = _purepy.murmur2
offset_index_floor = _purepy.offset_index_floor
time_index_floor = _purepy.time_index_floor
find_batch = _purepy.find_batch
scan_batches = _purepy.scan_batches
scan_commitlog = _purepy.scan_commitlog
cq_tag_scan = _purepy.cq_tag_scan

__all__ = [
    "backend", "crc32c", "java_string_hash", "murmur2", "offset_index_floor",
    "time_index_floor", "find_batch", "scan_batches", "scan_commitlog", "cq_tag_scan",
    "BatchScan", "RecordScan", "SCAN_OK", "SCAN_TORN", "SCAN_CORRUPT", "SCAN_BLANK",
    "SCAN_ZERO",
]

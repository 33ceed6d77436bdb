"""Pure-Python (numpy) reference of native/cl_recover.c: the record-CRC rule of commitlog
recovery (``engines/commitlog/recovery.py``), used when the native helper is not built or
``MQSTORE_NATIVE=off``, and as the definition the C kernel is tested against."""
from __future__ import annotations

import numpy as np

from mqstore.errors import BufferRangeError

#: "__CRC32#" as one little-endian 8-byte word
_NAME_WORD = np.frombuffer(b"__CRC32#", dtype="<u8")[0]


def record_crc_rule(buf, positions, sizes, min_size: int, reserved: int,
                    required: bool) -> tuple[int, int | None]:
    """Over messages a scan accepted (message i at ``buf[positions[i]]``, ``sizes[i]``
    bytes), a message has the record CRC when it is at least ``min_size`` bytes and its
    last ``reserved`` bytes open with ``__CRC32#`` 0x01 and end with 0x02. Once one has it,
    every later one must (``required``: the rule already applies from the first message).
    Returns (index of the first message under the rule without it or -1, index of the first
    message having it when the rule started here, else None)."""
    if reserved < 9 or min_size < reserved:
        raise ValueError(f"record_crc_rule: reserved {reserved}, min_size {min_size}")
    pos = np.asarray(positions, dtype=np.int64)
    size = np.asarray(sizes, dtype=np.int64)
    u8 = np.frombuffer(buf, dtype=np.uint8)
    if len(pos) and ((pos < 0).any() or (size < 1).any() or (pos + size > len(u8)).any()):
        raise BufferRangeError("record_crc_rule: a message reaches outside the buffer")
    if not len(pos):
        return -1, None
    ends = pos + size
    tail = ends - reserved
    # "__CRC32#" as one unaligned 8-byte word at every byte position, then its 0x01 and
    # the closing 0x02 (3 gathers per message)
    words = np.ndarray(shape=(max(len(u8) - 7, 0),), dtype="<u8", buffer=u8, strides=(1,)) \
        if len(u8) >= 8 else None
    ok = size >= min_size
    if len(u8) < 8:  # no message there can hold the property
        ok[:] = False
        u8 = np.zeros(9, dtype=np.uint8)
        words = np.zeros(2, dtype="<u8")
    safe_tail = np.where(ok, tail, 0)
    has = ok & (u8[np.where(ok, ends - 1, 0)] == 2)
    has &= (words[np.minimum(safe_tail, max(len(words) - 1, 0))] == _NAME_WORD) \
        & (u8[safe_tail + 8] == 1)
    first = None
    start = 0
    if not required:
        if not has.any():
            return -1, None
        start = first = int(np.argmax(has))
    missing = np.flatnonzero(~has[start:])
    return (int(missing[0]) + start if missing.size else -1), first

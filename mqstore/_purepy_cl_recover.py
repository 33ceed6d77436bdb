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
    if len(pos) != len(size):
        raise ValueError("record_crc_rule: positions and sizes differ in length")
    u8 = np.frombuffer(buf, dtype=np.uint8)
    # pos > len - size, not pos + size > len: the sum of two hostile int64 wraps
    if len(pos) and ((pos < 0).any() or (size < 1).any() or (size > len(u8)).any()
                     or (pos > len(u8) - size).any()):
        raise BufferRangeError("record_crc_rule: a message reaches outside the buffer")
    if not len(pos):
        return -1, None
    # "__CRC32#" as one unaligned 8-byte word at the start of each message's last
    # ``reserved`` bytes, then its 0x01 and the closing 0x02 (3 gathers per message); a
    # message long enough lies in buf, so buf holds at least 9 bytes when one is
    has = np.zeros(len(pos), dtype=bool)
    long_enough = np.flatnonzero(size >= min_size)
    if long_enough.size:
        ends = pos[long_enough] + size[long_enough]
        tail = ends - reserved
        words = np.ndarray(shape=(len(u8) - 7,), dtype="<u8", buffer=u8, strides=(1,))
        has[long_enough] = (u8[ends - 1] == 2) & (words[tail] == _NAME_WORD) \
            & (u8[tail + 8] == 1)
    first = None
    start = 0
    if not required:
        if not has.any():
            return -1, None
        start = first = int(np.argmax(has))
    missing = np.flatnonzero(~has[start:])
    return (int(missing[0]) + start if missing.size else -1), first

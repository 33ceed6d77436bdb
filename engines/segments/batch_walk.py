"""Walking the batch headers of a ``.log`` with chunked ``pread`` (:class:`BatchWalk`): how
a segment finds its end at open, a follower catches up, and lookups step from an index
floor to the batch they want. Reads only; no CRC check (Kafka's ``FileLogInputStream``).
"""
from __future__ import annotations

import os
from collections.abc import Iterator

from mqstore.engines.segments import format as fmt

#: bytes read at a time when walking or scanning a ``.log``
WALK_CHUNK = 64 * 1024
#: bytes read at a time when walking only the headers of batches larger than a chunk
HEADER_READ = 4096

_unpack_offsets = fmt.BATCH_OFFSETS.unpack_from


class BatchWalk:
    """Walk batch headers of a ``.log`` from ``start`` to ``end`` with chunked ``pread``.

    Yields ``(position, size, base_offset, last_offset, chunk, offset_in_chunk)``; the whole
    batch is ``chunk[offset_in_chunk:offset_in_chunk + size]``, or with ``headers_only`` at
    least its 61-byte header (the walk then reads headers, not the batches: after a batch
    larger than a chunk it preads the next header region only, ``HEADER_READ`` bytes, so
    walking large batches costs one small pread each). Stops at ``end``, at a batch that
    runs past ``end`` (``stop_reason = "torn"``) or at a malformed header (``"corrupt"``);
    ``stop_position`` is where it stopped. No CRC check (Kafka's ``FileLogInputStream``);
    :meth:`LogSegment.recover` validates CRCs.
    """

    def __init__(self, fd: int, start: int, end: int, chunk_size: int = WALK_CHUNK, *,
                 headers_only: bool = False):
        self.fd, self.start, self.end, self.chunk_size = fd, start, end, chunk_size
        self.headers_only = headers_only
        self.stop_reason: str | None = None
        self.stop_position = start

    def __iter__(self) -> Iterator[tuple[int, int, int, int, bytes, int]]:
        pos, end, need = self.start, self.end, self.chunk_size
        headers_only = self.headers_only
        while pos < end:
            chunk = os.pread(self.fd, min(need, end - pos), pos)
            if not chunk:
                break
            off = 0
            clen = len(chunk)
            while off + fmt.RECORD_BATCH_OVERHEAD <= clen:
                base, length, _e, magic, _c, _a, lod = _unpack_offsets(chunk, off)
                size = length + fmt.LOG_OVERHEAD
                if size < fmt.RECORD_BATCH_OVERHEAD or magic != fmt.MAGIC or lod < 0:
                    self.stop_reason, self.stop_position = "corrupt", pos + off
                    return
                if off + size > clen:
                    if not headers_only or pos + off + size > end:
                        break
                    yield pos + off, size, base, base + lod, chunk, off
                    off += size  # past this chunk: the next pread starts at the next header
                    break
                yield pos + off, size, base, base + lod, chunk, off
                off += size
            if off == 0:  # the next batch does not fit the chunk
                if end - pos < fmt.RECORD_BATCH_OVERHEAD:
                    break
                size = fmt.BASE_OFFSET_AND_LENGTH.unpack_from(chunk, 0)[1] + fmt.LOG_OVERHEAD
                if pos + size > end:
                    break
                need = max(size, self.chunk_size)
                continue
            if headers_only:  # after a batch larger than the chunk: its next header only
                need = HEADER_READ if off > clen else max(self.chunk_size, WALK_CHUNK)
            else:
                need = self.chunk_size
            pos += off
            self.stop_position = pos
        self.stop_position = pos
        if pos < end:
            self.stop_reason = "torn"

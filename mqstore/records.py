"""What reads and appends return: ``Record`` / ``RecordMetadata`` and their lazy sequences.

The batch is the primary form and a row object is made only when someone touches one
(Apache Arrow's ``RecordBatch``, kafka-python's ``MemoryRecords``):

- :class:`Records` is what ``Store.read`` returns: one object over the bytes a read
  decoded, with numpy columns (``offsets``, ``timestamps_ms``, ``value_sizes``,
  ``value_offsets``), the bytes themselves (``value_buffer``) and list views
  (``values()``, ``keys()``). It is a ``Sequence[Record]``: ``len``, indexing, slicing and
  iteration work, and it compares equal to a list of the same records.
- :class:`BatchMetadata` is what ``Store.append_batch`` returns: per message, in call order,
  where it landed; it knows each partition's base offset and count
  (:attr:`BatchMetadata.ranges`) and makes a ``RecordMetadata`` when one is indexed.

``Record`` and ``RecordMetadata`` are named tuples (a C-level tuple underneath, so making one
costs one ``tuple.__new__``): immutable, field access by name, equal when their fields are
equal. Being tuples, they also unpack and compare equal to a plain tuple of the same fields.

Thread-safety: both sequences are immutable once built (the lazy columns are computed at
most once; two threads racing compute the same value), so any number of threads may read
one. ``value_buffer`` is a read-only view of bytes the sequence owns.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import repeat
from typing import Any, NamedTuple, Union

import numpy as np

class Headers(dict):
    """The headers of a record as read back: a ``dict`` that cannot be changed (a read's
    records share their header objects with the ``Records`` they came from). It pickles and
    copies as a ``Headers``; ``dict(h)`` gives a mutable copy."""

    __slots__ = ()

    def _read_only(self, *args: object, **kwargs: object):
        raise TypeError("a record's headers cannot be changed (dict(headers) is a copy)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]
    __ior__ = _read_only  # type: ignore[assignment]

    def __reduce__(self):
        return (Headers, (dict(self),))

    def __copy__(self) -> "Headers":
        return self

    def __deepcopy__(self, memo: dict) -> "Headers":
        return self

    def __repr__(self) -> str:
        return dict.__repr__(self)


#: the ``headers`` of a record that has none (shared, immutable, equal to ``{}``)
EMPTY_HEADERS: Mapping[str, bytes] = Headers()

_tuple_new = tuple.__new__

#: ``mqstore._rows`` (native/rows.c) makes the value bytes and the Record tuples of a read in
#: C; the pure-Python code below does the same where it is not built or MQSTORE_NATIVE=off
_rows = None
if os.environ.get("MQSTORE_NATIVE", "auto").lower() not in ("off", "0", "false", "python"):
    try:
        from mqstore import _rows  # type: ignore[attr-defined,no-redef]
    except ImportError:  # pragma: no cover - depends on the build (mqstore.native warns)
        _rows = None
_ROWS_CHUNK = 256  # records made per mqstore._rows call while iterating
_EMPTY_I64 = np.empty(0, dtype=np.int64)
_EMPTY_I64.flags.writeable = False


class Record(NamedTuple):
    """One stored record as read back. ``headers`` never holds the engine's own tag field;
    a record without headers has the shared, immutable :data:`EMPTY_HEADERS`."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, bytes] = EMPTY_HEADERS
    tag: str | None = None


class RecordMetadata(NamedTuple):
    """Where an appended record landed."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


#: a lazy column: its list, or a function that makes it (called at most once), or None when
#: every row has the default (no key, no headers, no tag)
Column = Union[list, Callable[[], list], None]


_I64 = np.dtype(np.int64)


def _i64(a: Any) -> np.ndarray:
    if type(a) is np.ndarray and a.dtype is _I64 and a.ndim == 1:  # what decoders give
        return a
    arr = np.ascontiguousarray(a, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError("a column must be one-dimensional")
    return arr


def count_within(value_sizes: np.ndarray, max_records: int, max_bytes: int) -> int:
    """How many leading records a read returns: at most ``max_records``, and while the summed
    value sizes stay within ``max_bytes``, but always the first one (so a consumer never
    stalls on one large record)."""
    n = min(len(value_sizes), max_records)
    if n <= 1:
        return n
    total = np.cumsum(value_sizes[:n])
    return max(1, int(np.searchsorted(total, max_bytes, side="right")))


class Records(Sequence):
    """The records of one read of one partition, as columns over the bytes that were read.

    Engines build it from the decoded positions (``native.decode_*``), never per record:

    - ``buffer``: bytes holding every value; value ``i`` is
      ``buffer[value_offsets[i] : value_offsets[i] + value_sizes[i]]`` (a negative length in
      ``value_lengths`` is a null value, read as ``b""``);
    - keys: ``key_offsets`` / ``key_lengths`` into the same buffer (length -1: no key), or a
      :data:`Column` ``keys`` (a list, a function making it, or None for "no keys");
    - ``headers`` and ``tags``: columns made on first use (None: no headers / no tags);
    - ``null_values=False`` says no length is negative (a decoder that knows it saves the
      check).

    Columnar access costs no Python per record: ``offsets``, ``timestamps_ms``,
    ``value_sizes`` and ``value_offsets`` are read-only int64 numpy arrays, and
    ``value_buffer`` a read-only memoryview. ``values()`` and ``keys()`` build one list of
    ``bytes`` in C loops.
    """

    __slots__ = ("topic", "partition", "_buffer", "offsets", "timestamps_ms", "value_offsets",
                 "_lengths", "_sizes", "_key_pos", "_key_len", "_keys", "_headers",
                 "_tags")

    def __init__(self, topic: str, partition: int, buffer: bytes, offsets, timestamps_ms,
                 value_offsets, value_lengths, *, key_offsets=None, key_lengths=None,
                 keys: Column = None, headers: Column = None, tags: Column = None,
                 null_values: bool | None = None):
        self.topic = topic
        self.partition = partition
        self._buffer = buffer
        self.offsets = _i64(offsets)
        self.timestamps_ms = _i64(timestamps_ms)
        self.value_offsets = _i64(value_offsets)
        lengths = _i64(value_lengths)
        n = len(self.offsets)
        if not (len(self.timestamps_ms) == len(self.value_offsets) == len(lengths) == n):
            raise ValueError("Records columns must have the same length")
        self._lengths = lengths  # negative: a null value (value_sizes clips it, on first use)
        self._sizes = lengths if null_values is False else None
        lengths.flags.writeable = False
        if key_offsets is not None:
            self._key_pos, self._key_len = _i64(key_offsets), _i64(key_lengths)
            if len(self._key_pos) != n or len(self._key_len) != n:
                raise ValueError("Records key columns must have the same length")
            if not (self._key_len >= 0).any():
                self._key_pos = self._key_len = None
        else:
            self._key_pos = self._key_len = None
        self._keys = keys
        # a list given here is frozen on first use too (see _column)
        self._headers = (lambda h=headers: h) if isinstance(headers, list) else headers
        self._tags = tags
        for arr in (self.offsets, self.timestamps_ms, self.value_offsets):
            arr.flags.writeable = False

    @classmethod
    def empty(cls, topic: str, partition: int) -> "Records":
        """A read that found nothing."""
        return cls(topic, partition, b"", _EMPTY_I64, _EMPTY_I64, _EMPTY_I64, _EMPTY_I64)

    @classmethod
    def from_records(cls, topic: str, partition: int, records: Sequence[Record]) -> "Records":
        """Records made from ``Record`` objects (for the rare paths that decode one record
        at a time: a compressed Kafka batch, a RocketMQ message the native walk does not
        read). The values are copied into one buffer."""
        values = [r.value for r in records]
        sizes = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
        starts = np.cumsum(sizes) - sizes
        keys = [r.key for r in records]
        headers = [r.headers or EMPTY_HEADERS for r in records]
        tags = [r.tag for r in records]
        return cls(topic, partition, b"".join(values), [r.offset for r in records],
                   [r.timestamp_ms for r in records], starts, sizes,
                   keys=keys if any(k is not None for k in keys) else None,
                   headers=headers if any(headers) else None,
                   tags=tags if any(t is not None for t in tags) else None)

    # ----- columns -----
    @property
    def value_sizes(self) -> np.ndarray:
        """The value lengths (int64, read-only; a null value counts 0)."""
        sizes = self._sizes
        if sizes is None:
            lengths = self._lengths
            sizes = np.maximum(lengths, 0) if len(lengths) and lengths.min() < 0 else lengths
            if sizes.flags.writeable:
                sizes.flags.writeable = False
            self._sizes = sizes
        return sizes

    @property
    def value_buffer(self) -> memoryview:
        """The bytes the values are sliced from (read-only, no copy)."""
        return memoryview(self._buffer).toreadonly()

    def values(self) -> list[bytes]:
        """Every value as ``bytes`` (one list; a null value is ``b""``)."""
        if _rows is not None:
            return _rows.values(self._buffer, np.ascontiguousarray(self.value_offsets),
                                np.ascontiguousarray(self.value_sizes))
        buf = self._buffer
        return [buf[a:b] for a, b in zip(self.value_offsets.tolist(),
                                         (self.value_offsets + self.value_sizes).tolist())]

    def keys(self) -> list[bytes | None]:
        """Every key (``None`` where a record has none)."""
        got = self._column("_keys")
        if got is not None:
            return list(got)
        if self._key_pos is None:
            return [None] * len(self)
        buf = self._buffer
        return [None if length < 0 else buf[p:p + length]
                for p, length in zip(self._key_pos.tolist(), self._key_len.tolist())]

    def headers(self) -> list[Mapping[str, bytes]]:
        """Every record's headers (:data:`EMPTY_HEADERS` where it has none)."""
        got = self._column("_headers")
        return [EMPTY_HEADERS] * len(self) if got is None else list(got)

    def tags(self) -> list[str | None]:
        """Every record's tag (``None`` where it has none)."""
        got = self._column("_tags")
        return [None] * len(self) if got is None else list(got)

    @property
    def total_value_bytes(self) -> int:
        """The summed value sizes (what ``max_bytes`` bounds)."""
        return int(self.value_sizes.sum())

    def _column(self, name: str) -> list | None:
        col = getattr(self, name)
        if callable(col):
            col = col()
            if name == "_headers":  # a read's header dicts are shared: hand out read-only ones
                col = [h if type(h) is Headers else Headers(h) if h else EMPTY_HEADERS
                       for h in col]
            setattr(self, name, col)
        return col

    # ----- the sequence -----
    def __len__(self) -> int:
        return len(self.offsets)

    def _key_at(self, i: int) -> bytes | None:
        got = self._column("_keys")
        if got is not None:
            return got[i]
        if self._key_pos is None:
            return None
        length = int(self._key_len[i])
        if length < 0:
            return None
        p = int(self._key_pos[i])
        return self._buffer[p:p + length]

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self._subset(i)
        n = len(self.offsets)
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"Records indices must be integers or slices, not "
                            f"{type(i).__name__}")
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("Records index out of range")
        p = int(self.value_offsets[i])
        headers = self._column("_headers")
        tags = self._column("_tags")
        return _tuple_new(Record, (
            self.topic, self.partition, int(self.offsets[i]), int(self.timestamps_ms[i]),
            self._key_at(i), self._buffer[p:p + int(self.value_sizes[i])],
            EMPTY_HEADERS if headers is None else headers[i],
            None if tags is None else tags[i]))

    def __iter__(self) -> Iterator[Record]:
        n = len(self.offsets)
        if n == 0:
            return iter(())
        keys = self._column("_keys")
        if keys is None and self._key_pos is not None:
            keys = self.keys()
        headers = self._column("_headers")
        tags = self._column("_tags")
        if _rows is not None:
            return self._iter_native(None if keys is None else list(keys),
                                     None if headers is None else list(headers),
                                     None if tags is None else list(tags))
        return self._iter_python(keys, headers, tags)

    def _iter_native(self, keys, headers, tags) -> Iterator[Record]:
        """``__iter__`` through ``mqstore._rows``, a chunk of records per C call (so the
        records a loop has finished with are freed as it goes, as with the Python path)."""
        c = np.ascontiguousarray
        offsets, stamps = c(self.offsets), c(self.timestamps_ms)
        starts, sizes = c(self.value_offsets), c(self.value_sizes)
        make, buf, topic, part = _rows.records, self._buffer, self.topic, self.partition
        n = len(offsets)
        for lo in range(0, n, _ROWS_CHUNK):
            hi = lo + _ROWS_CHUNK
            yield from make(Record, topic, part, buf, offsets[lo:hi], stamps[lo:hi],
                            starts[lo:hi], sizes[lo:hi],
                            None if keys is None else keys[lo:hi],
                            None if headers is None else headers[lo:hi],
                            None if tags is None else tags[lo:hi], EMPTY_HEADERS)

    def _iter_python(self, keys, headers, tags) -> Iterator[Record]:
        """``__iter__`` without the C row builder (same records)."""
        buf, topic, part, new = self._buffer, self.topic, self.partition, _tuple_new
        n = len(self.offsets)
        starts = self.value_offsets.tolist()
        ends = (self.value_offsets + self.value_sizes).tolist()
        for o, t, a, b, k, h, g in zip(
                self.offsets.tolist(), self.timestamps_ms.tolist(), starts, ends,
                repeat(None, n) if keys is None else keys,
                repeat(EMPTY_HEADERS, n) if headers is None else headers,
                repeat(None, n) if tags is None else tags):
            yield new(Record, (topic, part, o, t, k, buf[a:b], h, g))

    def _subset(self, index) -> "Records":
        """The records at ``index`` (a slice, or an int array of positions) as Records."""
        def pick(col):
            col = col() if callable(col) else col
            if col is None:
                return None
            if isinstance(index, slice):
                return col[index]
            return [col[j] for j in index.tolist()]
        sub = Records.__new__(Records)
        sub.topic, sub.partition, sub._buffer = self.topic, self.partition, self._buffer
        sub.offsets = self.offsets[index]
        sub.timestamps_ms = self.timestamps_ms[index]
        sub.value_offsets = self.value_offsets[index]
        sub._lengths = sub._sizes = self.value_sizes[index]
        for arr in (sub.offsets, sub.timestamps_ms, sub.value_offsets, sub._sizes):
            arr.flags.writeable = False
        if self._key_pos is None:
            sub._key_pos = sub._key_len = None
        else:
            sub._key_pos, sub._key_len = self._key_pos[index], self._key_len[index]
        sub._keys = pick(self._column("_keys"))
        sub._headers = pick(self._column("_headers"))
        sub._tags = pick(self._column("_tags"))
        return sub

    def take(self, positions) -> "Records":
        """The records at ``positions`` (integers, negative ones from the end), in that
        order; IndexError for one out of range, TypeError for anything but integers."""
        idx = np.asarray(positions)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise TypeError(f"Records.take needs a one-dimensional sequence of integers, not "
                            f"{idx.dtype} with {idx.ndim} dimension(s)")
        n = len(self.offsets)
        if idx.size and (int(idx.max()) >= n or int(idx.min()) < -n):
            raise IndexError(f"Records.take: a position is out of range for {n} records")
        return self._subset(idx.astype(np.int64) % n if n else idx.astype(np.int64))

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if isinstance(other, (Records, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self):
        """Pickle the columns themselves (the lazy ones made first), not the functions."""
        keys = self._column("_keys")
        if keys is None and self._key_pos is not None:
            keys = self.keys()
        return (_restore_records, (self.topic, self.partition, bytes(self._buffer),
                                   self.offsets, self.timestamps_ms, self.value_offsets,
                                   self.value_sizes, keys, self._column("_headers"),
                                   self._column("_tags")))

    def __repr__(self) -> str:
        n = len(self)
        if n == 0:
            return f"<Records {self.topic}-{self.partition}: empty>"
        return (f"<Records {self.topic}-{self.partition}: {n} records, offsets "
                f"{int(self.offsets[0])}..{int(self.offsets[-1])}, "
                f"{self.total_value_bytes} value bytes>")


def _restore_records(topic, partition, buffer, offsets, timestamps, value_offsets, sizes,
                     keys, headers, tags) -> Records:
    return Records(topic, partition, buffer, offsets, timestamps, value_offsets, sizes,
                   keys=keys, headers=headers, tags=tags, null_values=False)


class BatchMetadata(Sequence):
    """Where each message of one ``append_batch`` landed, in call order.

    Built from columns, never per message: :meth:`single` for a batch that went to one
    partition (a base offset and a count), or the constructor for per-message arrays.
    ``partitions``, ``offsets`` and ``timestamps_ms`` are read-only int64 numpy arrays;
    :attr:`ranges` maps each partition to ``(base_offset, count)``.
    """

    __slots__ = ("topic", "_n", "_single", "_partitions", "_offsets", "_timestamps")

    def __init__(self, topic: str, partitions, offsets, timestamps_ms):
        self.topic = topic
        self._partitions = _i64(partitions)
        self._offsets = _i64(offsets)
        self._timestamps = _i64(timestamps_ms)
        self._n = len(self._offsets)
        if not len(self._partitions) == len(self._timestamps) == self._n:
            raise ValueError("BatchMetadata columns must have the same length")
        self._single = None
        for arr in (self._partitions, self._offsets, self._timestamps):
            arr.flags.writeable = False

    @classmethod
    def single(cls, topic: str, partition: int, base_offset: int, count: int,
               timestamp_ms: int) -> "BatchMetadata":
        """``count`` messages at ``base_offset`` onwards in ``partition``, one timestamp."""
        md = cls.__new__(cls)
        md.topic = topic
        md._n = count
        md._single = (partition, base_offset, timestamp_ms)
        md._partitions = md._offsets = md._timestamps = None
        return md

    @classmethod
    def from_metadata(cls, topic: str, metadata: Sequence[RecordMetadata]) -> "BatchMetadata":
        """BatchMetadata from ``RecordMetadata`` objects (call order kept)."""
        return cls(topic, [m.partition for m in metadata], [m.offset for m in metadata],
                   [m.timestamp_ms for m in metadata])

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._offsets is None:
            p, base, ts = self._single
            n = self._n
            parts = np.full(n, p, dtype=np.int64)
            offs = np.arange(base, base + n, dtype=np.int64)
            stamps = np.full(n, ts, dtype=np.int64)
            for arr in (parts, offs, stamps):
                arr.flags.writeable = False
            self._partitions, self._offsets, self._timestamps = parts, offs, stamps
        return self._partitions, self._offsets, self._timestamps

    @property
    def partitions(self) -> np.ndarray:
        return self._arrays()[0]

    @property
    def offsets(self) -> np.ndarray:
        return self._arrays()[1]

    @property
    def timestamps_ms(self) -> np.ndarray:
        return self._arrays()[2]

    @property
    def ranges(self) -> dict[int, tuple[int, int]]:
        """``{partition: (base_offset, count)}`` of this batch."""
        if self._single is not None:
            p, base, _ts = self._single
            return {p: (base, self._n)}
        parts, offs, _ts = self._arrays()
        out: dict[int, tuple[int, int]] = {}
        for p in np.unique(parts).tolist():
            sel = np.sort(offs[parts == p])
            base = int(sel[0])
            if int(sel[-1]) - base != len(sel) - 1:
                raise ValueError(f"the offsets of partition {p} here are not one contiguous "
                                 "run (a slice with a step?): use .offsets and .partitions")
            out[p] = (base, len(sel))
        return out

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):  # type: ignore[override]
        n = self._n
        if isinstance(i, slice):
            parts, offs, stamps = self._arrays()
            return BatchMetadata(self.topic, parts[i], offs[i], stamps[i])
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"BatchMetadata indices must be integers or slices, not "
                            f"{type(i).__name__}")
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("BatchMetadata index out of range")
        if self._single is not None:
            p, base, ts = self._single
            return _tuple_new(RecordMetadata, (self.topic, p, base + int(i), ts))
        return _tuple_new(RecordMetadata, (self.topic, int(self._partitions[i]),
                                           int(self._offsets[i]), int(self._timestamps[i])))

    def __iter__(self) -> Iterator[RecordMetadata]:
        n = self._n
        if self._single is not None:
            p, base, ts = self._single
            rows = zip(repeat(self.topic, n), repeat(p, n), range(base, base + n),
                       repeat(ts, n))
        else:
            rows = zip(repeat(self.topic, n), self._partitions.tolist(),
                       self._offsets.tolist(), self._timestamps.tolist())
        return map(_tuple_new, repeat(RecordMetadata, n), rows)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (BatchMetadata, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        try:
            items = [f"{self.topic}-{p}@{b}+{c}" for p, (b, c) in self.ranges.items()]
        except ValueError:
            items = [f"{self.topic}, offsets not contiguous"]
        more = f", ... {len(items) - 5} more partitions" if len(items) > 5 else ""
        return f"<BatchMetadata {self._n} records: {', '.join(items[:5])}{more}>"


__all__ = ["EMPTY_HEADERS", "BatchMetadata", "Record", "RecordMetadata", "Records",
           "count_within"]


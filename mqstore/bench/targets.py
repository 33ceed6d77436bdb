"""What the runner drives: an engine through ``Store``, or a reference, behind one small API.

The runner never touches files itself. A :class:`Target` creates topics, produces a batch,
polls a partition from a position, flushes, counts its fsyncs and lists its files (for page
eviction). :class:`StoreTarget` does this for any registered engine using only the public
``Store`` contract (``mqstore.open``, ``create_topic``, ``append`` / ``append_batch``,
``read``, ``end_offset``, ``flush``, ``stats``, ``close``). The references (a raw
``os.write`` baseline and a sqlite3 WAL peer) live in :mod:`mqstore.bench.references`.

Consumers count messages, bytes and send stamps, never values: :meth:`Target.poll_columns`
returns a :class:`Polled` (numpy columns), which an engine fills straight from the columns
of the ``Records`` its ``read`` returns (:func:`poll_store`), with no ``Record`` made.
"""
from __future__ import annotations

import abc
import os
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

import mqstore
from mqstore.api import Message, Store
from mqstore.bench.payloads import read_stamps
from mqstore.errors import ConfigError

_NONE = np.empty(0, dtype=np.int64)
_NONE.flags.writeable = False


class Polled(NamedTuple):
    """One poll of one partition, as columns: each message's send stamp (``-1`` for a value
    too short to carry one, see :mod:`mqstore.bench.payloads`) and size, and the position to
    poll next. ``len(sizes)`` is the number of messages."""

    stamps: np.ndarray
    sizes: np.ndarray
    next_position: int


def polled_from_values(values: Sequence[bytes], next_position: int) -> Polled:
    """A :class:`Polled` from a list of values (what the references return)."""
    if not values:
        return Polled(_NONE, _NONE, next_position)
    sizes = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    return Polled(read_stamps(b"".join(values), np.cumsum(sizes) - sizes, sizes), sizes,
                  next_position)


def poll_store(store: Store, topic: str, partition: int, position: int,
               max_records: int) -> Polled:
    """``Store.read`` consumed through its columns (``value_buffer``, ``value_offsets``,
    ``value_sizes``, ``offsets``): no ``Record`` and no ``bytes`` per message."""
    recs = store.read(topic, partition, position, max_records=max_records,
                      max_bytes=max(1 << 20, max_records * 1100))
    offsets = recs.offsets
    if not len(offsets):
        return Polled(_NONE, _NONE, position)
    sizes = recs.value_sizes
    return Polled(read_stamps(recs.value_buffer, recs.value_offsets, sizes), sizes,
                  int(offsets[-1]) + 1)

_VARIANT = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[(.*)\])?$")


def parse_engine_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"commitlog[write_mode=write,dispatch=sync]"`` -> ``("commitlog", {...})``.

    An engine variant runs the same engine with some options set, under its own label, so
    one run can compare e.g. the commitlog engine's ``mmap`` and ``write`` modes. Values are
    read as int, then true/false, then text.
    """
    m = _VARIANT.match(spec.strip())
    if not m:
        raise ConfigError(f"bad engine spec {spec!r}; use NAME or NAME[option=value,...]")
    options: dict[str, Any] = {}
    for item in filter(None, (m.group(2) or "").split(",")):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad engine option {item!r} in {spec!r}; use option=value")
        value: Any = raw.strip()
        if re.fullmatch(r"-?\d+", value):
            value = int(value)
        elif value.lower() in ("true", "false"):
            value = value.lower() == "true"
        options[key.strip()] = value
    return m.group(1), options


def open_engine(spec: str, path: str, **options: Any) -> Store:
    """``mqstore.open`` for an engine spec (a name, or a variant with options)."""
    engine, variant = parse_engine_spec(spec)
    return mqstore.open(path, engine=engine, **{**variant, **options})


class Target(abc.ABC):
    """One thing under measurement, living in its own directory.

    ``kind`` is ``"engine"`` or ``"reference"``. Positions are opaque ints per partition:
    offsets for engines, row ids or file positions for references.

    Thread-safety: ``produce`` and ``poll`` may be called from several threads at once.
    """

    name: str = ""
    kind: str = "engine"

    def __init__(self, directory: str, flush: str, flush_interval_ms: int):
        self.directory = directory
        self.flush_mode = flush
        self.flush_interval_ms = flush_interval_ms

    @abc.abstractmethod
    def create_topic(self, topic: str, partitions: int) -> None: ...

    @abc.abstractmethod
    def produce(self, topic: str, messages: Sequence[Message]) -> None:
        """Append one producer batch (durability as the flush policy says)."""

    @abc.abstractmethod
    def poll(self, topic: str, partition: int, position: int,
             max_records: int = 500) -> tuple[list[bytes], int]:
        """Values from ``position`` on, in order, and the position to poll next."""

    def poll_columns(self, topic: str, partition: int, position: int,
                     max_records: int = 500) -> Polled:
        """What consumers use: the same poll as stamps and sizes (:class:`Polled`)."""
        return polled_from_values(*self.poll(topic, partition, position, max_records))

    @abc.abstractmethod
    def end_position(self, topic: str, partition: int) -> int:
        """The position after the last message produced to the partition."""

    def start_position(self, topic: str, partition: int) -> int:
        return 0

    @abc.abstractmethod
    def flush(self) -> None: ...

    def fsyncs(self) -> int | None:
        """fsync calls made so far (None when unknown)."""
        return None

    def files(self) -> list[str]:
        """Every data file under the target's directory (for page eviction)."""
        out = []
        for root, _dirs, names in os.walk(self.directory):
            out.extend(os.path.join(root, n) for n in names)
        return out

    def describe(self) -> dict[str, Any]:
        """Configuration for the result JSON."""
        return {"flush": self.flush_mode, "flush_interval_ms": self.flush_interval_ms}

    def reopen(self) -> None:
        """Close and open again on the same directory (cold caches for catch-up reads)."""

    @abc.abstractmethod
    def close(self) -> None: ...


class StoreTarget(Target):
    """A registered engine, driven only through the ``Store`` contract."""

    kind = "engine"

    def __init__(self, engine: str, directory: str, flush: str, flush_interval_ms: int,
                 options: dict[str, Any] | None = None):
        super().__init__(directory, flush, flush_interval_ms)
        self.name = engine  # the label: an engine name or a variant "name[opt=value]"
        self.engine, variant = parse_engine_spec(engine)
        self.options = {**variant, **(options or {})}
        self.store: Store = self._open()

    def _open(self) -> Store:
        return mqstore.open(self.directory, engine=self.engine, flush=self.flush_mode,
                            flush_interval_ms=self.flush_interval_ms, **self.options)

    def create_topic(self, topic: str, partitions: int) -> None:
        self.store.create_topic(topic, partitions)

    def produce(self, topic: str, messages: Sequence[Message]) -> None:
        """A batch through ``append_batch``; a batch of one (``batch_records=1``, or a
        lingering producer that sent alone) through ``append``, the single-record path."""
        if len(messages) == 1:
            m = messages[0]
            self.store.append(topic, m.value, key=m.key, partition=m.partition,
                              timestamp_ms=m.timestamp_ms, headers=m.headers, tag=m.tag)
        else:
            self.store.append_batch(topic, messages)

    def poll(self, topic: str, partition: int, position: int,
             max_records: int = 500) -> tuple[list[bytes], int]:
        recs = self.store.read(topic, partition, position, max_records=max_records,
                               max_bytes=max(1 << 20, max_records * 1100))
        if not len(recs):
            return [], position
        return recs.values(), int(recs.offsets[-1]) + 1

    def poll_columns(self, topic: str, partition: int, position: int,
                     max_records: int = 500) -> Polled:
        return poll_store(self.store, topic, partition, position, max_records)

    def end_position(self, topic: str, partition: int) -> int:
        return self.store.end_offset(topic, partition)

    def start_position(self, topic: str, partition: int) -> int:
        return self.store.start_offset(topic, partition)

    def flush(self) -> None:
        self.store.flush()

    def fsyncs(self) -> int | None:
        v = self.store.stats().get("fsyncs")
        return int(v) if v is not None else None

    def describe(self) -> dict[str, Any]:
        cfg = self.store.config
        return {
            "engine": self.engine,
            "label": self.name,
            "flush": cfg.flush.mode,
            "flush_interval_ms": cfg.flush.interval_ms,
            "max_message_bytes": cfg.max_message_bytes,
            "options": dict(cfg.options),
            "capabilities": {
                "key_index": type(self.store).supports_key_index,
                "zero_copy": type(self.store).supports_zero_copy,
                "tag_index": type(self.store).supports_tag_index,
            },
        }

    def reopen(self) -> None:
        self.store.close()
        self.store = self._open()

    def close(self) -> None:
        self.store.close()

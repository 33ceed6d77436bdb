"""The public contract every engine implements: ``Store`` and its value types.

The names and signatures here are the agreement written in DESIGN.md; the conformance suite in
``tests/contract/`` checks every rule for every registered engine. Engines subclass
:class:`Store`, implement the abstract methods, and may override ``append`` for speed.
"""
from __future__ import annotations

import abc
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from mqstore import errors
from mqstore.config import StoreConfig
from mqstore.records import (  # noqa: F401  (re-exported: the contract's value types)
    EMPTY_HEADERS,
    BatchMetadata,
    Record,
    RecordMetadata,
    Records,
)

DEFAULT_MAX_RECORDS = 500
DEFAULT_MAX_BYTES = 1024 * 1024
TOPIC_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")  # used with fullmatch: "$" would pass "a\n"
TAG_MAX_CHARS = 255
#: timestamps are int64 milliseconds on disk in both formats
INT64_MAX = 2**63 - 1
#: header names with this prefix belong to mqstore (e.g. ``mqstore.tag``) and are refused
RESERVED_HEADER_PREFIX = "mqstore."


@dataclass(frozen=True, slots=True)
class Message:
    """One message to append. ``partition`` overrides key-based and round-robin choice."""

    value: bytes
    key: bytes | None = None
    timestamp_ms: int | None = None
    headers: Mapping[str, bytes] | None = None
    tag: str | None = None
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class Damage:
    """One root cause ``verify_files`` found: which file, where, and what is wrong.

    ``kind`` follows the damage model (``mqstore.damage``): ``"torn_tail"`` (after the last
    sync point; recovery truncates it), ``"corruption"`` (below it; the open refuses by
    default), ``"derived"`` (an index, ConsumeQueue, IndexFile or checkpoint that recovery
    rebuilds from the log) or ``"metadata"`` (a JSON or checkpoint file that cannot be read).
    ``records_dropped`` is how many records recovery would drop (None when unknown) and
    ``first_offset`` the first damaged record's offset, when known.
    """

    path: str
    position: int
    problem: str
    kind: str = "corruption"
    records_dropped: int | None = None
    first_offset: int | None = None

    def __str__(self) -> str:
        extra = [self.kind]
        if self.first_offset is not None:
            extra.append(f"first damaged offset {self.first_offset}")
        if self.records_dropped is not None:
            extra.append(f"recovery would drop {self.records_dropped} records")
        return f"{self.path}@{self.position}: {self.problem} [{'; '.join(extra)}]"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``mqstore verify --json``)."""
        return {"kind": self.kind, "path": self.path, "position": self.position,
                "problem": self.problem, "records_dropped": self.records_dropped,
                "first_offset": self.first_offset}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic and its partition count."""

    name: str
    partitions: int


def validate_topic_name(name: object) -> str:
    """Return ``name`` if it is a valid topic name, else raise :class:`InvalidTopicError`.

    Valid names are 1-249 characters of ``[A-Za-z0-9._-]`` and not ``.`` or ``..`` (Kafka's
    rule), which keeps every name a single safe path component.
    """
    if not isinstance(name, str):
        raise errors.InvalidTopicError(f"topic name must be str, not {type(name).__name__}")
    if name in (".", "..") or not TOPIC_NAME_RE.fullmatch(name):
        raise errors.InvalidTopicError(
            f"invalid topic name {name!r}: use 1-249 characters of [A-Za-z0-9._-], "
            "not '.' or '..'"
        )
    return name


def _as_bytes(value: object, what: str) -> bytes:
    """``value`` as exactly ``bytes``: a bytes subclass, bytearray or memoryview is copied
    through the buffer protocol, so a subclass's ``__len__`` cannot disagree with what is
    stored."""
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise errors.InvalidRecordError(f"{what} must be bytes-like, not {type(value).__name__}")


def as_message_list(messages: object) -> list:
    """``messages`` of ``append_batch`` as a list, or InvalidRecordError when it is not an
    iterable of messages (a bare bytes or str value is refused: it would iterate as ints or
    characters)."""
    if isinstance(messages, list):
        return messages
    if isinstance(messages, (bytes, bytearray, memoryview, str)):
        raise errors.InvalidRecordError(
            f"append_batch takes an iterable of messages, not a single "
            f"{type(messages).__name__} (use append() for one value, or wrap it in a list)")
    try:
        return list(messages)  # type: ignore[call-overload]
    except TypeError:
        raise errors.InvalidRecordError(
            f"append_batch takes an iterable of bytes or Message, not "
            f"{type(messages).__name__}") from None


def _int_arg(name: str, value: object, low: int, high: int = INT64_MAX) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise errors.InvalidArgumentError(
            f"{name} must be an int in [{low}, {high}], not {value!r}")
    return value


def check_read_args(offset: object, max_records: object, max_bytes: object,
                    tags: object) -> frozenset[str] | None:
    """Check the arguments of ``read`` (InvalidArgumentError); return ``tags`` as a set."""
    if not isinstance(offset, int) or isinstance(offset, bool):  # range: OffsetOutOfRange
        raise errors.InvalidArgumentError(f"offset must be an int, not {offset!r}")
    _int_arg("max_records", max_records, 0)
    _int_arg("max_bytes", max_bytes, 0)
    if tags is None:
        return None
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise errors.InvalidArgumentError(f"tags must be an iterable of str, not {tags!r}")
    out = frozenset(tags)
    if not all(isinstance(t, str) for t in out):
        raise errors.InvalidArgumentError(f"tags must be str: {sorted(map(repr, out))}")
    return out


def check_timestamp_arg(name: str, value: object, *, optional: bool = False) -> int | None:
    """A timestamp argument of a lookup: an int in [0, 2**63 - 1] (or None if optional)."""
    if value is None and optional:
        return None
    return _int_arg(name, value, 0)


def check_lookup_args(limit: object, start_ms: object, end_ms: object) -> None:
    """Check the arguments of ``lookup_key`` (InvalidArgumentError)."""
    _int_arg("limit", limit, 0)
    check_timestamp_arg("start_ms", start_ms, optional=True)
    check_timestamp_arg("end_ms", end_ms, optional=True)


class CleanMessage(NamedTuple):
    """A message after :func:`normalize_message`: checked types, a timestamp filled in,
    ``headers`` None when empty (the same fields as :class:`Message`; engine-internal)."""

    value: bytes
    key: bytes | None
    timestamp_ms: int
    headers: dict[str, bytes] | None
    tag: str | None
    partition: int | None


_tuple_new = tuple.__new__


def normalize_message(msg: bytes | bytearray | memoryview | Message, now_ms: int
                      ) -> CleanMessage:
    """Check the types of one message and fill in its timestamp; return a CleanMessage."""
    if type(msg) is bytes:
        return _tuple_new(CleanMessage, (msg, None, now_ms, None, None, None))
    if not isinstance(msg, Message):
        return _tuple_new(CleanMessage, (_as_bytes(msg, "value"), None, now_ms, None, None,
                                         None))
    ts, key, part = msg.timestamp_ms, msg.key, msg.partition
    if (type(msg.value) is bytes and (key is None or type(key) is bytes) and not msg.headers
            and msg.tag is None and (part is None or type(part) is int)
            and (ts is None or (type(ts) is int and 0 <= ts <= INT64_MAX))):
        # the common case, already clean: no per-field checks below
        return _tuple_new(CleanMessage, (msg.value, key, now_ms if ts is None else ts, None,
                                         None, part))
    value = _as_bytes(msg.value, "value")
    key = None if msg.key is None else _as_bytes(msg.key, "key")
    headers: dict[str, bytes] | None = None
    if msg.headers:
        if not isinstance(msg.headers, Mapping):
            raise errors.InvalidRecordError("headers must be a mapping of str to bytes")
        headers = {}
        for name, hval in msg.headers.items():
            if not isinstance(name, str) or not name:
                raise errors.InvalidRecordError(f"header name must be a non-empty str: {name!r}")
            if name.startswith(RESERVED_HEADER_PREFIX):
                raise errors.InvalidRecordError(
                    f"header name {name!r}: names starting with {RESERVED_HEADER_PREFIX!r} "
                    "are reserved for mqstore's own fields (the segments engine keeps the tag "
                    "in a header named 'mqstore.tag')"
                )
            headers[name] = _as_bytes(hval, f"header {name!r}")
    tag = msg.tag
    if tag is not None:
        if not isinstance(tag, str) or not tag:
            raise errors.InvalidRecordError(f"tag must be a non-empty str: {tag!r}")
        if len(tag) > TAG_MAX_CHARS:
            raise errors.InvalidRecordError(f"tag longer than {TAG_MAX_CHARS} characters")
    ts = msg.timestamp_ms
    if ts is None:
        ts = now_ms
    elif not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts <= INT64_MAX:
        raise errors.InvalidRecordError(
            f"timestamp_ms must be an int in [0, 2**63 - 1] (milliseconds): {ts!r}")
    part = msg.partition
    if part is not None and (not isinstance(part, int) or isinstance(part, bool)):
        raise errors.InvalidRecordError(f"partition must be an int: {part!r}")
    return CleanMessage(value, key, ts, headers, tag, part)


def now_ms() -> int:
    """Wall-clock milliseconds, the timestamp given to messages that carry none."""
    return time.time_ns() // 1_000_000


class Store(abc.ABC):
    """A durable, ordered, partitioned message log (the contract; see DESIGN.md).

    A store is a context manager; ``close()`` is idempotent. Appends are thread-safe; reads may
    run in any number of threads. One process writes a directory at a time (an exclusive
    lock); others may open it with ``read_only=True`` and follow the writer.

    Capability flags let callers check what an engine can do instead of catching
    :class:`~mqstore.errors.UnsupportedOperation`.
    """

    #: registry name of the engine ("segments", "commitlog", ...)
    engine_name: ClassVar[str] = ""
    #: engine options with their defaults (the ``[<engine>]`` TOML section)
    OPTIONS: ClassVar[Mapping[str, Any]] = {}
    #: the subset of OPTIONS that shape files on disk; kept in the manifest, checked at reopen
    SHAPE_OPTIONS: ClassVar[tuple[str, ...]] = ()
    #: capabilities
    supports_key_index: ClassVar[bool] = False  # lookup_key served by an index (not a scan)
    supports_zero_copy: ClassVar[bool] = False  # transfer_to avoids user-space copies
    supports_tag_index: ClassVar[bool] = False  # tag filtering without reading record bodies
    #: the most partitions a topic may have (Kafka: partition ids are int32; an engine with
    #: a smaller format limit lowers it, e.g. commitlog's 16-bit queue ids)
    max_partitions: ClassVar[int] = 2**31 - 1

    def __init__(self, path: str, config: StoreConfig):
        self.path = str(path)
        self.config = config
        self._closed = False
        self._rr_lock = threading.Lock()
        self._rr_counters: dict[str, int] = {}

    # ----- engine identification (dbm.whichdb style) -----
    @classmethod
    def looks_like(cls, path: str) -> bool:
        """True if ``path`` holds files this engine wrote (used when no manifest exists)."""
        return False

    # ----- offline tools (``mqstore inspect`` / ``mqstore verify``) -----
    @classmethod
    def inspect_files(cls, path: str, target: str | None = None) -> Iterator[str]:
        """Human-readable lines describing the store at ``path`` (or one partition / one file
        named by ``target``, relative to ``path`` or absolute), like Kafka's dump-log tool.
        Works on a closed store or alongside a live writer; never modifies anything."""
        raise errors.UnsupportedOperation(f"engine {cls.engine_name!r} has no inspect tool")

    @classmethod
    def verify_files(cls, path: str) -> list[Damage]:
        """Check every CRC and index of the store at ``path`` without modifying it; return the
        damage found (empty when the store is sound). A torn tail left by a crash counts as
        damage here (recovery would truncate it)."""
        raise errors.UnsupportedOperation(f"engine {cls.engine_name!r} has no verify tool")

    # ----- topics -----
    @abc.abstractmethod
    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create a topic with ``partitions`` partitions (TopicExistsError if it exists)."""

    def create_topics(self, topics: Iterable[tuple[str, int] | str]) -> None:
        """Create several topics: ``topics`` is ``(name, partitions)`` pairs, or names for one
        partition each (Kafka's ``CreateTopics`` takes many at once; a RocketMQ broker
        registers a topic table).

        Everything is checked before anything is created: a bad name, a bad partition count,
        a name given twice or a topic that already exists raises (``InvalidTopicError``,
        ``InvalidPartitionError``, ``TopicExistsError``) and creates none of them. This
        default then calls :meth:`create_topic` per topic, so an I/O failure part way (a
        full disk) leaves the topics before it created; an engine that persists its topic
        table in one write (commitlog) overrides it and creates all or none, across a crash
        too."""
        self._check_writable()
        for name, partitions in self._check_new_topics(topics):
            self.create_topic(name, partitions)

    def _check_new_topics(self, topics: Iterable[tuple[str, int] | str]
                          ) -> list[tuple[str, int]]:
        """``create_topics``' checks: the (name, partitions) pairs, all valid and new."""
        if isinstance(topics, (str, bytes)):
            raise errors.InvalidTopicError(
                f"create_topics takes an iterable of names or (name, partitions) pairs, not a "
                f"{type(topics).__name__} ({topics!r}); for one topic use create_topic")
        pairs: list[tuple[str, int]] = []
        seen: set[str] = set()
        existing = set(self.topics())
        for item in topics:
            if isinstance(item, str):
                name, partitions = item, 1
            elif isinstance(item, tuple) and len(item) == 2:
                name, partitions = item
            else:
                raise errors.InvalidTopicError(
                    f"create_topics takes (name, partitions) pairs or names, not {item!r}")
            validate_topic_name(name)
            self._check_partition_count(name, partitions)
            if name in seen:
                raise errors.TopicExistsError(f"topic {name!r} is given twice")
            if name in existing:
                raise errors.TopicExistsError(f"topic {name!r} already exists")
            seen.add(name)
            pairs.append((name, partitions))
        return pairs

    @classmethod
    def _check_partition_count(cls, name: str, partitions: object) -> None:
        """InvalidPartitionError unless ``partitions`` is an int in [1, max_partitions]."""
        if not isinstance(partitions, int) or isinstance(partitions, bool) or \
                not 1 <= partitions <= cls.max_partitions:
            raise errors.InvalidPartitionError(
                f"partitions of {name!r} must be an int from 1 to {cls.max_partitions} "
                f"(the {cls.engine_name} engine's limit), not {partitions!r}")

    @abc.abstractmethod
    def topics(self) -> list[str]:
        """The user topics, sorted (internal topics such as ``__consumer_offsets`` excluded)."""

    @abc.abstractmethod
    def partitions(self, topic: str) -> int:
        """The partition count of ``topic`` (TopicNotFoundError if it does not exist)."""

    # ----- writes -----
    def append(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Mapping[str, bytes] | None = None,
        tag: str | None = None,
    ) -> RecordMetadata:
        """Append one record and return where it landed.

        ``partition`` picks the partition; otherwise a key picks ``murmur2(key) % partitions``
        and no key goes round-robin. Durability follows the store's flush policy.
        """
        msg = Message(value, key, timestamp_ms, headers, tag)
        return self.append_batch(topic, [msg], partition=partition)[0]

    @abc.abstractmethod
    def append_batch(
        self,
        topic: str,
        messages: Iterable[bytes | Message],
        *,
        partition: int | None = None,
    ) -> BatchMetadata:
        """Append a producer batch: every message, in order, one metadata each (a lazy
        :class:`~mqstore.records.BatchMetadata`).

        Messages are grouped by partition (explicit ``partition``, then each message's own
        ``partition``, then its key, then one round-robin choice for the unkeyed ones).
        Either the whole call is refused (bad input, too large) or all of it is appended.
        """

    # ----- reads -----
    @abc.abstractmethod
    def read(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        tags: Iterable[str] | None = None,
    ) -> Records:
        """Records with offset >= ``offset``, in order, at most ``max_records``, as one
        lazy :class:`~mqstore.records.Records` (columns, a ``Record`` made when touched).

        ``max_bytes`` bounds the summed value sizes, but the first record is always returned
        so a consumer never stalls. ``tags`` keeps only records with one of those tags.
        Reading at the end offset returns no records (equal to ``[]``); beyond it, or below the start offset,
        raises OffsetOutOfRangeError.
        """

    @abc.abstractmethod
    def start_offset(self, topic: str, partition: int) -> int:
        """The first offset still stored (grows with retention)."""

    @abc.abstractmethod
    def end_offset(self, topic: str, partition: int) -> int:
        """The offset the next appended record will get."""

    @abc.abstractmethod
    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int | None:
        """The first offset whose timestamp >= ``timestamp_ms``, or None if there is none."""

    @abc.abstractmethod
    def lookup_key(
        self,
        topic: str,
        key: bytes,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 64,
    ) -> list[Record]:
        """Records of ``topic`` whose key equals ``key`` (timestamps within
        [start_ms, end_ms] when given), at most ``limit``; engine-defined order."""

    @abc.abstractmethod
    def transfer_to(
        self, sock: socket.socket, topic: str, partition: int, offset: int, max_bytes: int
    ) -> tuple[int, int]:
        """Send stored bytes from ``offset`` to a connected socket.

        Returns ``(bytes_sent, next_offset)``: the consumer continues at ``next_offset``.
        The bytes are the engine's own on-disk framing (Kafka batches or RocketMQ messages).
        """

    # ----- consumer offsets -----
    @abc.abstractmethod
    def commit_offset(self, group: str, topic: str, partition: int, offset: int) -> None:
        """Remember ``offset`` as the next offset ``group`` will consume."""

    @abc.abstractmethod
    def committed_offset(self, group: str, topic: str, partition: int) -> int | None:
        """The last committed offset of ``group``, or None."""

    # ----- maintenance -----
    @abc.abstractmethod
    def flush(self) -> None:
        """Make everything appended so far durable (fsync)."""

    @abc.abstractmethod
    def apply_retention(self, now_ms: int | None = None) -> int:
        """Delete whole files past the retention limits, oldest first; return bytes deleted."""

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters: at least ``engine``, ``bytes_on_disk``, ``files``, ``fsyncs``,
        ``appended_records`` and ``appended_bytes``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush, write clean-shutdown state and release the lock. Idempotent."""

    # ----- helpers shared by engines -----
    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise errors.StoreClosedError(f"store at {self.path} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.config.read_only:
            raise errors.ReadOnlyStoreError(f"store at {self.path} was opened read_only")

    def _check_partition(self, topic: str, partition: object, count: int) -> int:
        if not isinstance(partition, int) or isinstance(partition, bool):
            raise errors.InvalidPartitionError(f"partition must be an int: {partition!r}")
        if not 0 <= partition < count:
            raise errors.InvalidPartitionError(
                f"partition {partition} out of range for topic {topic!r} ({count} partitions)"
            )
        return partition

    def _next_round_robin(self, topic: str, count: int) -> int:
        with self._rr_lock:
            n = self._rr_counters.get(topic, 0)
            self._rr_counters[topic] = n + 1
        return n % count

    def _group_by_partition(
        self,
        topic: str,
        messages: Iterable[bytes | Message],
        partition: int | None,
        count: int,
    ) -> dict[int, list[tuple[int, Message]]]:
        """Normalise a batch and group it by target partition, keeping each message's index
        in the call so metadata can be returned in call order. Raises before any write."""
        from mqstore.partitioner import partition_for_key

        ts = now_ms()
        groups: dict[int, list[tuple[int, Message]]] = {}
        rr: int | None = None
        if partition is not None:
            partition = self._check_partition(topic, partition, count)
        for i, raw in enumerate(as_message_list(messages)):
            msg = normalize_message(raw, ts)
            if partition is not None:
                p = partition
            elif msg.partition is not None:
                p = self._check_partition(topic, msg.partition, count)
            elif msg.key is not None:
                p = partition_for_key(msg.key, count)
            else:
                if rr is None:
                    rr = self._next_round_robin(topic, count)
                p = rr
            groups.setdefault(p, []).append((i, msg))
        if not groups:
            raise errors.InvalidRecordError("append_batch needs at least one message")
        return groups

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.engine_name} {self.path!r} {state}>"

"""mqstore: Kafka's and RocketMQ's message-log storage designs behind one interface.

>>> import mqstore
>>> with mqstore.open("data", engine="segments") as store:          # doctest: +SKIP
...     store.create_topic("orders", partitions=4)
...     md = store.append("orders", b"payload", key=b"order-1", tag="paid")
...     records = store.read("orders", md.partition, 0)
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mqstore import errors, registry
from mqstore.api import Message, Record, RecordMetadata, Store, TopicSpec
from mqstore.records import EMPTY_HEADERS, BatchMetadata, Records
from mqstore.config import DEFAULT_ENGINE, FlushPolicy, StoreConfig, resolve
from mqstore.errors import (
    ConfigError,
    CorruptRecordError,
    EngineMismatchError,
    InvalidPartitionError,
    InvalidRecordError,
    InvalidTopicError,
    MQStoreError,
    OffsetOutOfRangeError,
    ReadOnlyStoreError,
    RecordTooLargeError,
    StoreClosedError,
    StoreLockedError,
    TopicExistsError,
    TopicNotFoundError,
    UnsupportedOperation,
)

__version__ = "0.1.0"


def engines() -> list[str]:
    """The names of the registered engines, sorted."""
    return registry.names()


def load_config(
    path: str | os.PathLike[str],
    engine: str | None = None,
    *,
    config: StoreConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    **options: Any,
) -> StoreConfig:
    """Resolve the configuration ``open`` would use for ``path``, without opening anything.

    The engine comes from ``engine``, then the config, then ``MQSTORE_ENGINE``, then the
    files already at ``path``, then ``"segments"``.
    """

    def pick(name: str) -> str:
        if name:
            return name
        return registry.detect(path) or DEFAULT_ENGINE

    def engine_options(name: str) -> Mapping[str, Any]:
        return registry.load(name).OPTIONS

    return resolve(
        engine, config, options,
        engine_options=engine_options,
        engine_names=tuple(registry.names()),
        pick_engine=pick,
    )


def open(  # noqa: A001 - the public name the contract gives
    path: str | os.PathLike[str],
    engine: str | None = None,
    *,
    config: StoreConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    **options: Any,
) -> Store:
    """Open (or create) the store at ``path`` and return it.

    ``engine`` is ``"segments"``, ``"commitlog"`` or any registered name. ``config`` is a
    StoreConfig, a dict or the path of a TOML file; keyword ``options`` win over it (see
    ``mqstore.config``). ``read_only=True`` opens a reader that follows a live writer.
    Raises ConfigError for unknown options, EngineMismatchError for a directory of another
    engine, StoreLockedError when another writer holds the directory.
    """
    cfg = load_config(path, engine, config=config, **options)
    cls = registry.load(cfg.engine)
    path = os.fspath(path)
    found = registry.detect(path)
    if found is not None and found != cfg.engine:
        # refuse before the engine creates anything (a lock file, a manifest) in the directory
        raise EngineMismatchError(
            f"{path} holds a {found!r} store; it cannot be opened with engine {cfg.engine!r} "
            f"(open it with engine={found!r}, or without naming an engine)"
        )
    if cfg.read_only:
        if not os.path.isdir(path):
            raise ConfigError(f"read_only: no store at {path}")
    else:
        os.makedirs(path, exist_ok=True)
    return cls(path, cfg)


__all__ = [
    "open", "engines", "load_config", "Store", "Message", "Record", "RecordMetadata",
    "Records", "BatchMetadata", "EMPTY_HEADERS",
    "TopicSpec", "StoreConfig", "FlushPolicy", "errors", "__version__",
    "MQStoreError", "ConfigError", "EngineMismatchError", "TopicNotFoundError",
    "TopicExistsError", "InvalidTopicError", "InvalidPartitionError", "InvalidRecordError",
    "OffsetOutOfRangeError", "RecordTooLargeError", "CorruptRecordError", "StoreLockedError",
    "StoreClosedError", "ReadOnlyStoreError", "UnsupportedOperation",
]

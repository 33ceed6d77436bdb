"""Store configuration: ``StoreConfig``, ``FlushPolicy``, and how options are resolved.

Options come from four places; a later one wins over an earlier one:

1. the defaults (engine ``segments``, ``flush="os"``, Kafka's 1 MiB + 12 message limit);
2. the ``MQSTORE_ENGINE`` environment variable (engine name only);
3. a config file (TOML) or dict passed as ``config=``, shaped like this::

       [store]
       engine = "commitlog"          # or "segments"
       max_message_bytes = 1048588
       on_corruption = "raise"       # "raise" | "truncate" | "skip"
       check_crcs = true
       [flush]
       mode = "sync"                 # "sync" | "async" | "os"
       interval_ms = 1000
       [segments]
       segment_bytes = 1073741824
       [commitlog]
       mapped_file_size = 1073741824

   Only the section of the chosen engine applies; the other engine's section is ignored so
   that one file can serve both engines;
4. keyword arguments to ``mqstore.open``.

Every option is checked: an unknown name or a bad value raises ``ConfigError`` naming it.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqstore.errors import ConfigError

DEFAULT_ENGINE = "segments"
#: Kafka's default max.message.bytes: 1 MiB plus the 12-byte log overhead.
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024 + 12
FLUSH_MODES = ("sync", "async", "os")
COMMON_OPTIONS = ("flush", "flush_interval_ms", "read_only", "max_message_bytes",
                  "on_corruption", "check_crcs")
#: what recovery does with damage below the last sync point (media corruption, not a crash):
#: refuse the open (default), cut the log there, or keep every intact record after it
ON_CORRUPTION_MODES = ("raise", "truncate", "skip")
_TOP_SECTIONS = ("store", "flush")
#: engine options where -1 means "unlimited" (Kafka's retention.ms / retention.bytes)
UNLIMITED_OPTIONS = frozenset({"retention_ms", "retention_bytes"})


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """When appended bytes reach the disk.

    - ``"sync"``: an append returns after its bytes are fsynced; concurrent appenders share
      one fsync (group commit, like RocketMQ's GroupCommitService).
    - ``"async"``: a background flusher fsyncs every ``interval_ms`` (FlushRealTimeService,
      Kafka's ``flush.ms``).
    - ``"os"``: the page cache decides; only ``flush()`` and close fsync (Kafka's default).
    """

    mode: str = "os"
    interval_ms: int = 1000

    def __post_init__(self) -> None:
        if self.mode not in FLUSH_MODES:
            raise ConfigError(f"flush: mode must be one of {FLUSH_MODES}, not {self.mode!r}")
        if not isinstance(self.interval_ms, int) or isinstance(self.interval_ms, bool) or (
            self.interval_ms <= 0
        ):
            raise ConfigError(f"flush_interval_ms: must be a positive int, not {self.interval_ms!r}")


@dataclass(frozen=True)
class StoreConfig:
    """The resolved configuration of one store.

    ``options`` holds every engine option (defaults filled in); ``explicit`` names the
    engine options the caller set, so a reopen can tell a conflict from a default.
    """

    engine: str = DEFAULT_ENGINE
    flush: FlushPolicy = field(default_factory=FlushPolicy)
    read_only: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    options: Mapping[str, Any] = field(default_factory=dict)
    explicit: frozenset[str] = frozenset()
    #: damage below the sync point: "raise" (CorruptRecordError), "truncate" or "skip"
    on_corruption: str = "raise"
    #: reads check each batch's / message's CRC (Kafka's check.crcs) and raise on a mismatch
    check_crcs: bool = True

    def option(self, name: str) -> Any:
        """One engine option by name (KeyError if the engine has no such option)."""
        return self.options[name]

    def with_options(self, **changes: Any) -> "StoreConfig":
        """A copy with some engine options replaced (used when a manifest fixes them)."""
        opts = dict(self.options)
        opts.update(changes)
        return dataclasses.replace(self, options=opts)


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML config file into a dict (ConfigError if missing or malformed)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None


def _flatten(doc: Mapping[str, Any], engine_names: tuple[str, ...]) -> tuple[dict, dict]:
    """Split a TOML-shaped dict into (common options, {engine: options})."""
    common: dict[str, Any] = {}
    per_engine: dict[str, dict[str, Any]] = {}
    for section, body in doc.items():
        if section in _TOP_SECTIONS or section in engine_names:
            if not isinstance(body, Mapping):
                raise ConfigError(f"config section [{section}] must be a table")
        if section == "store":
            for k, v in body.items():
                if k not in ("engine", "read_only", "max_message_bytes", "on_corruption",
                             "check_crcs"):
                    raise ConfigError(f"unknown option {k!r} in [store]")
                common[k] = v
        elif section == "flush":
            for k, v in body.items():
                if k == "mode":
                    common["flush"] = v
                elif k == "interval_ms":
                    common["flush_interval_ms"] = v
                else:
                    raise ConfigError(f"unknown option {k!r} in [flush]")
        elif section in engine_names:
            per_engine[section] = dict(body)
        else:
            raise ConfigError(
                f"unknown config section [{section}]; expected one of "
                f"{list(_TOP_SECTIONS) + list(engine_names)}"
            )
    return common, per_engine


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Check an option value against the type of its default."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0 and not (value == -1 and name in UNLIMITED_OPTIONS):
                raise ConfigError(f"{name}: must not be negative, got {value}")
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif default is None:
        return value
    raise ConfigError(f"{name}: expected {type(default).__name__}, got {value!r}")


def resolve(
    engine: str | None,
    config: "StoreConfig | Mapping[str, Any] | str | os.PathLike[str] | None",
    options: Mapping[str, Any],
    *,
    engine_options: Callable[[str], Mapping[str, Any]],
    engine_names: tuple[str, ...],
    pick_engine: Callable[[str], str] = lambda name: name or DEFAULT_ENGINE,
) -> StoreConfig:
    """Merge defaults, environment, config file/dict and keyword options into a StoreConfig.

    ``engine_options(name)`` returns the option defaults of a registered engine (it raises
    ConfigError for an unknown engine). ``pick_engine(name)`` makes the final choice from the
    name the sources gave (``""`` when none did): ``mqstore.open`` detects it from the files
    already in the directory, then falls back to the default engine.
    """
    if isinstance(config, StoreConfig):
        if options or engine not in (None, config.engine):
            base_common: dict[str, Any] = {
                "engine": config.engine,
                "flush": config.flush.mode,
                "flush_interval_ms": config.flush.interval_ms,
                "read_only": config.read_only,
                "max_message_bytes": config.max_message_bytes,
                "on_corruption": config.on_corruption,
                "check_crcs": config.check_crcs,
            }
            file_engine_opts = {config.engine: {k: config.options[k] for k in config.explicit}}
        else:
            return config
    else:
        base_common = {}
        file_engine_opts = {}
        if config is not None:
            doc: Mapping[str, Any]
            if isinstance(config, (str, os.PathLike)):
                doc = load_toml(config)
            elif isinstance(config, Mapping):
                doc = config
            else:
                raise ConfigError(f"config must be a StoreConfig, dict or TOML path, not {config!r}")
            if any(isinstance(v, Mapping) for v in doc.values()):
                base_common, file_engine_opts = _flatten(doc, engine_names)
            else:  # a flat dict of options, like keyword arguments
                options = {**doc, **options}

    env_engine = os.environ.get("MQSTORE_ENGINE") or None
    chosen = engine or options.get("engine") or base_common.get("engine") or env_engine or ""
    if not isinstance(chosen, str):
        raise ConfigError(f"engine must be a str, not {chosen!r}")
    chosen = pick_engine(chosen)

    common = dict(base_common)
    kw_engine_opts: dict[str, Any] = {}
    for k, v in options.items():
        if k == "engine":
            continue
        if k in COMMON_OPTIONS:
            common[k] = v
        else:
            kw_engine_opts[k] = v

    flush = common.get("flush", "os")
    interval = common.get("flush_interval_ms", 1000)
    if isinstance(flush, FlushPolicy):
        policy = flush if "flush_interval_ms" not in common else FlushPolicy(flush.mode, interval)
    elif isinstance(flush, str):
        policy = FlushPolicy(flush, interval)
    else:
        raise ConfigError(f"flush: expected 'sync', 'async', 'os' or a FlushPolicy, not {flush!r}")
    read_only = common.get("read_only", False)
    if not isinstance(read_only, bool):
        raise ConfigError(f"read_only: expected bool, got {read_only!r}")
    max_bytes = common.get("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES)
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0:
        raise ConfigError(f"max_message_bytes: expected a positive int, got {max_bytes!r}")

    on_corruption = common.get("on_corruption", "raise")
    if on_corruption not in ON_CORRUPTION_MODES:
        raise ConfigError(
            f"on_corruption: must be one of {ON_CORRUPTION_MODES}, not {on_corruption!r}"
        )
    check_crcs = common.get("check_crcs", True)
    if not isinstance(check_crcs, bool):
        raise ConfigError(f"check_crcs: expected bool, got {check_crcs!r}")

    given: dict[str, Any] = dict(file_engine_opts.get(chosen, {}))
    given.update(kw_engine_opts)
    defaults = engine_options(chosen)
    resolved: dict[str, Any] = dict(defaults)
    for k, v in given.items():
        if k not in defaults:
            raise ConfigError(
                f"unknown option {k!r} for engine {chosen!r}; known options: "
                f"{sorted(list(COMMON_OPTIONS) + list(defaults))}"
            )
        resolved[k] = _coerce(k, v, defaults[k])
    return StoreConfig(
        engine=chosen,
        flush=policy,
        read_only=read_only,
        max_message_bytes=max_bytes,
        options=resolved,
        explicit=frozenset(given),
        on_corruption=on_corruption,
        check_crcs=check_crcs,
    )

"""Workloads: what a benchmark run does, as data.

A :class:`Workload` carries the OpenMessaging Benchmark (OMB) fields under their OMB names and
with OMB's defaults (``io.openmessaging.benchmark.Workload``), so an OMB workload YAML file
loads unchanged. mqstore's own fields sit beside them in snake_case: a message count instead of
a duration, the producer batch (records, bytes, linger) like Kafka's ``batch.size`` /
``linger.ms``, the flush policy, the read pattern, tags and keys, and engine options.

Workloads load from TOML, JSON or YAML (:func:`load_workload`). YAML goes through PyYAML when
the ``yaml`` extra is installed; without it, the flat ``key: scalar`` documents OMB ships are
still read by a small strict parser (anything richer asks for the extra).

OMB fields with no meaning inside one process (``backlogDrainRatio`` partly, and any driver,
broker or replication setting that a caller passes) are kept in :attr:`Workload.ignored` and
named in the run header.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqstore.errors import ConfigError

KEY_DISTRIBUTORS = ("NO_KEY", "KEY_ROUND_ROBIN", "RANDOM_NANO")
READ_PATTERNS = ("tail", "catchup")
FLUSH_MODES = ("sync", "async", "os")
#: OMB keys that are accepted but mean nothing for one embedded process
NO_MEANING_IN_PROCESS = {
    "backlogDrainRatio": "consumers always drain the whole backlog in-process",
    "warmupDurationMinutes": "kept, but shortened by --warmup in quick runs",
}
#: keys sometimes found beside workloads (driver files) that name brokers / replication
DRIVER_KEYS = (
    "driverClass", "replicationFactor", "topicConfig", "commonConfig", "producerConfig",
    "consumerConfig", "namesrvAddr", "clusterName", "brokers", "reset",
)


@dataclass
class Workload:
    """One benchmark workload: OMB fields (camelCase) and mqstore fields (snake_case).

    OMB semantics kept: ``producerRate`` is the total target rate in msg/s, ``0`` meaning "as
    fast as possible" (OMB probes the maximum; mqstore runs unthrottled, which is the same
    ceiling for one process); ``consumerBacklogSizeGB > 0`` builds a backlog with consumers
    stopped, then drains it; ``subscriptionsPerTopic`` independent consumer groups each read
    every message, split among ``consumerPerSubscription`` consumers.

    mqstore fields: ``messages`` (total count; when > 0 it replaces the duration),
    ``duration_s`` (overrides ``testDurationMinutes``), ``warmup_s`` (overrides
    ``warmupDurationMinutes``), ``batch_records`` / ``batch_bytes`` / ``linger_ms`` (the
    producer batch: sent when it holds ``batch_records`` records or ``batch_bytes`` bytes, or
    ``linger_ms`` after its first message), ``flush`` / ``flush_interval_ms`` (the store's
    flush policy), ``read_pattern`` (``tail``: consumers follow the producers;
    ``catchup``: they start after all messages are written), ``tags`` (a tag cycled over the
    messages, e.g. ``["A", "B"]``) and ``tag_ratio`` (share of messages given the first tag
    when > 0), ``key_size``, ``engine_options`` (``{engine: {option: value}}``), ``seed``
    and ``max_backlog_bytes`` (caps ``consumerBacklogSizeGB`` on one machine).
    """

    # ----- OpenMessaging Benchmark fields (names and defaults of OMB's Workload.java) -----
    name: str = "workload"
    topics: int = 1
    partitionsPerTopic: int = 1
    keyDistributor: str = "NO_KEY"
    messageSize: int = 1024
    useRandomizedPayloads: bool = False
    randomBytesRatio: float = 0.0
    randomizedPayloadPoolSize: int = 0
    payloadFile: str | None = None
    subscriptionsPerTopic: int = 1
    consumerPerSubscription: int = 1
    producersPerTopic: int = 1
    producerRate: int = 0
    consumerBacklogSizeGB: float = 0
    backlogDrainRatio: float = 1.0
    testDurationMinutes: float = 5
    warmupDurationMinutes: float = 1

    # ----- mqstore fields -----
    messages: int = 0
    duration_s: float | None = None
    warmup_s: float | None = None
    batch_records: int = 1
    batch_bytes: int = 16384
    linger_ms: float = 0.0
    flush: str = "os"
    flush_interval_ms: int = 1000
    read_pattern: str = "tail"
    tags: list[str] = field(default_factory=list)
    tag_ratio: float = 0.0
    key_size: int = 7
    engine_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 42
    max_backlog_bytes: int = 64 * 1024 * 1024

    # ----- where it came from -----
    source: str | None = None
    ignored: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ConfigError naming the first field with a bad value."""
        positive = ("topics", "partitionsPerTopic", "producersPerTopic", "batch_records",
                    "batch_bytes", "flush_interval_ms")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"workload field {name}: must be an int >= 1, got {v!r}")
        non_negative = ("messageSize", "subscriptionsPerTopic", "consumerPerSubscription",
                        "producerRate", "messages", "randomizedPayloadPoolSize", "key_size")
        for name in non_negative:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"workload field {name}: must be an int >= 0, got {v!r}")
        if self.subscriptionsPerTopic and not self.consumerPerSubscription:
            raise ConfigError("workload field consumerPerSubscription: must be >= 1 when "
                              "subscriptionsPerTopic > 0")
        if self.keyDistributor not in KEY_DISTRIBUTORS:
            raise ConfigError(f"workload field keyDistributor: one of {KEY_DISTRIBUTORS}, "
                              f"got {self.keyDistributor!r}")
        if self.read_pattern not in READ_PATTERNS:
            raise ConfigError(f"workload field read_pattern: one of {READ_PATTERNS}, "
                              f"got {self.read_pattern!r}")
        if self.flush not in FLUSH_MODES:
            raise ConfigError(f"workload field flush: one of {FLUSH_MODES}, got {self.flush!r}")
        if not 0.0 <= float(self.randomBytesRatio) <= 1.0:
            raise ConfigError("workload field randomBytesRatio: must be within [0, 1]")
        if not 0.0 <= float(self.tag_ratio) <= 1.0:
            raise ConfigError("workload field tag_ratio: must be within [0, 1]")
        if self.linger_ms < 0:
            raise ConfigError("workload field linger_ms: must be >= 0")
        if self.consumerBacklogSizeGB and self.producerRate == 0:
            # OMB refuses this combination too (the probe and a backlog exclude each other)
            raise ConfigError("consumerBacklogSizeGB cannot be combined with producerRate: 0")
        if not isinstance(self.tags, list) or not all(isinstance(t, str) and t for t in self.tags):
            raise ConfigError("workload field tags: must be a list of non-empty strings")
        if not isinstance(self.engine_options, dict) or not all(
            isinstance(v, dict) for v in self.engine_options.values()
        ):
            raise ConfigError("workload field engine_options: must be {engine: {option: value}}")

    # ------------------------------------------------------------------ derived values
    @property
    def backlog_bytes(self) -> int:
        """The backlog to build before consumers start (0: none), capped for one machine."""
        if not self.consumerBacklogSizeGB:
            return 0
        want = int(self.consumerBacklogSizeGB * 1024**3)
        return min(want, self.max_backlog_bytes)

    @property
    def catchup(self) -> bool:
        """True when consumers start only after the messages are written."""
        return self.read_pattern == "catchup" or self.backlog_bytes > 0

    @property
    def partitions_total(self) -> int:
        return self.topics * self.partitionsPerTopic

    @property
    def consumers_per_topic(self) -> int:
        return self.subscriptionsPerTopic * self.consumerPerSubscription

    def planned_messages(self) -> int | None:
        """The total message count when it is fixed in advance, else None (duration-bound)."""
        if self.messages:
            return self.messages
        if self.backlog_bytes:
            return max(1, math.ceil(self.backlog_bytes / max(1, self.messageSize)))
        return None

    def planned_duration_s(self) -> float:
        """Seconds of measured producing when the run is bound by time."""
        if self.duration_s is not None:
            return float(self.duration_s)
        return float(self.testDurationMinutes) * 60.0

    def planned_warmup_s(self) -> float:
        if self.warmup_s is not None:
            return float(self.warmup_s)
        if self.messages:
            return 0.0
        return float(self.warmupDurationMinutes) * 60.0

    def replace(self, **changes: Any) -> "Workload":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain JSON-able data (used in the result JSON)."""
        d = dataclasses.asdict(self)
        return d

    def header_notes(self) -> list[str]:
        """Lines for the run header: ignored fields and the in-process reading of OMB ones."""
        notes = [f"ignored {k}: {why}" for k, why in sorted(self.ignored.items())]
        if self.consumerBacklogSizeGB and self.backlog_bytes < self.consumerBacklogSizeGB * 1024**3:
            notes.append(
                f"consumerBacklogSizeGB={self.consumerBacklogSizeGB:g} capped to "
                f"{self.backlog_bytes / 2**20:.0f} MiB (max_backlog_bytes)"
            )
        if self.producerRate == 0:
            notes.append("producerRate=0: producers run unthrottled (the maximum rate)")
        return notes


_FIELDS = {f.name: f for f in dataclasses.fields(Workload)}
_INTERNAL = ("source", "ignored")


def workload_from_dict(data: dict[str, Any], *, source: str | None = None) -> Workload:
    """Build a Workload from a mapping with OMB and/or mqstore keys.

    Unknown keys raise ConfigError, except driver / broker / replication keys, which are
    recorded in ``ignored`` so the run header can name them. ``payloadFile`` is resolved
    against ``source`` (see :func:`resolve_payload_file`).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a workload must be a mapping, not {type(data).__name__}")
    kwargs: dict[str, Any] = {}
    ignored: dict[str, str] = {}
    for key, value in data.items():
        if key in DRIVER_KEYS:
            ignored[key] = "brokers, drivers and replication have no meaning in one process"
            continue
        if key not in _FIELDS or key in _INTERNAL:
            raise ConfigError(
                f"unknown workload field {key!r}{' in ' + source if source else ''}; "
                f"known: {sorted(k for k in _FIELDS if k not in _INTERNAL)}"
            )
        if key in NO_MEANING_IN_PROCESS and key == "backlogDrainRatio" and value != 1.0:
            ignored[key] = NO_MEANING_IN_PROCESS[key]
        kwargs[key] = _coerce_field(key, value)
    if "name" not in kwargs and source:
        kwargs["name"] = Path(source).stem
    kwargs["source"] = source
    kwargs["ignored"] = ignored
    wl = Workload(**kwargs)
    if wl.payloadFile and source:
        wl.payloadFile = str(resolve_payload_file(wl.payloadFile, source))
    return wl


def _coerce_field(key: str, value: Any) -> Any:
    default = _FIELDS[key].default
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def resolve_payload_file(name: str, workload_path: str | os.PathLike[str]) -> Path:
    """Find ``payloadFile`` the way OMB does: relative to the repository root.

    OMB workloads say ``payload/payload-1Kb.data`` and are run from the repository root,
    which is the parent of ``workloads/``. mqstore tries the workload file's directory and
    then each parent in turn, so a copied ``workloads/ + payload/`` tree works from anywhere.
    An absolute path is used as is. ConfigError if nothing is found.
    """
    p = Path(name)
    if p.is_absolute():
        if p.is_file():
            return p
        raise ConfigError(f"payloadFile {name} not found")
    start = Path(workload_path).resolve().parent
    for base in (start, *start.parents):
        candidate = base / p
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"payloadFile {name!r} not found relative to {start} or any parent directory "
        "(OMB resolves it from the repository root)"
    )


def load_workload(path: str | os.PathLike[str]) -> Workload:
    """Load a workload file: ``.toml``, ``.json``, or ``.yaml`` / ``.yml`` (OMB format)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"workload file not found: {p}")
    suffix = p.suffix.lower()
    text = p.read_text(encoding="utf-8")
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"workload {p} is not valid TOML: {exc}") from None
        data = data.get("workload", data)
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"workload {p} is not valid JSON: {exc}") from None
    elif suffix in (".yaml", ".yml"):
        data = parse_yaml(text, str(p))
    else:
        raise ConfigError(f"workload {p}: unknown format (use .yaml, .toml or .json)")
    return workload_from_dict(data, source=str(p))


def parse_yaml(text: str, where: str = "<yaml>") -> dict[str, Any]:
    """Parse a workload YAML document: PyYAML if installed, else the flat OMB subset."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        return _parse_flat_yaml(text, where)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"workload {where} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"workload {where}: expected a mapping at the top level")
    return data


def _parse_flat_yaml(text: str, where: str) -> dict[str, Any]:
    """Read ``key: scalar`` lines (comments, blank lines, quoted strings, ints, floats,
    booleans). Anything else raises ConfigError asking for ``pip install mqstore[yaml]``."""
    out: dict[str, Any] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip() or line.strip() == "---":
            continue
        key, sep, value = line.partition(":")
        if not sep or raw[:1].isspace() or not key.strip() or key.strip().startswith("-"):
            raise ConfigError(
                f"{where}:{lineno}: only flat 'key: value' YAML is read without PyYAML; "
                "install the yaml extra (pip install 'mqstore[yaml]')"
            )
        out[key.strip()] = _yaml_scalar(value.strip(), where, lineno)
    return out


def _yaml_scalar(value: str, where: str, lineno: int) -> Any:
    if not value:
        raise ConfigError(f"{where}:{lineno}: nested YAML needs the yaml extra")
    if value[0] in "\"'":
        if len(value) < 2 or value[-1] != value[0]:
            raise ConfigError(f"{where}:{lineno}: unterminated string")
        return value[1:-1]
    if value[0] in "[{|>&*!":
        raise ConfigError(f"{where}:{lineno}: this YAML needs the yaml extra")
    low = value.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("null", "~"):
        return None
    for conv in (int, float):
        try:
            return conv(value.replace("_", ""))
        except ValueError:
            pass
    return value

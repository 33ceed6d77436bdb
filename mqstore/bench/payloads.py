"""Payloads and keys for a workload, reproducible from a seed.

Payloads follow OMB: a fixed ``payloadFile`` (its bytes, as they are), or with
``useRandomizedPayloads`` a pool of ``randomizedPayloadPoolSize`` payloads (1,000 when unset,
as in every OMB file) of which the first ``randomBytesRatio`` share is random and the rest
zeros; otherwise ``messageSize`` bytes of seeded random data. Keys follow OMB's key
distributors: ``NO_KEY``, ``KEY_ROUND_ROBIN`` (cycles a pool of 10,000 random 7-byte base64url
keys) and ``RANDOM_NANO`` (OMB picks from the pool by ``nanoTime() % 10000``; here a seeded
random choice, so both engines see the same keys).

The first 8 bytes of every value sent by the runner carry the send time (``perf_counter_ns``,
little-endian) so consumers can measure end-to-end latency; :func:`stamp` writes them.
Payloads shorter than 8 bytes carry no stamp and get no end-to-end figure.
"""
from __future__ import annotations

import base64
import random
import struct
from pathlib import Path

import numpy as np

from mqstore.bench.workload import Workload
from mqstore.errors import ConfigError

KEY_POOL_SIZE = 10_000
DEFAULT_POOL_SIZE = 1_000
STAMP = struct.Struct("<q")


class PayloadSource:
    """The payloads and keys of one workload; ``payload(i)`` and ``key(i)`` are pure
    functions of the seed and ``i``, so every engine and reference sees the same bytes.

    Thread-safety: read-only after construction; share it freely.
    """

    def __init__(self, workload: Workload, seed: int | None = None):
        self.workload = workload
        rng = random.Random(workload.seed if seed is None else seed)
        self.pool = _build_pool(workload, rng)
        self.size = len(self.pool[0])
        self.keys = _build_keys(workload, rng)
        self._key_rng_seed = rng.randrange(2**32)
        self.tags = list(workload.tags)
        self._tag_ratio = float(workload.tag_ratio)

    def payload(self, i: int) -> bytes:
        """The i-th payload of the pool (cycled)."""
        return self.pool[i % len(self.pool)]

    def key(self, i: int) -> bytes | None:
        """The key of message ``i`` by the workload's key distributor, or None."""
        if not self.keys:
            return None
        if self.workload.keyDistributor == "KEY_ROUND_ROBIN":
            return self.keys[i % len(self.keys)]
        # RANDOM_NANO: a seeded pseudo-random pick (hash of i), reproducible across engines
        h = (i * 0x9E3779B97F4A7C15 + self._key_rng_seed) & 0xFFFFFFFFFFFFFFFF
        return self.keys[(h >> 17) % len(self.keys)]

    def tag(self, i: int) -> str | None:
        """The tag of message ``i``: with ``tag_ratio`` > 0 the first tag for that share
        of messages (spread evenly) and the second otherwise; else the tags in turn."""
        if not self.tags:
            return None
        if self._tag_ratio > 0 and len(self.tags) >= 2:
            # evenly spread: message i is selected when floor((i+1)r) > floor(i r)
            r = self._tag_ratio
            return self.tags[0] if int((i + 1) * r) > int(i * r) else self.tags[1]
        return self.tags[i % len(self.tags)]


def stamp(payload: bytes, t_ns: int) -> bytes:
    """``payload`` with its first 8 bytes replaced by the send time (if it has 8 bytes)."""
    if len(payload) < STAMP.size:
        return payload
    return STAMP.pack(t_ns) + payload[STAMP.size:]


def stamp_all(payloads: list[bytes], t_ns: int) -> list[bytes]:
    """:func:`stamp` of every payload with the same send time."""
    head = STAMP.pack(t_ns)
    n = STAMP.size
    return [head + p[n:] if len(p) >= n else p for p in payloads]


def read_stamp(value: bytes) -> int | None:
    """The send time written by :func:`stamp`, or None for a short value."""
    if len(value) < STAMP.size:
        return None
    return STAMP.unpack_from(value)[0]


_STAMP_BYTES = np.arange(STAMP.size, dtype=np.int64)


def read_stamps(buffer, value_offsets: np.ndarray, value_sizes: np.ndarray) -> np.ndarray:
    """:func:`read_stamp` of every value sliced from ``buffer`` (value ``i`` at
    ``value_offsets[i]``, ``value_sizes[i]`` bytes), as an int64 array with -1 where a value
    is too short to carry a stamp. No per-value Python (numpy gathers the 8 bytes)."""
    sizes = np.asarray(value_sizes, dtype=np.int64)
    out = np.full(len(sizes), -1, dtype=np.int64)
    ok = sizes >= STAMP.size
    if ok.any():
        raw = np.frombuffer(buffer, dtype=np.uint8)
        at = np.asarray(value_offsets, dtype=np.int64)[ok]
        out[ok] = raw[at[:, None] + _STAMP_BYTES].view("<i8").ravel()
    return out


def _build_pool(wl: Workload, rng: random.Random) -> list[bytes]:
    if wl.useRandomizedPayloads:
        n = wl.randomizedPayloadPoolSize or DEFAULT_POOL_SIZE
        size = wl.messageSize
        random_len = int(size * float(wl.randomBytesRatio))
        return [rng.randbytes(random_len) + bytes(size - random_len) for _ in range(n)]
    if wl.payloadFile:
        p = Path(wl.payloadFile)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"payloadFile {p}: {exc}") from None
        if not data:
            raise ConfigError(f"payloadFile {p} is empty")
        return [data]
    if wl.messageSize < 1:
        raise ConfigError("messageSize must be >= 1 without a payloadFile")
    return [rng.randbytes(wl.messageSize)]


def _build_keys(wl: Workload, rng: random.Random) -> list[bytes]:
    if wl.keyDistributor == "NO_KEY":
        return []
    n_bytes = max(1, (wl.key_size * 6 + 7) // 8)
    keys = []
    for _ in range(KEY_POOL_SIZE):
        k = base64.urlsafe_b64encode(rng.randbytes(n_bytes)).rstrip(b"=")[: wl.key_size]
        keys.append(k)
    return keys

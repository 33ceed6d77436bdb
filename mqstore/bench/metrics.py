"""Measurements: an HdrHistogram-like latency recorder and process resource counters.

:class:`LatencyHistogram` records nanosecond values into log-linear buckets with 2,048
sub-buckets (values below 2,048 ns exact; above, a relative error under 1/1,024, about three
significant digits), so memory stays constant however long the run, as with HdrHistogram.
Percentiles return the highest value equivalent to the bucket (HdrHistogram's convention),
clipped to the exact maximum.

:class:`ResourceSnapshot` reads what one process has spent: CPU user/system seconds
(``os.times``, children included once reaped), bytes read/written to storage
(``/proc/self/io`` ``read_bytes``/``write_bytes``), open files (``/proc/self/fd``), mappings
(``/proc/self/maps``) and resident memory (``VmHWM``, reset per run through
``/proc/self/clear_refs`` when the kernel allows it, else the process lifetime peak).
"""
from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

import numpy as np

SUB_BUCKET_BITS = 11
SUB_BUCKETS = 1 << SUB_BUCKET_BITS  # 2048
HALF = SUB_BUCKETS >> 1  # 1024
PERCENTILES = (50.0, 75.0, 95.0, 99.0, 99.9, 99.99)


def bucket_index(v: int) -> int:
    """The bucket of a non-negative value."""
    if v < SUB_BUCKETS:
        return v
    k = v.bit_length() - SUB_BUCKET_BITS
    return SUB_BUCKETS + (k - 1) * HALF + ((v >> k) - HALF)


def bucket_indexes(values: np.ndarray) -> np.ndarray:
    """:func:`bucket_index` of every value of a non-negative int64 array, in numpy."""
    v = np.asarray(values, dtype=np.int64)
    bits = np.zeros(v.shape, dtype=np.int64)  # bit_length, exactly (no float log2)
    x = v.copy()
    for shift in (32, 16, 8, 4, 2, 1):
        big = x >= (1 << shift)
        bits[big] += shift
        x[big] >>= shift
    bits += x > 0
    k = np.maximum(bits - SUB_BUCKET_BITS, 1)
    return np.where(v < SUB_BUCKETS, v, SUB_BUCKETS + (k - 1) * HALF + ((v >> k) - HALF))


def bucket_range(index: int) -> tuple[int, int]:
    """The lowest and highest values that fall in bucket ``index``."""
    if index < SUB_BUCKETS:
        return index, index
    k = (index - SUB_BUCKETS) // HALF + 1
    sub = (index - SUB_BUCKETS) % HALF + HALF
    low = sub << k
    return low, low + (1 << k) - 1


class LatencyHistogram:
    """Latency values (ns) in HdrHistogram-style buckets.

    Thread-safety: none; give each thread its own histogram and :meth:`merge` them after.
    """

    __slots__ = ("counts", "count", "total", "min", "max")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, value_ns: int, n: int = 1) -> None:
        """Record ``n`` occurrences of ``value_ns`` (negative values count as 0)."""
        if value_ns < 0:
            value_ns = 0
        i = bucket_index(value_ns)
        self.counts[i] = self.counts.get(i, 0) + n
        if self.count == 0 or value_ns < self.min:
            self.min = value_ns
        if value_ns > self.max:
            self.max = value_ns
        self.count += n
        self.total += value_ns * n

    def record_many(self, values_ns: np.ndarray) -> None:
        """Record every value of an int64 array (negative values count as 0): the same
        histogram as :meth:`record` of each, in a few numpy passes."""
        v = np.maximum(np.asarray(values_ns, dtype=np.int64), 0)
        if not len(v):
            return
        idx, counts = np.unique(bucket_indexes(v), return_counts=True)
        got = self.counts
        for i, c in zip(idx.tolist(), counts.tolist()):
            got[i] = got.get(i, 0) + c
        lo, hi = int(v.min()), int(v.max())
        if self.count == 0 or lo < self.min:
            self.min = lo
        if hi > self.max:
            self.max = hi
        self.count += len(v)
        # an int64 sum could overflow only for absurd values: then sum exactly in Python
        self.total += int(v.sum()) if hi <= (2**63 - 1) // len(v) else sum(v.tolist())

    def merge(self, other: "LatencyHistogram") -> "LatencyHistogram":
        """Add ``other``'s values into this histogram; returns self."""
        if not other.count:
            return self
        for i, c in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + c
        self.min = other.min if not self.count else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total
        return self

    def percentile(self, p: float) -> int:
        """The value at percentile ``p`` (0-100) in ns; 0 when empty."""
        if not self.count:
            return 0
        if p >= 100.0:
            return self.max
        rank = max(1, int(p / 100.0 * self.count + 0.5))  # HdrHistogram's countAtPercentile
        rank = min(rank, self.count)
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return min(bucket_range(i)[1], self.max)
        return self.max

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def summary_ms(self) -> dict[str, float]:
        """avg, percentiles and max in milliseconds (OMB's unit for latencies)."""
        out = {"avg": self.mean / 1e6}
        for p in PERCENTILES:
            out[_pct_name(p)] = self.percentile(p) / 1e6
        out["max"] = self.max / 1e6
        return out

    def quantiles_ms(self) -> dict[str, float]:
        """OMB's ``aggregated...Quantiles`` map: percentile -> value (ms)."""
        qs = (50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99, 100.0)
        return {f"{q:g}": self.percentile(q) / 1e6 for q in qs}

    def to_dict(self) -> dict:
        return {"count": self.count, "total": self.total, "min": self.min, "max": self.max,
                "counts": {str(k): v for k, v in self.counts.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyHistogram":
        h = cls()
        h.count, h.total, h.min, h.max = d["count"], d["total"], d["min"], d["max"]
        h.counts = {int(k): v for k, v in d["counts"].items()}
        return h


def _pct_name(p: float) -> str:
    return {50.0: "p50", 75.0: "p75", 95.0: "p95", 99.0: "p99", 99.9: "p99.9",
            99.99: "p99.99"}.get(p, f"p{p:g}")


@dataclass
class ResourceSnapshot:
    """Counters of this process at one instant; subtract two with :meth:`delta`."""

    wall: float
    cpu_user: float
    cpu_sys: float
    read_bytes: int | None
    write_bytes: int | None
    open_files: int
    maps: int
    rss_peak_kb: int

    @classmethod
    def take(cls) -> "ResourceSnapshot":
        t = os.times()
        io = read_proc_io()
        return cls(
            wall=time.perf_counter(),
            cpu_user=t.user + t.children_user,
            cpu_sys=t.system + t.children_system,
            read_bytes=io.get("read_bytes"),
            write_bytes=io.get("write_bytes"),
            open_files=count_open_files(),
            maps=count_maps(),
            rss_peak_kb=peak_rss_kb(),
        )

    def delta(self, start: "ResourceSnapshot") -> dict[str, float | int | None]:
        """What was spent since ``start``; files and maps are the values at this instant."""

        def diff(a: int | None, b: int | None) -> int | None:
            return None if a is None or b is None else a - b

        return {
            "wall_s": self.wall - start.wall,
            "cpu_user_s": self.cpu_user - start.cpu_user,
            "cpu_sys_s": self.cpu_sys - start.cpu_sys,
            "disk_read_bytes": diff(self.read_bytes, start.read_bytes),
            "disk_write_bytes": diff(self.write_bytes, start.write_bytes),
            "open_files": self.open_files,
            "maps": self.maps,
            "rss_peak_kb": self.rss_peak_kb,
        }


def read_proc_io() -> dict[str, int]:
    """``/proc/self/io`` as a dict (empty where the kernel does not provide it)."""
    try:
        with open("/proc/self/io", encoding="ascii") as f:
            return {k: int(v) for k, v in (line.split(":") for line in f if ":" in line)}
    except (OSError, ValueError):
        return {}


def count_open_files() -> int:
    """Open file descriptors of this process (-1 if /proc is absent)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def count_maps() -> int:
    """Memory mappings of this process (lines of /proc/self/maps; -1 if absent)."""
    try:
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return -1


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) so the next reading is per run."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_kb() -> int:
    """Peak resident set size in KiB (``VmHWM``, else ``ru_maxrss``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

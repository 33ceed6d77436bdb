"""Faults on the segments plain-value append paths (one ``os.pwrite`` of a whole batch built
by ``mqstore._seg_write``): short writes, a full disk, an I/O error, an interrupt in the
middle of a write. Each is injected by replacing ``os.pwrite`` for the test, with a seeded
choice of where it strikes; in every case nothing half-written stays visible, the store keeps
appending after it, and a reopen holds exactly what was acknowledged.
"""
from __future__ import annotations

import errno
import os
import random

import pytest

import mqstore
from mqstore.errors import StoreFullError
from tests.segments.conftest import SMALL, segment_files


def _open(path, **kw):
    return mqstore.open(path, "segments", **{**SMALL, **kw})


def _values(s):
    out, off = [], 0
    while off < s.end_offset("t", 0):
        page = s.read("t", 0, off)
        out += [r.value for r in page]
        off = page[-1].offset + 1
    return out


class Pwrite:
    """``os.pwrite`` that, on its ``strike``-th call, does ``how``: ``short`` writes part of
    the data and returns the short count (the rest then goes through), ``short-full`` writes
    part and fails every later call with ENOSPC, ``full`` / ``eio`` fail at once, ``zero``
    returns 0 from then on (a write that makes no progress: an I/O error), ``interrupt`` writes part and raises KeyboardInterrupt."""

    def __init__(self, monkeypatch, how: str, strike: int, cut: float):
        self.real = os.pwrite
        self.how, self.strike, self.cut = how, strike, cut
        self.calls = 0
        self.failing = False
        monkeypatch.setattr(os, "pwrite", self)

    def __call__(self, fd, data, pos):
        self.calls += 1
        if self.failing:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if self.how == "zero" and self.calls >= self.strike:
            return 0
        if self.calls != self.strike:
            return self.real(fd, data, pos)
        part = bytes(data[: max(1, int(len(data) * self.cut))])
        if self.how == "full":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if self.how == "eio":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        n = self.real(fd, part, pos)
        if self.how == "interrupt":
            raise KeyboardInterrupt
        if self.how == "short-full":
            self.failing = True
        return n


HOWS = ["short", "short-full", "full", "eio", "zero", "interrupt"]
ERRORS = {"short-full": StoreFullError, "full": StoreFullError, "eio": OSError,
          "zero": OSError, "interrupt": KeyboardInterrupt}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("path_kind", ["append", "append_batch"])
def test_a_failed_write_leaves_nothing_half_written(tmp_path, monkeypatch, how, seed,
                                                    path_kind):
    rnd = random.Random(seed * 31 + HOWS.index(how))
    path = str(tmp_path / "s")
    s = _open(path)
    s.create_topic("t")
    acked = []
    for i in range(rnd.randrange(1, 40)):
        acked.append(b"a%03d" % i * rnd.randrange(1, 30))
        s.append("t", acked[-1])
    logs_before = {p: os.path.getsize(p) for p in segment_files(path)}
    batch = [rnd.randbytes(rnd.randrange(1, 300)) for _ in range(rnd.randrange(1, 20))]
    fault = Pwrite(monkeypatch, how, strike=1, cut=rnd.uniform(0.05, 0.95))
    try:
        if path_kind == "append":
            s.append("t", batch[0])
            written = batch[:1]
        else:
            s.append_batch("t", batch)
            written = batch
    except BaseException as exc:
        assert how in ERRORS and isinstance(exc, ERRORS[how]), exc
        if how in ("short-full", "full"):
            assert exc.errno == errno.ENOSPC
        written = []
        monkeypatch.undo()
        # cut back: every log as it was, the end offset unchanged, the records readable
        assert {p: os.path.getsize(p) for p in segment_files(path)} == logs_before
        assert s.end_offset("t", 0) == len(acked)
    else:
        assert how == "short" and fault.calls >= 2  # the rest of a short write went out
        monkeypatch.undo()
    acked += written
    assert _values(s) == acked
    acked.append(b"after")
    assert s.append("t", b"after").offset == len(acked) - 1
    s.close()
    with _open(path) as r:
        assert _values(r) == acked
        assert sum(r.stats()["recovery"].values()) == 0  # clean: nothing to repair


def test_a_full_disk_on_a_roll_keeps_the_old_segment_active(tmp_path, monkeypatch):
    """A plain append that needs a new segment when no file can be made: StoreFullError,
    nothing written, and the next append (space back) rolls and goes on."""
    path = str(tmp_path / "s")
    s = _open(path, segment_bytes=4096)
    s.create_topic("t")
    acked = []
    while len(segment_files(path)) == 1:
        acked.append(b"v%04d" % len(acked) * 20)
        s.append("t", acked[-1])
    real_open = os.open

    def no_new_files(p, flags, *a, **k):
        if flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(p, flags, *a, **k)

    files = segment_files(path)
    fill = b"x" * 3000
    monkeypatch.setattr(os, "open", no_new_files)
    with pytest.raises(StoreFullError):
        for _ in range(3):  # the active segment fills: the next append must roll
            s.append("t", fill)
            acked.append(fill)
    monkeypatch.undo()
    assert segment_files(path) == files
    assert _values(s) == acked
    s.append("t", b"after")
    acked.append(b"after")
    s.close()
    with _open(path, segment_bytes=4096) as r:
        assert _values(r) == acked

"""The crash-state model itself (mqstore.torture.crashfs): a synced file keeps its synced
bytes in every image, unsynced bytes and names may go, and the sanity modes are exact."""
from __future__ import annotations

import mmap
import os

import pytest

from mqstore.torture.crashfs import PAGE, Recorder, build_image


@pytest.fixture
def recorded(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "old").write_bytes(b"o" * PAGE)
    rec = Recorder(str(root), crash_event=10**9, on_crash=lambda st: None)
    rec.baseline()
    rec.install()
    try:
        yield rec, root
    finally:
        rec.uninstall()


def _scenario(root):
    a = os.open(root / "a", os.O_RDWR | os.O_CREAT, 0o644)
    os.write(a, b"A" * (4 * PAGE))
    os.fsync(a)                               # durable: 4 pages of A, but the name is not
    os.pwrite(a, b"B" * PAGE, 2 * PAGE)       # unsynced overwrite of page 2
    os.pwrite(a, b"C" * PAGE, 4 * PAGE)       # unsynced append of page 4
    os.close(a)
    d = os.open(root, os.O_RDONLY)
    os.fsync(d)                               # now "a" is durably named
    os.close(d)
    m = os.open(root / "m", os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(m, 2 * PAGE)
    mm = mmap.mmap(m, 2 * PAGE)
    mm[0:5] = b"hello"
    mm.flush()                                # msync: durable content, name still not
    mm[PAGE:PAGE + 5] = b"world"              # unsynced write through the map
    os.replace(root / "old", root / "renamed")  # not followed by a directory fsync


def _read(d, name):
    p = os.path.join(d, name)
    return open(p, "rb").read() if os.path.exists(p) else None


def test_sanity_modes_are_exact(recorded, tmp_path):
    rec, root = recorded
    _scenario(root)
    st = rec.capture()
    build_image(st, str(tmp_path / "cur"), 1, "current")
    assert _read(tmp_path / "cur", "a") == b"A" * 2 * PAGE + b"B" * PAGE + b"A" * PAGE + b"C" * PAGE
    assert _read(tmp_path / "cur", "m")[PAGE:PAGE + 5] == b"world"
    assert _read(tmp_path / "cur", "renamed") == b"o" * PAGE and _read(tmp_path / "cur", "old") is None
    build_image(st, str(tmp_path / "dur"), 1, "durable")
    assert _read(tmp_path / "dur", "a") == b"A" * 4 * PAGE
    assert _read(tmp_path / "dur", "m") is None          # its name was never made durable
    assert _read(tmp_path / "dur", "old") == b"o" * PAGE and _read(tmp_path / "dur", "renamed") is None


def test_mixed_images_keep_synced_bytes_and_vary_the_rest(recorded, tmp_path):
    rec, root = recorded
    _scenario(root)
    st = rec.capture()
    seen_a, seen_m = set(), set()
    for seed in range(60):
        out = tmp_path / f"img{seed}"
        build_image(st, str(out), seed, "mix")
        a = _read(out, "a")
        assert a is not None                              # durably named after the dir fsync
        assert a[:2 * PAGE] == b"A" * 2 * PAGE and a[3 * PAGE:4 * PAGE] == b"A" * PAGE
        assert len(a) in range(4 * PAGE, 5 * PAGE + 1)    # the synced size stays
        seen_a.add(a)
        m = _read(out, "m")
        if m is not None:
            assert m[:5] == b"hello"                      # msync made it durable
            seen_m.add(m[PAGE:PAGE + 5])
        # a rename is atomic: the file is under exactly one of its names
        assert (_read(out, "old") is None) != (_read(out, "renamed") is None)
    assert len(seen_a) >= 3                               # drops, keeps and tears happen
    assert seen_m >= {b"world", bytes(5)} or len(seen_m) >= 2


def test_a_torn_page_never_garbles_durable_bytes():
    """Garbage and tears stay past the synced bytes, even inside the same page or sector."""
    import random

    from mqstore.torture.crashfs import _mix_content

    durable = bytes(range(256)) * 23 + b"x" * 129          # 6017 bytes, ends mid-sector
    current = durable + b"\xee" * (16373 - len(durable))
    for seed in range(400):
        img = _mix_content(durable, current, random.Random(seed))
        assert img[:len(durable)] == durable, seed
        assert len(durable) <= len(img) <= len(current)


@pytest.mark.skipif(not __import__("mqstore.durability").durability.FilesystemSync.available,
                    reason="no syncfs that reports errors (Linux >= 5.8)")
def test_syncfs_makes_every_file_and_name_durable(recorded, tmp_path):
    """A group sync of several partitions is one syncfs (durability.FilesystemSync): the
    model makes every recorded file's content and every directory listing durable."""
    from mqstore.durability import FilesystemSync

    rec, root = recorded
    (root / "sub").mkdir()
    for name in ("a", "sub/b"):
        fd = os.open(root / name, os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, name.encode() * PAGE)
        os.close(fd)
    fs = FilesystemSync(str(root))
    fs.ready()
    fs.sync()
    fd = os.open(root / "a", os.O_RDWR)
    os.pwrite(fd, b"late", 0)                 # after the syncfs: not durable
    os.close(fd)
    st = rec.capture()
    build_image(st, str(tmp_path / "dur"), 1, "durable")
    assert _read(tmp_path / "dur", "a") == b"a" * PAGE
    assert _read(tmp_path / "dur", "sub/b") == b"sub/b" * PAGE
    fs.close()

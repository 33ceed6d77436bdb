"""A crash-state model of a POSIX file system: record what a workload made durable, then
build the images a power loss may leave (after ALICE, CrashMonkey and SQLite's test VFS).

**Recording** (:class:`Recorder`, installed in the child process that runs the workload).
It wraps ``os.write``, ``os.pwrite``, ``os.writev``, ``os.pwritev``, ``os.ftruncate``,
``os.truncate``, ``os.posix_fallocate``, ``os.fsync``, ``os.fdatasync``, ``os.open`` (with
``O_CREAT``), ``os.mkdir``, ``os.rename``, ``os.replace``, ``os.unlink``, ``os.remove``,
``os.rmdir``, ``open()`` for writing (``builtins.open``) and ``mmap.mmap`` (a subclass
whose ``flush`` (msync), ``write`` and slice assignment are seen). Each of these calls is one *event*; at the seeded event number the
recorder captures the crash state (before the event) and the child exits. The model:

- the *durable copy* of a file (by inode) is its content and size at its last ``fsync`` /
  ``fdatasync``, or the synced range of an ``mmap.flush(offset, size)``, or after a write on
  an ``O_SYNC``/``O_DSYNC`` descriptor; before any sync, the content at the start of recording
  (the parent ran ``os.sync()``), or empty for a file created while recording. The copy is
  taken when the sync is *called*, so writes racing with it count as unsynced;
- writes through memory maps are not seen one by one: at each sync and at the crash the
  file itself is read, and the bytes that differ from the durable copy are the unsynced ones;
- the *durable listing* of a directory is its entries (name -> inode) at its last ``fsync``,
  or at the start of recording; a directory created while recording has none;
- the model name and every choice come from the seed, so an image replays exactly.

**Images** (:func:`build_image`). From one captured state, per inode whose names differ
between the durable listings and now (created, renamed, unlinked since the last directory
fsync), keep either the current names or the durable ones (a rename is atomic: never both,
never neither). Per file: start from the durable copy; the size is the durable size or the
current one or a sector between (a size ``fdatasync`` made durable stays; a grown region
not written back reads as zeros: the preallocated tail); then every 4 KiB page that differs
from the current content independently keeps the old bytes, takes the new ones, or is torn
(a prefix of 512-byte sectors of the new bytes). Sectors are atomic where they hold durable
bytes (old or new, never garbage: SQLite's powersafe overwrite); one garbage sector may end a
torn page only wholly past the durable size (a torn append).

Model ``posix`` (default) is the strict one above. Model ``ext4`` also makes a file's name
(and its parents' names) durable when the file is fsynced, as ext4's journal commit does.

Not covered: ``sync_file_range``, ``O_DIRECT``, hard links, extended attributes, writes by
the native helper into file descriptors (none today; writes through a map it gets are covered
by the diffing), reordering across a successful fsync of *another* file (no ordering is
assumed between files at all, which is stricter than any real file system).
"""
from __future__ import annotations

import builtins
import fcntl
import mmap
import os
import pickle
import random
import stat
import threading
from typing import Any, Callable

PAGE = 4096
SECTOR = 512
MODELS = ("posix", "ext4")

Ident = tuple[int, int]  # (inode, generation): an inode number reused after unlink is new


class Recorder:
    """Intercepts file-system calls under ``root``; see the module docstring."""

    def __init__(self, root: str, crash_event: int, on_crash: Callable[[dict], None],
                 model: str = "posix"):
        self.root = os.path.realpath(root)
        self.crash_event = crash_event
        self.on_crash = on_crash
        self.model = model
        self.events = 0
        self.lock = threading.RLock()
        self.gen: dict[int, int] = {}
        self.durable: dict[Ident, bytes] = {}
        self.last: dict[Ident, bytes] = {}       # content of a durable-named inode at unlink
        self.listing: dict[str, dict[str, Ident]] = {}   # rel dir -> durable entries
        self.acks: list[tuple[int, tuple[str, int, int]]] = []
        self.flushed = 0      # acks before the last flush() that returned
        self.crashed = False
        self.attempted = -1   # the highest seq the workload tried to append
        self.error: str | None = None
        self._orig: dict[str, Any] = {}

    # ----- identities and snapshots -----
    def _ident(self, st: os.stat_result) -> Ident:
        return (st.st_ino, self.gen.get(st.st_ino, 0))

    def _rel(self, path: str) -> str | None:
        p = os.path.realpath(path)
        if p == self.root:
            return "."
        if p.startswith(self.root + os.sep):
            return os.path.relpath(p, self.root)
        return None

    def _fd_path(self, fd: int) -> str | None:
        try:
            p = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        return None if p.endswith(" (deleted)") else p

    def _read(self, path: str) -> bytes:
        with open(path, "rb", buffering=0) as f:
            return f.read()

    def _list_dir(self, path: str) -> dict[str, Ident]:
        out = {}
        for e in os.scandir(path):
            out[e.name] = self._ident(e.stat(follow_symlinks=False))
        return out

    def _durable_named(self, ident: Ident) -> bool:
        return any(ident in d.values() for d in self.listing.values())

    def baseline(self) -> None:
        """The state at the start of recording counts as durable (the parent synced it)."""
        for d, _, names in os.walk(self.root):
            rel = os.path.relpath(d, self.root)
            self.listing[rel] = self._list_dir(d)
            for n in names:
                p = os.path.join(d, n)
                self.durable[self._ident(os.stat(p))] = self._read(p)

    def _sync_path(self, path: str, offset: int = 0, size: int | None = None) -> None:
        rel = self._rel(path)
        if rel is None:
            return
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            self.listing[rel] = self._list_dir(path)
            return
        ident = self._ident(st)
        cur = self._read(path)
        if size is None:
            self.durable[ident] = cur
        else:
            old = bytearray(self.durable.get(ident, b""))
            if len(old) < len(cur):
                old += bytes(len(cur) - len(old))
            old[offset:offset + size] = cur[offset:offset + size]
            self.durable[ident] = bytes(old[:len(cur)])
        if self.model == "ext4":
            child, parent = path, os.path.dirname(path)
            while self._rel(parent) is not None:
                prel = self._rel(parent)
                self.listing.setdefault(prel, {})[os.path.basename(child)] = \
                    self._ident(os.stat(child))
                if prel == ".":
                    break
                child, parent = parent, os.path.dirname(parent)

    # ----- events -----
    def event(self) -> None:
        """Count one event; at the crash event capture the state and end the process."""
        self.events += 1
        if self.events >= self.crash_event and not self.crashed:
            self.crash()

    def crash(self) -> None:
        with self.lock:
            if self.crashed:
                return
            self.crashed = True
            self.on_crash(self.capture())
            os._exit(0)

    def capture(self) -> dict[str, Any]:
        cur_listing: dict[str, dict[str, Ident]] = {}
        content: dict[Ident, bytes] = {}
        kinds: dict[Ident, str] = {}
        for d, dirs, names in os.walk(self.root):
            rel = os.path.relpath(d, self.root)
            cur_listing[rel] = self._list_dir(d)
            kinds[self._ident(os.stat(d))] = "dir"
            for n in names:
                p = os.path.join(d, n)
                ident = self._ident(os.stat(p))
                content[ident] = self._read(p)
                kinds[ident] = "file"
        for lst in self.listing.values():
            for name, ident in lst.items():
                kinds.setdefault(ident, "file" if ident in self.durable or ident in self.last
                                 else "dir")
        return {"model": self.model, "events": self.events, "listing": self.listing,
                "current": cur_listing, "content": content, "durable": self.durable,
                "last": self.last, "kinds": kinds, "acks": list(self.acks),
                "flushed": self.flushed, "attempted": self.attempted, "error": self.error}

    def ack(self, seq: int, where: tuple[str, int, int]) -> None:
        with self.lock:
            if not self.crashed:
                self.acks.append((seq, where))

    def flush_returned(self, upto: int) -> None:
        with self.lock:
            if not self.crashed:
                self.flushed = max(self.flushed, upto)

    def _before_unlink(self, path: str) -> None:
        if self._rel(path) is None or not os.path.isfile(path):
            return
        st = os.stat(path)
        ident = self._ident(st)
        if self._durable_named(ident):
            self.last[ident] = self._read(path)
        if st.st_nlink <= 1:
            self.gen[st.st_ino] = self.gen.get(st.st_ino, 0) + 1

    # ----- installation -----
    def install(self) -> None:
        rec = self
        o = self._orig
        for name in ("write", "pwrite", "writev", "pwritev", "ftruncate", "truncate",
                     "posix_fallocate", "fsync", "fdatasync", "open", "mkdir", "rename",
                     "replace", "unlink", "remove", "rmdir"):
            o[name] = getattr(os, name)
        sync_flags = os.O_SYNC | getattr(os, "O_DSYNC", 0)

        def wrap_write(name: str) -> Callable:
            real = o[name]

            def w(fd, *args):
                with rec.lock:
                    rec.event()
                    n = real(fd, *args)
                    if fcntl.fcntl(fd, fcntl.F_GETFL) & sync_flags:
                        p = rec._fd_path(fd)
                        if p:
                            rec._sync_path(p)
                    return n
            return w

        for name in ("write", "pwrite", "writev", "pwritev", "ftruncate", "posix_fallocate"):
            setattr(os, name, wrap_write(name))

        def wrap_sync(name: str) -> Callable:
            real = o[name]

            def s(fd):
                with rec.lock:
                    rec.event()
                    p = rec._fd_path(fd)
                    if p:
                        rec._sync_path(p)
                    return real(fd)
            return s

        os.fsync = wrap_sync("fsync")
        os.fdatasync = wrap_sync("fdatasync")

        # syncfs(2), which mqstore.durability.FilesystemSync calls through ctypes: every file
        # and directory of the filesystem becomes durable (the whole recorded tree here)
        from mqstore import durability
        real_syncfs = getattr(durability, "_syncfs", None)
        if real_syncfs is not None:
            o["durability._syncfs"] = real_syncfs

            def syncfs(fd):
                with rec.lock:
                    rec.event()
                    for dirpath, _dirs, files in os.walk(rec.root):
                        rec._sync_path(dirpath)
                        for name in files:
                            rec._sync_path(os.path.join(dirpath, name))
                    return real_syncfs(fd)
            durability._syncfs = syncfs

        def plain(name: str, before: Callable | None = None) -> Callable:
            real = o[name]

            def f(*args, **kw):
                with rec.lock:
                    rec.event()
                    if before is not None:
                        before(*args)
                    return real(*args, **kw)
            return f

        os.truncate = plain("truncate")
        os.mkdir = plain("mkdir")
        os.rmdir = plain("rmdir")
        os.unlink = plain("unlink", lambda p, *a: rec._before_unlink(p))
        os.remove = plain("remove", lambda p, *a: rec._before_unlink(p))

        def before_rename(src, dst, *a):
            if os.path.isfile(dst):
                rec._before_unlink(dst)
        os.rename = plain("rename", before_rename)
        os.replace = plain("replace", before_rename)
        real_open = o["open"]

        def osopen(path, flags, *args, **kw):
            if flags & os.O_CREAT:
                with rec.lock:
                    rec.event()
                    return real_open(path, flags, *args, **kw)
            return real_open(path, flags, *args, **kw)
        os.open = osopen
        real_bopen = builtins.open
        o["builtins.open"] = real_bopen

        def bopen(file, mode="r", *args, **kw):
            if isinstance(mode, str) and any(c in mode for c in "wax+"):
                with rec.lock:
                    rec.event()
                    return real_bopen(file, mode, *args, **kw)
            return real_bopen(file, mode, *args, **kw)
        builtins.open = bopen

        base = mmap.mmap

        class RecordedMmap(base):  # type: ignore[misc, valid-type]
            def __new__(cls, fileno, length, *args, **kw):
                self = super().__new__(cls, fileno, length, *args, **kw)
                self._rec_path = rec._fd_path(fileno) if fileno >= 0 else None
                return self

            def flush(self, *args):
                with rec.lock:
                    rec.event()
                    if self._rec_path and os.path.exists(self._rec_path):
                        if args:
                            off = args[0]
                            size = args[1] if len(args) > 1 else len(self) - off
                            rec._sync_path(self._rec_path, off, size)
                        else:
                            rec._sync_path(self._rec_path)
                    return super().flush(*args)

            def write(self, data):
                with rec.lock:
                    rec.event()
                    return super().write(data)

            def __setitem__(self, key, value):
                with rec.lock:
                    rec.event()
                    return super().__setitem__(key, value)

        self._orig["mmap"] = base
        mmap.mmap = RecordedMmap  # type: ignore[misc]

    def uninstall(self) -> None:
        """Put the real functions back (the child never needs it; tests do)."""
        for name, fn in self._orig.items():
            if name == "mmap":
                mmap.mmap = fn  # type: ignore[misc]
            elif name == "durability._syncfs":
                from mqstore import durability
                durability._syncfs = fn
            elif name == "builtins.open":
                builtins.open = fn
            else:
                setattr(os, name, fn)
        self._orig.clear()


# ----- building images -----

def _mix_content(durable: bytes, current: bytes, rng: random.Random) -> bytes:
    """One possible on-disk content of a file after power loss (see the module docstring).

    Sectors are atomic where they hold durable bytes (SQLite's "powersafe overwrite"): such a
    sector is either its old or its new content. Garbage is only ever written into a sector
    that lies wholly past the durable size (a torn append)."""
    ld, lc = len(durable), len(current)
    if lc > ld:
        r = rng.random()
        size = lc if r < 0.4 else (ld if r < 0.6 else
                                   min(lc, ld + SECTOR * rng.randrange(1, (lc - ld) // SECTOR + 2)))
    elif lc < ld:
        size = lc if rng.random() < 0.5 else ld
    else:
        size = lc
    out = bytearray(durable[:size])
    out += bytes(size - len(out))
    for page in range(0, size, PAGE):
        end = min(page + PAGE, size)
        new = current[page:end]
        if len(new) < end - page:
            new = new + out[page + len(new):end]
        if new == bytes(out[page:end]):
            continue
        r = rng.random()
        if r < 0.45:
            out[page:end] = new
        elif r < 0.8:
            continue
        else:  # torn: a prefix of the page's sectors is new, the rest old
            nsec = (end - page + SECTOR - 1) // SECTOR
            cut = rng.randrange(0, nsec)
            out[page:page + cut * SECTOR] = new[:cut * SECTOR]
            g0 = page + cut * SECTOR
            g1 = min(g0 + SECTOR, end)
            if rng.random() < 0.1 and g0 >= ld and new[g0 - page:g1 - page] != out[g0:g1]:
                out[g0:g1] = rng.randbytes(g1 - g0)
    return bytes(out)


def build_image(state: dict[str, Any], out_dir: str, seed: int, mode: str = "mix") -> None:
    """Write one crash image of ``state`` to ``out_dir``.

    ``mode`` is ``"mix"`` (seeded choices), ``"current"`` (everything written survives, as
    after a plain SIGKILL), ``"durable"`` (only what was synced survives) or ``"names"``
    (every byte written survives, but every name not made durable by a directory fsync is
    lost and every unsynced rename reverted: this isolates directory durability).
    """
    rng = random.Random(seed)
    listing, current = state["listing"], state["current"]
    choice: dict[Ident, str] = {}

    def choose(ident: Ident) -> str:
        if ident not in choice:
            choice[ident] = {"current": "current", "durable": "durable", "names": "durable"}.get(
                mode, "current" if rng.random() < 0.5 else "durable")
        return choice[ident]

    def build_dir(rel: str, dest: str) -> None:
        os.makedirs(dest, exist_ok=True)
        cur = current.get(rel, {})
        dur = listing.get(rel, {})
        for name in sorted(set(cur) | set(dur)):
            c, d = cur.get(name), dur.get(name)
            if c is not None and c == d:
                ident = c
            else:
                want_c = c is not None and choose(c) == "current"
                want_d = d is not None and choose(d) == "durable"
                if want_c and want_d:
                    ident = c if rng.random() < 0.5 else d
                elif want_c:
                    ident = c
                elif want_d:
                    ident = d
                else:
                    continue
            sub = name if rel == "." else os.path.join(rel, name)
            path = os.path.join(dest, name)
            if state["kinds"].get(ident) == "dir":
                build_dir(sub, path)
                continue
            dcontent = state["durable"].get(ident, b"")
            ccontent = state["content"].get(ident, state["last"].get(ident, dcontent))
            if mode in ("current", "names"):
                data = ccontent
            elif mode == "durable":
                data = dcontent
            else:
                data = _mix_content(dcontent, ccontent, rng)
            with open(path, "wb") as f:
                f.write(data)

    build_dir(".", out_dir)


def save_state(state: dict[str, Any], path: str) -> None:
    with open(path + ".tmp", "wb") as f:
        pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.rename(path + ".tmp", path)


def load_state(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        return pickle.load(f)

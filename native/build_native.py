"""cffi builder of ``mqstore._native`` (out-of-line API mode).

``setup.py`` names it in ``cffi_modules``, so ``pip install .`` (or ``-e .``) compiles it.
The cdef is ``mqstore_native.h`` itself; the C sources sit beside this file. By hand::

    pip install -e .                           # the usual way: mqstore/_native.abi3.so
    python native/build_native.py DEST_DIR     # a separate build copied into DEST_DIR
                                               # (the sanitizer test uses this)

Compiler flags: ``-O3 -Wall -Wextra`` (the build must stay warning-free;
``MQSTORE_NATIVE_WERROR=1`` adds ``-Werror``; ``MQSTORE_NATIVE_SANITIZE=address`` builds with
AddressSanitizer). No ``-msse4.2``: the SSE4.2 CRC function carries its own ``target``
attribute and is chosen at run time.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = ["crc.c", "kernels.c", "index.c", "scan.c", "records.c", "index_file.c",
           "batch_decode.c", "cl_encode.c", "cl_read.c", "cl_write.c", "seg_write.c",
           "cl_recover.c"]


def _cdef() -> str:
    return (HERE / "mqstore_native.h").read_text()


def _compile_args() -> list[str]:
    if sys.platform == "win32":
        return ["/O2", "/W4"]
    args = ["-O3", "-Wall", "-Wextra"]
    if os.environ.get("MQSTORE_NATIVE_WERROR") == "1":
        args.append("-Werror")
    sanitize = os.environ.get("MQSTORE_NATIVE_SANITIZE")
    if sanitize:
        args += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g", "-O1"]
    return args


def _link_args() -> list[str]:
    sanitize = os.environ.get("MQSTORE_NATIVE_SANITIZE")
    return [f"-fsanitize={sanitize}"] if sanitize and sys.platform != "win32" else []


def make_builder(absolute_paths: bool = False) -> FFI:
    """The FFI builder. setuptools refuses absolute source paths, so for ``setup.py`` they
    are relative to the project root (its working directory); ``ffibuilder.compile()`` runs
    the compiler elsewhere and needs absolute ones."""
    def path(p: Path) -> str:
        return str(p) if absolute_paths else os.path.relpath(p, HERE.parent)

    builder = FFI()
    builder.cdef(_cdef())
    builder.set_source(
        "mqstore._native",
        '#include "mqstore_internal.h"\n#include "mqstore_gil.h"\n',
        sources=[path(HERE / name) for name in SOURCES],
        include_dirs=[path(HERE)],
        extra_compile_args=_compile_args(),
        extra_link_args=_link_args(),
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    import shutil
    import tempfile

    if len(sys.argv) != 2:
        sys.exit("usage: python native/build_native.py DEST_PACKAGE_DIR\n"
                 "(copies _native*.so into DEST_PACKAGE_DIR; for the source tree itself use "
                 "`pip install -e .`, which names the module _native.abi3.so)")
    out = Path(sys.argv[1])
    with tempfile.TemporaryDirectory(prefix="mqstore-native-") as tmp:
        built = Path(make_builder(absolute_paths=True).compile(tmpdir=tmp, verbose=True))
        shutil.copy2(built, out / built.name)
    print("installed", out / built.name)

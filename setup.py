"""Only here to declare the compiled parts; all metadata lives in pyproject.toml.

- ``mqstore._native``: the cffi helper (``native/build_native.py``, kernels over buffers);
- ``mqstore._rows``: a small CPython extension (``native/rows.c``) that makes the Python
  objects of a read (value bytes, Record tuples) in C, which cffi cannot do.
- ``mqstore._cl_write``: commitlog messages of plain values encoded from the bytes objects
  straight into the mapped file or the transient pool buffer (``native/cl_write_ext.c``).

``MQSTORE_PURE_PYTHON=1`` at install time skips both (mqstore then runs on its pure-Python
fallback, ``mqstore.native.backend == "python"``).
"""
import os

from setuptools import Extension, setup

PURE_PYTHON = os.environ.get("MQSTORE_PURE_PYTHON", "") == "1"

ROWS = Extension("mqstore._rows", sources=["native/rows.c"],
                 extra_compile_args=["-O3", "-Wall", "-Wextra"])

setup(cffi_modules=[] if PURE_PYTHON else ["native/build_native.py:ffibuilder"],
      ext_modules=[] if PURE_PYTHON else [ROWS, Extension(
          "mqstore._seg_write", sources=["native/seg_write_ext.c", "native/crc.c"],
          include_dirs=["native"], extra_compile_args=["-O3", "-Wall", "-Wextra"]), Extension(
          "mqstore._cl_write",
          sources=["native/cl_write_ext.c", "native/cl_encode.c", "native/crc.c"],
          include_dirs=["native"], extra_compile_args=["-O3", "-Wall", "-Wextra"])])

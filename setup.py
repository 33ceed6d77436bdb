"""Only here to declare the compiled parts; all metadata lives in pyproject.toml.

- ``mqstore._native``: the cffi helper (``native/build_native.py``, kernels over buffers);
- three small CPython extensions, for work that needs Python objects, which cffi cannot take
  or make cheaply:
  - ``mqstore._rows`` (``native/rows.c``): the value bytes and Record tuples of a read;
  - ``mqstore._seg_write`` (``native/seg_write_ext.c``): whole RecordBatches of plain values
    built from the bytes objects where they lie (segments appends);
  - ``mqstore._cl_write`` (``native/cl_write_ext.c``): CommitLog messages of plain values
    encoded from the bytes objects into the mapped file or the transient pool buffer.

Each has a pure-Python reference of the same behaviour (``mqstore/_purepy*.py``), used when
it is missing. ``MQSTORE_PURE_PYTHON=1`` at install time builds none of them (mqstore then runs
on its fallback, ``mqstore.native.backend == "python"``).
"""
import os

from setuptools import Extension, setup

PURE_PYTHON = os.environ.get("MQSTORE_PURE_PYTHON", "") == "1"

FLAGS = ["-O3", "-Wall", "-Wextra"]
EXTENSIONS = [
    Extension("mqstore._rows", sources=["native/rows.c"], extra_compile_args=FLAGS),
    Extension("mqstore._seg_write", sources=["native/seg_write_ext.c", "native/crc.c"],
              include_dirs=["native"], extra_compile_args=FLAGS),
    Extension("mqstore._cl_write",
              sources=["native/cl_write_ext.c", "native/cl_encode.c", "native/crc.c"],
              include_dirs=["native"], extra_compile_args=FLAGS),
]

setup(cffi_modules=[] if PURE_PYTHON else ["native/build_native.py:ffibuilder"],
      ext_modules=[] if PURE_PYTHON else EXTENSIONS)

"""Only here to declare the cffi module; all metadata lives in pyproject.toml.

``MQSTORE_PURE_PYTHON=1`` at install time skips the C helper (mqstore then runs on its
pure-Python fallback, ``mqstore.native.backend == "python"``).
"""
import os

from setuptools import setup

PURE_PYTHON = os.environ.get("MQSTORE_PURE_PYTHON", "") == "1"

setup(cffi_modules=[] if PURE_PYTHON else ["native/build_native.py:ffibuilder"])

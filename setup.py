"""Only here to declare the cffi module; all metadata lives in pyproject.toml."""
from setuptools import setup

setup()

"""The import point: backend selection, the fallback switch, the CRC path override."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from nativelogs import NATIVE_MISSING

from mqstore import native


def _python(code: str, **env: str) -> str:
    full_env = {**os.environ, **env}
    out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_backend_is_native_or_python():
    assert native.backend in ("native", "python")


def test_MQSTORE_NATIVE_off_forces_the_pure_python_fallback():
    code = ("import mqstore.native as n, mqstore._purepy as p; "
            "print(n.backend, n.crc32c is p.crc32c, n.scan_batches is p.scan_batches, "
            "hex(n.crc32c(b'123456789')))")
    assert _python(code, MQSTORE_NATIVE="off") == "python True True 0xe3069283"


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
def test_native_backend_replaces_every_function():
    from mqstore import _purepy

    for name in ("crc32c", "java_string_hash", "murmur2", "offset_index_floor",
                 "time_index_floor", "find_batch", "scan_batches", "scan_commitlog",
                 "cq_tag_scan"):
        assert getattr(native, name) is not getattr(_purepy, name), name


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
def test_MQSTORE_CRC32C_HW_off_selects_the_table_path():
    code = "import mqstore.native as n; print(n.crc32c_hardware, hex(n.crc32c(b'123456789')))"
    assert _python(code, MQSTORE_CRC32C_HW="off") == "False 0xe3069283"


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
def test_hardware_path_is_used_when_the_cpu_has_sse42():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        pytest.skip("no /proc/cpuinfo to check the CPU")
    expected = " sse4_2" in flags and os.uname().machine == "x86_64"
    assert native.crc32c_hardware is expected


BLOCK_COMPILED_MODULE = """
import sys
class _NoCompiledModule:  # as if mqstore._native had never been built
    def find_spec(self, name, path=None, target=None):
        if name == "mqstore._native":
            raise ModuleNotFoundError("No module named 'mqstore._native'")
sys.meta_path.insert(0, _NoCompiledModule())
import mqstore.native as n
print(n.backend, n.crc32c(b"123456789") == 0xE3069283)
"""


def test_missing_compiled_module_falls_back_with_a_warning_that_says_how_to_fix():
    out = subprocess.run([sys.executable, "-W", "always", "-c", BLOCK_COMPILED_MODULE],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "MQSTORE_NATIVE": "auto"})
    assert out.stdout.strip() == "python True"
    assert "RuntimeWarning" in out.stderr and "pip install -e ." in out.stderr
    forced = subprocess.run([sys.executable, "-c", BLOCK_COMPILED_MODULE], capture_output=True,
                            text=True, check=False,
                            env={**os.environ, "MQSTORE_NATIVE": "force"})
    assert forced.returncode != 0 and "mqstore._native" in forced.stderr


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
def test_sse42_instructions_only_in_the_hardware_function():
    """The file is built for the baseline CPU: the crc32 instruction (SSE4.2) may appear only
    in the function with the target attribute, which runs only after the CPU probe."""
    import shutil

    import mqstore._native as compiled

    objdump = shutil.which("objdump")
    if objdump is None or os.uname().machine != "x86_64":
        pytest.skip("needs objdump on x86_64")
    listing = subprocess.run([objdump, "-d", compiled.__file__], capture_output=True,
                             text=True, check=True).stdout
    where, function = set(), None
    for line in listing.splitlines():
        if line.endswith(">:"):
            function = line.split("<", 1)[1][:-2]
        elif "\tcrc32" in line:
            where.add(function)
    assert where == {"crc32c_sse42"}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="gcc/clang flags")
def test_the_helper_builds_without_warnings(tmp_path):
    """-Wall -Wextra with -Werror, the C sources and the module cffi generates."""
    import shutil

    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(root / "native" / "build_native.py"), str(tmp_path)],
        env={**os.environ, "MQSTORE_NATIVE_WERROR": "1"}, capture_output=True, text=True,
        check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "warning:" not in proc.stdout + proc.stderr
    assert list(tmp_path.glob("_native*.so"))

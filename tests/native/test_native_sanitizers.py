"""The native helper under valgrind and under AddressSanitizer: run by hand.

    MQSTORE_VALGRIND=1 python -m pytest tests/native/test_native_sanitizers.py -k valgrind
    MQSTORE_ASAN=1 python -m pytest tests/native/test_native_sanitizers.py -k asan

valgrind runs ``sanitizer_driver.py`` (every function over damaged inputs, native ==
python) on the installed build and fails on any error report whose stack passes through the
helper or the CPython extensions ``mqstore._rows``, ``mqstore._seg_write`` and
``mqstore._cl_write`` (valgrind also reports the dynamic loader and CPython, which are not
ours). The ASan test builds a separate copy of the helper and of the three extensions
(native/rows.c, native/seg_write_ext.c, native/cl_write_ext.c with cl_encode.c and crc.c)
with ``-fsanitize=address,undefined`` (ASan and UBSan, both stopping at the first report),
then runs the driver, the whole native suite and the write-path tests (``WRITE_PATH_TESTS``)
against it, with libasan preloaded and ``PYTHONMALLOC=malloc`` so every Python buffer is its
own heap block. Both take minutes, so they are skipped unless
asked for.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from nativelogs import NATIVE_MISSING

from mqstore import native

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DRIVER = HERE / "sanitizer_driver.py"

needs_native = pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)


_C_FILES = "|".join(sorted(p.stem for p in (ROOT / "native").glob("*.c")))


def _errors_in_helper(log: str) -> list[str]:
    """valgrind error blocks whose stack has a frame in the helper (mq_* or _native), in
    mqstore._rows (rows_*, _rows), mqstore._seg_write (seg_*, put_record, build_values,
    batch_size, _seg_write) or mqstore._cl_write (clw_*, dest_buffer, values_items,
    _cl_write), or a line of any native/*.c file."""
    blocks = re.split(r"\n==\d+== \n", log)
    return [b for b in blocks
            if re.search(r"==\d+== [A-Z][^\n]*", b)
            and re.search(r"(?:at|by) 0x[0-9A-F]+: (?:mq_|_cffi_[fd]_mq_|rows_|slice_at|"
                          r"get_i64|check_column|seg_|put_record|put_header|build_values|"
                          r"finish_batch|batch_size|clw_|dest_buffer|values_items|as_i64)|"
                          r"_native|_rows\.|_seg_write\.|_cl_write\.|"
                          rf"\((?:{_C_FILES})\.c:\d+\)", b)]


@needs_native
@pytest.mark.skipif(os.environ.get("MQSTORE_VALGRIND") != "1",
                    reason="run by hand: MQSTORE_VALGRIND=1 (takes a few minutes)")
def test_native_under_valgrind(tmp_path):
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed")
    log = tmp_path / "valgrind.log"
    rounds = os.environ.get("MQSTORE_SANITIZER_ROUNDS", "150")
    proc = subprocess.run(
        [valgrind, f"--log-file={log}", "--error-limit=no", sys.executable, str(DRIVER),
         rounds],
        env={**os.environ, "PYTHONMALLOC": "malloc"}, capture_output=True, text=True,
        timeout=3600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "native == python, no crash" in proc.stdout
    text = log.read_text()
    ours = _errors_in_helper(text)
    assert not ours, "\n\n".join(ours[:5])
    summary = re.findall(r"ERROR SUMMARY: (\d+) errors", text)
    print(f"valgrind: {summary[-1] if summary else '?'} errors in total, none in the helper")


#: run with the native suite under ASan: the engines' write paths (through _seg_write and
#: _cl_write) and the seeded native-vs-reference cases
WRITE_PATH_TESTS = ["faults/test_native_parity.py", "segments/test_write_path.py",
                    "commitlog/test_write_path.py"]
#: the CPython extensions (setup.py): module name -> its C sources in native/
EXTENSIONS = {"_rows": ["rows.c"], "_seg_write": ["seg_write_ext.c", "crc.c"],
              "_cl_write": ["cl_write_ext.c", "cl_encode.c", "crc.c"]}


def _build_asan_copy(dest: Path) -> Path:
    """A copy of the mqstore package holding an ASan + UBSan build of the helper and of
    the CPython extensions."""
    import mqstore

    pkg = dest / "mqstore"
    shutil.copytree(Path(mqstore.__file__).parent, pkg,
                    ignore=shutil.ignore_patterns("_native*", "__pycache__"))
    env = {**os.environ, "MQSTORE_NATIVE_SANITIZE": "address,undefined"}
    subprocess.run([sys.executable, str(ROOT / "native" / "build_native.py"), str(pkg)],
                   env=env, check=True, capture_output=True, cwd=dest)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for name, sources in EXTENSIONS.items():
        for old in pkg.glob(f"{name}.*"):  # the copied non-ASan build
            old.unlink()
        build = subprocess.run(
            ["gcc", "-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer",
             "-fsanitize=address,undefined", "-Wall", "-Wextra",
             f"-I{sysconfig.get_paths()['include']}", f"-I{ROOT / 'native'}",
             *[str(ROOT / "native" / s) for s in sources], "-o", str(pkg / f"{name}{suffix}")],
            capture_output=True, text=True, cwd=dest, check=False)
        assert build.returncode == 0, build.stderr
        assert "warning:" not in build.stderr, build.stderr
    return pkg


@needs_native
@pytest.mark.skipif(os.environ.get("MQSTORE_ASAN") != "1",
                    reason="run by hand: MQSTORE_ASAN=1 (builds an ASan copy of the helper)")
def test_native_under_asan(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("the ASan run is set up for Linux + gcc")
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=False).stdout.strip()
    if not libasan or not os.path.exists(libasan):
        pytest.skip("libasan is not installed")
    _build_asan_copy(tmp_path)
    # the ASan copy first; the project root after it for the tests' own imports (tests.*)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "LD_PRELOAD": libasan,
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1", "PYTHONMALLOC": "malloc",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
           "MQSTORE_NATIVE": "force"}
    where = subprocess.run(
        [sys.executable, "-c", "import mqstore._native as m, mqstore._rows as r, "
         "mqstore._seg_write as s, mqstore._cl_write as c; "
         "print(m.__file__); print(r.__file__); print(s.__file__); print(c.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    for line in where.stdout.split():  # the ASan copies are in use
        assert line.startswith(str(tmp_path)), where.stdout
    drive = subprocess.run([sys.executable, str(DRIVER), "1000"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=1800, check=False)
    assert drive.returncode == 0, drive.stdout + drive.stderr[-4000:]
    suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE),
         *[str(ROOT / "tests" / t) for t in WRITE_PATH_TESTS],
         "-k", "not sanitizers", "--rootdir", str(ROOT)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1800, check=False)
    assert suite.returncode == 0, suite.stdout[-4000:] + suite.stderr[-4000:]

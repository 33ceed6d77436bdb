"""Contract: one writer per directory, engines recognise their own files and refuse others',
options that shape files are kept, configuration comes from kwargs, TOML or environment."""
from __future__ import annotations

import os

import pytest

import mqstore

from .conftest import small_options


def _snapshot(root):
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            st = os.stat(p)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns, hash(fh.read()))
    return out


def test_second_writer_is_refused(store, engine, store_path):
    with pytest.raises(mqstore.StoreLockedError):
        mqstore.open(store_path, engine, **small_options(engine))


def test_lock_is_released_on_close(open_store, engine, store_path):
    s = open_store()
    s.close()
    s2 = open_store()
    s2.create_topic("t")


def test_engine_is_detected_from_the_files(open_store, engine, store_path):
    s = open_store()
    s.create_topic("t")
    s.append("t", b"v")
    s.close()
    with mqstore.open(store_path) as s2:  # no engine named anywhere
        assert s2.engine_name == engine
        assert s2.read("t", 0, 0)[0].value == b"v"


def test_other_engine_directory_is_refused_untouched(open_store, engine, store_path):
    others = [e for e in mqstore.engines() if e != engine]
    if not others:
        pytest.skip("only one engine registered")
    s = open_store()
    s.create_topic("t")
    s.append("t", b"v")
    s.close()
    before = _snapshot(store_path)
    for other in others:
        with pytest.raises(mqstore.EngineMismatchError):
            mqstore.open(store_path, other, **small_options(other))
    assert _snapshot(store_path) == before


def test_conflicting_shape_option_is_refused(open_store, engine, store_path):
    s = open_store()
    cls = type(s)
    s.close()
    ints = [n for n in cls.SHAPE_OPTIONS if isinstance(s.config.options[n], int)]
    if not ints:
        pytest.skip(f"{engine} has no integer shape option")
    name = ints[0]
    with pytest.raises(mqstore.ConfigError, match=name):
        mqstore.open(store_path, engine, **{**small_options(engine),
                                            name: s.config.options[name] * 2})
    # without the option, the stored value is adopted
    with mqstore.open(store_path, engine) as s2:
        assert s2.config.options[name] == s.config.options[name]


def test_unknown_option_is_refused(engine, store_path):
    with pytest.raises(mqstore.ConfigError, match="no_such_option"):
        mqstore.open(store_path, engine, no_such_option=1)
    with pytest.raises(mqstore.ConfigError, match="flush"):
        mqstore.open(store_path, engine, flush="sometimes")


def test_config_from_toml_file(engine, tmp_path, store_path):
    lines = ["[store]", f'engine = "{engine}"', "[flush]", 'mode = "sync"', "interval_ms = 250",
             f"[{engine}]"]
    for k, v in small_options(engine).items():
        lines.append(f"{k} = {v!r}".replace("'", '"'))
    for other in mqstore.engines():
        if other != engine:
            lines += [f"[{other}]", "ignored_for_this_engine = 1"]
    cfg = tmp_path / "store.toml"
    cfg.write_text("\n".join(lines) + "\n")
    with mqstore.open(store_path, config=str(cfg)) as s:
        assert s.engine_name == engine
        assert s.config.flush.mode == "sync" and s.config.flush.interval_ms == 250
        for k, v in small_options(engine).items():
            assert s.config.options[k] == v
    # keyword options win over the file
    with mqstore.open(store_path, config=str(cfg), flush="os") as s:
        assert s.config.flush.mode == "os"


def test_engine_from_environment(engine, store_path, monkeypatch):
    monkeypatch.setenv("MQSTORE_ENGINE", engine)
    with mqstore.open(store_path, **small_options(engine)) as s:
        assert s.engine_name == engine

"""Configuration: sources, precedence, validation."""
from __future__ import annotations

import pytest

from mqstore import ConfigError, FlushPolicy, StoreConfig
from mqstore.config import DEFAULT_MAX_MESSAGE_BYTES, resolve

OPTS = {"alpha": {"size": 100, "mode": "fast", "on": False},
        "beta": {"slots": 8}}


def _resolve(engine=None, config=None, **options):
    def engine_options(name):
        if name not in OPTS:
            raise ConfigError(f"unknown engine {name!r}")
        return OPTS[name]

    return resolve(engine, config, options, engine_options=engine_options,
                   engine_names=tuple(OPTS), pick_engine=lambda n: n or "alpha")


def test_defaults(monkeypatch):
    monkeypatch.delenv("MQSTORE_ENGINE", raising=False)
    cfg = _resolve()
    assert cfg.engine == "alpha"
    assert cfg.flush == FlushPolicy("os", 1000)
    assert cfg.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES == 1048588
    assert cfg.options == {"size": 100, "mode": "fast", "on": False}
    assert cfg.explicit == frozenset()


def test_keyword_options(monkeypatch):
    cfg = _resolve("alpha", size=5, flush="sync", flush_interval_ms=7, read_only=True)
    assert cfg.options["size"] == 5 and cfg.explicit == {"size"}
    assert cfg.flush == FlushPolicy("sync", 7) and cfg.read_only


def test_precedence_kwargs_over_file_over_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MQSTORE_ENGINE", "beta")
    assert _resolve().engine == "beta"
    f = tmp_path / "c.toml"
    f.write_text('[store]\nengine = "alpha"\n[flush]\nmode = "async"\n[alpha]\nsize = 9\n'
                 '[beta]\nslots = 99\n')
    cfg = _resolve(config=str(f))
    assert cfg.engine == "alpha" and cfg.options["size"] == 9 and cfg.flush.mode == "async"
    cfg = _resolve(config=str(f), size=11, flush="os")
    assert cfg.options["size"] == 11 and cfg.flush.mode == "os"
    cfg = _resolve("beta", config=str(f))
    assert cfg.options == {"slots": 99}


def test_dict_config_flat_and_sectioned():
    assert _resolve(config={"engine": "beta", "slots": 3}).options == {"slots": 3}
    assert _resolve(config={"store": {"engine": "beta"}, "beta": {"slots": 4}}).options == {
        "slots": 4}


def test_store_config_passthrough():
    cfg = StoreConfig(engine="beta", options={"slots": 8})
    assert _resolve(config=cfg) is cfg
    assert _resolve(config=cfg, flush="sync").flush.mode == "sync"


@pytest.mark.parametrize("kwargs, word", [
    ({"nope": 1}, "nope"),
    ({"size": "big"}, "size"),
    ({"size": -1}, "size"),
    ({"on": 1}, "on"),
    ({"flush": "never"}, "flush"),
    ({"flush_interval_ms": 0}, "flush_interval_ms"),
    ({"max_message_bytes": 0}, "max_message_bytes"),
    ({"read_only": "yes"}, "read_only"),
])
def test_bad_options_name_themselves(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        _resolve("alpha", **kwargs)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        _resolve(config=str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[store\n")
    with pytest.raises(ConfigError, match="TOML"):
        _resolve(config=str(bad))
    other = tmp_path / "other.toml"
    other.write_text("[mystery]\nx = 1\n")
    with pytest.raises(ConfigError, match="mystery"):
        _resolve(config=str(other))
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[flush]\nmode = \"sync\"\nspeed = 3\n")
    with pytest.raises(ConfigError, match="speed"):
        _resolve(config=str(wrong))


def test_unknown_engine():
    with pytest.raises(ConfigError, match="gamma"):
        _resolve("gamma")

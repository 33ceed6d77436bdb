"""Swap engines by configuration alone: the same program, the engine from a TOML file.

    python examples/swap_engines.py [CONFIG.toml] [DATA_DIR]

CONFIG defaults to swap_engines.toml beside this script. Edit its `engine` (or set
MQSTORE_ENGINE and drop it from the file) and run again: the output is the same records.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import mqstore


def run(config: str, path: str) -> None:
    """The application: knows nothing about which engine stores its messages."""
    with mqstore.open(path, config=config) as store:
        store.create_topic("events", partitions=2)
        for i in range(6):
            store.append("events", b"event-%d" % i, key=b"user-%d" % (i % 3))
        store.flush()
        print(f"engine: {store.engine_name} (flush={store.config.flush.mode})")
        for p in range(store.partitions("events")):
            values = [r.value.decode() for r in store.read("events", p, 0)]
            print(f"partition {p}: {values}")


def main() -> None:
    config = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_suffix(".toml"))
    with tempfile.TemporaryDirectory() as tmp:
        run(config, sys.argv[2] if len(sys.argv) > 2 else f"{tmp}/data")


if __name__ == "__main__":
    main()

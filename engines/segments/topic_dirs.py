"""Topics as directories: ``<root>/<topic>-<partition>/`` (the partition count is read back
from the names, as in Kafka's log dirs), and the marker that makes ``create_topic`` all or
nothing across a crash.

``create_topic`` calls :func:`begin_create` (``<root>/.creating/<topic>`` made durable),
creates every partition, then :func:`finish_create` (the marker removed, durably). While the
marker exists the topic is not discovered; an open as writer removes a marked topic's
directories (:func:`remove_topic_dirs`): nothing was appended to them, since
``create_topic`` had not returned. Functions only; the store serialises callers.
"""
from __future__ import annotations

import os
import shutil

from mqstore import errors
from mqstore.api import validate_topic_name
from mqstore.engines.segments import format as fmt
from mqstore.engines.segments.partition_log import parse_log_dir_name
from mqstore.storedir import fsync_dir


def being_created(root: str) -> set[str]:
    """Topics whose ``create_topic`` has not finished (or was cut by a crash)."""
    try:
        return set(os.listdir(os.path.join(root, fmt.CREATING_DIR)))
    except (FileNotFoundError, NotADirectoryError):
        return set()


def discover(root: str) -> dict[str, int]:
    """Topic -> partition count, from the ``<topic>-<n>`` directories (a topic still being
    created is not there yet)."""
    found: dict[str, int] = {}
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return found
    creating = being_created(root)
    for entry in entries:
        parsed = parse_log_dir_name(entry.name)
        if parsed is None or not entry.is_dir():
            continue
        topic, part = parsed
        try:
            validate_topic_name(topic)
        except errors.InvalidTopicError:
            continue
        if topic not in creating:
            found[topic] = max(found.get(topic, 0), part + 1)
    return found


def begin_create(root: str, topic: str, partitions: int) -> None:
    """Make the marker ``.creating/<topic>`` durable (before any partition directory)."""
    marker_dir = os.path.join(root, fmt.CREATING_DIR)
    if not os.path.isdir(marker_dir):
        os.makedirs(marker_dir, exist_ok=True)
        fsync_dir(root)
    with open(os.path.join(marker_dir, topic), "w") as f:
        f.write(f"{partitions}\n")
    fsync_dir(marker_dir)


def finish_create(root: str, topic: str) -> None:
    """Every partition exists: make that durable, then remove the marker (durably)."""
    fsync_dir(root)
    marker_dir = os.path.join(root, fmt.CREATING_DIR)
    os.unlink(os.path.join(marker_dir, topic))
    fsync_dir(marker_dir)


def remove_topic_dirs(root: str, topic: str) -> None:
    """Remove every ``<topic>-<n>`` directory, then the topic's marker (rolling back an
    unfinished ``create_topic``)."""
    for entry in list(os.scandir(root)):
        parsed = parse_log_dir_name(entry.name)
        if parsed is not None and parsed[0] == topic and entry.is_dir():
            shutil.rmtree(entry.path)
    fsync_dir(root)
    marker_dir = os.path.join(root, fmt.CREATING_DIR)
    try:
        os.unlink(os.path.join(marker_dir, topic))
        fsync_dir(marker_dir)
    except FileNotFoundError:
        pass

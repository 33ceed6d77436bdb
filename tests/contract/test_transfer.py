"""Contract: transfer_to sends the stored bytes of a partition to a socket and says where to
continue. The bytes are the engine's own framing; every value appears in them, in order."""
from __future__ import annotations

import socket
import threading

import pytest

import mqstore


def _drain(sock, out):
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        out.append(chunk)


@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    received: list[bytes] = []
    t = threading.Thread(target=_drain, args=(b, received), daemon=True)
    t.start()

    def finish() -> bytes:
        a.shutdown(socket.SHUT_WR)
        t.join(10)
        return b"".join(received)

    yield a, finish
    a.close()
    b.close()


def test_transfer_everything(store, sockpair):
    sock, finish = sockpair
    store.create_topic("t")
    vals = [b"<value-%04d>" % i for i in range(200)]
    store.append_batch("t", vals[:100], partition=0)
    for v in vals[100:]:
        store.append("t", v, partition=0)
    sent, nxt = store.transfer_to(sock, "t", 0, 0, 10 * 1024 * 1024)
    data = finish()
    assert nxt == 200
    assert sent == len(data) > sum(map(len, vals))
    pos = 0
    for v in vals:
        pos = data.index(v, pos) + len(v)


def test_transfer_in_steps_covers_every_offset(store, sockpair):
    sock, finish = sockpair
    store.create_topic("t")
    vals = [b"<step-%04d>" % i + b"." * 200 for i in range(120)]
    for i in range(0, 120, 4):
        store.append_batch("t", vals[i:i + 4], partition=0)
    offset, total, steps = 0, 0, 0
    while offset < 120:
        sent, nxt = store.transfer_to(sock, "t", 0, offset, 1500)
        assert nxt > offset, "transfer_to must make progress"
        assert sent > 0
        total += sent
        offset = nxt
        steps += 1
    data = finish()
    assert len(data) == total
    assert steps > 3
    for v in vals:
        assert v in data


def test_transfer_from_middle_and_at_end(store, sockpair):
    sock, finish = sockpair
    store.create_topic("t")
    for i in range(50):
        store.append("t", b"<m%02d>" % i, partition=0)
    sent, nxt = store.transfer_to(sock, "t", 0, 30, 1 << 20)
    assert nxt == 50
    assert store.transfer_to(sock, "t", 0, 50, 1 << 20) == (0, 50)
    data = finish()
    for i in range(30, 50):
        assert b"<m%02d>" % i in data
    with pytest.raises(mqstore.OffsetOutOfRangeError):
        store.transfer_to(sock, "t", 0, 51, 1 << 20)

"""A tiny TCP server that serves a partition with ``transfer_to`` on 127.0.0.1.

    python examples/zero_copy_server.py [--engine segments|commitlog] [--messages N]

The server answers one request per connection: ``<topic> <partition> <offset>\\n``; it sends
the stored bytes from that offset (Kafka's sendfile of the segment, or RocketMQ's mmap
slices) until the end of the partition or MAX_BYTES, then closes. A client in the same
script fetches the partition and checks that every value arrived. Bounded: 127.0.0.1 only,
MAX_BYTES per response, a 10 s timeout on every socket, one client.
"""
from __future__ import annotations

import argparse
import socket
import tempfile
import threading

import mqstore

MAX_BYTES = 8 << 20
TIMEOUT_S = 10.0


def serve_one(store, server: socket.socket) -> None:
    """Accept one connection, parse its request and stream the partition with transfer_to."""
    conn, _ = server.accept()
    with conn:
        conn.settimeout(TIMEOUT_S)
        request = b""
        while not request.endswith(b"\n"):
            chunk = conn.recv(256)
            if not chunk:
                return
            request += chunk
        topic, partition, offset = request.decode().split()
        partition, offset = int(partition), int(offset)
        conn.settimeout(None)  # os.sendfile needs a blocking socket
        sent_total, end = 0, store.end_offset(topic, partition)
        while offset < end and sent_total < MAX_BYTES:
            sent, offset = store.transfer_to(conn, topic, partition, offset,
                                             MAX_BYTES - sent_total)
            sent_total += sent
        print(f"server: sent {sent_total} bytes, next offset {offset}")


def fetch(port: int, topic: str, partition: int, offset: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as s:
        s.sendall(f"{topic} {partition} {offset}\n".encode())
        chunks = []
        while True:
            data = s.recv(1 << 16)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--engine", default=None)
    ap.add_argument("--messages", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with mqstore.open(f"{tmp}/data", engine=args.engine) as store:
            store.create_topic("feed", 1)
            values = [b"message-%06d|" % i + b"x" * 100 for i in range(args.messages)]
            store.append_batch("feed", values)
            store.flush()
            server = socket.socket()
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            server.settimeout(TIMEOUT_S)
            thread = threading.Thread(target=serve_one, args=(store, server), daemon=True)
            thread.start()
            data = fetch(server.getsockname()[1], "feed", 0, 0)
            thread.join(TIMEOUT_S)
            server.close()
            missing = [v for v in values if v not in data]
            print(f"client: received {len(data)} bytes in the {store.engine_name} framing; "
                  f"{len(values) - len(missing)}/{len(values)} values found")
            if missing:
                raise SystemExit(f"{len(missing)} values missing")


if __name__ == "__main__":
    main()

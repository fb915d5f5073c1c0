"""Hostile-client benchmark: memory under large bodies and prefetch latency beside slow clients.

    bench/run hostile [--requests 2000]

Serves service/main.py twice on the Firestore emulator with the Terraform defaults (a token,
THREADS = 44 for concurrency 40): with service/web/server.py (the request guard, as deployed) and with
plain `functions-framework` (as before the guard), and measures on each, in one run:
- peak RSS while 16 clients each send a 32 MiB body at once (chunked, with the token) and 16 more
  announce and send 32 MiB without a token;
- prefetch p50/p99 at concurrency 4, alone and while 10 clients drip an end-of-call body a byte
  every 2 s. Traffic goes to 127.0.0.1 only, bounded in count and time.
(Hostile profiles: bench/hostile_profile.py.)
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

from benchlib import Result, Server, http_load, print_table
from emulators import free_port, start_firestore, treat_sigterm_as_ctrl_c

PROJECT = "bench-hostile"
TOKEN = "bench-token"
BODY_MIB = 32


def send_large_body(port: int, with_token: bool, stop: threading.Event) -> None:
    chunk = b"x" * (1 << 20)
    auth = f"Authorization: Bearer {TOKEN}\r\n" if with_token else ""
    framing = (
        "Transfer-Encoding: chunked\r\n" if with_token else f"Content-Length: {BODY_MIB << 20}\r\n"
    )
    head = f"POST /end-of-call HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall((head + framing + "\r\n").encode())
            for _ in range(BODY_MIB):
                if stop.is_set():
                    return
                piece = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if with_token else chunk
                sock.sendall(piece)
            if with_token:
                sock.sendall(b"0\r\n\r\n")
            sock.recv(4096)
    except OSError:
        pass  # refused and closed: expected


def peak_rss_under_large_bodies(server: Server) -> tuple[float, float]:
    idle = server.rss_mib()
    stop = threading.Event()
    senders = [
        threading.Thread(target=send_large_body, args=(server.port, i % 2 == 0, stop), daemon=True)
        for i in range(32)
    ]
    peak = idle
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 60
    while any(s.is_alive() for s in senders) and time.monotonic() < deadline:
        peak = max(peak, server.rss_mib())
        time.sleep(0.05)
    stop.set()
    return idle, peak


def drip(port: int, stop: threading.Event) -> None:
    head = (
        f"POST /end-of-call HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(head.encode())
                while not stop.wait(2):
                    sock.sendall(b" ")
        except OSError:
            continue  # cut at the read deadline: connect again, as an attacker would


def prefetch_latency(server: Server, count: int, slow_clients: int) -> Result:
    stop = threading.Event()
    dripping = [
        threading.Thread(target=drip, args=(server.port, stop), daemon=True)
        for _ in range(slow_clients)
    ]
    for client in dripping:
        client.start()
    time.sleep(1 if slow_clients else 0)
    path = f"/prefetch?agent_id=agent-1&session_id=s&from=%2B15551230000&token={TOKEN}"
    requests = [("GET", path, b"", {})] * count
    try:
        name = f"prefetch beside {slow_clients} slow clients"
        return http_load(name, server.port, requests, concurrency=4, max_seconds=60)
    finally:
        stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    treat_sigterm_as_ctrl_c()
    emulator = start_firestore(Path(tempfile.mkdtemp(prefix="bench-hostile-")))
    env = {
        **emulator.env,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "WEBHOOK_TOKENS": TOKEN,
        "THREADS": "44",
    }
    os.environ.update(emulator.env)
    try:
        for label, plain in (
            ("guarded (service.web.server)", False),
            ("plain functions-framework", True),
        ):
            server = Server("service/main.py", "app", free_port(), env, plain_framework=plain)
            try:
                idle, peak = peak_rss_under_large_bodies(server)
                print(
                    f"{label}: largest process idle {idle:.0f} MiB, peak under 32 x {BODY_MIB} MiB bodies "
                    f"{peak:.0f} MiB (+{peak - idle:.0f})",
                    flush=True,
                )
                results = [prefetch_latency(server, args.requests, n) for n in (0, 10)]
                print_table(results, f"{label}: prefetch, concurrency 4")
            finally:
                server.stop()
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()

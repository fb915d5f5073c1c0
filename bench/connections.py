"""Connection benchmark: a bystander's prefetch beside clients that hold connections.

    bench/run connections [--seconds 12]

Serves service/main.py as deployed (service/web/server.py, THREADS 44, a token) on the Firestore
emulator and measures a bystander's prefetch (4 clients, a new connection for each request, 2 s
timeout) alone, beside 30 new silent connections a second, and beside 48 clients that pipeline
GET /openapi.json (the largest answer, no token needed) with a small receive window and never
read. Prints answered/failed, p50/p99/max and the server's peak RSS (arbiter + worker).
Traffic goes to 127.0.0.1 only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

from benchlib import Server
from emulators import free_port, start_firestore, treat_sigterm_as_ctrl_c

TOKEN = "bench-token"
PATH = f"/prefetch?agent_id=agent-1&session_id=s&from=%2B15551230000&token={TOKEN}"
TIMEOUT = 2.0
HEADER = (
    "| bystander prefetch beside          |    ok | fail |  p50 ms |  p99 ms |  max ms | RSS MiB |\n"
    "|------------------------------------|------:|-----:|--------:|--------:|--------:|--------:|"
)


def one_prefetch(port: int) -> float | None:
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.settimeout(max(0.01, TIMEOUT - (time.perf_counter() - started)))
            sock.sendall(f"GET {PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        if not data.startswith(b"HTTP/1.1 200"):
            return None
        return time.perf_counter() - started
    except OSError:
        return None


def bystander(port: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def run() -> None:
        nonlocal failures
        while time.monotonic() < end:
            result = one_prefetch(port)
            with lock:
                if result is None:
                    failures += 1
                else:
                    latencies.append(result)
            time.sleep(0.02)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, failures


def silent_connections(port: int, stop: threading.Event, per_second: int = 30) -> None:
    held: list[socket.socket] = []
    while not stop.wait(1 / per_second):
        with contextlib.suppress(OSError):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        if len(held) > 600:
            held.pop(0).close()
    for sock in held:
        sock.close()


def pipeliner(port: int, stop: threading.Event) -> None:
    request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"  # the largest answer, no token
    while not stop.is_set():
        sock = socket.socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(1)
            sock.connect(("127.0.0.1", port))
            while not stop.is_set():
                sock.sendall(request * 50)
        except OSError:
            stop.wait(30)  # the server stopped reading: keep the connection open, never read
        finally:
            sock.close()


class PeakRss:
    """The server's largest RSS, sampled every 0.2 s until stop()."""

    def __init__(self, server: Server) -> None:
        self.server, self.peak = server, server.rss_mib()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.done.wait(0.2):
            self.peak = max(self.peak, self.server.rss_mib())

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        return self.peak


def report(label: str, latencies: list[float], failures: int, rss: float) -> None:
    latencies.sort()
    if not latencies:
        print(
            f"| {label:<34} | {0:>5} | {failures:>4} |       - |       - |       - | {rss:>7.0f} |"
        )
        return

    def pct(fraction: float) -> float:
        return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1000

    print(
        f"| {label:<34} | {len(latencies):>5} | {failures:>4} | {pct(0.5):>7.1f} "
        f"| {pct(0.99):>7.1f} | {latencies[-1] * 1000:>7.1f} | {rss:>7.0f} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=12)
    args = parser.parse_args()
    treat_sigterm_as_ctrl_c()
    emulator = start_firestore(Path(tempfile.mkdtemp(prefix="bench-connections-")))
    env = {
        **emulator.env,
        "GOOGLE_CLOUD_PROJECT": "bench-connections",
        "WEBHOOK_TOKENS": TOKEN,
        "THREADS": "44",
    }
    os.environ.update(emulator.env)
    server = Server("service/main.py", "app", free_port(), env)
    try:
        print(HEADER)
        for label, attack, count in (
            ("nothing", None, 0),
            ("30 silent connections/s", silent_connections, 1),
            ("48 pipelining non-readers", pipeliner, 48),
            ("nothing (after)", None, 0),
        ):
            stop = threading.Event()
            attackers = (
                [
                    threading.Thread(target=attack, args=(server.port, stop), daemon=True)
                    for _ in range(count)
                ]
                if attack
                else []
            )
            for thread in attackers:
                thread.start()
            time.sleep(2 if attack else 0)
            watcher = PeakRss(server)
            latencies, failures = bystander(server.port, args.seconds)
            peak = watcher.stop()
            stop.set()
            for thread in attackers:
                thread.join(5)
            report(label, latencies, failures, peak)
            time.sleep(1)
    finally:
        server.stop()
        emulator.stop()


if __name__ == "__main__":
    main()

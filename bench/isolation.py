"""Isolation benchmark: the prefetch beside end-of-calls waiting on a frozen BigQuery.

    bench/run isolation [--seconds 12] [--rate 8] [--env KEY=VALUE ...]

Serves service/main.py as deployed (THREADS 44) on both emulators, sends end-of-calls open-loop
at --rate a second (a new connection each, whether or not earlier ones have answered) and
measures a bystander's prefetch (4 clients, a new connection each, 2 s timeout) with BigQuery
healthy, then with the BigQuery emulator frozen (SIGSTOP of the emulator this benchmark started,
SIGCONT after; one freeze per run, as the emulator takes few: docs/emulators.md). Prints the
prefetch's p50/p99/max and the end-of-calls' answers and p99. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import demo_data
from benchlib import Server, seed_demo_stores
from connections import HEADER, bystander, report
from emulators import free_port, start_bigquery, start_firestore, treat_sigterm_as_ctrl_c

PROJECT = "bench-isolation"
TOKEN = "bench-token"


def end_of_call(port: int) -> tuple[str, float]:
    body = json.dumps(demo_data.demo_end_of_call(uuid.uuid4().hex)).encode()
    head = (
        f"POST /end-of-call?token={TOKEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(head + body)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data[9:12].decode() or "none", time.perf_counter() - started
    except OSError as exc:
        return type(exc).__name__, time.perf_counter() - started


def end_of_call_load(
    port: int, rate: int, stop: threading.Event, out: list[tuple[str, float]]
) -> None:
    """Open loop: `rate` calls a second whether or not earlier ones have answered."""
    threads = []
    while not stop.wait(1 / rate):
        thread = threading.Thread(target=lambda: out.append(end_of_call(port)), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--rate", type=int, default=8)
    parser.add_argument("--env", action="append", default=[])
    args = parser.parse_args()
    treat_sigterm_as_ctrl_c()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
    firestore = start_firestore(log_dir)
    bigquery = start_bigquery(log_dir, PROJECT)
    server = None
    try:
        env = {**firestore.env, **bigquery.env, "GOOGLE_CLOUD_PROJECT": PROJECT}
        seed_demo_stores(env)
        settings = dict(item.split("=", 1) for item in args.env)
        server = Server(
            "service/main.py",
            "app",
            free_port(),
            {**env, "WEBHOOK_TOKENS": TOKEN, "THREADS": "44", **settings},
        )
        print(HEADER)
        for label, frozen in (
            ("end-of-calls, BigQuery healthy", False),
            ("end-of-calls, BigQuery frozen", True),
        ):
            stop = threading.Event()
            calls: list[tuple[str, float]] = []
            loader = threading.Thread(
                target=end_of_call_load, args=(server.port, args.rate, stop, calls)
            )
            if frozen:
                os.kill(bigquery.process.pid, signal.SIGSTOP)
            try:
                loader.start()
                time.sleep(4 if frozen else 1)
                latencies, failures = bystander(server.port, args.seconds)
                report(label, latencies, failures, server.rss_mib())
            finally:
                if frozen:
                    os.kill(bigquery.process.pid, signal.SIGCONT)
                stop.set()
                loader.join(120)
            statuses = Counter(status for status, _ in calls)
            times = sorted(seconds for _, seconds in calls)
            p99 = times[int(0.99 * (len(times) - 1))] if times else 0
            print(f"    end-of-call answers {dict(statuses)}, p99 {p99:.2f} s", flush=True)
    finally:
        if server:
            server.stop()
        bigquery.stop()
        firestore.stop()


if __name__ == "__main__":
    main()

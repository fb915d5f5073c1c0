"""Memory benchmark: what the service holds idle, after mixed traffic and at its peak.

    bench/run memory [--python PATH] [--env KEY=VALUE ...]

Serves service/main.py as deployed (THREADS 44) on both emulators and reports the proportional
set size (PSS: shared pages counted once, as the instance's memory limit counts them) of the
gunicorn arbiter and worker together: idle; after the first end-of-call (the BigQuery client is
loaded on first use); after 1,600 end-of-calls 40 at a time and 12,000 prefetches 40 at a time;
and the peak while 40 end-of-calls of 2.5 MB each arrive at once.

--python serves with another interpreter, e.g. a venv made with `uv sync --no-dev` (what the
Dockerfile installs): the development venv also holds pyarrow and numpy (dependencies of the
BigQuery emulator), which google-cloud-bigquery imports when present, about 60 MiB more.
Traffic goes to 127.0.0.1 only, bounded in count.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import demo_data
from benchlib import Server, seed_demo_stores
from connections import one_prefetch
from emulators import free_port, start_bigquery, start_firestore, treat_sigterm_as_ctrl_c

PROJECT = "bench-memory"
TOKEN = "bench-token"


def pss_mib(server: Server) -> float:
    pid = server.process.pid
    pids = [pid]
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        pids += [int(child) for child in children.read().split()]
    total = 0
    for each in pids:
        with open(f"/proc/{each}/smaps_rollup") as rollup:
            total += int(rollup.read().split("Pss:")[1].split()[0])
    return total / 1024


def end_of_call(port: int, transcript_bytes: int = 0) -> str:
    payload = demo_data.demo_end_of_call(uuid.uuid4().hex)
    if transcript_bytes:
        chat = json.loads(payload["chat"])
        chat.append({"role": "user", "content": "word " * (transcript_bytes // 5)})
        payload["chat"] = json.dumps(chat)
    body = json.dumps(payload).encode()
    head = (
        f"POST /end-of-call?token={TOKEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            sock.sendall(head + body)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data[9:12].decode() or "none"
    except OSError as exc:
        return type(exc).__name__


def at_once(count: int, function: Callable[[], object]) -> Counter[object]:
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(function())) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return Counter(results)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--python", help="interpreter to serve with (default: this one)")
    parser.add_argument("--env", action="append", default=[], help="a setting, KEY=VALUE")
    args = parser.parse_args()
    treat_sigterm_as_ctrl_c()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    firestore = start_firestore(log_dir)
    bigquery = start_bigquery(log_dir, PROJECT)
    server = None
    try:
        env = {**firestore.env, **bigquery.env, "GOOGLE_CLOUD_PROJECT": PROJECT}
        seed_demo_stores(env)
        settings = dict(item.split("=", 1) for item in args.env)
        if args.python:
            sys.executable = args.python  # benchlib.Server serves with sys.executable
        server = Server(
            "service/main.py",
            "app",
            free_port(),
            {**env, "WEBHOOK_TOKENS": TOKEN, "THREADS": "44", **settings},
        )
        port = server.port
        print(f"idle: {pss_mib(server):.0f} MiB", flush=True)
        end_of_call(port)
        print(f"after the first end-of-call: {pss_mib(server):.0f} MiB", flush=True)
        for _ in range(40):
            at_once(40, lambda: end_of_call(port))
        at_once(40, lambda: sum(one_prefetch(port) is not None for _ in range(300)))
        print(f"after 1,600 end-of-calls and 12,000 prefetches: {pss_mib(server):.0f} MiB")
        peak = [pss_mib(server)]
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], pss_mib(server))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        answers = at_once(40, lambda: end_of_call(port, 2_500_000))
        done.set()
        watcher.join()
        print(
            f"peak while 40 end-of-calls of 2.5 MB arrive at once: {peak[0]:.0f} MiB "
            f"(answers {dict(answers)}); after: {pss_mib(server):.0f} MiB",
            flush=True,
        )
    finally:
        if server:
            server.stop()
        bigquery.stop()
        firestore.stop()


if __name__ == "__main__":
    main()

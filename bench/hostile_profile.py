"""Other callers' prefetch latency while hostile-template profiles are being hit.

    bench/run hostile_profile [--requests 2000] [--hostile 4]

Serves service/main.py (as bench/prefetch.py does) on the Firestore emulator with
ordinary profiles and two hostile ones from issue 12: `{x}` 300,000 times with a 1,000-character
`x`, and a 900 KB map referenced 1,000 times. Measures ordinary prefetches at concurrency 4 alone,
then while `--hostile` clients keep calling the hostile profiles, and prints both (compare the
ratio within one run: the machine is shared). Uses only what every version of the service has, so
the same file measures an older checkout (copy it into that checkout's scripts/). Traffic goes to
127.0.0.1 only, bounded in count and time (each phase at most --max-seconds; a hostile request
at most 60 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchlib import Result, Server, http_load, print_table
from emulators import free_port, start_firestore, treat_sigterm_as_ctrl_c

PROJECT = "bench-millis"
AGENT = "agent-1"
HOSTILE_NUMBERS = ("+15557770001", "+15557770002")


def seed(count: int) -> list[str]:
    from service.stores.firestore import make_client

    client = make_client(PROJECT, "(default)")
    client.collection("agents").document(AGENT).set(
        {"company": "Acme", "extra_prompt": "You work for {company}.", "caller_numbers": "phone"}
    )
    numbers = [f"+1555{index:07d}" for index in range(1, count + 1)]
    batch = client.batch()
    for number in numbers:
        batch.set(
            client.collection("profiles").document(number),
            {"name": f"Caller {number[-4:]}", "extra_prompt": "The caller is {name}."},
        )
    batch.commit()
    profiles = client.collection("profiles")
    profiles.document(HOSTILE_NUMBERS[0]).set({"x": "y" * 1000, "extra_prompt": "{x}" * 300_000})
    profiles.document(HOSTILE_NUMBERS[1]).set(
        {"m": {f"k{i}": "v" * 90 for i in range(9000)}, "extra_prompt": "{m}" * 1000}
    )
    return numbers


def ordinary_load(
    port: int, numbers: list[str], count: int, max_seconds: float, name: str
) -> Result:
    requests = [
        (
            "GET",
            f"/prefetch?agent_id={AGENT}&session_id=s{i}&from=%2B{numbers[i % len(numbers)][1:]}",
            b"",
            {},
        )
        for i in range(count)
    ]
    return http_load(name, port, requests, 4, max_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="ordinary prefetches per phase")
    parser.add_argument("--hostile", type=int, default=4, help="clients calling hostile profiles")
    parser.add_argument("--max-seconds", type=float, default=60)
    args = parser.parse_args()
    treat_sigterm_as_ctrl_c()

    emulator = start_firestore(Path(tempfile.mkdtemp(prefix="bench-hostile-")))
    os.environ.update(emulator.env)
    os.environ["GOOGLE_CLOUD_PROJECT"] = PROJECT
    server = None
    try:
        numbers = seed(200)
        env = {**emulator.env, "GOOGLE_CLOUD_PROJECT": PROJECT, "ALLOW_UNAUTHENTICATED": "true"}
        server = Server("service/main.py", "app", free_port(), env)
        port = server.port
        ordinary_load(port, numbers, 500, 30, "warm-up")
        for number in HOSTILE_NUMBERS:  # the hostile documents cached, as under attack
            url = f"http://127.0.0.1:{port}/prefetch?agent_id={AGENT}&session_id=w&from=%2B{number[1:]}"
            with urllib.request.urlopen(url, timeout=60) as response:
                prompt_chars = len(response.read())
            print(f"hostile {number}: answer of {prompt_chars} bytes")

        alone = ordinary_load(port, numbers, args.requests, args.max_seconds, "ordinary, alone")

        stop = threading.Event()
        hostile_latencies: list[float] = []

        def attacker(index: int) -> None:
            number = HOSTILE_NUMBERS[index % len(HOSTILE_NUMBERS)]
            url = f"http://127.0.0.1:{port}/prefetch?agent_id={AGENT}&session_id=h&from=%2B{number[1:]}"
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    with urllib.request.urlopen(url, timeout=60) as response:
                        response.read()
                except OSError:
                    continue
                hostile_latencies.append(time.perf_counter() - started)

        attackers = [
            threading.Thread(target=attacker, args=(i,), daemon=True) for i in range(args.hostile)
        ]
        for thread in attackers:
            thread.start()
        time.sleep(1)  # the attack is under way before ordinary callers are measured
        try:
            beside = ordinary_load(
                port,
                numbers,
                args.requests,
                args.max_seconds,
                f"ordinary, beside {args.hostile} hostile",
            )
        finally:
            stop.set()
            for thread in attackers:
                thread.join(65)
        print_table([alone, beside], "Ordinary prefetch at concurrency 4 (one run)")
        if hostile_latencies:
            print(
                f"hostile requests: {len(hostile_latencies)}, median "
                f"{statistics.median(hostile_latencies) * 1000:.1f} ms, max "
                f"{max(hostile_latencies) * 1000:.1f} ms; largest server process {server.rss_mib():.0f} MiB"
            )
        print(f"p99 beside / alone: {beside.p99_ms / alone.p99_ms:.1f}x")
    finally:
        if server is not None:
            server.stop()
        emulator.stop()


if __name__ == "__main__":
    main()

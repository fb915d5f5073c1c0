"""Caller memory benchmark: both webhooks with memory on against the same with memory off, in one
run on the local emulators.

    bench/run caller_memory [--callers 2000] [--requests 3000] [--calls 300] [--rounds 3]

One service (`service/main.py`, settings as deployed) serves two agents that differ only in
`memory.enabled`. Prefetch: callers spread over N numbers (80 % remembered, with 3 calls each,
the rest unknown), p50 at concurrency 1 and requests per second at 64. End of call: new calls of
those callers at concurrency 1 and 8, every measurement on an empty events table. Targets run in
rotated rounds and each statistic is the median of its rounds; only ratios within this run count.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import demo_data
from benchlib import Result, Server, Summary, http_load, print_table
from emulators import free_port, running_emulators, treat_sigterm_as_ctrl_c

PROJECT = "bench-millis"
AGENT_NUMBER = "+15550000000"
AGENTS = {"memory off": "bench-memory-off", "memory on": "bench-memory-on"}
# Memory is read on every prefetch (never served fresh from the cache): also compared with the
# prefetch that reads its profile on every call too.
UNCACHED = "memory off, profile cache off"
MEMORY = {"enabled": True, "metadata_keys": ["campaign"], "calls": 5}

Request = tuple[str, str, bytes, dict[str, str]]


def seed(firestore: object, count: int, rng: random.Random) -> list[str]:
    from service.memory.paths import memory_path
    from service.memory.record import Contribution, merged

    numbers = [f"+1555{index:07d}" for index in range(1, count + 1)]
    for name, agent_id in AGENTS.items():
        fields = {
            "company": "Acme",
            "extra_prompt": "You work for {company}.",
            "phone_numbers": [AGENT_NUMBER],
            "caller_numbers": "phone",
        }
        if name == "memory on":
            fields["extra_prompt"] += " Calls so far: {memory.calls}, last {memory.last_call}."
        fields["memory"] = {**MEMORY, "enabled": name == "memory on"}
        firestore.collection("agents").document(agent_id).set(fields)  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    expires = now + timedelta(days=365)
    for start in range(0, count, 100):
        batch = firestore.batch()  # type: ignore[attr-defined]
        for number in numbers[start : start + 100]:
            batch.set(
                firestore.collection("profiles").document(number),  # type: ignore[attr-defined]
                {"name": f"Caller {number[-4:]}", "tier": "gold"},
            )
            if rng.random() < 0.8:  # a returning caller of the memory agent
                memory: dict[str, object] = {}
                for call in range(3):
                    entry = Contribution(
                        f"old-{number}-{call}",
                        now - timedelta(days=call + 1),
                        AGENTS["memory on"],
                        "user-ended",
                        60.0,
                        {"campaign": "winter"},
                    )
                    memory = merged(memory, entry, 5, False, expires)
                path = memory_path("profiles", number, f"agent:{AGENTS['memory on']}")
                batch.set(firestore.document(path), memory)  # type: ignore[attr-defined]
        batch.commit()
    return numbers


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--callers", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=3000, help="per prefetch target and c")
    parser.add_argument("--calls", type=int, default=300, help="per end-of-call target and c")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    treat_sigterm_as_ctrl_c()
    rng = random.Random(24)

    with running_emulators(PROJECT, Path(tempfile.mkdtemp(prefix="bench-"))) as emulator_env:
        os.environ.update(emulator_env)
        from service.stores.bigquery import create_tables_and_views
        from service.stores.bigquery import make_client as bigquery_client
        from service.stores.firestore import make_client as firestore_client

        firestore = firestore_client(PROJECT, "(default)")
        bigquery = bigquery_client(PROJECT)
        create_tables_and_views(bigquery, "millis")
        numbers = seed(firestore, args.callers, rng)
        env = {**emulator_env, "GOOGLE_CLOUD_PROJECT": PROJECT}
        server = Server("service/main.py", "app", free_port(), env)
        uncached = Server(
            "service/main.py", "app", free_port(), {**env, "PROFILE_CACHE_TTL_SECONDS": "0"}
        )
        try:

            def caller() -> str:
                return (
                    rng.choice(numbers)
                    if rng.random() < 0.9
                    else f"+1666{rng.randrange(10**7):07d}"
                )

            def prefetches(agent_id: str, count: int) -> list[Request]:
                return [
                    (
                        "GET",
                        f"/prefetch?agent_id={agent_id}&session_id=s{i}&from={quote(caller())}"
                        f"&to={quote(AGENT_NUMBER)}",
                        b"",
                        {},
                    )
                    for i in range(count)
                ]

            def end_of_calls(agent_id: str, count: int) -> list[Request]:
                requests = []
                for _ in range(count):
                    payload = demo_data.demo_end_of_call(uuid.uuid4().hex, agent_id)
                    payload["voip"] = {"provider": "twilio", "from": caller(), "to": AGENT_NUMBER}
                    body = json.dumps(payload).encode()
                    requests.append(
                        ("POST", "/end-of-call", body, {"Content-Type": "application/json"})
                    )
                return requests

            def empty_events_table() -> None:
                bigquery.delete_table(f"{PROJECT}.millis.call_events", not_found_ok=True)
                create_tables_and_views(bigquery, "millis")

            targets: dict[str, Callable[[int, int], Result]] = {}
            for name, agent_id in AGENTS.items():
                targets[f"GET /prefetch, {name}"] = lambda count, c, a=agent_id, n=name: http_load(
                    f"GET /prefetch, {n}", server.port, prefetches(a, count), c
                )
                targets[f"POST /end-of-call, {name}"] = lambda count, c, a=agent_id, n=name: (
                    http_load(f"POST /end-of-call, {n}", server.port, end_of_calls(a, count), c)
                )
            targets[f"GET /prefetch, {UNCACHED}"] = lambda count, c: http_load(
                f"GET /prefetch, {UNCACHED}",
                uncached.port,
                prefetches(AGENTS["memory off"], count),
                c,
            )
            for agent_id in AGENTS.values():  # warm up both paths, the emulators' too
                http_load("warm-up", server.port, prefetches(agent_id, 1000), 64)
                http_load("warm-up", server.port, end_of_calls(agent_id, 60), 8)
            http_load("warm-up", uncached.port, prefetches(AGENTS["memory off"], 1000), 64)

            results: list[Summary] = []
            for kind, levels in (("GET /prefetch", (1, 64)), ("POST /end-of-call", (1, 8))):
                names = [name for name in targets if name.startswith(kind)]
                for concurrency in levels:
                    rounds: dict[str, list[Result]] = {name: [] for name in names}
                    for round_number in range(args.rounds):
                        shift = round_number % len(names)
                        for name in names[shift:] + names[:shift]:
                            writes = kind == "POST /end-of-call"
                            if writes:
                                empty_events_table()
                            count = (args.calls if writes else args.requests) // args.rounds
                            rounds[name].append(targets[name](count, concurrency))
                    results += [Summary.of_rounds(rounds[name]) for name in names]
        finally:
            server.stop()
            uncached.stop()

        print_table(
            results,
            f"Caller memory on and off, {args.callers} callers, "
            f"medians of {args.rounds} rotated rounds, {os.cpu_count()} CPUs",
        )
        by = {(r.name, r.concurrency): r for r in results}
        print("\nMemory on / memory off (same run):")
        for kind, concurrency in (
            ("GET /prefetch", 1),
            ("GET /prefetch", 64),
            ("POST /end-of-call", 1),
            ("POST /end-of-call", 8),
        ):
            on, off = (
                by[(f"{kind}, memory on", concurrency)],
                by[(f"{kind}, memory off", concurrency)],
            )
            print(
                f"  {kind:<18} c={concurrency:<3} p50 {on.p50_ms / off.p50_ms:.2f}x, "
                f"p99 {on.p99_ms / off.p99_ms:.2f}x, req/s {on.rps / off.rps:.2f}x"
            )
        for concurrency in (1, 64):
            on = by[("GET /prefetch, memory on", concurrency)]
            off = by[(f"GET /prefetch, {UNCACHED}", concurrency)]
            print(
                f"  GET /prefetch, memory on / {UNCACHED}, c={concurrency:<3} "
                f"p50 {on.p50_ms / off.p50_ms:.2f}x, req/s {on.rps / off.rps:.2f}x"
            )
        print(f"  errors: {sum(r.errors for r in results)}")


if __name__ == "__main__":
    main()

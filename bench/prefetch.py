"""Prefetch benchmark: our webhook against a direct Firestore read and a hand-written handler.

    bench/run prefetch [--profiles 10000] [--requests 5000] [--rounds 5]

Serves service/main.py and bench/handlers/handwritten_prefetch.py with functions-framework
on the Firestore emulator seeded with N profiles, spreads requests over them with about 20 %
unknown numbers, and prints p50/p99 and requests per second at concurrency 1 and 64 for:
our prefetch (cache off, so no cache flatters it; and cache on, as deployed), a direct `get_all`
of the candidate documents from this process, the REST `batchGet` the service sends (from this
process), and the hand-written one-`get()` handler.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
from pathlib import Path
from urllib.parse import quote

from benchlib import Result, Server, Summary, call_load, http_load, print_table
from emulators import free_port, start_firestore, treat_sigterm_as_ctrl_c

PROJECT = "bench-millis"
AGENT = "bench-agent"
AGENT_NUMBER = "+15550000000"


def seed(client: object, count: int) -> list[str]:
    numbers = [f"+1555{index:07d}" for index in range(1, count + 1)]
    collection = client.collection("profiles")  # type: ignore[attr-defined]
    for start in range(0, count, 500):
        batch = client.batch()  # type: ignore[attr-defined]
        for number in numbers[start : start + 500]:
            batch.set(
                collection.document(number),
                {
                    "name": f"Caller {number[-4:]}",
                    "tier": random.choice(["gold", "basic"]),
                    "balance": random.randint(0, 1000),
                    "extra_prompt": "Caller {name} ({tier}).",
                },
            )
        batch.commit()
    client.collection("agents").document(AGENT).set(  # type: ignore[attr-defined]
        {
            "company": "Acme",
            "extra_prompt": "You work for {company}.",
            "phone_numbers": [AGENT_NUMBER],
            "caller_numbers": "phone",
        }
    )
    return numbers


def caller_numbers(numbers: list[str], count: int, rng: random.Random) -> list[str]:
    """About 20 % unknown numbers, the rest spread over all seeded profiles."""
    return [
        rng.choice(numbers) if rng.random() < 0.8 else f"+1666{rng.randrange(10**7):07d}"
        for _ in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--profiles", type=int, default=10_000)
    parser.add_argument(
        "--requests", type=int, default=5000, help="per target at c=1, over all rounds (x2 at c=64)"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rotated rounds; each statistic is their median"
    )
    parser.add_argument(
        "--warm-up", type=int, default=3000, help="requests per target before measuring"
    )
    args = parser.parse_args()
    treat_sigterm_as_ctrl_c()
    rng = random.Random(7)

    firestore_emulator = start_firestore(Path(tempfile.mkdtemp(prefix="bench-")))
    os.environ.update(firestore_emulator.env)
    os.environ["GOOGLE_CLOUD_PROJECT"] = PROJECT
    servers: list[Server] = []
    try:
        from service.stores.firestore import make_client

        client = make_client(PROJECT, "(default)")
        numbers = seed(client, args.profiles)
        env = {**firestore_emulator.env, "GOOGLE_CLOUD_PROJECT": PROJECT}
        ours = Server(
            "service/main.py", "app", free_port(), {**env, "PROFILE_CACHE_TTL_SECONDS": "0"}
        )
        cached = Server("service/main.py", "app", free_port(), env)
        handwritten = Server("bench/handlers/handwritten_prefetch.py", "prefetch", free_port(), env)
        servers += [ours, cached, handwritten]

        def prefetch_requests(count: int) -> list[tuple[str, str, bytes, dict[str, str]]]:
            return [
                (
                    "GET",
                    f"/prefetch?agent_id={AGENT}&session_id=s{i}&from={quote(number)}"
                    f"&to={quote(AGENT_NUMBER)}",
                    b"",
                    {},
                )
                for i, number in enumerate(caller_numbers(numbers, count, rng))
            ]

        agent_ref = client.collection("agents").document(AGENT)
        profiles = client.collection("profiles")

        def direct_get_all_three(_: int) -> None:
            number = caller_numbers(numbers, 1, rng)[0]
            refs = [agent_ref, profiles.document(number), profiles.document(AGENT_NUMBER)]
            list(client.get_all(refs, timeout=5))

        from service.prefetch.firestore_rest import RestDocumentReader

        rest = RestDocumentReader(PROJECT, "(default)")

        def direct_rest(_: int) -> None:
            # what the service sends (service/prefetch/firestore_rest.py), without the service
            rest.get_documents([("profiles", caller_numbers(numbers, 1, rng)[0])], 5)

        def direct_get_all(_: int) -> None:
            # what our prefetch reads once the agent is cached: the counterpart's profile only
            number = caller_numbers(numbers, 1, rng)[0]
            list(client.get_all([profiles.document(number)], timeout=5))

        # Warm up every path, the emulator's too: its JVM compiles each RPC's code path (unary
        # GetDocument, streaming BatchGetDocuments, NOT_FOUND) on first heavy use, and whichever
        # target ran first would pay for it.
        for server in servers:
            http_load("warm-up", server.port, prefetch_requests(args.warm_up), 64)
        call_load("warm-up", direct_get_all, args.warm_up, 64)
        call_load("warm-up", direct_get_all_three, args.warm_up, 64)
        call_load("warm-up", direct_rest, args.warm_up, 64)

        # Rotated rounds, each statistic the median of its rounds: the emulator warms up and the
        # machine is shared, so no target may always run first or last, nor one bad round count.
        direct = {
            "direct get_all [agent, from, to]": direct_get_all_three,
            "direct get_all [from]": direct_get_all,
            "direct REST batchGet [from]": direct_rest,
        }
        served = {
            "our prefetch, profile cache off": ours.port,
            "our prefetch, cache on (default)": cached.port,
            "hand-written handler (1 get)": handwritten.port,
        }

        def measure(name: str, count: int, concurrency: int) -> Result:
            if name in direct:
                return call_load(name, direct[name], count, concurrency)
            return http_load(name, served[name], prefetch_requests(count), concurrency)

        names = [*direct, *served]
        results: list[Summary] = []
        for concurrency, count in ((1, args.requests), (64, args.requests * 2)):
            rounds: dict[str, list[Result]] = {name: [] for name in names}
            for round_number in range(args.rounds):
                shift = round_number % len(names)
                for name in names[shift:] + names[:shift]:
                    rounds[name].append(measure(name, count // args.rounds, concurrency))
            results += [Summary.of_rounds(rounds[name]) for name in names]
        print_table(
            results,
            f"Prefetch (medians of {args.rounds} rotated rounds), {args.profiles} profiles, ~20 % unknown numbers, on {os.cpu_count()} CPUs",
        )

        by = {(r.name, r.concurrency): r for r in results}
        ours1, hand1, direct1 = (
            by[("our prefetch, profile cache off", 1)],
            by[("hand-written handler (1 get)", 1)],
            by[("direct get_all [from]", 1)],
        )
        ours64, hand64 = (
            by[("our prefetch, profile cache off", 64)],
            by[("hand-written handler (1 get)", 64)],
        )
        print("\nTargets (profile cache off, the honest case; ratios to the hand-written handler):")
        print(
            f"  p50 ours / hand-written at c=1: {ours1.p50_ms / hand1.p50_ms:.2f}x (target <= 1.10)"
        )
        print(f"  p99 ours / hand-written at c=1: {ours1.p99_ms / hand1.p99_ms:.2f}x")
        print(
            f"  req/s ours / hand-written at c=64: {ours64.rps / hand64.rps:.2f}x (target >= 1.30)"
        )
        rest1 = by[("direct REST batchGet [from]", 1)]
        print(f"  p50 ours - direct read at c=1: {ours1.p50_ms - direct1.p50_ms:+.2f} ms")
        print(f"  p50 ours - the same REST read at c=1: {ours1.p50_ms - rest1.p50_ms:+.2f} ms")
        print(f"  errors: {sum(r.errors for r in results)} (target 0)")
    finally:
        for server in servers:
            server.stop()
        firestore_emulator.stop()


if __name__ == "__main__":
    main()

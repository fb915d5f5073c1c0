"""The whole-service benchmark: both webhooks at concurrency 1, 8 and 64 against the service
served by functions-framework on the local emulators, next to a direct Firestore read and a
direct BigQuery insert measured in the same run; cold start next to a bare functions-framework
hello-world; resident memory.

    bench/run webhooks [--requests 1000] [--rounds 3]

Targets run in rotated rounds (each statistic is the median of its rounds), and every write
measurement starts on an empty events table. Bounded: every measurement stops after its share of
--requests or 30 seconds, on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import demo_data
from benchlib import Result, Server, Summary, call_load, http_load, print_table
from emulators import free_port, running_emulators, treat_sigterm_as_ctrl_c

PROJECT = "bench-millis"


def cold_start(source: str, target: str, env: dict[str, str], runs: int = 3) -> tuple[float, float]:
    """Median seconds from process start to the first 200, and the largest process's resident
    memory (MiB) after it."""
    times, memory = [], []
    for _ in range(runs):
        server = Server(source, target, free_port(), env)
        times.append(server.cold_start)
        memory.append(server.rss_mib())
        server.stop()
    return statistics.median(times), statistics.median(memory)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=1000,
        help="per prefetch target and concurrency (a third for writes)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rotated rounds; each statistic is their median"
    )
    args = parser.parse_args()
    treat_sigterm_as_ctrl_c()
    rng = random.Random(11)

    with running_emulators(PROJECT, Path(tempfile.mkdtemp(prefix="bench-"))) as emulator_env:
        os.environ.update(emulator_env)
        from service.stored_row import insert_id
        from service.stores.bigquery import create_tables_and_views
        from service.stores.bigquery import make_client as bigquery_client
        from service.stores.firestore import make_client as firestore_client

        firestore = firestore_client(PROJECT, "(default)")
        bigquery = bigquery_client(PROJECT)
        create_tables_and_views(bigquery, "millis")
        numbers = [f"+1555{index:07d}" for index in range(1, 1001)]
        batch = firestore.batch()
        for number in numbers:
            batch.set(
                firestore.collection("profiles").document(number),
                {"name": "Caller", "tier": "gold"},
            )
        batch.commit()
        demo_data.seed(firestore)

        env = {**emulator_env, "GOOGLE_CLOUD_PROJECT": PROJECT}
        ours_cold, ours_rss_idle = cold_start("service/main.py", "app", env)
        hello_cold, hello_rss = cold_start("bench/handlers/hello.py", "hello", env)
        # The direct insert below is insertAll, so the service writes with insertAll here too;
        # bench/write.py compares both write APIs, each with its own direct call.
        server = Server(
            "service/main.py", "app", free_port(), {**env, "BIGQUERY_WRITE_API": "insert_all"}
        )

        def prefetch_requests(count: int) -> list[tuple[str, str, bytes, dict[str, str]]]:
            return [
                (
                    "GET",
                    f"/prefetch?agent_id={demo_data.DEMO_AGENT_ID}&session_id=s{i}"
                    f"&from={quote(rng.choice(numbers))}",
                    b"",
                    {},
                )
                for i in range(count)
            ]

        end_of_call_requests = demo_data.demo_end_of_call_requests

        profiles = firestore.collection("profiles")

        def direct_read(_: int) -> None:
            list(firestore.get_all([profiles.document(rng.choice(numbers))], timeout=5))

        row = demo_data.demo_row

        def direct_insert(_: int) -> None:
            one = row()
            errors = bigquery.insert_rows_json(
                f"{PROJECT}.millis.call_events", [one], row_ids=[insert_id(one)], timeout=10
            )
            if errors:
                raise RuntimeError(errors)

        events_table = f"{PROJECT}.millis.call_events"

        def empty_events_table() -> None:
            # Every end-of-call measurement starts on an empty table: the emulator's inserts slow
            # down as the table grows (~12 ms per row at first, ~20 ms after a few thousand rows),
            # so whichever target ran second on a fuller table would look slower for nothing.
            bigquery.delete_table(events_table, not_found_ok=True)
            create_tables_and_views(bigquery, "millis")

        targets: dict[str, Callable[[int, int], Result]] = {
            "direct Firestore read": lambda count, c: call_load(
                "direct Firestore read", direct_read, count, c
            ),
            "GET /prefetch": lambda count, c: http_load(
                "GET /prefetch", server.port, prefetch_requests(count), c
            ),
            "direct BigQuery insert (same row)": lambda count, c: call_load(
                "direct BigQuery insert (same row)", direct_insert, count, c
            ),
            "POST /end-of-call": lambda count, c: http_load(
                "POST /end-of-call", server.port, end_of_call_requests(count), c
            ),
        }
        writes = {"direct BigQuery insert (same row)", "POST /end-of-call"}

        http_load("warm-up", server.port, prefetch_requests(200) + end_of_call_requests(50), 8)
        call_load("warm-up", direct_insert, 50, 8)
        results: list[Summary] = []
        eoc_count = max(30, args.requests // 3 // args.rounds)
        for concurrency in (1, 8, 64):
            rounds: dict[str, list[Result]] = {name: [] for name in targets}
            names = list(targets)
            # Rotated rounds, each statistic the median of its rounds: no target always runs
            # first or last on a machine shared with two emulators.
            for round_number in range(args.rounds):
                shift = round_number % len(names)
                for name in names[shift:] + names[:shift]:
                    if name in writes:
                        empty_events_table()
                    count = eoc_count if name in writes else args.requests // args.rounds
                    rounds[name].append(targets[name](count, concurrency))
            results += [Summary.of_rounds(rounds[name]) for name in names]
        busy_rss = server.rss_mib()
        server.stop()

        print_table(
            results,
            f"millis-webhooks on {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, emulators",
        )
        by = {(r.name, r.concurrency): r for r in results}
        print("\nRatios (ours / direct, same run):")
        for concurrency in (1, 8, 64):
            read, pre = (
                by[("direct Firestore read", concurrency)],
                by[("GET /prefetch", concurrency)],
            )
            ins, eoc = (
                by[("direct BigQuery insert (same row)", concurrency)],
                by[("POST /end-of-call", concurrency)],
            )
            print(
                f"  c={concurrency:<3} prefetch p50 {pre.p50_ms / read.p50_ms:.2f}x, p99 {pre.p99_ms / read.p99_ms:.2f}x, req/s {pre.rps / read.rps:.2f}x"
                f" | end-of-call p50 {eoc.p50_ms / ins.p50_ms:.2f}x, p99 {eoc.p99_ms / ins.p99_ms:.2f}x, req/s {eoc.rps / ins.rps:.2f}x"
            )
        print("\nCold start (process start to first 200, median of 3) and resident memory:")
        print(
            f"  millis-webhooks        {ours_cold * 1000:7.0f} ms   {ours_rss_idle:6.1f} MiB idle, {busy_rss:6.1f} MiB after the load (largest process)"
        )
        print(
            f"  bare functions-framework hello-world {hello_cold * 1000:7.0f} ms   {hello_rss:6.1f} MiB"
        )
        print(f"  errors: {sum(r.errors for r in results)}")


if __name__ == "__main__":
    main()

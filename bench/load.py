"""Whole-stack load test: calls per second in steps, until the local stack saturates.

    bench/run load [--steps 10,25,50,100,200,400] [--seconds 8] [--env KEY=VALUE ...]

A call is what Millis sends: GET /prefetch as it starts and POST /end-of-call when it ends (sent
here as soon as the prefetch has answered). Calls start open-loop at the offered rate, on
schedule whether or not earlier ones have answered (callers do not wait for each other), with at
most --max-in-flight at once; a call that finds the cap full is counted as shed. The service runs
as deployed (service/web/server.py, profile cache on) against both emulators.

Per step: calls completed per second, shed calls, errors, p50/p99 of each webhook, and the CPU
(in cores) used by the service, each emulator and this load generator: the component at ~1 core
(the service is one Python process) or the machine at its core count is what saturates. Stops
after the first step that completes under 90 % of the offered rate or has a p99 over 2 s.
Traffic goes to 127.0.0.1 only; every step is bounded by --seconds plus a 30 s drain.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import demo_data
from benchlib import Server
from emulators import free_port, start_bigquery, start_firestore, treat_sigterm_as_ctrl_c

PROJECT = "bench-millis"
SATURATED_SHARE = 0.9
SATURATED_P99_SECONDS = 2.0
DRAIN_SECONDS = 30.0


def tree_cpu_seconds(root: int, descendants: bool = True) -> float:
    """User + system CPU seconds of a process and (by default) all its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree, frontier = {root}, [root] if descendants else []
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(ticks.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


@dataclass
class Step:
    offered: int
    seconds: float
    completed: int = 0
    shed: int = 0
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    prefetch: list[float] = field(default_factory=list)
    end_of_call: list[float] = field(default_factory=list)
    cores: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def percentile(values: list[float], fraction: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    @property
    def achieved(self) -> float:
        return self.completed / self.seconds

    @property
    def saturated(self) -> bool:
        slowest = max(self.percentile(self.prefetch, 0.99), self.percentile(self.end_of_call, 0.99))
        return self.achieved < SATURATED_SHARE * self.offered or not (
            slowest <= SATURATED_P99_SECONDS * 1000
        )


class Connections:
    """Keep-alive HTTP/1.1 connections to the service, opened as calls need them."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def exchange(
        self, method: str, path: str, body: bytes = b"", content_type: str = ""
    ) -> int:
        reader, writer = (
            self.idle.pop() if self.idle else await asyncio.open_connection("127.0.0.1", self.port)
        )
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        writer.write(head.encode() + b"\r\n" + body)
        status_line = await reader.readline()
        length, keep_alive = 0, True
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                keep_alive = False
        await reader.readexactly(length)
        if keep_alive:
            self.idle.append((reader, writer))
        else:
            writer.close()
        parts = status_line.split(b" ")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def run_step(
    port: int,
    offered: int,
    seconds: float,
    numbers: list[str],
    max_in_flight: int,
    prefetch_only: bool = False,
) -> Step:
    step = Step(offered, seconds)
    connections = Connections(port)
    rng = random.Random(offered)
    in_flight: set[asyncio.Task[None]] = set()

    async def call() -> None:
        session_id = uuid.uuid4().hex
        try:
            started = time.perf_counter()
            status = await connections.exchange(
                "GET",
                f"/prefetch?agent_id={demo_data.DEMO_AGENT_ID}&session_id={session_id}"
                f"&from={quote(rng.choice(numbers))}",
            )
            step.prefetch.append(time.perf_counter() - started)
            if prefetch_only:
                status_eoc = 200
            else:
                status_eoc = await end_of_call(session_id)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            step.errors += 1
            step.error_kinds[type(exc).__name__] += 1
            return
        if status == 200 and status_eoc == 200:
            step.completed += 1
        else:
            step.errors += 1
            step.error_kinds[f"prefetch {status}, end-of-call {status_eoc}"] += 1

    async def end_of_call(session_id: str) -> int:
        body = json.dumps(demo_data.demo_end_of_call(session_id)).encode()
        started = time.perf_counter()
        status = await connections.exchange("POST", "/end-of-call", body, "application/json")
        step.end_of_call.append(time.perf_counter() - started)
        return status

    begin = time.monotonic()
    for index in range(int(offered * seconds)):
        delay = begin + index / offered - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= max_in_flight:
            step.shed += 1
            continue
        task = asyncio.create_task(call())
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight, timeout=DRAIN_SECONDS)
    step.seconds = time.monotonic() - begin
    connections.close()
    return step


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--steps", default="10,25,50,100,200,400", help="offered calls/s")
    parser.add_argument("--seconds", type=float, default=8.0, help="per step")
    parser.add_argument("--max-in-flight", type=int, default=512)
    parser.add_argument("--profiles", type=int, default=2000)
    parser.add_argument(
        "--prefetch-only",
        action="store_true",
        help="calls send only the prefetch (where the prefetch path alone saturates)",
    )
    parser.add_argument(
        "--env", action="append", default=[], help="a service setting, KEY=VALUE (repeatable)"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    treat_sigterm_as_ctrl_c()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    firestore_emulator = bigquery_emulator = server = None
    try:
        firestore_emulator = start_firestore(log_dir)
        bigquery_emulator = start_bigquery(log_dir, PROJECT)
        env = {**firestore_emulator.env, **bigquery_emulator.env, "GOOGLE_CLOUD_PROJECT": PROJECT}
        os.environ.update(env)
        from service.stores.bigquery import create_tables_and_views
        from service.stores.bigquery import make_client as bigquery_client
        from service.stores.firestore import make_client as firestore_client

        firestore = firestore_client(PROJECT, "(default)")
        create_tables_and_views(bigquery_client(PROJECT), "millis")
        numbers = [f"+1555{index:07d}" for index in range(1, args.profiles + 1)]
        profiles = firestore.collection("profiles")
        for start in range(0, len(numbers), 500):
            batch = firestore.batch()
            for number in numbers[start : start + 500]:
                batch.set(profiles.document(number), {"name": "Caller", "tier": "gold"})
            batch.commit()
        demo_data.seed(firestore)

        settings = dict(item.split("=", 1) for item in args.env)
        server = Server("service/main.py", "app", free_port(), {**env, **settings})
        asyncio.run(
            run_step(server.port, 20, 3, numbers, args.max_in_flight)
        )  # warm-up, not reported
        components = {
            "service": server.process.pid,
            "Firestore emulator": firestore_emulator.process.pid,
            "BigQuery emulator": bigquery_emulator.process.pid,
        }
        # This process is the parent of the others: its own CPU only.
        components["load generator"] = os.getpid()
        own = {"load generator"}
        steps: list[Step] = []
        for offered in (int(value) for value in args.steps.split(",")):
            before = {
                name: tree_cpu_seconds(pid, name not in own) for name, pid in components.items()
            }
            step = asyncio.run(
                run_step(
                    server.port,
                    offered,
                    args.seconds,
                    numbers,
                    args.max_in_flight,
                    args.prefetch_only,
                )
            )
            step.cores = {
                name: (tree_cpu_seconds(pid, name not in own) - before[name]) / step.seconds
                for name, pid in components.items()
            }
            steps.append(step)
            print_step(step)
            if step.saturated:
                break
        print_summary(steps, settings, args.prefetch_only)
    finally:
        for running in (server, bigquery_emulator, firestore_emulator):
            if running is not None:
                running.stop()


def _ms(values: list[float], fraction: float) -> str:
    return f"{Step.percentile(values, fraction):.1f}" if values else "-"


def print_step(step: Step) -> None:
    print(
        f"offered {step.offered:4d} calls/s: completed {step.achieved:6.1f}/s, shed {step.shed}, "
        f"errors {step.errors}{dict(step.error_kinds) or ''}, prefetch p99 {_ms(step.prefetch, 0.99)} ms, "
        f"end-of-call p99 {_ms(step.end_of_call, 0.99)} ms",
        flush=True,
    )


def print_summary(steps: list[Step], settings: dict[str, str], prefetch_only: bool) -> None:
    names = list(steps[0].cores) if steps else []
    print(
        f"\nWhole stack on {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}; settings {settings or 'default'}"
        + ("; prefetch only" if prefetch_only else "")
    )
    print(
        "| offered calls/s | completed/s | shed | errors | prefetch p50 / p99 ms "
        "| end-of-call p50 / p99 ms | " + " | ".join(f"{name} cores" for name in names) + " |"
    )
    print("|" + "---|" * (6 + len(names)))

    for step in steps:
        print(
            f"| {step.offered} | {step.achieved:.1f} | {step.shed} | {step.errors} "
            f"| {_ms(step.prefetch, 0.5)} / {_ms(step.prefetch, 0.99)} "
            f"| {_ms(step.end_of_call, 0.5)} / {_ms(step.end_of_call, 0.99)} | "
            + " | ".join(f"{step.cores[name]:.2f}" for name in names)
            + " |"
        )
    if steps and steps[-1].saturated:
        last = steps[-1]
        busiest = max(last.cores, key=lambda name: last.cores[name])
        print(
            f"\nSaturated at {last.offered} calls/s offered ({last.achieved:.1f}/s completed); "
            f"busiest: {busiest} at {last.cores[busiest]:.2f} cores, the machine at "
            f"{sum(last.cores.values()):.2f} of {os.cpu_count()}."
        )
    else:
        print("\nNot saturated by the last step: add a higher --steps value.")


if __name__ == "__main__":
    main()

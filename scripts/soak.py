#!/usr/bin/env python3
"""Soak: mixed traffic with store outages against the local stack, then the system's promises.

    ./scripts/soak.py [--seconds 360] [--prefetch-rate 35] [--end-of-call-rate 8] [--margin 0.25]

Starts its own Firestore and BigQuery emulators and the service as deployed
(`python -m service.web.server`), all on free ports of 127.0.0.1, and for --seconds sends what Millis
sends: prefetches (~35/s) and end-of-calls (8/s), some delivered twice unchanged and some
corrected (a later delivery of the same session with another duration, sent once the first was
acknowledged). Meanwhile it injects faults: the BigQuery emulator frozen (SIGSTOP) for 20 s,
Firestore frozen for 8 s, both at once, one gunicorn worker killed (SIGKILL).

Faults are sized to the BigQuery emulator's limits (docs/emulators.md): after about six freezes
it stops taking writes until restarted, so a run freezes it three times at most; and it keeps a
copy of the table on every append, so this run starts it with time travel off
(BQEMU_TIME_TRAVEL_RETENTION_DAYS=0, which scripts/lib/bqemulator_storage_fix.py honours by keeping
no copy).

When the traffic stops, the documented replay runs (the replay job's own command, as the
schedule runs it) and then the promises are checked:
- every acknowledged end-of-call is in the `calls` view, once, showing its last acknowledged
  delivery (or a later one that was sent but whose answer was lost);
- no session twice in `calls` (`call_events` may hold a row twice: see check());
- no dead letter is left;
- no prefetch answered 5xx or later than its deadline plus --margin (connections cut by the
  worker kill are counted apart);
- the service's memory is flat: the peak of the last quarter of the run is within 15 % (+8 MiB)
  of the peak of the second quarter.
Exit codes: 0 every promise held; 1 a promise failed (each is named); 2 could not run (bad
arguments, an emulator or the service did not start); 130 interrupted. Stops everything it
started on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))

import toolkit  # first: the project's Python and modules

import demo_data
import requests
from emulators import (
    Emulator,
    free_port,
    start_bigquery,
    start_firestore,
    treat_sigterm_as_ctrl_c,
)

PROJECT = "soak-millis"
TOKEN = "soak-token"
REPLAY_MODULE = "service.jobs.replay"
PREFETCH_DEADLINE_SECONDS = 0.5  # the service's default PREFETCH_DEADLINE_MS
PHONES = [*demo_data.DEMO_PROFILES, "+15550000000", "+15559876543"]


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the start of traffic
    kind: str  # "bigquery", "firestore", "both", "kill_worker"
    seconds: float = 0.0


def fault_plan(seconds: float) -> list[Fault]:
    """The issue's faults, scaled to the run. Three BigQuery freezes at most (emulator limit)."""
    if seconds >= 300:
        return [
            Fault(0.10 * seconds, "bigquery", 20),
            Fault(0.25 * seconds, "firestore", 8),
            Fault(0.38 * seconds, "bigquery", 20),
            Fault(0.55 * seconds, "kill_worker"),
            Fault(0.70 * seconds, "both", 20),
        ]
    freeze = min(20.0, 0.2 * seconds)
    return [
        Fault(0.10 * seconds, "bigquery", freeze),
        Fault(0.40 * seconds, "firestore", min(8.0, 0.1 * seconds)),
        Fault(0.55 * seconds, "kill_worker"),
        Fault(0.65 * seconds, "both", freeze),
    ]


@dataclass
class Delivery:
    session_id: str
    version: int  # the duration sent is 100 + version: what `calls` shows says which one won
    sent_at: float = 0.0
    latency: float = 0.0
    status: int = 0  # 0: no answer (connection cut)
    acknowledged: bool = False


@dataclass
class Prefetch:
    sent_at: float
    latency: float
    status: int


@dataclass
class Record:
    deliveries: list[Delivery] = field(default_factory=list)
    prefetches: list[Prefetch] = field(default_factory=list)
    samples: list[dict[str, float]] = field(default_factory=list)
    faults: list[tuple[float, float, str]] = field(default_factory=list)  # start, end, kind
    end_of_calls_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def freeze(emulator: Emulator) -> None:
    os.killpg(emulator.process.pid, signal.SIGSTOP)


def thaw(emulator: Emulator) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(emulator.process.pid, signal.SIGCONT)


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def status_field(pid: int, name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Stack:
    """Both emulators and the service, each started here and stopped by stop()."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.emulators: list[Emulator] = []
        self.service: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        log_dir = self.log_dir
        # No copy of the table per append (see the module docstring); read by the emulator.
        os.environ["BQEMU_TIME_TRAVEL_RETENTION_DAYS"] = "0"
        try:
            self.firestore = self._keep(start_firestore(log_dir))
            self.bigquery = self._keep(start_bigquery(log_dir, PROJECT))
        except RuntimeError as exc:  # says which emulator and why
            raise toolkit.ToolError(str(exc).splitlines()[0]) from None
        self.env = {
            **os.environ,
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            **self.firestore.env,
            **self.bigquery.env,
            "PYTHONPATH": str(toolkit.ROOT),
            **env,
        }
        os.environ.update(self.env)
        from service.stores.bigquery import create_tables_and_views
        from service.stores.bigquery import make_client as bigquery_client
        from service.stores.firestore import make_client as firestore_client

        self.bigquery_client = bigquery_client(PROJECT)
        self.firestore_client = firestore_client(PROJECT, "(default)")
        create_tables_and_views(self.bigquery_client, "millis")
        demo_data.seed(self.firestore_client)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        log = (log_dir / "service.log").open("ab")
        self.service = subprocess.Popen(
            [sys.executable, "-m", "service.web.server"],
            cwd=toolkit.ROOT,
            env={**self.env, "PORT": str(self.port), "WEBHOOK_TOKENS": TOKEN},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{self.base}/health", timeout=1)
                break
            except requests.ConnectionError:
                if self.service.poll() is not None or time.monotonic() > deadline:
                    raise toolkit.ToolError(f"the service did not start: see {log_dir}") from None
                time.sleep(0.2)

    def _keep(self, emulator: Emulator) -> Emulator:
        self.emulators.append(emulator)
        return emulator

    def rss_mib(self) -> float:
        assert self.service is not None
        pids = [self.service.pid, *children(self.service.pid)]
        return sum(status_field(pid, "VmRSS") for pid in pids) / 1024

    def worker_threads(self) -> int:
        assert self.service is not None
        return sum(status_field(pid, "Threads") for pid in children(self.service.pid))

    def kill_worker(self) -> None:
        assert self.service is not None
        workers = children(self.service.pid)
        if workers:
            os.kill(workers[0], signal.SIGKILL)

    def stop(self) -> None:
        for emulator in self.emulators:
            thaw(emulator)  # a frozen process cannot act on SIGTERM
        if self.service is not None and self.service.poll() is None:
            self.service.terminate()
            try:
                self.service.wait(15)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait(5)
        for emulator in reversed(self.emulators):
            emulator.stop()


class Traffic:
    """Open-loop traffic: requests start on schedule whether or not earlier ones answered."""

    def __init__(self, stack: Stack, record: Record, args: argparse.Namespace) -> None:
        self.stack = stack
        self.record = record
        self.args = args
        self.pool = ThreadPoolExecutor(max_workers=args.max_in_flight)
        self.local = threading.local()
        self.random = random.Random(args.seed)
        self.later: list[tuple[float, int, Callable[[], None]]] = []  # heap of delayed sends
        self.counter = itertools.count()
        self.later_lock = threading.Lock()
        self.started = time.monotonic()

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session  # type: ignore[no-any-return]

    def prefetch(self) -> None:
        phone = self.random.choice(PHONES)
        url = (
            f"{self.stack.base}/prefetch?token={TOKEN}&agent_id={demo_data.DEMO_AGENT_ID}"
            f"&session_id={uuid.uuid4().hex}&from={quote(phone)}&to=%2B15550001111"
        )
        sent = time.monotonic()
        try:
            status = self.session().get(url, timeout=30).status_code
        except requests.RequestException:
            status = 0
        with self.record.lock:
            self.record.prefetches.append(
                Prefetch(sent - self.started, time.monotonic() - sent, status)
            )

    def end_of_call(self, delivery: Delivery, then: Callable[[Delivery], None] | None) -> None:
        payload = demo_data.demo_end_of_call(delivery.session_id)
        payload["duration"] = 100 + delivery.version
        delivery.sent_at = time.monotonic() - self.started
        with self.record.lock:
            self.record.deliveries.append(delivery)
            self.record.end_of_calls_in_flight += 1
        sent = time.monotonic()
        try:
            response = self.session().post(
                f"{self.stack.base}/end-of-call",
                json=payload,
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=60,
            )
            delivery.status = response.status_code
            delivery.acknowledged = response.status_code == 200 and response.json().get(
                "status"
            ) in ("inserted", "dead_lettered")
        except requests.RequestException:
            delivery.status = 0
        finally:
            delivery.latency = time.monotonic() - sent
            with self.record.lock:
                self.record.end_of_calls_in_flight -= 1
        if delivery.acknowledged and then is not None:
            then(delivery)

    def follow_up(self, first: Delivery) -> None:
        """Some sessions are delivered again: unchanged (a retry) or corrected, a little later."""
        draw = self.random.random()
        if draw < 0.15:
            version = first.version  # repeated
        elif draw < 0.30:
            version = first.version + 1  # corrected
        else:
            return
        due = time.monotonic() + self.random.uniform(1, 5)
        again = Delivery(first.session_id, version)
        with self.later_lock:
            heapq.heappush(
                self.later,
                (due, next(self.counter), lambda: self.end_of_call(again, None)),
            )

    def run(self, seconds: float) -> None:
        prefetch_every = 1 / self.args.prefetch_rate
        end_of_call_every = 1 / self.args.end_of_call_rate
        next_prefetch = next_end_of_call = self.started
        stop = self.started + seconds
        while (now := time.monotonic()) < stop:
            while next_prefetch <= now:
                self.pool.submit(self.prefetch)
                next_prefetch += prefetch_every
            while next_end_of_call <= now:
                delivery = Delivery(uuid.uuid4().hex, 0)
                self.pool.submit(self.end_of_call, delivery, self.follow_up)
                next_end_of_call += end_of_call_every
            with self.later_lock:
                while self.later and self.later[0][0] <= now:
                    self.pool.submit(heapq.heappop(self.later)[2])
            time.sleep(0.005)

    def drain(self) -> None:
        with self.later_lock:
            self.later.clear()  # follow-ups not yet sent are not sent: the traffic has ended
        self.pool.shutdown(wait=True)


def inject(stack: Stack, record: Record, plan: list[Fault], started: float) -> None:
    for fault in plan:
        time.sleep(max(0.0, started + fault.at - time.monotonic()))
        begin = time.monotonic() - started
        if fault.kind == "kill_worker":
            stack.kill_worker()
            record.faults.append((begin, begin, fault.kind))
            continue
        frozen = {
            "bigquery": [stack.bigquery],
            "firestore": [stack.firestore],
            "both": [stack.bigquery, stack.firestore],
        }[fault.kind]
        firestore_seconds = min(fault.seconds, 8.0)
        for emulator in frozen:
            freeze(emulator)
        try:
            if fault.kind == "both":  # Firestore comes back first, as in the soak
                time.sleep(firestore_seconds)
                thaw(stack.firestore)
                time.sleep(fault.seconds - firestore_seconds)
            else:
                time.sleep(fault.seconds)
        finally:
            for emulator in frozen:
                thaw(emulator)
        record.faults.append((begin, time.monotonic() - started, fault.kind))


def sample(stack: Stack, record: Record, started: float, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        with record.lock:
            in_flight = record.end_of_calls_in_flight
        record.samples.append(
            {
                "t": time.monotonic() - started,
                "rss_mib": stack.rss_mib(),
                "threads": stack.worker_threads(),
                "end_of_calls_in_flight": in_flight,
            }
        )


def replay(stack: Stack, runs: int) -> list[dict[str, Any]]:
    """The documented replay: the job's command, run until it leaves nothing (at most `runs`)."""
    results = []
    for _ in range(runs):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", REPLAY_MODULE, "--alert-after-minutes", "0"],
            cwd=toolkit.ROOT,
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        results.append(
            {
                "exit": done.returncode,
                "seconds": round(time.monotonic() - started, 1),
                "output": (done.stdout + done.stderr).strip().splitlines()[-6:],
            }
        )
        if dead_letters_left(stack) == 0:
            break
    return results


def dead_letters_left(stack: Stack) -> int:
    result = stack.firestore_client.collection("dead_letters").count().get()
    return int(result[0][0].value)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def during(faults: list[tuple[float, float, str]], kinds: set[str], t: float) -> bool:
    return any(start <= t <= end + 1 for start, end, kind in faults if kind in kinds)


def check(
    stack: Stack, record: Record, args: argparse.Namespace
) -> tuple[dict[str, Any], list[str]]:
    failures: list[str] = []
    table = f"{PROJECT}.millis"
    shown = {
        row["session_id"]: round(row["duration_seconds"]) - 100
        for row in stack.bigquery_client.query(
            f"SELECT session_id, duration_seconds FROM `{table}.calls`"
        ).result()
    }
    shown_counts = {
        row["session_id"]: row["n"]
        for row in stack.bigquery_client.query(
            f"SELECT session_id, COUNT(*) AS n FROM `{table}.calls` GROUP BY session_id"
        ).result()
    }
    # Rows in call_events beyond the deliveries are not a failure: a row BigQuery took while its
    # answer was lost (a frozen emulator) is dead-lettered and replayed with the same insertId,
    # which BigQuery de-duplicates (best effort) and the emulator does not; `calls` shows one.
    stored = {
        row["session_id"]: row["n"]
        for row in stack.bigquery_client.query(
            f"SELECT session_id, COUNT(*) AS n FROM `{table}.call_events` GROUP BY session_id"
        ).result()
    }
    by_session: dict[str, list[Delivery]] = {}
    for delivery in record.deliveries:
        by_session.setdefault(delivery.session_id, []).append(delivery)
    missing, stale, over_stored = [], [], []
    for session_id, deliveries in by_session.items():
        acknowledged = [d.version for d in deliveries if d.acknowledged]
        if stored.get(session_id, 0) > len(deliveries):
            over_stored.append(session_id)
        if not acknowledged:
            continue
        if session_id not in shown:
            missing.append(session_id)
        elif not max(acknowledged) <= shown[session_id] <= max(d.version for d in deliveries):
            stale.append(session_id)
    if missing:
        failures.append(f"{len(missing)} acknowledged calls missing from calls")
    if stale:
        failures.append(f"{len(stale)} sessions do not show their last acknowledged delivery")
    twice = [session_id for session_id, n in shown_counts.items() if n > 1]
    if twice:
        failures.append(f"{len(twice)} sessions twice in calls")
    left = dead_letters_left(stack)
    if left:
        failures.append(f"{left} dead letters left after the replay")

    kill_times = [start for start, _, kind in record.faults if kind == "kill_worker"]
    cut = [
        p
        for p in record.prefetches
        if p.status == 0 and any(k - 10 <= p.sent_at <= k + 2 for k in kill_times)
    ]
    server_errors = [
        p for p in record.prefetches if p.status >= 500 or (p.status == 0 and p not in cut)
    ]
    limit = PREFETCH_DEADLINE_SECONDS + args.margin
    late = [p for p in record.prefetches if p.status == 200 and p.latency > limit]
    if server_errors:
        failures.append(f"{len(server_errors)} prefetches answered 5xx or not at all")
    if late:
        failures.append(f"{len(late)} prefetches answered after {limit:.2f} s")

    samples = record.samples
    quarter = args.seconds / 4
    second = [s["rss_mib"] for s in samples if quarter <= s["t"] < 2 * quarter]
    last = [s["rss_mib"] for s in samples if 3 * quarter <= s["t"] <= args.seconds]
    if second and last and max(last) > max(second) * 1.15 + 8:
        failures.append(
            f"memory grew: peak {max(last):.0f} MiB in the last quarter, "
            f"{max(second):.0f} MiB in the second"
        )

    bigquery_down = {"bigquery", "both"}
    outage_calls = [
        d.latency for d in record.deliveries if during(record.faults, bigquery_down, d.sent_at)
    ]
    calm_calls = [
        d.latency
        for d in record.deliveries
        if not during(record.faults, bigquery_down | {"kill_worker"}, d.sent_at)
    ]
    outage_samples = [s for s in samples if during(record.faults, bigquery_down, s["t"])]
    prefetch_ok = [p.latency for p in record.prefetches if p.status == 200]
    figures = {
        "seconds": args.seconds,
        "faults": [(round(a, 1), round(b, 1), kind) for a, b, kind in record.faults],
        "end_of_calls_sent": len(record.deliveries),
        "end_of_calls_acknowledged": sum(d.acknowledged for d in record.deliveries),
        "end_of_calls_unanswered": sum(d.status == 0 for d in record.deliveries),
        "end_of_call_status": dict(
            sorted(
                {
                    s: sum(d.status == s for d in record.deliveries)
                    for s in {d.status for d in record.deliveries}
                }.items()
            )
        ),
        "sessions_acknowledged": sum(any(d.acknowledged for d in ds) for ds in by_session.values()),
        "end_of_call_p99_s_bigquery_down": round(percentile(outage_calls, 0.99), 3),
        "end_of_call_p50_s_bigquery_down": round(percentile(outage_calls, 0.5), 3),
        "end_of_call_p99_s_otherwise": round(percentile(calm_calls, 0.99), 3),
        "end_of_calls_in_flight_max_bigquery_down": max(
            (s["end_of_calls_in_flight"] for s in outage_samples), default=0
        ),
        "worker_threads_max": max((s["threads"] for s in samples), default=0),
        "prefetches": len(record.prefetches),
        "prefetch_p50_s": round(percentile(prefetch_ok, 0.5), 3),
        "prefetch_p99_s": round(percentile(prefetch_ok, 0.99), 3),
        "prefetch_max_s": round(max(prefetch_ok, default=0.0), 3),
        "prefetches_late": len(late),
        # When they were sent (5 s bins): lateness lines up with a fault or it does not.
        "prefetches_late_by_5s": {
            str(t): n for t, n in sorted(Counter(int(p.sent_at // 5) * 5 for p in late).items())
        },
        "prefetches_5xx_or_unanswered": len(server_errors),
        "prefetches_cut_by_worker_kill": len(cut),
        "rss_mib_start": round(samples[0]["rss_mib"], 1) if samples else 0,
        "rss_mib_peak_second_quarter": round(max(second, default=0), 1),
        "rss_mib_peak_last_quarter": round(max(last, default=0), 1),
        "missing": len(missing),
        "stale": len(stale),
        "call_events_sessions_stored_beyond_deliveries": len(over_stored),
        "sessions_twice_in_calls": len(twice),
        "dead_letters_left": left,
    }
    return figures, failures


@contextlib.contextmanager
def running_stack(log_dir: Path, env: dict[str, str]) -> Iterator[Stack]:
    stack = Stack(log_dir)
    try:
        stack.start(env)
        yield stack
    finally:
        stack.stop()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = toolkit.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=360, help="traffic time (default 360)")
    parser.add_argument("--prefetch-rate", type=float, default=35, help="per second (35)")
    parser.add_argument("--end-of-call-rate", type=float, default=8, help="per second (8)")
    parser.add_argument(
        "--margin", type=float, default=0.25, help="seconds allowed past the prefetch deadline"
    )
    parser.add_argument("--max-in-flight", type=int, default=300, help="client threads (300)")
    parser.add_argument("--replay-runs", type=int, default=3, help="replay runs at most (3)")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="service setting"
    )
    args = parser.parse_args(argv)
    if args.seconds < 20 or args.prefetch_rate <= 0 or args.end_of_call_rate <= 0:
        parser.error("--seconds must be at least 20 and the rates positive")
    if any("=" not in item for item in args.env):
        parser.error("--env takes KEY=VALUE")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    treat_sigterm_as_ctrl_c()
    log_dir = Path(tempfile.mkdtemp(prefix="millis-soak-"))
    env = {"LOG_LEVEL": "WARNING", **dict(item.split("=", 1) for item in args.env)}
    print(f"soak: {args.seconds:g} s; logs in {log_dir}", flush=True)
    with running_stack(log_dir, env) as stack:
        record = Record()
        traffic = Traffic(stack, record, args)
        stop_sampling = threading.Event()
        plan = fault_plan(args.seconds)
        threads = [
            threading.Thread(
                target=inject, args=(stack, record, plan, traffic.started), daemon=True
            ),
            threading.Thread(
                target=sample, args=(stack, record, traffic.started, stop_sampling), daemon=True
            ),
        ]
        for thread in threads:
            thread.start()
        try:
            traffic.run(args.seconds)
        finally:
            traffic.drain()
            stop_sampling.set()
            for thread in threads:
                thread.join(60)
        left_before = dead_letters_left(stack)
        replays = replay(stack, args.replay_runs)
        figures, failures = check(stack, record, args)
    figures["dead_letters_before_replay"] = left_before
    figures["replay_runs"] = replays
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    for failure in failures:
        print(f"FAILED: {failure}")
    print("soak passed" if not failures else "soak failed")
    return 1 if failures else 0


if __name__ == "__main__":
    toolkit.run("soak", main)

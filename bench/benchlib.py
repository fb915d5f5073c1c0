"""Shared parts of the benchmark scripts: serving an app, a low-overhead HTTP load generator,
and latency statistics. Traffic goes to 127.0.0.1 only, bounded in count and time."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_FRAMEWORK = str(Path(sys.executable).parent / "functions-framework")


@dataclass
class Result:
    name: str
    concurrency: int
    latencies: list[float]  # seconds, successful requests
    errors: int
    elapsed: float

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    @property
    def p50_ms(self) -> float:
        return self.percentile(0.50) * 1000

    @property
    def p99_ms(self) -> float:
        return self.percentile(0.99) * 1000


@dataclass
class Summary:
    """Several rounds of one target: each statistic is the median of the rounds' values, so one
    round disturbed by another process on the shared machine does not decide any of them."""

    name: str
    concurrency: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float

    @classmethod
    def of_rounds(cls, rounds: Sequence[Result]) -> Summary:
        return cls(
            rounds[0].name,
            rounds[0].concurrency,
            sum(r.requests for r in rounds),
            sum(r.errors for r in rounds),
            statistics.median(r.rps for r in rounds),
            statistics.median(r.p50_ms for r in rounds),
            statistics.median(r.p99_ms for r in rounds),
        )


def print_table(results: Sequence[Result | Summary], title: str) -> None:
    print(f"\n{title}")
    print(f"| {'target':<34} | conc | requests | errors | req/s   | p50 ms | p99 ms |")
    print(f"|{'-' * 36}|------|----------|--------|---------|--------|--------|")
    for r in results:
        print(
            f"| {r.name:<34} | {r.concurrency:>4} | {r.requests:>8} | {r.errors:>6} "
            f"| {r.rps:>7.0f} | {r.p50_ms:>6.2f} | {r.p99_ms:>6.2f} |"
        )


class Server:
    """A functions-framework process (gunicorn, as on Cloud Run) on a local port."""

    def __init__(
        self,
        source: str,
        target: str,
        port: int,
        env: dict[str, str],
        *,
        plain_framework: bool = False,
    ) -> None:
        self.port = port
        self.started = time.monotonic()
        # The service is served as in production (service/web/server.py); the baselines by
        # functions-framework itself.
        command = (
            [sys.executable, "-m", "service.web.server"]
            if source == "service/main.py" and not plain_framework
            else [FUNCTIONS_FRAMEWORK, f"--target={target}", f"--source={source}"]
        )
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "LOG_LEVEL": "WARNING",
                "PORT": str(port),
                **env,
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.cold_start = self._wait_for_first_200()

    def _wait_for_first_200(self, timeout: float = 60) -> float:
        url = f"http://127.0.0.1:{self.port}/healthz"
        while time.monotonic() - self.started < timeout:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return time.monotonic() - self.started
            except OSError:
                time.sleep(0.005)
        raise SystemExit("server did not start")

    def rss_mib(self) -> float:
        """Memory, the one way every benchmark reports it: the resident set of the largest
        process of the server's tree (the gunicorn worker), in MiB."""
        return largest_rss_mib(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def _http_load(
    port: int,
    requests: Iterable[tuple[str, str, bytes, dict[str, str]]],
    concurrency: int,
    deadline: float,
) -> tuple[list[float], int]:
    """Keep-alive HTTP/1.1 over asyncio streams: a few tens of microseconds per request, so the
    load generator does not hide the server's cost."""
    queue = list(requests)
    queue.reverse()
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while queue and time.monotonic() < deadline:
            method, path, body, headers = queue.pop()
            head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
            head += "".join(f"{key}: {value}\r\n" for key, value in headers.items())
            started = time.perf_counter()
            writer.write(head.encode() + b"\r\n" + body)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            elapsed = time.perf_counter() - started
            if status_line.split(b" ")[1:2] == [b"200"]:
                latencies.append(elapsed)
            else:
                errors += 1
        writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def http_load(
    name: str,
    port: int,
    requests: Sequence[tuple[str, str, bytes, dict[str, str]]],
    concurrency: int,
    max_seconds: float = 30,
) -> Result:
    started = time.monotonic()
    latencies, errors = asyncio.run(_http_load(port, requests, concurrency, started + max_seconds))
    return Result(name, concurrency, latencies, errors, time.monotonic() - started)


def call_load(
    name: str,
    function: Callable[[int], object],
    count: int,
    concurrency: int,
    max_seconds: float = 30,
) -> Result:
    """The same measurement for a direct call (a client library call, no HTTP)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + max_seconds

    def one(index: int) -> None:
        nonlocal errors
        if time.monotonic() > deadline:
            return
        started = time.perf_counter()
        try:
            function(index)
        except Exception:
            errors += 1
            return
        latencies.append(time.perf_counter() - started)

    started = time.monotonic()
    if concurrency == 1:
        for index in range(count):
            one(index)
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(count)))
    return Result(name, concurrency, latencies, errors, time.monotonic() - started)


def process_tree(pid: int) -> list[int]:
    """pid and every descendant (from /proc)."""
    pids, frontier = [pid], [pid]
    while frontier:
        children = []
        for parent in frontier:
            for task in Path(f"/proc/{parent}/task").glob("*"):
                try:
                    children += [int(child) for child in (task / "children").read_text().split()]
                except OSError:
                    continue
        pids += children
        frontier = children
    return pids


def rss_mib(pid: int) -> float:
    """Resident memory of one process, in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def largest_rss_mib(pid: int) -> float:
    """The largest resident set in the process tree of pid, in MiB."""
    return max(rss_mib(each) for each in process_tree(pid))


def seed_demo_stores(env: dict[str, str]) -> None:
    """Point this process at the emulators of `env`, create the tables and views and seed the demo
    profiles and agents: the stack a benchmark serves the app on."""
    import demo_data  # scripts/lib, on the path bench/run sets

    os.environ.update(env)
    from service.stores.bigquery import create_tables_and_views
    from service.stores.bigquery import make_client as bigquery_client
    from service.stores.firestore import make_client as firestore_client

    project = env["GOOGLE_CLOUD_PROJECT"]
    create_tables_and_views(bigquery_client(project), "millis")
    demo_data.seed(firestore_client(project, "(default)"))

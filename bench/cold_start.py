"""Cold start and idle memory: the service against a bare functions-framework hello-world.

    bench/run cold_start [--runs 7]

In rotated runs on the Firestore emulator (each statistic the median of its runs): process start
to the first 200 of the health route, process start to the first 200 of a prefetch that finds a
profile (the Firestore read included), both against process start to the hello-world's first
200; and the resident memory of the largest process (gunicorn's master or its worker) idle, one
second after that first answer. Then where the service's start-up time goes: the imports of the
served app (`python -X importtime`), largest first. Bounded: each start waits at most 60 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from benchlib import FUNCTIONS_FRAMEWORK, ROOT, largest_rss_mib
from emulators import free_port, start_firestore, treat_sigterm_as_ctrl_c

PROJECT = "bench-millis"
CALLER = "+15551230000"
PREFETCH = f"/prefetch?agent_id=bench-agent&session_id=s1&from=%2B{CALLER[1:]}"


def start(command: list[str], env: dict[str, str], path: str, expect: bytes) -> tuple[float, float]:
    """Seconds from process start to the first 200 on `path` whose body holds `expect`, and
    the largest process's resident MiB one second later."""
    port = free_port()
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={
            **os.environ,
            **env,
            "PORT": str(port),
            "PYTHONPATH": str(ROOT),
            "LOG_LEVEL": "WARNING",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.monotonic() - started < 60:
            if process.poll() is not None:
                raise SystemExit(f"{command} exited with {process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
                    if answer.status == 200 and expect in answer.read():
                        elapsed = time.monotonic() - started
                        break
            except OSError:
                time.sleep(0.002)
        else:
            raise SystemExit(f"{command} did not answer {path} within 60 s")
        time.sleep(1.0)
        largest = largest_rss_mib(process.pid)
        return elapsed, largest
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def import_breakdown(env: dict[str, str], top: int = 12) -> list[tuple[float, str]]:
    """Cumulative import time (ms) of the served app's modules, largest first."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import service.web.server, service.main"],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "ERROR"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    rows = []
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            if cumulative.strip().isdigit():
                rows.append((int(cumulative) / 1000, name.rstrip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--emulator-warm-up", type=int, default=3000, help="reads before the runs")
    args = parser.parse_args()
    treat_sigterm_as_ctrl_c()

    firestore_emulator = start_firestore(Path(tempfile.mkdtemp(prefix="bench-cold-")))
    try:
        env = {**firestore_emulator.env, "GOOGLE_CLOUD_PROJECT": PROJECT}
        os.environ.update(env)
        from service.stores.firestore import make_client

        client = make_client(PROJECT, "(default)")
        client.collection("profiles").document(CALLER).set({"name": "Cold Caller"})
        client.collection("agents").document("bench-agent").set(
            {"company": "Acme", "caller_numbers": "phone"}
        )
        # The emulator's JVM compiles its REST path on first use (a read took 10-170 ms at first,
        # ~1 ms after): warm it, or the first starts would measure the emulator's warm-up.
        from service.prefetch.firestore_rest import RestDocumentReader

        reader = RestDocumentReader(PROJECT, "(default)")
        for _ in range(args.emulator_warm_up):
            reader.get_documents([("agents", "bench-agent"), ("profiles", CALLER)], 5)

        ours = [sys.executable, "-m", "service.web.server"]
        hello = [
            FUNCTIONS_FRAMEWORK,
            "--target=hello",
            f"--source={ROOT / 'bench/handlers/hello.py'}",
        ]
        targets = {
            "hello-world, first 200": (hello, "/", b"ok"),
            "service, first /health 200": (ours, "/health", b"ok"),
            "service, first /prefetch 200 (profile read)": (ours, PREFETCH, b"Cold Caller"),
        }
        times: dict[str, list[float]] = {name: [] for name in targets}
        memory: dict[str, list[float]] = {name: [] for name in targets}
        names = list(targets)
        for run in range(args.runs):
            shift = run % len(names)
            for name in names[shift:] + names[:shift]:
                command, path, expect = targets[name]
                elapsed, largest = start(command, env, path, expect)
                times[name].append(elapsed)
                memory[name].append(largest)

        print(
            f"\nCold start, medians of {args.runs} rotated runs; {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{datetime.now(UTC):%Y-%m-%d}"
        )
        baseline = statistics.median(times["hello-world, first 200"])
        print("| target | start to first 200, ms | x hello-world | largest process idle, MiB |")
        print("|---|---|---|---|")
        for name in names:
            median = statistics.median(times[name])
            print(
                f"| {name} | {median * 1000:.0f} | {median / baseline:.2f} "
                f"| {statistics.median(memory[name]):.1f} |"
            )
        print("\nImports of the served app (cumulative ms, largest first):")
        for milliseconds, module in import_breakdown(env):
            print(f"  {milliseconds:7.1f}  {module}")
    finally:
        firestore_emulator.stop()


if __name__ == "__main__":
    main()

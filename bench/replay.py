"""How long the replay job takes to drain a backlog of dead letters, on the local emulators.

    bench/replay [--letters 10000] [--page-size 200] [--max-seconds 540]

Starts its own Firestore and BigQuery emulators on free ports, stores --letters dead letters
(demo calls as the service stores them, ~3 KB each compressed), then runs the replay job's own
command as the schedule does, again until no letter is left (at most 10 runs), and prints each
run's duration, letters replayed and exit code. The BigQuery emulator runs with time travel off
(BQEMU_TIME_TRAVEL_RETENTION_DAYS=0): with it on, it copies the whole table on every append.
Exit code 0 when the backlog drained, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "lib"))

import demo_data  # noqa: E402
from emulators import running_emulators, treat_sigterm_as_ctrl_c  # noqa: E402

PROJECT = "bench-replay"
REPLAY_MODULE = "service.jobs.replay"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--letters", type=int, default=10_000, help="backlog size (10000)")
    parser.add_argument("--page-size", type=int, default=200, help="the job's --page-size")
    parser.add_argument("--max-seconds", type=float, default=540, help="the job's --max-seconds")
    args = parser.parse_args(argv)
    if args.letters < 1:
        parser.error("--letters must be at least 1")
    treat_sigterm_as_ctrl_c()
    os.environ["BQEMU_TIME_TRAVEL_RETENTION_DAYS"] = "0"
    log_dir = Path(tempfile.mkdtemp(prefix="millis-bench-replay-"))
    with running_emulators(PROJECT, log_dir) as env:
        os.environ.update(env)
        from service.stores.bigquery import create_tables_and_views
        from service.stores.bigquery import make_client as bigquery_client
        from service.stores.dead_letters import DeadLetterStore
        from service.stores.firestore import make_client as firestore_client

        create_tables_and_views(bigquery_client(PROJECT), "millis")
        store = DeadLetterStore(firestore_client(PROJECT, "(default)"), "dead_letters")
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda _: store.store(demo_data.demo_row(), reason="insert_failed", error="x"),
                    range(args.letters),
                )
            )
        print(f"stored {store.count()} dead letters in {time.monotonic() - started:.0f} s")
        total = 0.0
        for run in range(1, 11):
            started = time.monotonic()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    REPLAY_MODULE,
                    "--page-size",
                    str(args.page_size),
                    "--max-seconds",
                    str(args.max_seconds),
                ],
                cwd=ROOT,
                env={**os.environ, "GOOGLE_CLOUD_PROJECT": PROJECT, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
                check=False,
            )
            seconds = time.monotonic() - started
            total += seconds
            last = done.stdout.strip().splitlines()[-2:]
            print(f"run {run}: {seconds:.1f} s, exit {done.returncode}: {' / '.join(last)}")
            if done.returncode not in (0, 1):
                print(done.stderr[-2000:])
            left = store.count()
            if left == 0:
                print(f"{args.letters} letters drained in {run} run(s), {total:.1f} s in all")
                return 0
        print(f"{left} letters left after 10 runs")
        return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)

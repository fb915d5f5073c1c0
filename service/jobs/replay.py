"""Replay dead letters: the Cloud Run job's entry point (`python -m service.jobs.replay`), also
behind `scripts/replay.py`.

Works in pages of --page-size letters, oldest first, and prints one line per page (replayed,
still failing, held by another replay, how many remain). Starts no new page after
--max-seconds (default 540 s, inside the job's 600 s timeout): a backlog larger than one run
drains over the next runs, each starting again from the oldest letter left.

Exit code, which is what alerts a person (the job's failed executions):
  0  nothing older than --alert-after-minutes is left (younger letters may be waiting for
     BigQuery to come back: the next run takes them), or the run is making progress: it replayed
     letters and stopped only on its time budget (the next run continues);
  1  stuck: letters older than --alert-after-minutes remain and this run replayed none, or
     stopped because BigQuery refused a page, or left letters BigQuery refuses as invalid.
Runs beside the service and beside other replays: each letter is leased before it is inserted
(service/stores/dead_letters.py).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from datetime import timedelta

from service.config import get_settings
from service.stores.dead_letters import DeadLetterStore, ReplayReport, replay
from service.stores.firestore import make_client as firestore_client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=None, help="replay at most N dead letters")
    parser.add_argument("--dry-run", action="store_true", help="list dead letters, change nothing")
    parser.add_argument(
        "--alert-after-minutes",
        type=float,
        default=float(os.environ.get("REPLAY_ALERT_AFTER_MINUTES", "60")),
        help="exit 1 when a dead letter older than this remains (default 60)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=float(os.environ.get("REPLAY_MAX_SECONDS", "540")),
        help="start no new page after this many seconds (default 540)",
    )
    parser.add_argument(
        "--page-size", type=int, default=200, help="letters per page, 1 to 500 (default 200)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.page_size <= 500:
        parser.error("--page-size must be between 1 and 500")
    if args.max_seconds <= 0:
        parser.error("--max-seconds must be positive")

    settings = get_settings()
    store = DeadLetterStore(
        firestore_client(settings.google_cloud_project, settings.firestore_database),
        settings.dead_letter_collection,
    )
    if args.dry_run:
        letters = list(store.list(args.limit))
        if not letters:
            print("no dead letters: nothing to replay")
            return 0
        print(f"would replay {len(letters)} dead letters, oldest first (changing nothing):")
        for letter in letters:
            kept = letter.created_at.isoformat(timespec="seconds") if letter.created_at else "?"
            print(f"  session {letter.session_id}  reason {letter.reason}  kept since {kept}")
        return 0

    from service.stores.bigquery import make_sink

    sink = make_sink(settings)  # the write API BIGQUERY_WRITE_API chooses
    owner = os.environ.get("CLOUD_RUN_EXECUTION") or f"{socket.gethostname()}:{os.getpid()}"
    started = time.monotonic()
    print(f"{store.count()} dead letters to replay", flush=True)

    def page_done(report: ReplayReport) -> None:
        print(
            f"page {report.pages}: replayed {len(report.replayed)}, "
            f"still failing {len(report.still_failing)}, held {len(report.skipped)} so far; "
            f"{store.count()} remain ({time.monotonic() - started:.1f} s)",
            flush=True,
        )

    report = replay(
        store,
        sink,
        limit=args.limit,
        owner=owner,
        page_size=args.page_size,
        max_seconds=args.max_seconds,
        progress=page_done,
    )
    print(report.summary())
    remaining = store.count()
    overdue = store.count_older_than(timedelta(minutes=args.alert_after_minutes))
    age = f"older than {args.alert_after_minutes:g} minutes"
    if not overdue:
        print(f"done: {remaining} dead letters remain, none {age}")
        return 0
    if report.replayed and report.stopped == "time budget":
        print(f"making progress: {remaining} remain ({overdue} {age}); the next run continues")
        return 0
    print(f"stuck: {overdue} dead letters {age} remain ({remaining} in all)")
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""Replay dead letters: the Cloud Run job's entry point (`python -m service.jobs.replay`), also
behind `scripts/replay.py`.

Exit code 0 when no dead letter older than `--alert-after-minutes` is left (younger ones may
still be waiting for BigQuery to come back: the next run takes them), 1 otherwise, so that the
job's failure is what alerts a person. Runs beside the service and beside other replays: each
letter is leased before it is inserted (service/stores/dead_letters.py).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from datetime import timedelta

from service.config import get_settings
from service.stores.dead_letters import DeadLetterStore, replay
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
    args = parser.parse_args(argv)

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
    report = replay(store, sink, limit=args.limit, owner=owner)
    print(report.summary())
    overdue = store.count_older_than(timedelta(minutes=args.alert_after_minutes))
    if overdue:
        print(f"{overdue} dead letters older than {args.alert_after_minutes:g} minutes remain")
    return 1 if overdue else 0


if __name__ == "__main__":
    sys.exit(main())

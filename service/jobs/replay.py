"""Replay dead letters: the Cloud Run job's entry point (`python -m service.jobs.replay`), also
behind `scripts/replay.py`. Then catch up caller memory the end-of-call missed
(service/memory/catch_up.py); each replayed row updates its caller's memory as it is inserted.

Works in pages of --page-size letters, oldest first, and prints one line per page (replayed,
still failing, held by another replay, how many remain). Starts no new page after
--max-seconds (default 540 s, inside the job's 600 s timeout): a backlog larger than one run
drains over the next runs, each starting again from the oldest letter left.

Exit code, which is what alerts a person (the job's failed executions):
  0  nothing older than --alert-after-minutes is left (younger letters may be waiting for
     BigQuery to come back: the next run takes them), or the run is making progress: it replayed
     letters and stopped only on its time budget (the next run continues);
  1  stuck: letters older than --alert-after-minutes remain and this run replayed none, or
     stopped because BigQuery refused a page, or left letters BigQuery refuses as invalid;
     or the caller-memory catch-up could not run.
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
from typing import TYPE_CHECKING, Any

from service.config import Settings, get_settings
from service.stores.dead_letters import DeadLetterStore, ReplayReport, replay
from service.stores.firestore import make_client as firestore_client

if TYPE_CHECKING:
    from service.memory.settings import CallerId


def caller_identity(settings: Settings, firestore: Any) -> CallerId:
    """The prefetch's caller identity (lookup keys with their signing secrets, the agents' own
    numbers, the phone region) outside the service: memory is keyed alike everywhere."""
    from service.prefetch.answer import PrefetchService
    from service.prefetch.profiles import ClientDocumentReader, DocumentCache, ProfileStore

    store = ProfileStore(
        ClientDocumentReader(firestore),
        profiles_collection=settings.profiles_collection,
        agents_collection=settings.agents_collection,
        cache=DocumentCache(0, 0, 0),
    )
    service = PrefetchService(
        store,
        deadline_seconds=settings.prefetch_deadline_ms / 1000,
        default_format=settings.prefetch_response_format,
        default_region=settings.default_phone_region,
        default_lookup_key=settings.prefetch_lookup_key,
        lookup_signing_secrets={
            agent: [secret.get_secret_value() for secret in secrets]
            for agent, secrets in settings.lookup_signing_secrets.items()
        },
        default_caller_numbers=settings.prefetch_caller_numbers,
    )
    return service.caller_id


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

    from service.memory.catch_up import remember_replayed, run_catch_up
    from service.stores.bigquery import make_client as bigquery_client
    from service.stores.bigquery import make_sink

    sink = make_sink(settings)  # the write API BIGQUERY_WRITE_API chooses
    owner = os.environ.get("CLOUD_RUN_EXECUTION") or f"{socket.gethostname()}:{os.getpid()}"
    caller_id = caller_identity(settings, store.client)
    remember = remember_replayed(settings, store.client, caller_id)
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
        after_insert=remember,
    )
    print(report.summary())
    # Caller memory the end-of-call could not update (Firestore slow or down), from BigQuery.
    try:
        bigquery = bigquery_client(settings.google_cloud_project)
        catch_up = run_catch_up(settings, store.client, bigquery, caller_id)
    except Exception as exc:  # reported, and the next run tries again; the replay went through
        print(f"memory catch-up failed: {type(exc).__name__}")
        return 1
    print(catch_up.summary())
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

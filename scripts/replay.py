"""Re-insert dead letters (calls BigQuery did not take) and delete them once inserted.

    uv run python scripts/replay.py [--limit N] [--dry-run]

Reads the same environment variables as the service (GOOGLE_CLOUD_PROJECT, BIGQUERY_DATASET, ...).
Exit code 0 when every dead letter was replayed, 1 when some remain.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.config import get_settings
from service.dead_letters import DeadLetterStore, replay
from service.profiles import make_client as firestore_client
from service.sink import BigQuerySink
from service.sink import make_client as bigquery_client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=None, help="replay at most N dead letters")
    parser.add_argument("--dry-run", action="store_true", help="list dead letters, change nothing")
    args = parser.parse_args(argv)

    settings = get_settings()
    store = DeadLetterStore(
        firestore_client(settings.google_cloud_project, settings.firestore_database),
        settings.dead_letter_collection,
    )
    if args.dry_run:
        for letter in store.list(args.limit):
            print(
                f"{letter.id}  session={letter.session_id}  reason={letter.reason}  {letter.error[:120]}"
            )
        return 0
    sink = BigQuerySink(
        bigquery_client(settings.google_cloud_project),
        settings.events_table_id,
        settings.bigquery_insert_timeout_seconds,
        settings.bigquery_insert_attempts,
    )
    report = replay(store, sink, limit=args.limit)
    print(report.summary())
    return 1 if report.still_failing else 0


if __name__ == "__main__":
    sys.exit(main())

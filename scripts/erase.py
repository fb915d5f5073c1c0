"""Erase a caller's personal data (a request to be forgotten), in every store, idempotently.

    uv run python scripts/erase.py --phone NUMBER [--dry-run]
    uv run python scripts/erase.py --session-id ID [--dry-run]

--phone removes every BigQuery row whose `from_number` or `to_number` is the number (as sent, or
its E.164 form), the caller's profile (`profiles/<E.164>`) and the lookup-key profiles that name
the number in a `phone` field, and every dead letter of a call from or to it. --session-id
removes that session's rows and dead letters. Reads the service's environment
(GOOGLE_CLOUD_PROJECT, BIGQUERY_DATASET, ...; the emulator variables locally).

Prints a receipt of counts per store, never the number or any content, and until when each store
can still bring the erased data back (BigQuery time travel and fail-safe, Firestore point-in-time
recovery; docs/operations.md, "Personal data"). Exit codes: 0 done (also when there was nothing
left to erase), 3 some of this caller's BigQuery rows were written by `tabledata.insertAll` in the
last 30 minutes, which DML cannot change yet: run again at the time printed (the rest is erased
already), 2 bad arguments. Rows written by the Storage Write API are erased at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.api_core import exceptions as google_exceptions
from google.cloud import bigquery
from google.cloud.firestore_v1.base_query import FieldFilter

from service.config import Settings, get_settings
from service.prefetch.answer import normalise_phone
from service.stores.bigquery import make_client as bigquery_client
from service.stores.dead_letters import DeadLetterStore
from service.stores.firestore import make_client as firestore_client

RUN_AGAIN_LATER = 3
# DML cannot change rows written by tabledata.insertAll "within the last 30 minutes"; rows of the
# Storage Write API it can (https://cloud.google.com/bigquery/docs/data-manipulation-language).
STREAMING_DML_DELAY = timedelta(minutes=30)
# Google's advice when a DELETE meets the streaming buffer: leave out the rows of the last 90
# minutes with a timestamp filter (https://cloud.google.com/knowledge/kb/cannot-update-or-delete-over-bigquery-streaming-tables-000004334).
STREAMING_BUFFER_BOUNDS = (STREAMING_DML_DELAY, timedelta(minutes=90))
# https://cloud.google.com/bigquery/docs/time-travel: 7 days unless the dataset says otherwise,
# then 7 days of fail-safe that only Google can restore from.
DEFAULT_TIME_TRAVEL_HOURS = 168
FAIL_SAFE = timedelta(days=7)
# https://cloud.google.com/firestore/native/docs/pitr: 7 days of versions with PITR, 1 hour without.
FIRESTORE_PITR_WINDOW = timedelta(days=7)
FIRESTORE_VERSION_WINDOW = timedelta(hours=1)
# Fields of a lookup-key profile that may hold the caller's number.
PHONE_FIELDS = ("phone", "phone_number", "number", "from")


@dataclass
class Receipt:
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    recoverable: list[str] = field(default_factory=list)

    def render(self) -> str:
        verb = "would erase" if self.dry_run else "erased"
        lines = [f"{verb}:"] + [f"  {store}: {count}" for store, count in self.counts.items()]
        lines += [f"  still pending: {reason}" for reason in self.pending]
        if self.recoverable:
            lines += ["recoverable until (UTC):"] + [f"  {line}" for line in self.recoverable]
        return "\n".join(lines)


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def recoverability(now: datetime, time_travel_hours: int, firestore_pitr: bool | None) -> list[str]:
    """When the erased data stops being recoverable, per store (the windows Google documents)."""
    readable = now + timedelta(hours=time_travel_hours)
    if firestore_pitr is None:
        firestore = (
            f"Firestore: up to {_at(now + FIRESTORE_PITR_WINDOW)} (point-in-time recovery "
            f"setting unknown: 7 days if on, until {_at(now + FIRESTORE_VERSION_WINDOW)} if off)"
        )
    elif firestore_pitr:
        firestore = (
            f"Firestore: {_at(now + FIRESTORE_PITR_WINDOW)} (point-in-time recovery, 7 days)"
        )
    else:
        firestore = (
            f"Firestore: {_at(now + FIRESTORE_VERSION_WINDOW)} (no point-in-time recovery: "
            "1 hour of versions)"
        )
    return [
        f"BigQuery: {_at(readable)} by time travel ({time_travel_hours} h), "
        f"{_at(readable + FAIL_SAFE)} by Google through fail-safe (7 more days)",
        firestore,
    ]


def time_travel_hours(settings: Settings, bq: bigquery.Client) -> int:
    """The dataset's time travel window (Terraform's bigquery_time_travel_hours)."""
    dataset = bq.get_dataset(f"{settings.google_cloud_project}.{settings.bigquery_dataset}")
    return int(dataset.max_time_travel_hours or DEFAULT_TIME_TRAVEL_HOURS)


def firestore_pitr(settings: Settings) -> bool | None:
    """Whether the database keeps 7 days of versions; None when it cannot be read (the
    emulator, or no right to read the database's settings)."""
    if os.environ.get("FIRESTORE_EMULATOR_HOST"):
        return None
    try:
        from google.cloud.firestore_admin_v1 import FirestoreAdminClient
        from google.cloud.firestore_admin_v1.types import Database

        name = f"projects/{settings.google_cloud_project}/databases/{settings.firestore_database}"
        database = FirestoreAdminClient().get_database(name=name, timeout=20)
    except Exception:
        return None
    enabled = Database.PointInTimeRecoveryEnablement.POINT_IN_TIME_RECOVERY_ENABLED
    return bool(database.point_in_time_recovery_enablement == enabled)


def erase(
    settings: Settings,
    firestore: Any,
    bq: bigquery.Client,
    *,
    phone: str | None = None,
    session_id: str | None = None,
    dry_run: bool = False,
    pitr: bool | None = None,
    now: datetime | None = None,
) -> Receipt:
    receipt = Receipt(dry_run)
    now = now or datetime.now(UTC)
    numbers = _numbers(phone, settings.default_phone_region) if phone else []
    _erase_rows(settings, bq, numbers, session_id, dry_run, receipt, now)
    if numbers:
        _erase_profiles(settings, firestore, numbers, dry_run, receipt)
    _erase_dead_letters(settings, firestore, numbers, session_id, dry_run, receipt)
    if not dry_run:
        receipt.recoverable = recoverability(now, time_travel_hours(settings, bq), pitr)
    return receipt


def _numbers(phone: str, region: str) -> list[str]:
    e164 = normalise_phone(phone, region)
    return list(dict.fromkeys([phone.strip(), *([e164] if e164 else [])]))


def _erase_rows(
    settings: Settings,
    bq: bigquery.Client,
    numbers: list[str],
    session_id: str | None,
    dry_run: bool,
    receipt: Receipt,
    now: datetime,
) -> None:
    if numbers:
        condition = "(from_number IN UNNEST(@numbers) OR to_number IN UNNEST(@numbers))"
        parameter: Any = bigquery.ArrayQueryParameter("numbers", "STRING", numbers)
    else:
        condition = "session_id = @session_id"
        parameter = bigquery.ScalarQueryParameter("session_id", "STRING", session_id)
    table = f"`{settings.events_table_id}`"
    key = "bigquery call_events rows"
    if dry_run:
        config = bigquery.QueryJobConfig(query_parameters=[parameter])
        [row] = bq.query(f"SELECT COUNT(*) AS n FROM {table} WHERE {condition}", config).result()
        receipt.counts[key] = int(row["n"])
        return
    try:
        receipt.counts[key] = _delete(bq, table, condition, [parameter])
        return
    except google_exceptions.BadRequest as exc:
        if not _streaming_buffer(exc):
            raise
    # insertAll's streaming buffer refuses a DELETE that would touch it, rows of any caller
    # included: under steady traffic it always holds some. Leave out the recent rows by time, as
    # Google advises, erase the rest, and ask for another run only if this caller has recent rows.
    for delay in STREAMING_BUFFER_BOUNDS:
        bound = bigquery.ScalarQueryParameter("bound", "TIMESTAMP", now - delay)
        try:
            receipt.counts[key] = _delete(
                bq, table, f"{condition} AND received_at < @bound", [parameter, bound]
            )
            break
        except google_exceptions.BadRequest as exc:
            if not _streaming_buffer(exc):
                raise
    else:
        receipt.counts[key] = 0
        receipt.pending.append(
            f"BigQuery rows behind the streaming buffer: run again after {_at(now + delay)} UTC"
        )
        return
    config = bigquery.QueryJobConfig(query_parameters=[parameter, bound])
    [left] = bq.query(
        f"SELECT COUNT(*) AS n FROM {table} WHERE {condition} AND NOT (received_at < @bound)",
        config,
    ).result()
    if left["n"]:
        # Written at most now: out of the buffer's reach `delay` from now.
        receipt.pending.append(
            f"{left['n']} BigQuery row(s) of this caller from the last "
            f"{int(delay.total_seconds() // 60)} minutes (tabledata.insertAll): "
            f"run again after {_at(now + delay)} UTC"
        )


def _delete(bq: bigquery.Client, table: str, condition: str, parameters: list[Any]) -> int:
    config = bigquery.QueryJobConfig(query_parameters=parameters)
    job = bq.query(f"DELETE FROM {table} WHERE {condition}", job_config=config)
    job.result()
    return int(job.num_dml_affected_rows or 0)


def _streaming_buffer(exc: Exception) -> bool:
    return "streaming buffer" in str(exc).lower()


def _erase_profiles(
    settings: Settings, firestore: Any, numbers: list[str], dry_run: bool, receipt: Receipt
) -> None:
    profiles = firestore.collection(settings.profiles_collection)
    references = {}
    for number in numbers:
        snapshot = profiles.document(number).get()
        if snapshot.exists:
            references[snapshot.reference.path] = snapshot.reference
        for name in PHONE_FIELDS:  # lookup-key profiles that carry the number
            for found in profiles.where(filter=FieldFilter(name, "==", number)).stream():
                references[found.reference.path] = found.reference
    if not dry_run:
        for reference in references.values():
            reference.delete()
    receipt.counts["firestore profiles"] = len(references)


def _erase_dead_letters(
    settings: Settings,
    firestore: Any,
    numbers: list[str],
    session_id: str | None,
    dry_run: bool,
    receipt: Receipt,
) -> None:
    store = DeadLetterStore(firestore, settings.dead_letter_collection)
    matching = [
        letter.id
        for letter in store.list()
        if (session_id is not None and letter.row.get("session_id") == session_id)
        or (numbers and {letter.row.get("from_number"), letter.row.get("to_number")} & set(numbers))
    ]
    if not dry_run:
        for document_id in matching:
            store.delete(document_id)
    receipt.counts["firestore dead letters"] = len(matching)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--phone", help="the caller's phone number")
    target.add_argument("--session-id", help="one Millis session")
    parser.add_argument("--dry-run", action="store_true", help="count, change nothing")
    args = parser.parse_args(argv)
    if args.phone is not None and not args.phone.strip():
        parser.error("--phone is empty")
    settings = get_settings()
    receipt = erase(
        settings,
        firestore_client(settings.google_cloud_project, settings.firestore_database),
        bigquery_client(settings.google_cloud_project),
        phone=args.phone,
        session_id=args.session_id,
        dry_run=args.dry_run,
        pitr=None if args.dry_run else firestore_pitr(settings),
    )
    print(receipt.render())
    return RUN_AGAIN_LATER if receipt.pending else 0


if __name__ == "__main__":
    sys.exit(main())

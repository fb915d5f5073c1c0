#!/usr/bin/env python3
"""Erase a caller's personal data (a request to be forgotten), in every store, idempotently.

    ./scripts/erase.py --phone NUMBER [--dry-run] [--force] [--max-calls N]
    ./scripts/erase.py --session-id ID [--dry-run]

--phone removes every BigQuery row whose `from_number` or `to_number` is the number (as sent, or
its E.164 form), the caller's profile (`profiles/<E.164>`) and the lookup-key profiles that name
the number in a `phone` field, the caller memory kept under any of them (every agent's, with its
session markers), and every dead letter of a call from or to it. --session-id removes that
session's rows and dead letters, and takes it out of every caller memory that counted it. Works
on the stack of ./scripts/dev, or on Google Cloud when GOOGLE_CLOUD_PROJECT is set (with the
service's settings: BIGQUERY_DATASET, ...).

Safety: a value that is not a phone number is refused. A number that is an agent's own (in
`phone_numbers` of an `agents/` document: the business line, the `to` of every call) or that
looks like a line rather than a person (in more than --max-calls calls, default 50, or in calls
with more than 10 different other numbers) is refused unless --force is given. --dry-run shows what would go (counts per store and the sessions) and changes
nothing: run it first.

Prints a receipt of counts per store, never the number or any content, and until when each store
can still bring the erased data back (BigQuery time travel and fail-safe, Firestore point-in-time
recovery; docs/operations.md, "Personal data"). Exit codes: 0 done (also when there was nothing
left to erase), 3 some of this caller's BigQuery rows were written by `tabledata.insertAll` in the
last 30 minutes, which DML cannot change yet: run again at the time printed (the rest is erased
already), 2 bad arguments or refused (nothing erased). Rows written by the Storage Write API are
erased at once.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))

import toolkit  # first: the project's Python and modules

from google.api_core import exceptions as google_exceptions
from google.cloud import bigquery
from google.cloud.firestore_v1.base_query import FieldFilter

from service.config import Settings, get_settings
from service.memory.erase import erase_caller_memory, erase_session_memory
from service.prefetch.answer import normalise_phone
from service.stores.bigquery import make_client as bigquery_client
from service.stores.dead_letters import DeadLetterStore
from service.stores.firestore import make_client as firestore_client

RUN_AGAIN_LATER = toolkit.RUN_AGAIN_LATER
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
# A number in more calls than this, or talking to more different numbers, is probably a
# business line rather than one caller: erasing it needs --force.
MAX_CALLS = 50
MAX_COUNTERPARTS = 10
SESSIONS_SHOWN = 20
# Fields of a lookup-key profile that may hold the caller's number.
PHONE_FIELDS = ("phone", "phone_number", "number", "from")


@dataclass
class Receipt:
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    recoverable: list[str] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)  # of the rows, shown by a dry run

    def render(self) -> str:
        verb = "would erase" if self.dry_run else "erased"
        lines = [f"{verb}:"] + [f"  {store}: {count}" for store, count in self.counts.items()]
        lines += [f"  still pending: {reason}" for reason in self.pending]
        if self.dry_run and self.sessions:
            shown = self.sessions[:SESSIONS_SHOWN]
            more = len(self.sessions) - len(shown)
            lines.append(
                "  calls (session ids): " + ", ".join(shown) + (f" and {more} more" if more else "")
            )
        if self.recoverable:
            lines += ["recoverable until (UTC):"] + [f"  {line}" for line in self.recoverable]
        if self.dry_run:
            lines.append("nothing changed (dry run)")
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


class Refused(toolkit.ToolError):
    """Erasing this target needs --force (or is impossible); nothing was erased."""


def check_phone(
    settings: Settings, firestore: Any, bq: bigquery.Client, phone: str, max_calls: int
) -> None:
    """Refuse a number that is not a caller's: an agent's own line, or one with too many calls.
    Messages never quote the number."""
    numbers = _numbers(phone, settings.default_phone_region)
    for agent in firestore.collection(settings.agents_collection).stream():
        own = (agent.to_dict() or {}).get("phone_numbers")
        if isinstance(own, list) and {
            normalise_phone(str(n), settings.default_phone_region) for n in own
        } & set(numbers):
            raise Refused(
                f"the number is one of agent {agent.id}'s own phone_numbers: erasing it would "
                "erase every call of that line. Add --force if that is what you mean."
            )
    sql = (
        "SELECT COUNT(DISTINCT session_id) AS calls, COUNT(DISTINCT IF(from_number IN "
        "UNNEST(@numbers), to_number, from_number)) AS counterparts "
        f"FROM `{settings.events_table_id}` "
        "WHERE from_number IN UNNEST(@numbers) OR to_number IN UNNEST(@numbers)"
    )
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ArrayQueryParameter("numbers", "STRING", numbers)]
    )
    [row] = list(bq.query(sql, job_config=config).result())
    calls, counterparts = int(row["calls"]), int(row["counterparts"])
    if calls > max_calls or counterparts > MAX_COUNTERPARTS:
        raise Refused(
            f"the number is in {calls} calls with {counterparts} different other numbers "
            f"(a caller rarely has more than {max_calls} calls with {MAX_COUNTERPARTS} numbers): "
            "is it a business line? Run with --dry-run to see the calls, then add --force if "
            "they are all this caller's."
        )


def _sessions(settings: Settings, bq: bigquery.Client, numbers: list[str]) -> list[str]:
    sql = (
        f"SELECT DISTINCT session_id FROM `{settings.events_table_id}` "
        "WHERE from_number IN UNNEST(@numbers) OR to_number IN UNNEST(@numbers) ORDER BY 1"
    )
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ArrayQueryParameter("numbers", "STRING", numbers)]
    )
    return [row["session_id"] for row in bq.query(sql, job_config=config).result()]


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
    if dry_run and numbers:
        receipt.sessions = _sessions(settings, bq, numbers)
    _erase_rows(settings, bq, numbers, session_id, dry_run, receipt, now)
    if numbers:
        callers = _erase_profiles(settings, firestore, numbers, dry_run, receipt)
        memories, markers = erase_caller_memory(
            firestore, settings.profiles_collection, callers, dry_run=dry_run
        )
        receipt.counts["firestore caller memories"] = memories
        receipt.counts["firestore memory session markers"] = markers
    if session_id is not None:
        markers = erase_session_memory(firestore, session_id, dry_run=dry_run)
        receipt.counts["firestore memory session markers"] = markers
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
) -> list[str]:
    """Deletes the profiles; returns every caller id whose memory goes too (the numbers and the
    lookup-key profiles naming them, found or not)."""
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
    return list(dict.fromkeys([*numbers, *(ref.id for ref in references.values())]))


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
    parser = toolkit.parser(__doc__)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--phone", help="the caller's phone number (E.164, e.g. +15551234567)")
    target.add_argument("--session-id", help="one Millis session")
    parser.add_argument("--dry-run", action="store_true", help="show what would go, change nothing")
    parser.add_argument(
        "--force", action="store_true", help="erase an agent's own number or a busy number too"
    )
    parser.add_argument(
        "--max-calls",
        type=int,
        default=MAX_CALLS,
        help=f"refuse a number in more calls than this without --force (default {MAX_CALLS})",
    )
    args = parser.parse_args(argv)
    if args.phone is not None and not args.phone.strip():
        parser.error("--phone is empty")
    if args.session_id is not None and not args.session_id.strip():
        parser.error("--session-id is empty")
    toolkit.use_stack("erase")
    settings = get_settings()
    if (
        args.phone is not None
        and normalise_phone(args.phone, settings.default_phone_region) is None
    ):
        parser.error(
            "--phone: not a phone number (write it in E.164, e.g. +15551234567; national numbers "
            f"are read in DEFAULT_PHONE_REGION {settings.default_phone_region})"
        )
    firestore = firestore_client(settings.google_cloud_project, settings.firestore_database)
    bq = bigquery_client(settings.google_cloud_project)
    refusal = None
    if args.phone is not None and not args.force:
        try:
            check_phone(settings, firestore, bq, args.phone, args.max_calls)
        except Refused as exc:
            if not args.dry_run:
                raise
            refusal = f"without --force a real run would refuse: {exc}"
    receipt = erase(
        settings,
        firestore,
        bq,
        phone=args.phone,
        session_id=args.session_id,
        dry_run=args.dry_run,
        pitr=None if args.dry_run else firestore_pitr(settings),
    )
    print(receipt.render())
    if refusal:
        print(refusal)
    return RUN_AGAIN_LATER if receipt.pending else toolkit.DONE


if __name__ == "__main__":
    toolkit.run("erase", main)

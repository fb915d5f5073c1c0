"""Erase a caller's personal data (a request to be forgotten), in every store, idempotently.

    uv run python scripts/erase.py --phone NUMBER [--dry-run]
    uv run python scripts/erase.py --session-id ID [--dry-run]

--phone removes every BigQuery row whose `from_number` or `to_number` is the number (as sent, or
its E.164 form), the caller's profile (`profiles/<E.164>`) and the lookup-key profiles that name
the number in a `phone` field, the caller memory kept under any of them (every agent's, with its
session markers), and every dead letter of a call from or to it. --session-id removes that
session's rows and dead letters, and takes it out of every caller memory that counted it. Reads the service's environment
(GOOGLE_CLOUD_PROJECT, BIGQUERY_DATASET, ...; the emulator variables locally).

Prints a receipt of counts per store, never the number or any content. Exit codes: 0 done (also
when there was nothing left to erase), 3 some BigQuery rows are still in the streaming buffer,
which refuses DML for up to about 90 minutes after an insert: run again later (the rest is
erased already), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.api_core import exceptions as google_exceptions
from google.cloud import bigquery
from google.cloud.firestore_v1.base_query import FieldFilter

from service.config import Settings, get_settings
from service.memory.erase import erase_caller_memory, erase_session_memory
from service.prefetch.answer import normalise_phone
from service.stores.bigquery import make_client as bigquery_client
from service.stores.dead_letters import DeadLetterStore
from service.stores.firestore import make_client as firestore_client

RUN_AGAIN_LATER = 3
# Fields of a lookup-key profile that may hold the caller's number.
PHONE_FIELDS = ("phone", "phone_number", "number", "from")


@dataclass
class Receipt:
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)

    def render(self) -> str:
        verb = "would erase" if self.dry_run else "erased"
        lines = [f"{verb}:"] + [f"  {store}: {count}" for store, count in self.counts.items()]
        lines += [f"  still pending: {reason}" for reason in self.pending]
        return "\n".join(lines)


def erase(
    settings: Settings,
    firestore: Any,
    bq: bigquery.Client,
    *,
    phone: str | None = None,
    session_id: str | None = None,
    dry_run: bool = False,
) -> Receipt:
    receipt = Receipt(dry_run)
    numbers = _numbers(phone, settings.default_phone_region) if phone else []
    _erase_rows(settings, bq, numbers, session_id, dry_run, receipt)
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
) -> None:
    if numbers:
        condition = "from_number IN UNNEST(@numbers) OR to_number IN UNNEST(@numbers)"
        parameter: Any = bigquery.ArrayQueryParameter("numbers", "STRING", numbers)
    else:
        condition = "session_id = @session_id"
        parameter = bigquery.ScalarQueryParameter("session_id", "STRING", session_id)
    table = f"`{settings.events_table_id}`"
    config = bigquery.QueryJobConfig(query_parameters=[parameter])
    if dry_run:
        [row] = bq.query(f"SELECT COUNT(*) AS n FROM {table} WHERE {condition}", config).result()
        receipt.counts["bigquery call_events rows"] = int(row["n"])
        return
    try:
        job = bq.query(f"DELETE FROM {table} WHERE {condition}", job_config=config)
        job.result()
    except google_exceptions.BadRequest as exc:
        if "streaming buffer" not in str(exc).lower():
            raise
        receipt.counts["bigquery call_events rows"] = 0
        receipt.pending.append("BigQuery rows in the streaming buffer: run again in 90 minutes")
        return
    receipt.counts["bigquery call_events rows"] = int(job.num_dml_affected_rows or 0)


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
    )
    print(receipt.render())
    return RUN_AGAIN_LATER if receipt.pending else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Backfill past calls from the Millis call-log API into BigQuery, through the same
normalisation as the end-of-call webhook. Idempotent: a session loaded twice is one row in the
`calls` view (the latest delivery wins).

    MILLIS_API_KEY=... ./scripts/backfill.py --from 2026-11-01 --to 2026-11-07 [--agent-id X]
    MILLIS_API_KEY=... ./scripts/backfill.py --session-id ID [--session-id ID ...]
    MILLIS_API_KEY=... ./scripts/backfill.py --session-file ids.txt [--dry-run]

Dates are UTC days, --from and --to both included (the example loads seven days). Writes to the
stack of ./scripts/dev, or to Google Cloud when GOOGLE_CLOUD_PROJECT is set (with the service's
settings: BIGQUERY_DATASET, BIGQUERY_WRITE_API, ...). Rows BigQuery refuses are kept as dead
letters (scripts/replay.py). --dry-run fetches and validates, and inserts nothing.
Exit codes: 0 every call was loaded, 1 some were skipped or dead-lettered (listed), 2 could not
run (no MILLIS_API_KEY, the API refused or kept failing).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))

import toolkit  # first: the project's Python and modules

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from service.config import Settings, get_settings
from service.end_of_call.normalise import InvalidPayload, normalise_call, parse_payload
from service.end_of_call.redaction import Redactor
from service.stored_row import (
    MAX_REQUEST_BYTES,
    PayloadTooLarge,
    encoded_request_bytes,
    insert_id,
)

REGIONS = {"us": "https://api-west.millis.ai", "eu": "https://api-eu-west.millis.ai"}
PAGE_SIZE = 100  # the API's maximum


class ApiError(RuntimeError):
    """The call-log API refused us (wrong key) or kept failing after the retries."""


class CallLogs:
    """The Millis call-log API: pages of a time range, or single sessions."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 30, retries: int = 4) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = api_key
        retry = Retry(
            total=retries,
            backoff_factor=0.5,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=("GET",),
            respect_retry_after_header=True,
        )
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            response = self.session.get(
                f"{self.base_url}{path}", params=params, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise ApiError(f"GET {path}: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise ApiError(f"GET {path}: HTTP {response.status_code}: check MILLIS_API_KEY")
        if response.status_code == 404:
            return None
        if not response.ok:
            raise ApiError(f"GET {path}: HTTP {response.status_code}")
        return response.json()

    def calls_between(
        self, start: datetime, end: datetime, agent_id: str | None
    ) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {
            "limit": PAGE_SIZE,
            "start_time": int(start.timestamp()),
            "end_time": int(end.timestamp()),
        }
        if agent_id:
            params["agent_id"] = agent_id
        while True:
            page = self._get("/call-logs", params) or {}
            yield from page.get("histories") or []
            cursor = page.get("next_cursor")
            if cursor is None:
                return
            params["start_after_ts"] = cursor

    def call(self, session_id: str) -> dict[str, Any] | None:
        return self._get(f"/call-logs/{requests.utils.quote(session_id, safe='')}")  # type: ignore[no-any-return]


@dataclass
class BackfillReport:
    fetched: int = 0
    inserted: int = 0
    dead_lettered: int = 0
    skipped: list[str] = field(default_factory=list)

    def summary(self, dry_run: bool) -> str:
        verb = "would insert" if dry_run else "inserted"
        lines = [
            f"fetched {self.fetched}, {verb} {self.inserted}, dead-lettered {self.dead_lettered}, skipped {len(self.skipped)}"
        ]
        lines += [f"  skipped: {reason}" for reason in self.skipped]
        return "\n".join(lines)


def load(
    calls: Iterable[dict[str, Any] | None],
    *,
    sink: Any,
    dead_letters: Any,
    settings: Settings,
    batch_size: int = 200,
    dry_run: bool = False,
) -> BackfillReport:
    """Normalise each call like the webhook does and insert in batches; lose nothing."""
    from service.stores.errors import InsertFailed

    report = BackfillReport()
    redactor = Redactor.from_settings(settings)
    batch: list[dict[str, Any]] = []

    batch_bytes = 0

    def flush() -> None:
        nonlocal batch_bytes
        batch_bytes = 0
        if dry_run:
            report.inserted += len(batch)  # counted as "would insert"
            batch.clear()
            return
        if not batch:
            return
        try:
            errors = {
                error.index: error.message
                for error in sink.insert(batch, [insert_id(row) for row in batch])
            }
        except InsertFailed as exc:
            errors = dict.fromkeys(range(len(batch)), str(exc))
        for index, row in enumerate(batch):
            if index in errors:
                dead_letters.store(row, reason="backfill_failed", error=errors[index])
                report.dead_lettered += 1
            else:
                report.inserted += 1
        batch.clear()

    for position, raw in enumerate(calls, start=1):
        report.fetched += 1
        if raw is None:
            report.skipped.append(f"call {position}: not found")
            continue
        repairs: list[dict[str, str]] = []
        try:
            payload = parse_payload(raw, repairs)
            row = normalise_call(
                raw,
                payload,
                received_at=datetime.now(UTC),
                source="backfill",
                redactor=redactor,
                store_agent_config=settings.store_agent_config != "none",
                repairs=repairs,
            )
        except (InvalidPayload, PayloadTooLarge) as exc:
            report.skipped.append(f"call {position}: {exc}")
            continue
        # One request stays within BigQuery's 10 MB as the client encodes it.
        size = encoded_request_bytes([row], [insert_id(row)])
        if batch and batch_bytes + size > MAX_REQUEST_BYTES:
            flush()
        batch.append(row)
        batch_bytes += size
        if len(batch) >= batch_size:
            flush()
    flush()
    return report


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


def main(argv: list[str] | None = None) -> int:
    parser = toolkit.parser(__doc__)
    toolkit.add_date_range(parser, required=False)
    parser.add_argument("--agent-id")
    parser.add_argument("--session-id", action="append", default=[])
    parser.add_argument("--session-file", type=Path)
    parser.add_argument("--region", choices=sorted(REGIONS), default="us")
    parser.add_argument("--base-url", help="API base URL (overrides --region)")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--dry-run", action="store_true", help="fetch and validate, insert nothing")
    args = parser.parse_args(argv)

    session_ids = list(args.session_id)
    if args.session_file:
        session_ids += [
            line.strip() for line in args.session_file.read_text().splitlines() if line.strip()
        ]
    if not session_ids and not (args.start and args.end):
        parser.error("give --from and --to, or --session-id / --session-file")
    toolkit.check_date_range(parser, args)
    api_key = os.environ.get("MILLIS_API_KEY", "")
    if not api_key:
        raise toolkit.ToolError("set MILLIS_API_KEY (your Millis API key) to read the call log")
    toolkit.use_stack("backfill")

    from service.stores.bigquery import make_sink
    from service.stores.dead_letters import DeadLetterStore
    from service.stores.firestore import make_client as firestore_client

    settings = get_settings()
    api = CallLogs(args.base_url or REGIONS[args.region], api_key)
    calls: Iterable[dict[str, Any] | None] = (
        (api.call(session_id) for session_id in session_ids)
        if session_ids
        else api.calls_between(
            _midnight(args.start), _midnight(args.end + timedelta(days=1)), args.agent_id
        )
    )
    sink = make_sink(settings)  # the write API BIGQUERY_WRITE_API chooses
    dead_letters = DeadLetterStore(
        firestore_client(settings.google_cloud_project, settings.firestore_database),
        settings.dead_letter_collection,
    )
    try:
        report = load(
            calls,
            sink=sink,
            dead_letters=dead_letters,
            settings=settings,
            batch_size=args.batch_size,
            dry_run=args.dry_run,
        )
    except ApiError as exc:
        raise toolkit.ToolError(str(exc)) from None
    print(report.summary(args.dry_run))
    return toolkit.NEEDS_ATTENTION if report.skipped or report.dead_lettered else toolkit.DONE


if __name__ == "__main__":
    toolkit.run("backfill", lambda: main())

"""BigQuery: streaming insert of call rows, and creation of the tables and views for local runs.

The only module that imports google-cloud-bigquery (imported lazily by the end-of-call path so
that the prefetch path and cold start do not pay for it).
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from service.schemas import (
    FUNCTION_ARGUMENTS,
    FUNCTION_ORDER,
    VIEW_ORDER,
    function_sql,
    table_definitions,
    view_sql,
)
from service.stores.errors import InsertFailed, RowError, Sink

if TYPE_CHECKING:
    from collections.abc import Sequence

    from service.config import Settings

log = logging.getLogger(__name__)

# 4xx answers other than these mean the request itself is wrong: retrying cannot help. Quota
# errors arrive as 403 with one of these reasons
# (https://cloud.google.com/bigquery/docs/troubleshoot-quotas) and pass with time.
_QUOTA_REASONS = frozenset({"rateLimitExceeded", "quotaExceeded"})


def _retryable(exc: google_exceptions.ClientError) -> bool:
    if isinstance(exc, google_exceptions.TooManyRequests):
        return True
    reasons = {error.get("reason") for error in exc.errors if isinstance(error, dict)}
    return isinstance(exc, google_exceptions.Forbidden) and bool(reasons & _QUOTA_REASONS)


def make_client(project: str) -> bigquery.Client:
    """A client for real BigQuery, or for the emulator named by BIGQUERY_EMULATOR_HOST."""
    if os.environ.get("BIGQUERY_EMULATOR_HOST"):
        return bigquery.Client(project=project, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    return bigquery.Client(project=project)


class BigQuerySink:
    """Streams rows into one table with bounded retries inside the caller's time budget."""

    def __init__(
        self, client: bigquery.Client, table_id: str, timeout_seconds: float, attempts: int
    ) -> None:
        self.client = client
        self.table_id = table_id
        self.timeout_seconds = timeout_seconds
        self.attempts = attempts

    def insert(self, rows: Sequence[dict[str, Any]], row_ids: Sequence[str]) -> list[RowError]:
        """Insert rows; return the rows BigQuery rejected as invalid, or raise InsertFailed."""
        deadline = time.monotonic() + self.timeout_seconds
        last_error = "no attempt made"
        for attempt in range(self.attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                break
            try:
                errors = self.client.insert_rows_json(
                    self.table_id,
                    list(rows),
                    row_ids=list(row_ids),
                    retry=None,  # type: ignore[arg-type]  # our loop retries
                    timeout=remaining,
                )
            except google_exceptions.ClientError as exc:
                last_error = f"{type(exc).__name__}: {exc.message}"
                if not _retryable(exc):
                    raise InsertFailed(last_error) from exc
            except Exception as exc:  # transport errors come from requests, urllib3, google-auth
                last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
            else:
                return [
                    RowError(int(entry.get("index", 0)), _first_message(entry)) for entry in errors
                ]
            # The type only: BigQuery's messages can quote row content (kept in the dead letter).
            log.warning(
                "bigquery insert failed",
                extra={"attempt": attempt + 1, "error_type": last_error.split(":", 1)[0]},
            )
            time.sleep(min(0.2 * 2**attempt, max(0.0, deadline - time.monotonic())))
        raise InsertFailed(last_error)


def make_sink(settings: Settings, client: Any = None) -> Sink:
    """The sink BIGQUERY_WRITE_API chooses; `client` is that API's client (tests inject one)."""
    if settings.bigquery_write_api == "storage_write":
        # Imported here: only this setting pays for gRPC and the storage client.
        from service.stores.storage_write import StorageWriteSink, make_write_client

        return StorageWriteSink(
            client or make_write_client(),
            settings.events_table_id,
            settings.bigquery_insert_timeout_seconds,
            settings.bigquery_insert_attempts,
        )
    return BigQuerySink(
        client or make_client(settings.google_cloud_project),
        settings.events_table_id,
        settings.bigquery_insert_timeout_seconds,
        settings.bigquery_insert_attempts,
    )


def _first_message(entry: dict[str, Any]) -> str:
    errors = entry.get("errors") or [{}]
    first = errors[0]
    return f"{first.get('reason', 'invalid')}: {first.get('message', '')}"[:1000]


def create_tables_and_views(client: bigquery.Client, dataset: str, location: str = "US") -> None:
    """Create the dataset, tables and views from service/schemas (local runs; Terraform in GCP)."""
    project = client.project
    client.create_dataset(bigquery.Dataset(f"{project}.{dataset}"), exists_ok=True)
    for name, definition in table_definitions().items():
        table = bigquery.Table(
            f"{project}.{dataset}.{name}",
            schema=[bigquery.SchemaField.from_api_repr(field) for field in definition["schema"]],
        )
        table.description = definition["description"]
        partitioning = definition.get("time_partitioning")
        if partitioning:
            table.time_partitioning = bigquery.TimePartitioning(
                type_=partitioning["type"], field=partitioning["field"]
            )
        table.clustering_fields = definition.get("clustering")
        client.create_table(table, exists_ok=True)
    for name in VIEW_ORDER:
        view = bigquery.Table(f"{project}.{dataset}.{name}")
        view.view_query = view_sql(name, project, dataset)
        client.create_table(view, exists_ok=True)
    arguments = ", ".join(f"{argument} DATE" for argument in FUNCTION_ARGUMENTS)
    for name in FUNCTION_ORDER:
        function_id = f"`{project}.{dataset}.{name}`"
        body = function_sql(name, project, dataset)
        client.query(
            f"CREATE OR REPLACE TABLE FUNCTION {function_id}({arguments}) AS ({body})"
        ).result()

"""What every BigQuery writer promises (the Sink protocol) and how it fails: shared by both write
APIs (bigquery.py, storage_write.py), the end-of-call delivery, the replay and the backfill, so
that none of them imports another for its error types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Sink(Protocol):
    """What the end-of-call path, the replay and the backfill need of a BigQuery writer."""

    def insert(self, rows: Sequence[dict[str, Any]], row_ids: Sequence[str]) -> list[RowError]:
        """Insert rows; return the rows BigQuery refused as invalid, or raise InsertFailed."""
        ...


class InsertFailed(Exception):
    """BigQuery did not accept the request (transport error, timeout, 5xx) within the budget."""


@dataclass(frozen=True)
class RowError:
    index: int
    message: str

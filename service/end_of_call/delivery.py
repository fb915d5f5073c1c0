"""Delivery of a call row: BigQuery first, the dead-letter store when BigQuery fails. Nothing
accepted is lost: the caller gets an error only when neither store took the row."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from service.stored_row import insert_id
from service.stores.errors import InsertFailed
from service.telemetry import signals

if TYPE_CHECKING:
    from service.stores.dead_letters import DeadLetterStore
    from service.stores.errors import Sink

log = logging.getLogger(__name__)


class StoresUnavailable(RuntimeError):
    """Neither BigQuery nor the dead-letter store accepted the call."""


@dataclass(frozen=True)
class Outcome:
    status: Literal["inserted", "dead_lettered"]
    session_id: str
    reason: str = ""


def insert_or_dead_letter(
    row: dict[str, Any], sink: Sink, dead_letters: DeadLetterStore
) -> Outcome:
    """Stream the row into BigQuery; on any failure keep it as a dead letter. Lose nothing."""
    session_id = row["session_id"]
    try:
        row_errors = sink.insert([row], [insert_id(row)])
    except InsertFailed as exc:
        reason, error = "insert_failed", str(exc)
    else:
        if not row_errors:
            return Outcome("inserted", session_id)
        reason, error = "invalid_row", row_errors[0].message
    try:
        dead_letters.store(row, reason=reason, error=error)
    except Exception as exc:
        log.error(
            "call lost unless the caller retries: BigQuery and dead-letter store both failed",
            extra={"reason": reason, "error_type": type(exc).__name__},
        )
        raise StoresUnavailable(reason) from None
    signals.warning("call kept as a dead letter", extra={"reason": reason})
    return Outcome("dead_lettered", session_id, reason)

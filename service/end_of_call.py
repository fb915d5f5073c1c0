"""End-of-call: validate a Millis payload, normalise it into one BigQuery row, redact secrets,
and hand it to the sink; when BigQuery fails, to the dead-letter store."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from service.models import ChatMessage, EndOfCallPayload, detect_format

if TYPE_CHECKING:
    from service.dead_letters import DeadLetterStore
    from service.redaction import Redactor
    from service.sink import BigQuerySink

log = logging.getLogger(__name__)

Source = Literal["webhook", "replay", "backfill"]

# BigQuery's streaming row limit is 10 MB; above this size the raw copy leaves out the transcript,
# which the `chat` column already holds in full.
RAW_PAYLOAD_FULL_LIMIT_BYTES = 4 * 1024 * 1024


class InvalidPayload(ValueError):
    """The body is not a usable Millis end-of-call payload."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class StoresUnavailable(RuntimeError):
    """Neither BigQuery nor the dead-letter store accepted the call."""


@dataclass(frozen=True)
class Outcome:
    status: Literal["inserted", "dead_lettered"]
    session_id: str
    reason: str = ""


def parse_payload(raw: Any) -> EndOfCallPayload:
    if not isinstance(raw, dict):
        raise InvalidPayload("the body must be a JSON object")
    try:
        return EndOfCallPayload.model_validate(raw)
    except ValidationError as exc:
        # Field locations and messages only: the offending values may be personal data.
        details = [
            {"field": ".".join(str(part) for part in error["loc"]), "problem": error["msg"]}
            for error in exc.errors(include_input=False, include_url=False)
        ][:20]
        missing_id = any(detail["field"] == "session_id" for detail in details)
        message = (
            "session_id is missing or invalid" if missing_id else "the payload has invalid fields"
        )
        raise InvalidPayload(message, details) from None


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _chat_row(position: int, message: ChatMessage) -> dict[str, Any]:
    extra = message.model_extra or {}
    return {
        "position": position,
        "role": message.role,
        "content": message.content,
        "tool_call_id": message.tool_call_id,
        "tool_name": message.name,
        "tool_calls": _json_text(message.tool_calls),
        "extra": _json_text(extra) if extra else None,
    }


def _timestamp(value: datetime) -> str:
    # ISO-8601, not epoch seconds: the streaming API (and its emulator) read strings reliably.
    return value.isoformat()


def normalise_call(
    raw: dict[str, Any],
    payload: EndOfCallPayload,
    *,
    received_at: datetime,
    source: Source,
    redactor: Redactor,
    store_agent_config: bool,
) -> dict[str, Any]:
    """One row of the call_events table (see service/schemas/call_events.json)."""
    started_at = payload.ts or received_at - timedelta(seconds=payload.duration or 0)
    costs = payload.cost_breakdown or []
    credits = [item.credit for item in costs if item.credit is not None]
    agent_config = redactor.redact(payload.agent_config) if store_agent_config else None

    raw_copy = dict(raw)
    if "agent_config" in raw_copy:
        raw_copy["agent_config"] = agent_config
    raw_text = _json_text(raw_copy)
    if raw_text is not None and len(raw_text) > RAW_PAYLOAD_FULL_LIMIT_BYTES:
        raw_copy.pop("chat", None)
        raw_copy["_chat_omitted"] = "kept in the chat column"
        raw_text = _json_text(raw_copy)

    voip = payload.voip
    return {
        "session_id": payload.session_id,
        "call_id": payload.call_id,
        "agent_id": payload.agent_id,
        "started_at": _timestamp(started_at),
        "duration_seconds": payload.duration,
        "call_status": payload.call_status,
        "error_message": payload.error_message,
        "chars_used": payload.chars_used,
        "from_number": voip.from_number if voip else None,
        "to_number": voip.to_number if voip else None,
        "voip_provider": voip.provider if voip else None,
        "chat": [_chat_row(i, message) for i, message in enumerate(payload.chat or [])],
        "function_calls": [
            {"name": call.name, "params": _json_text(call.params)}
            for call in payload.function_calls or []
        ],
        "cost_breakdown": [
            {"type": item.type, "provider": item.provider, "credit": item.credit} for item in costs
        ],
        "total_credit": sum(credits) if credits else None,
        "metadata": _json_text(payload.metadata),
        "agent_config": _json_text(agent_config),
        "recording_url": payload.recording.recording_url if payload.recording else None,
        "received_at": _timestamp(received_at),
        "payload_format": detect_format(raw),
        "source": source,
        "raw_payload": raw_text,
    }


def insert_or_dead_letter(
    row: dict[str, Any], sink: BigQuerySink, dead_letters: DeadLetterStore
) -> Outcome:
    """Stream the row into BigQuery; on any failure keep it as a dead letter. Lose nothing."""
    from service.sink import InsertFailed

    session_id = row["session_id"]
    try:
        row_errors = sink.insert([row], [session_id])
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
    log.warning("call kept as a dead letter", extra={"reason": reason})
    return Outcome("dead_lettered", session_id, reason)

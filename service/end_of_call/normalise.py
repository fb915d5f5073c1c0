"""End-of-call: validate a Millis payload and normalise it into one BigQuery row, with secrets
redacted and every value held to BigQuery's rules (service/stored_row.py). Storing the row is
service.end_of_call.delivery's concern."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from service.end_of_call.json_text import JsonTextError, loads_bounded
from service.end_of_call.models import ChatMessage, EndOfCallPayload, detect_format
from service.stored_row import (
    MAX_REPAIRS_LISTED,
    check_row_size,
    in_streaming_window,
    json_cells,
    repair_json,
    strict_json_text,
    timestamp_text,
)

if TYPE_CHECKING:
    from service.end_of_call.redaction import Redactor

log = logging.getLogger(__name__)

Source = Literal["webhook", "replay", "backfill"]

# Structured fields a payload may send as JSON text (the current format sends chat so).
TEXT_FIELDS = ("chat", "cost_breakdown", "function_calls", "voip", "metadata", "agent_config")
LIST_FIELDS = ("chat", "cost_breakdown", "function_calls")
# Columns that identify and date the call: never rewritten by the removal of known secrets.
IDENTITY_COLUMNS = frozenset(
    {"session_id", "call_id", "agent_id", "started_at", "received_at", "ts_reported", "source"}
    | {"ts_out_of_range", "payload_format", "from_number", "to_number"}
)


class InvalidPayload(ValueError):
    """The body is not a usable Millis end-of-call payload."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


def parse_payload(raw: Any, repairs: list[dict[str, str]] | None = None) -> EndOfCallPayload:
    """Validate a body. Text that cannot be encoded and numbers that are not finite are repaired
    first (see service/stored_row.py), each repair appended to `repairs` for the row."""
    if not isinstance(raw, dict):
        raise InvalidPayload("the body must be a JSON object")
    repairs = [] if repairs is None else repairs
    try:
        # Text fields are parsed first so that what they hold is repaired like the body.
        repaired = repair_json(_tidy_lists(_parse_text_fields(raw), repairs), "", repairs)
        return EndOfCallPayload.model_validate(repaired)
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


def _parse_text_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """The body with each structured field sent as JSON text parsed, within the body's depth
    bound (json_text.py). Text that is too deep or not JSON refuses the call, naming the field,
    as any other field of the wrong type does."""
    parsed = dict(raw)
    problems = []
    for field in TEXT_FIELDS:
        value = raw.get(field)
        if not isinstance(value, str):
            continue
        try:
            parsed[field] = loads_bounded(value) if value.strip() else None
        except JsonTextError as exc:
            problems.append({"field": field, "problem": str(exc)})
    if problems:
        raise InvalidPayload("the payload has invalid fields", problems)
    return parsed


def _tidy_lists(raw: dict[str, Any], repairs: list[dict[str, str]]) -> dict[str, Any]:
    """Elements of the transcript, costs and function calls that would refuse the whole call,
    repaired and recorded instead: a null element is dropped; a chat element that is text (or any
    value but an object) becomes a message with that content."""
    tidied = dict(raw)
    for field in LIST_FIELDS:
        items = raw.get(field)
        if not isinstance(items, list):
            continue
        kept: list[Any] = []
        for index, item in enumerate(items):
            where = f"{field}[{index}]"
            if item is None:
                repairs.append({"field": where, "repair": "null_element_dropped"})
            elif field == "chat" and not isinstance(item, dict):
                repairs.append({"field": where, "repair": "value_as_message_content"})
                kept.append({"content": item})
            else:
                kept.append(item)
        tidied[field] = kept
    return tidied


def _chat_row(position: int, message: ChatMessage) -> dict[str, Any]:
    extra = message.model_extra or {}
    return {
        "position": position,
        "role": message.role,
        "content": message.content,
        "tool_call_id": message.tool_call_id,
        "tool_name": message.name,
        "tool_calls": message.tool_calls,
        "extra": extra or None,
    }


def _as_sent(value: Any) -> str | None:
    """Millis's `ts` exactly as it arrived: text as is, a number as its JSON text."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def unmodelled_fields(payload: EndOfCallPayload) -> dict[str, Any]:
    """What no column holds: the fields Millis added after this service was written.

    Only these go to `raw_payload`: a second copy of the transcript or of the agent configuration
    would double the row's size (BigQuery's limit is 10 MB) and keep what redaction removed.
    Unknown keys of chat messages are in `chat.extra` already.
    """
    fields: dict[str, Any] = dict(payload.model_extra or {})
    for name in ("voip", "recording"):
        part = getattr(payload, name)
        if part is not None and part.model_extra:
            fields[name] = dict(part.model_extra)
    for name in ("cost_breakdown", "function_calls"):
        items = getattr(payload, name) or []
        extras = {str(i): dict(it.model_extra) for i, it in enumerate(items) if it.model_extra}
        if extras:
            fields[name] = extras
    return fields


def normalise_call(
    raw: dict[str, Any],
    payload: EndOfCallPayload,
    *,
    received_at: datetime,
    source: Source,
    redactor: Redactor,
    store_agent_config: bool,
    repairs: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """One row of the call_events table (see service/schemas/call_events.json).

    Every value is held to BigQuery's rules (service/stored_row.py): text that cannot be encoded
    and numbers that are not finite are repaired and the repairs listed in the row; a row larger
    than BigQuery accepts raises PayloadTooLarge.
    """
    # The partitioning column must lie in BigQuery's streaming window: Millis's `ts` when it does,
    # else the arrival time minus the duration. `ts_reported` keeps the time as Millis sent it.
    reported = payload.ts
    ts_usable = reported is not None and in_streaming_window(reported, received_at)
    if reported is not None and ts_usable:
        started_at = reported
    else:
        started_at = received_at - timedelta(seconds=payload.duration or 0)
    costs = payload.cost_breakdown or []
    credits = [item.credit for item in costs if item.credit is not None]
    stored_config, known_secrets = redactor.agent_config_and_secrets(payload.agent_config)
    agent_config = stored_config if store_agent_config else None
    extra_fields = unmodelled_fields(payload)

    voip = payload.voip
    row: dict[str, Any] = {
        "session_id": payload.session_id,
        "call_id": payload.call_id,
        "agent_id": payload.agent_id,
        "started_at": timestamp_text(started_at),
        "ts_reported": _as_sent(raw.get("ts")),
        "ts_out_of_range": raw.get("ts") is not None and not ts_usable,
        "duration_seconds": payload.duration,
        "call_status": payload.call_status,
        "error_message": payload.error_message,
        "chars_used": payload.chars_used,
        "from_number": voip.from_number if voip else None,
        "to_number": voip.to_number if voip else None,
        "voip_provider": voip.provider if voip else None,
        "chat": [_chat_row(i, message) for i, message in enumerate(payload.chat or [])],
        "function_calls": [
            {"name": call.name, "params": call.params} for call in payload.function_calls or []
        ],
        "cost_breakdown": [
            {"type": item.type, "provider": item.provider, "credit": item.credit} for item in costs
        ],
        "total_credit": sum(credits) if credits else None,
        "metadata": payload.metadata,
        "agent_config": agent_config,
        "recording_url": payload.recording.recording_url if payload.recording else None,
        "received_at": timestamp_text(received_at),
        "payload_format": detect_format(raw),
        "source": source,
        "raw_payload": redactor.redact(extra_fields) if extra_fields else None,
    }
    # A secret of the configuration is removed wherever else the call repeats it.
    for column in row.keys() - IDENTITY_COLUMNS:
        row[column] = known_secrets.scrub(row[column])
    # Values parsed from JSON text (chat sent as text) are checked again here.
    repairs = list(repairs or [])
    row = repair_json(row, "", repairs)
    for holder, key in json_cells(row):
        holder[key] = strict_json_text(holder[key])
    row["repairs"] = repairs[:MAX_REPAIRS_LISTED]
    check_row_size(row)
    return row

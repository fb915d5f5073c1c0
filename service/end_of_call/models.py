"""Pydantic models of the Millis payloads, in both the original and the current format.

Parsing is tolerant where Millis varies (chat as a list or as JSON text, ts as an ISO string or as
epoch seconds, any field null or absent, unknown fields kept) and strict where a wrong type means
the request is not a Millis payload at all.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from service.end_of_call.json_text import loads_bounded
from service.stored_row import in_timestamp_range

PayloadFormat = Literal["original", "current"]

# Fields that exist only in the current format; their presence marks a current payload.
CURRENT_ONLY_FIELDS = frozenset(
    {"call_id", "call_status", "function_calls", "recording", "error_message"}
)


# Longer than any call; bounds the arithmetic on durations.
MAX_DURATION_SECONDS = 10_000_000
# Credits are small amounts; the bound keeps sums finite.
MAX_CREDIT = 1e12


def _as_json_text(value: Any) -> Any:
    """Text stays text; anything structured is kept as its JSON text."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class _Tolerant(BaseModel):
    """Unknown fields are kept (Millis adds fields), never rejected."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, coerce_numbers_to_str=True)


class ChatMessage(_Tolerant):
    role: str | None = Field(None, description="user, assistant, tool, system, ...")
    content: str | None = Field(None, description="Message text.")
    tool_call_id: str | None = None
    name: str | None = Field(None, description="Tool name, on tool messages.")
    tool_calls: list[Any] | None = Field(None, description="Tool calls of an assistant message.")

    @field_validator("content", mode="before")
    @classmethod
    def _content_as_text(cls, value: Any) -> Any:
        # Some messages carry structured content (a list of parts); keep it, as JSON text.
        return _as_json_text(value)


class CostItem(_Tolerant):
    type: str | None = Field(None, description="millis, tts, stt, llm, ...")
    provider: str | None = None
    credit: float | None = Field(
        None, ge=-MAX_CREDIT, le=MAX_CREDIT, allow_inf_nan=False, description="Credit spent."
    )


class Voip(_Tolerant):
    from_number: str | None = Field(None, alias="from")
    to_number: str | None = Field(None, alias="to")
    provider: str | None = None


class Recording(_Tolerant):
    recording_url: str | None = None


class FunctionCall(_Tolerant):
    name: str | None = None
    params: Any = None


class EndOfCallPayload(_Tolerant):
    """The end-of-call webhook body. Only `session_id` is required."""

    session_id: str = Field(min_length=1, max_length=512, description="Millis session id.")
    call_id: str | None = Field(None, max_length=512)
    agent_id: str | None = Field(None, max_length=512)
    chat: Annotated[
        list[ChatMessage] | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "array", "items": {"$ref": "#/components/schemas/ChatMessage"}},
                    {"type": "string", "contentMediaType": "application/json"},
                    {"type": "null"},
                ]
            }
        ),
    ] = Field(None, description="Transcript: a list of messages, or (current format) JSON text.")
    ts: Annotated[
        datetime | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "format": "date-time"},
                    {"type": "number"},
                    {"type": "null"},
                ]
            }
        ),
    ] = Field(
        None,
        description="Call start: ISO-8601 string (original) or epoch seconds (current). A time "
        "outside BigQuery's streaming window is kept as sent in `ts_reported`; the call is then "
        "dated by its arrival.",
    )
    duration: float | None = Field(
        None, ge=0, le=MAX_DURATION_SECONDS, allow_inf_nan=False, description="Seconds."
    )
    chars_used: int | None = Field(None, ge=0, le=2**63 - 1)  # BigQuery INT64
    agent_config: dict[str, Any] | None = None
    cost_breakdown: list[CostItem] | None = None
    voip: Voip | None = None
    metadata: dict[str, Any] | None = None
    function_calls: list[FunctionCall] | None = None
    recording: Recording | None = None
    call_status: str | None = Field(None, max_length=256)
    error_message: str | None = None

    @field_validator("session_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator(
        "chat",
        "cost_breakdown",
        "function_calls",
        "voip",
        "metadata",
        "agent_config",
        mode="before",
    )
    @classmethod
    def _structure_from_json_text(cls, value: Any) -> Any:
        # The current format sends chat as JSON text; accept the same for every structured field.
        if not isinstance(value, str):
            return value
        if not value.strip():
            return None
        return loads_bounded(value)  # a JsonTextError is a ValueError: a 400 naming the field

    @field_validator("recording", mode="before")
    @classmethod
    def _recording_from_url(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"recording_url": value} if value.strip() else None
        return value

    @field_validator("ts", mode="before")
    @classmethod
    def _ts_from_epoch_seconds(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("ts must be an ISO-8601 string or epoch seconds")
        if isinstance(value, int | float):
            # Out of TIMESTAMP's range (milliseconds sent as seconds, a negative time): the call
            # is kept, dated by its arrival, and the time as sent goes to `ts_reported`.
            if not math.isfinite(value) or not 0 <= value < 253_402_300_800:  # year 10000
                return None
            return datetime.fromtimestamp(value, UTC)
        return value

    @field_validator("ts")
    @classmethod
    def _ts_in_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # Millis sends UTC; a naive time is UTC
        # An extreme offset can push the UTC instant past 0001..9999 (`0001-01-01T00:00+14:00`):
        # treated like an out-of-range epoch (see above).
        return value if in_timestamp_range(value) else None

    @field_validator("chars_used", mode="before")
    @classmethod
    def _whole_chars(cls, value: Any) -> Any:
        if isinstance(value, float) and math.isfinite(value):
            return round(value)
        return value

    @field_validator("error_message", mode="before")
    @classmethod
    def _error_as_text(cls, value: Any) -> Any:
        return _as_json_text(value)


def detect_format(raw: dict[str, Any]) -> PayloadFormat:
    """Which Millis payload format a raw body is in (stored with each row)."""
    if isinstance(raw.get("chat"), str) or isinstance(raw.get("ts"), int | float):
        return "current"
    if CURRENT_ONLY_FIELDS & raw.keys():
        return "current"
    return "original"


class PrefetchResponseCurrent(BaseModel):
    """Response shape of the current Millis format."""

    metadata: dict[str, Any] | None = Field(None, description="Merged into the session's metadata.")
    extra_prompt: str | None = Field(None, description="Appended to the agent's system prompt.")


class ErrorBody(BaseModel):
    error: str = Field(description="Stable error code, e.g. invalid_json, unauthenticated.")
    message: str = Field(description="Human-readable explanation.")


class EndOfCallAccepted(BaseModel):
    status: Literal["inserted", "dead_lettered"]
    session_id: str

"""A memory document as the prefetch serves it: under `memory` in the metadata and templates
({memory.calls}, {memory.last_call}, {memory.last_call_ago}, {memory.metadata.topic},
{memory.tools.save_note.note}). The kept entries themselves (`recent`) stay in Firestore."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

SERVED = (
    "calls",
    "first_call_at",
    "last_call_at",
    "last_session_id",
    "last_call_status",
    "last_duration_seconds",
    "last_agent_id",
    "metadata",
    "tools",
)


def served_memory(document: Mapping[str, Any] | None, now: datetime) -> dict[str, Any] | None:
    """What the agent sees of a caller's memory; None for a caller it does not remember."""
    if not document or not isinstance(document.get("calls"), int) or document["calls"] < 1:
        return None
    served = {key: document[key] for key in SERVED if key in document}
    last = _moment(document.get("last_call_at"))
    if last is not None:
        served["last_call"] = readable(last)
        served["last_call_ago"] = ago(last, now)
    return served


def readable(moment: datetime) -> str:
    """`Saturday 5 December 2026, 09:30 UTC`: a time an agent can say."""
    utc = moment.astimezone(UTC)
    return f"{utc:%A} {utc.day} {utc:%B %Y, %H:%M} UTC"


def ago(moment: datetime, now: datetime) -> str:
    """`just now`, `12 minutes ago`, `5 hours ago`, `3 days ago`."""
    seconds = max(0.0, (now - moment).total_seconds())
    if seconds < 90:
        return "just now"
    if seconds < 90 * 60:
        count, unit = round(seconds / 60), "minute"
    elif seconds < 36 * 3600:
        count, unit = round(seconds / 3600), "hour"
    else:
        count, unit = int(seconds // 86400), "day"
    return f"{count} {unit}{'' if count == 1 else 's'} ago"


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None

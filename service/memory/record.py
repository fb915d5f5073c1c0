"""One call's contribution to a caller's memory, applied exactly once in a Firestore transaction
over the memory and the session's marker (paths.py).

The marker holds a digest of what the session contributed:
the same digest again (a duplicate, a replay, a backfill) changes nothing; another digest (a
corrected re-delivery) replaces that session's entry; no marker adds the call. `last_*`, `metadata`
and `tools` are derived from the kept entries sorted by call time, so calls arriving out of order
leave the latest as last. Both documents carry `expires_at` (the Firestore TTL policy).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from service.memory.paths import MARKER_COLLECTION, marker_id, memory_path
from service.memory.settings import MemorySettings, profile_allows

MAX_VALUE_CHARS = 500
MAX_MEMORY_BYTES = 64 * 1024
_INT64 = 2**63

Result = Literal["added", "replaced", "unchanged", "not_for_this_agent"]


@dataclass(frozen=True)
class Contribution:
    """What one call adds to the memory: the entry kept in `recent`."""

    session_id: str
    call_at: datetime
    agent_id: str
    status: str | None
    duration_seconds: float | None
    metadata: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)

    def entry(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "call_at": self.call_at,
            "agent_id": self.agent_id,
            "status": self.status,
            "duration_seconds": self.duration_seconds,
            "metadata": self.metadata,
            "tools": self.tools,
        }

    @property
    def digest(self) -> str:
        entry = {**self.entry(), "call_at": self.call_at.isoformat()}
        text = json.dumps(entry, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def contribution(row: Mapping[str, Any], settings: MemorySettings) -> Contribution:
    """The contribution of a call as stored (a BigQuery row: JSON columns as text or parsed)."""
    metadata = _json(row.get("metadata")) or {}
    kept_metadata = {
        key: bounded(metadata[key])
        for key in settings.metadata_keys
        if isinstance(metadata, dict) and key in metadata
    }
    wanted = dict(settings.tool_params)
    tools: dict[str, dict[str, Any]] = {}
    for call in row.get("function_calls") or []:  # the last call of a tool wins
        name = call.get("name")
        params = _json(call.get("params"))
        if name in wanted and isinstance(params, dict):
            kept = {key: bounded(params[key]) for key in wanted[name] if key in params}
            if kept:
                tools[name] = {**tools.get(name, {}), **kept}
    duration = row.get("duration_seconds")
    return Contribution(
        session_id=str(row["session_id"]),
        call_at=call_time(row),
        agent_id=str(row.get("agent_id") or settings.agent_id),
        status=row.get("call_status"),
        duration_seconds=float(duration) if duration is not None else None,
        metadata=kept_metadata,
        tools=tools,
    )


def call_time(row: Mapping[str, Any]) -> datetime:
    """When the call started: Millis's `ts`, also when it lay outside BigQuery's streaming window
    (a backfilled call is dated by when it happened, not by when it arrived)."""
    if row.get("ts_out_of_range") and row.get("ts_reported"):
        reported = str(row["ts_reported"])
        try:
            moment = (
                datetime.fromtimestamp(float(reported), UTC)
                if reported.replace(".", "", 1).isdigit()
                else datetime.fromisoformat(reported.replace("Z", "+00:00"))
            )
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        except (ValueError, OverflowError, OSError):
            pass
    started = row["started_at"]
    moment = started if isinstance(started, datetime) else datetime.fromisoformat(started)
    return moment.astimezone(UTC)


def bounded(value: Any) -> Any:
    """A value as kept: text cut at MAX_VALUE_CHARS; maps and lists as their (cut) JSON text, since
    Firestore refuses arrays inside arrays; numbers outside int64 as text."""
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else str(value)
    if isinstance(value, str):
        return value[:MAX_VALUE_CHARS]
    return json.dumps(value, ensure_ascii=False)[:MAX_VALUE_CHARS]


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def record_call(
    client: Any,
    settings: MemorySettings,
    caller_id: str,
    call: Contribution,
    *,
    profiles_collection: str,
    timeout: float,
    retention: timedelta,
    check_first: bool = True,
) -> Result:
    """Apply the call in a transaction, retried on contention until `timeout` seconds have gone.
    Raises TimeoutError when they have, or the client's error when Firestore fails.

    `check_first` reads the session's marker before any transaction: for callers that mostly see
    calls counted already (the catch-up, a replay) a read instead of a transaction; the webhook,
    whose calls are mostly new, skips it (one round trip less)."""
    from google.api_core import exceptions

    deadline = time.monotonic() + timeout
    memory_ref = client.document(memory_path(profiles_collection, caller_id, settings.scope))
    marker_ref = memory_ref.collection(MARKER_COLLECTION).document(marker_id(call.session_id))
    profile_ref = client.collection(profiles_collection).document(caller_id)
    if check_first:
        marker = marker_ref.get(timeout=timeout)
        if marker.exists and (marker.to_dict() or {}).get("digest") == call.digest:
            return "unchanged"
    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the memory budget is spent")
        transaction = client.transaction(max_attempts=1)
        try:
            return _apply(
                transaction,
                memory_ref,
                marker_ref,
                profile_ref,
                settings,
                call,
                remaining,
                retention,
            )
        except (exceptions.Aborted, exceptions.Conflict):
            pass  # another delivery holds or changed the memory: read again
        except ValueError as exc:  # the library's "failed after max_attempts" wraps Aborted
            if not isinstance(exc.__cause__, exceptions.Aborted):
                raise
        attempt += 1
        time.sleep(min(0.2, 0.005 * 2**attempt) * random.random())  # noqa: S311 (jitter)


def _apply(
    transaction: Any,
    memory_ref: Any,
    marker_ref: Any,
    profile_ref: Any,
    settings: MemorySettings,
    call: Contribution,
    timeout: float,
    retention: timedelta,
) -> Result:
    from google.cloud import firestore

    outcome: list[Result] = []

    @firestore.transactional
    def update(transaction: Any) -> None:
        snapshots = {
            snapshot.reference.path: snapshot
            for snapshot in transaction.get_all(
                [memory_ref, marker_ref, profile_ref], timeout=timeout
            )
        }
        profile = snapshots[profile_ref.path]
        if not profile_allows(profile.to_dict() if profile.exists else None, call.agent_id):
            outcome.append("not_for_this_agent")
            return
        marker = snapshots[marker_ref.path].to_dict() if snapshots[marker_ref.path].exists else None
        if marker is not None and marker.get("digest") == call.digest:
            outcome.append("unchanged")
            return
        memory_snapshot = snapshots[memory_ref.path]
        memory = (memory_snapshot.to_dict() if memory_snapshot.exists else None) or {}
        if marker is not None and not memory:
            # Counted, then the memory was cleared (console, erase.py): it stays forgotten.
            outcome.append("unchanged")
            return
        now = datetime.now(UTC)
        counted = marker is not None
        transaction.set(memory_ref, merged(memory, call, settings.calls, counted, now + retention))
        transaction.set(
            marker_ref,
            {
                "session_id": call.session_id,
                "digest": call.digest,
                "call_at": call.call_at,
                "agent_id": call.agent_id,
                "expires_at": now + retention,
            },
        )
        outcome.append("replaced" if counted else "added")

    update(transaction)
    return outcome[0]


def merged(
    memory: Mapping[str, Any],
    call: Contribution,
    keep_calls: int,
    counted: bool,
    expires_at: datetime,
) -> dict[str, Any]:
    """The memory with `call` added (or, when `counted`, its earlier entry replaced)."""
    recent = [
        dict(entry)
        for entry in memory.get("recent", [])
        if entry.get("session_id") != call.session_id
    ]
    recent.append(call.entry())
    recent.sort(key=lambda entry: (_utc(entry["call_at"]), entry["session_id"]))
    recent = recent[-keep_calls:]
    calls = int(memory.get("calls", 0)) + (0 if counted else 1)
    first = min(
        [_utc(memory["first_call_at"])] if "first_call_at" in memory else [], default=call.call_at
    )
    document = derived(recent, calls=calls, first_call_at=min(first, call.call_at))
    document["expires_at"] = expires_at
    # Bounded as a whole: the oldest entries go first (the latest is always kept).
    while len(recent) > 1 and _size(document) > MAX_MEMORY_BYTES:
        recent = recent[1:]
        document = {
            **derived(recent, calls=calls, first_call_at=document["first_call_at"]),
            "expires_at": expires_at,
        }
    return document


def derived(recent: list[dict[str, Any]], *, calls: int, first_call_at: Any) -> dict[str, Any]:
    """The memory's summary fields from its entries (oldest first)."""
    metadata: dict[str, Any] = {}
    tools: dict[str, dict[str, Any]] = {}
    for entry in recent:  # later calls win
        metadata.update(entry.get("metadata") or {})
        for name, params in (entry.get("tools") or {}).items():
            tools[name] = {**tools.get(name, {}), **params}
    last = recent[-1] if recent else {}
    return {
        "calls": calls,
        "first_call_at": first_call_at,
        "last_call_at": last.get("call_at"),
        "last_session_id": last.get("session_id"),
        "last_call_status": last.get("status"),
        "last_duration_seconds": last.get("duration_seconds"),
        "last_agent_id": last.get("agent_id"),
        "metadata": metadata,
        "tools": tools,
        "recent": recent,
    }


def _utc(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone(UTC)


def _size(document: Mapping[str, Any]) -> int:
    return len(json.dumps(document, default=str, ensure_ascii=False).encode())

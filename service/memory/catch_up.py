"""Catch up caller memory that the end-of-call could not update (Firestore slow or down, an
instance stopped first): the BigQuery row is the record of every accepted call, so the replay job
applies the calls received since its last run again. Nothing is counted twice: each call's
update is exactly-once by its session marker (service/memory/record.py).

Progress is a checkpoint, `memory_catch_up/state.received_until`, moved forward only past calls
whose update succeeded; each run starts OVERLAP before it, so a row that became visible late is
not missed. Dead letters replayed later are applied by the replay itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from service.memory.record import contribution, record_call
from service.memory.settings import CallerId, MemorySettings, memory_settings

if TYPE_CHECKING:
    from service.config import Settings

log = logging.getLogger(__name__)

STATE_DOCUMENT = "memory_catch_up/state"
OVERLAP = timedelta(minutes=30)
FIRST_RUN = timedelta(days=1)
MAX_ROWS = 10_000  # a run's share; the next run continues from the checkpoint


@dataclass
class CatchUpReport:
    outcomes: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    received_until: datetime | None = None

    def summary(self) -> str:
        counts = ", ".join(f"{name} {count}" for name, count in sorted(self.outcomes.items()))
        return f"memory catch-up: {counts or 'nothing to do'}; failed {self.failed}"


def catch_up(
    firestore: Any,
    bigquery: Any,
    *,
    events_table: str,
    agents_collection: str,
    profiles_collection: str,
    caller_id: CallerId,
    retention: timedelta,
    now: datetime | None = None,
    timeout: float = 10.0,
) -> CatchUpReport:
    from google.cloud import bigquery as bq

    now = now or datetime.now(UTC)
    report = CatchUpReport()
    agents = _memory_agents(firestore, agents_collection)
    state = firestore.document(STATE_DOCUMENT)
    snapshot = state.get()
    since = (snapshot.to_dict() or {}).get("received_until") if snapshot.exists else None
    start = (since - OVERLAP) if since else now - FIRST_RUN
    if not agents:
        state.set({"received_until": now})
        return report
    config = bq.QueryJobConfig(
        query_parameters=[
            bq.ArrayQueryParameter("agents", "STRING", sorted(agents)),
            bq.ScalarQueryParameter("since", "TIMESTAMP", start),
        ]
    )
    # The table id comes from checked settings; the values are query parameters.
    sql = (
        f"SELECT * FROM `{events_table}` WHERE agent_id IN UNNEST(@agents) "  # noqa: S608
        f"AND received_at >= @since ORDER BY received_at LIMIT {MAX_ROWS}"
    )
    rows = list(bigquery.query(sql, job_config=config).result())
    received_until = since or start
    for row in rows:
        row = dict(row)
        agent, settings = agents[row["agent_id"]]
        outcome = _apply(
            firestore, row, agent, settings, caller_id, profiles_collection, retention, timeout
        )
        if outcome == "failed":
            report.failed += 1
            break  # the checkpoint stays before this call; the next run tries it again
        report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
        received_until = max(received_until, _utc(row["received_at"]))
    else:
        if len(rows) < MAX_ROWS:  # all seen: what arrives later is younger than OVERLAP
            received_until = max(received_until, now - OVERLAP)
    state.set({"received_until": received_until})
    report.received_until = received_until
    return report


def apply_row(
    firestore: Any,
    row: Mapping[str, Any],
    agent: Mapping[str, Any] | None,
    *,
    caller_id: CallerId,
    profiles_collection: str,
    retention: timedelta,
    timeout: float = 10.0,
) -> str:
    """One stored call's memory update (the replay of a dead letter uses it too)."""
    agent_id = str(row.get("agent_id") or "")
    settings = memory_settings(agent_id, agent)
    if settings is None:
        return "off"
    return _apply(
        firestore, row, agent, settings, caller_id, profiles_collection, retention, timeout
    )


def _apply(
    firestore: Any,
    row: Mapping[str, Any],
    agent: Mapping[str, Any] | None,
    settings: MemorySettings,
    caller_id: CallerId,
    profiles_collection: str,
    retention: timedelta,
    timeout: float,
) -> str:
    from service.memory.recorder import row_metadata

    caller = caller_id(
        agent, settings.agent_id, row.get("from_number"), row.get("to_number"), row_metadata(row)
    )
    if caller is None:
        return "no_caller"
    try:
        return record_call(
            firestore,
            settings,
            caller,
            contribution(row, settings),
            profiles_collection=profiles_collection,
            timeout=timeout,
            retention=retention,
        )
    except Exception as exc:
        log.warning("caller memory not caught up", extra={"error_type": type(exc).__name__})
        return "failed"


def _memory_agents(
    firestore: Any, agents_collection: str
) -> dict[str, tuple[dict[str, Any], MemorySettings]]:
    """Agents with memory on: {agent_id: (document, settings)} (a few documents)."""
    found = {}
    for snapshot in firestore.collection(agents_collection).stream():
        document = snapshot.to_dict() or {}
        settings = memory_settings(snapshot.id, document)
        if settings is not None:
            found[snapshot.id] = (document, settings)
    return found


def _utc(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone(UTC)


def run_catch_up(
    settings: Settings, firestore: Any, bigquery: Any, caller_id: CallerId
) -> CatchUpReport:
    """The replay job's catch-up, with the service's settings."""
    return catch_up(
        firestore,
        bigquery,
        events_table=settings.events_table_id,
        agents_collection=settings.agents_collection,
        profiles_collection=settings.profiles_collection,
        caller_id=caller_id,
        retention=timedelta(days=settings.memory_retention_days),
    )


def remember_replayed(
    settings: Settings, firestore: Any, caller_id: CallerId
) -> Callable[[Mapping[str, Any]], str]:
    """For the replay of dead letters: each row BigQuery took updates the caller's memory (its
    received_at may lie before the catch-up's checkpoint)."""
    agents: dict[str, dict[str, Any] | None] = {}

    def remember(row: Mapping[str, Any]) -> str:
        agent_id = str(row.get("agent_id") or "")
        if agent_id and agent_id not in agents:
            snapshot = firestore.collection(settings.agents_collection).document(agent_id).get()
            agents[agent_id] = snapshot.to_dict() if snapshot.exists else None
        return apply_row(
            firestore,
            row,
            agents.get(agent_id),
            caller_id=caller_id,
            profiles_collection=settings.profiles_collection,
            retention=timedelta(days=settings.memory_retention_days),
        )

    return remember

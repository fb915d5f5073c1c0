"""scripts/erase.py end to end on the emulators: BigQuery rows, profiles, dead letters."""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from erase import erase, recoverability
from google.api_core.exceptions import BadRequest

from service.config import Settings
from service.stores.dead_letters import DeadLetterStore
from tests.conftest import PROJECT, query
from tests.integration.end_of_call.test_end_of_call import post
from tests.payloads import current_payload, stored_row

CALLER = "+15551234567"
OTHER = "+15557654321"


def call(session_id: str, number: str, **overrides: Any) -> dict[str, Any]:
    voip = {"provider": "twilio", "from": number, "to": "+15550001111"}
    return current_payload(session_id, voip=voip, **overrides)


@pytest.fixture
def stores(make_client: Any, clean_firestore: Any, bigquery_client: Any, dataset: str) -> Settings:
    client = make_client(bigquery_dataset=dataset)
    post(client, call("mine-1", CALLER))
    post(client, call("mine-1", CALLER, duration=99))  # delivered twice
    post(client, call("theirs-1", OTHER))
    profiles = clean_firestore.collection("profiles")
    profiles.document(CALLER).set({"name": "Ann"})
    profiles.document("lookup:crm_id:C-1").set({"name": "Ann", "phone": CALLER})
    profiles.document(OTHER).set({"name": "Bob"})
    letters = DeadLetterStore(clean_firestore, "dead_letters")
    letters.store({"session_id": "mine-2", "from_number": CALLER}, reason="test", error="x")
    letters.store({"session_id": "theirs-2", "from_number": OTHER}, reason="test", error="x")
    return Settings(google_cloud_project=PROJECT, bigquery_dataset=dataset)


def sessions(bigquery_client: Any, settings: Settings) -> list[str]:
    rows = query(bigquery_client, f"SELECT session_id FROM `{settings.events_table_id}`")
    return sorted(row["session_id"] for row in rows)


def test_erase_by_phone_everywhere_then_nothing_left(
    stores: Settings, clean_firestore: Any, bigquery_client: Any
) -> None:
    dry = erase(stores, clean_firestore, bigquery_client, phone="(555) 123-4567", dry_run=True)
    expected = {
        "bigquery call_events rows": 2,
        "firestore profiles": 2,
        "firestore caller memories": 0,  # memory is off for the agent (tests/test_memory.py)
        "firestore memory session markers": 0,
        "firestore dead letters": 1,
    }
    assert dry.counts == expected
    assert sessions(bigquery_client, stores) == ["mine-1", "mine-1", "theirs-1"]  # untouched

    receipt = erase(stores, clean_firestore, bigquery_client, phone="(555) 123-4567")
    assert receipt.counts == expected and not receipt.pending
    assert CALLER not in receipt.render() and "555" not in receipt.render()
    assert sessions(bigquery_client, stores) == ["theirs-1"]
    remaining = {doc.id for doc in clean_firestore.collection("profiles").stream()}
    assert remaining == {OTHER}
    letters = DeadLetterStore(clean_firestore, "dead_letters")
    assert [letter.session_id for letter in letters.list()] == ["theirs-2"]

    again = erase(stores, clean_firestore, bigquery_client, phone=CALLER)  # idempotent
    assert set(again.counts.values()) == {0}


def test_erase_one_session(stores: Settings, clean_firestore: Any, bigquery_client: Any) -> None:
    receipt = erase(stores, clean_firestore, bigquery_client, session_id="mine-2")
    assert receipt.counts == {
        "bigquery call_events rows": 0,
        "firestore memory session markers": 0,
        "firestore dead letters": 1,
    }
    receipt = erase(stores, clean_firestore, bigquery_client, session_id="mine-1")
    assert receipt.counts["bigquery call_events rows"] == 2
    assert sessions(bigquery_client, stores) == ["theirs-1"]


class StreamingBufferBigQuery:
    """Fault injection: real BigQuery refuses DML on rows still in the streaming buffer."""

    def query(self, *args: Any, **kwargs: Any) -> Any:
        raise BadRequest(
            "UPDATE or DELETE statement over table x would affect rows in the streaming buffer, "
            "which is not supported"
        )

    def get_dataset(self, *args: Any, **kwargs: Any) -> Any:
        return types.SimpleNamespace(max_time_travel_hours=168)


def test_rows_in_the_streaming_buffer_mean_run_again_later(
    stores: Settings, clean_firestore: Any
) -> None:
    receipt = erase(stores, clean_firestore, StreamingBufferBigQuery(), phone=CALLER)  # type: ignore[arg-type]
    assert receipt.pending and receipt.counts["firestore profiles"] == 2  # the rest is erased
    assert "run again after" in receipt.render()


class SteadyTrafficBigQuery:
    """The emulator's client, with insertAll's streaming buffer as under steady traffic: other
    callers' rows are always in it, so a DELETE that does not leave out the recent rows by time
    is refused, whoever it names (fault injection; the emulator has no streaming buffer)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.refused: list[str] = []

    def query(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql.startswith("DELETE") and "received_at < @bound" not in sql:
            self.refused.append(sql)
            raise BadRequest(
                "UPDATE or DELETE statement over table x would affect rows in the streaming "
                "buffer, which is not supported"
            )
        return self.client.query(sql, *args, **kwargs)

    def get_dataset(self, *args: Any, **kwargs: Any) -> Any:
        return self.client.get_dataset(*args, **kwargs)


def insert_stored(
    bigquery_client: Any, settings: Settings, session_id: str, number: str, received_at: datetime
) -> None:
    row = stored_row(session_id)
    row.update(from_number=number, received_at=received_at.isoformat())
    errors = bigquery_client.insert_rows_json(settings.events_table_id, [row], row_ids=[session_id])
    assert errors == []


def test_steady_traffic_never_keeps_an_erasure_pending(
    stores: Settings, clean_firestore: Any, bigquery_client: Any
) -> None:
    now = datetime.now(UTC)
    for index in range(3):  # the caller's calls of two hours ago, out of the buffer
        insert_stored(bigquery_client, stores, f"old-{index}", CALLER, now - timedelta(hours=2))
    steady = SteadyTrafficBigQuery(bigquery_client)
    # the stores fixture's rows were stored just now: only this caller's count
    receipt = erase(stores, clean_firestore, steady, phone=OTHER, now=now + timedelta(hours=1))
    assert receipt.counts["bigquery call_events rows"] == 1 and not receipt.pending
    receipt = erase(stores, clean_firestore, steady, phone=CALLER, now=now + timedelta(hours=1))
    assert steady.refused  # the plain DELETE met the buffer
    assert receipt.counts["bigquery call_events rows"] == 5 and not receipt.pending
    assert sessions(bigquery_client, stores) == []


def test_only_the_callers_own_recent_rows_ask_for_another_run(
    stores: Settings, clean_firestore: Any, bigquery_client: Any
) -> None:
    now = datetime.now(UTC)
    insert_stored(bigquery_client, stores, "old-1", CALLER, now - timedelta(hours=2))
    receipt = erase(
        stores, clean_firestore, SteadyTrafficBigQuery(bigquery_client), phone=CALLER, now=now
    )
    # the old row is gone; the two rows the fixture stored just now wait for the buffer
    assert receipt.counts["bigquery call_events rows"] == 1
    expected = (now + timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M")
    assert receipt.pending == [
        f"2 BigQuery row(s) of this caller from the last 30 minutes (tabledata.insertAll): "
        f"run again after {expected} UTC"
    ]
    assert sessions(bigquery_client, stores) == ["mine-1", "mine-1", "theirs-1"]


def test_the_receipt_says_until_when_each_store_can_bring_the_data_back(
    stores: Settings, clean_firestore: Any, bigquery_client: Any
) -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    receipt = erase(
        stores, clean_firestore, bigquery_client, session_id="mine-1", now=now, pitr=True
    )
    text = receipt.render()
    # the emulator's dataset reports BigQuery's default window, 168 hours
    assert "BigQuery: 2026-12-08 12:00 by time travel (168 h), 2026-12-15 12:00 by Google" in text
    assert "Firestore: 2026-12-08 12:00 (point-in-time recovery, 7 days)" in text
    assert recoverability(now, 48, False) == [
        "BigQuery: 2026-12-03 12:00 by time travel (48 h), 2026-12-10 12:00 by Google through "
        "fail-safe (7 more days)",
        "Firestore: 2026-12-01 13:00 (no point-in-time recovery: 1 hour of versions)",
    ]
    assert "setting unknown" in recoverability(now, 48, None)[1]
    assert not erase(
        stores, clean_firestore, bigquery_client, phone=CALLER, dry_run=True
    ).recoverable


def run_tool(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    """The command as a user runs it: exit code, standard output, standard error."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    import toolkit

    from erase import main

    from service.config import get_settings

    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv("BIGQUERY_DATASET", settings.bigquery_dataset)
    get_settings.cache_clear()
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exited:
            toolkit.run("erase", lambda: main(list(args)))
    finally:
        get_settings.cache_clear()
    return int(exited.value.code or 0), out.getvalue(), err.getvalue()


def test_a_value_that_is_not_a_phone_number_is_refused(
    stores: Settings, monkeypatch: pytest.MonkeyPatch, bigquery_client: Any
) -> None:
    code, out, err = run_tool(stores, monkeypatch, "--phone", "garbage")
    assert code == 2 and "--phone: not a phone number" in err and out == ""
    assert sessions(bigquery_client, stores) == ["mine-1", "mine-1", "theirs-1"]


def test_an_agents_own_number_needs_force_and_the_dry_run_says_why(
    stores: Settings,
    monkeypatch: pytest.MonkeyPatch,
    clean_firestore: Any,
    bigquery_client: Any,
) -> None:
    # The business line is the `to` of every call: erasing it would erase every call.
    line = "+15550001111"
    clean_firestore.collection("agents").document("agent-1").set({"phone_numbers": [line]})
    code, out, err = run_tool(stores, monkeypatch, "--phone", line)
    assert code == 2 and "one of agent agent-1's own phone_numbers" in err and line not in err
    assert sessions(bigquery_client, stores) == ["mine-1", "mine-1", "theirs-1"]

    code, out, _ = run_tool(stores, monkeypatch, "--phone", line, "--dry-run")
    assert code == 0
    assert "bigquery call_events rows: 3" in out
    assert "calls (session ids): mine-1, theirs-1" in out
    assert "without --force a real run would refuse" in out and "nothing changed" in out
    assert sessions(bigquery_client, stores) == ["mine-1", "mine-1", "theirs-1"]

    code, out, _ = run_tool(stores, monkeypatch, "--phone", line, "--force")
    assert code == 0 and "erased:" in out
    assert sessions(bigquery_client, stores) == []


def test_a_number_in_more_calls_than_one_person_makes_needs_force(
    stores: Settings, monkeypatch: pytest.MonkeyPatch, bigquery_client: Any
) -> None:
    code, _, err = run_tool(stores, monkeypatch, "--phone", CALLER, "--max-calls", "0")
    assert code == 2 and "in 1 calls with 1 different other numbers" in err
    assert CALLER not in err
    code, out, _ = run_tool(stores, monkeypatch, "--phone", CALLER)  # 1 call: a person
    assert code == 0 and "bigquery call_events rows: 2" in out
    assert sessions(bigquery_client, stores) == ["theirs-1"]


def test_a_line_that_talks_to_many_numbers_needs_force(
    stores: Settings,
    monkeypatch: pytest.MonkeyPatch,
    make_client: Any,
    bigquery_client: Any,
) -> None:
    # Not listed in any agent's phone_numbers, few calls, but eleven different callers: a line.
    client = make_client(bigquery_dataset=stores.bigquery_dataset)
    for n in range(9):
        post(client, call(f"caller-{n}", f"+1555010{n:04d}"))
    code, _, err = run_tool(stores, monkeypatch, "--phone", "+15550001111")
    assert code == 2 and "with 11 different other numbers" in err
    assert len(sessions(bigquery_client, stores)) == 12  # nothing erased

"""scripts/erase.py end to end on the emulators: BigQuery rows, profiles, dead letters."""

from __future__ import annotations

from typing import Any

import pytest
from erase import erase
from google.api_core.exceptions import BadRequest

from service.config import Settings
from service.stores.dead_letters import DeadLetterStore
from tests.conftest import PROJECT, query
from tests.integration.end_of_call.test_end_of_call import post
from tests.payloads import current_payload

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


def test_rows_in_the_streaming_buffer_mean_run_again_later(
    stores: Settings, clean_firestore: Any
) -> None:
    receipt = erase(stores, clean_firestore, StreamingBufferBigQuery(), phone=CALLER)  # type: ignore[arg-type]
    assert receipt.pending and receipt.counts["firestore profiles"] == 2  # the rest is erased
    assert "run again" in receipt.render()

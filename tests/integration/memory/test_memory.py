"""Caller memory through both webhooks, on the Firestore and BigQuery emulators."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from service.jobs.replay import caller_identity
from service.memory.catch_up import catch_up
from tests.conftest import PROJECT
from tests.payloads import current_payload

AGENT = "agent-ava"
CALLER = "+15551234567"
AGENT_NUMBER = "+15550001111"
MEMORY = {
    "enabled": True,
    "metadata_keys": ["campaign", "topic"],
    "tool_params": {"book_appointment": ["date"]},
    "calls": 3,
}


def turn_memory_on(firestore: Any, agent_id: str = AGENT, **settings: Any) -> None:
    firestore.collection("agents").document(agent_id).set(
        {
            "phone_numbers": [AGENT_NUMBER],
            "caller_numbers": "phone",
            "memory": {**MEMORY, **settings},
        }
    )


def end_of_call(client: Any, session_id: str, **overrides: Any) -> Any:
    payload = current_payload(session_id, **overrides)
    response = client.post(
        "/end-of-call", data=json.dumps(payload), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.get_json()
    return response


def prefetch(client: Any, agent_id: str = AGENT, caller: str = CALLER, **params: str) -> Any:
    query = {"agent_id": agent_id, "session_id": "next", "from": caller, "to": AGENT_NUMBER}
    response = client.get("/prefetch?" + urlencode({**query, **params}))
    assert response.status_code == 200
    return response.get_json()


def memory_document(firestore: Any, scope: str = f"agent:{AGENT}", caller: str = CALLER) -> Any:
    snapshot = firestore.document(f"profiles/{caller}/memory/{scope}").get()
    return snapshot.to_dict() if snapshot.exists else None


def at(day: int, hour: int = 12) -> float:
    return datetime(2026, 12, day, hour, tzinfo=UTC).timestamp()


def test_second_prefetch_shows_the_first_call(
    make_client: Any, clean_firestore: Any, dataset: str
) -> None:
    turn_memory_on(clean_firestore)
    clean_firestore.collection("agents").document(AGENT).update(
        {
            "extra_prompt": "Calls so far: {memory.calls}. Last: {memory.last_call}, "
            "about {memory.metadata.topic}, booked {memory.tools.book_appointment.date}."
        }
    )
    client = make_client(bigquery_dataset=dataset)
    first = prefetch(client)
    assert "memory" not in first.get("metadata", {})  # a caller never heard of: nothing

    now = time.time()
    end_of_call(client, "call-1", ts=now - 300, metadata={"topic": "a cleaning"})
    second = prefetch(client)
    memory = second["metadata"]["memory"]
    assert memory["calls"] == 1
    assert memory["last_session_id"] == "call-1"
    assert memory["last_call_status"] == "user-ended"
    assert memory["last_duration_seconds"] == 95.4
    assert memory["metadata"] == {"topic": "a cleaning"}
    assert memory["tools"] == {"book_appointment": {"date": "2026-12-01"}}
    assert memory["last_call_ago"] == "5 minutes ago"
    assert second["extra_prompt"] == (
        f"Calls so far: 1. Last: {memory['last_call']}, about a cleaning, booked 2026-12-01."
    )
    assert memory["last_call"].endswith("UTC") and "2026" in memory["last_call"]


def test_memory_off_by_default_and_for_other_agents(
    make_client: Any, clean_firestore: Any, dataset: str
) -> None:
    clean_firestore.collection("agents").document(AGENT).set(
        {"phone_numbers": [AGENT_NUMBER], "caller_numbers": "phone"}
    )
    client = make_client(bigquery_dataset=dataset)
    end_of_call(client, "call-off")
    assert memory_document(clean_firestore) is None

    turn_memory_on(clean_firestore)
    turn_memory_on(clean_firestore, "agent-other")
    client = make_client(bigquery_dataset=dataset)
    end_of_call(client, "call-on")
    assert prefetch(client)["metadata"]["memory"]["calls"] == 1
    # Another agent with memory on has its own: it gets nothing of this one's.
    assert "memory" not in prefetch(client, "agent-other").get("metadata", {})
    # Unknown callers get nothing.
    assert "memory" not in prefetch(client, caller="+15557654321").get("metadata", {})


def test_a_group_shares_memory_and_a_profile_restriction_applies(
    make_client: Any, clean_firestore: Any, dataset: str
) -> None:
    turn_memory_on(clean_firestore, group="front-desk")
    turn_memory_on(clean_firestore, "agent-night", group="front-desk")
    client = make_client(bigquery_dataset=dataset)
    end_of_call(client, "call-day")
    end_of_call(client, "call-night", agent_id="agent-night", ts=time.time())
    memory = prefetch(client, "agent-night")["metadata"]["memory"]
    assert (memory["calls"], memory["last_agent_id"]) == (2, "agent-night")
    assert memory_document(clean_firestore, "group:front-desk")["calls"] == 2

    clean_firestore.collection("profiles").document(CALLER).set({"agents": [AGENT]})
    client = make_client(bigquery_dataset=dataset)
    assert prefetch(client)["metadata"]["memory"]["calls"] == 2
    assert "memory" not in prefetch(client, "agent-night").get("metadata", {})
    end_of_call(client, "call-night-2", agent_id="agent-night", ts=time.time())
    assert memory_document(clean_firestore, "group:front-desk")["calls"] == 2


def test_duplicate_deliveries_count_once(
    make_client: Any, clean_firestore: Any, dataset: str
) -> None:
    turn_memory_on(clean_firestore)
    client = make_client(bigquery_dataset=dataset)
    for _ in range(3):
        assert end_of_call(client, "call-dup").get_json()["status"] == "inserted"
    memory = memory_document(clean_firestore)
    assert memory["calls"] == 1 and len(memory["recent"]) == 1


def test_concurrent_deliveries_of_one_session_count_once_and_of_many_all_count(
    make_client: Any, clean_firestore: Any, dataset: str
) -> None:
    turn_memory_on(clean_firestore, calls=20)
    client = make_client(bigquery_dataset=dataset, memory_timeout_seconds=10)
    barrier = threading.Barrier(8)

    def deliver(session_id: str, offset: int) -> None:
        local = client.application.test_client()
        barrier.wait()
        end_of_call(local, session_id, ts=at(1) + offset)

    for sessions in (["same"] * 8, [f"many-{i}" for i in range(8)]):
        threads = [threading.Thread(target=deliver, args=(s, i)) for i, s in enumerate(sessions)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    memory = memory_document(clean_firestore)
    assert memory["calls"] == 1 + 8
    assert sorted(entry["session_id"] for entry in memory["recent"]) == sorted(
        ["same", *[f"many-{i}" for i in range(8)]]
    )


def test_a_corrected_redelivery_replaces_that_sessions_contribution(
    make_client: Any, clean_firestore: Any, dataset: str
) -> None:
    turn_memory_on(clean_firestore)
    client = make_client(bigquery_dataset=dataset)
    end_of_call(client, "call-1", ts=at(1), metadata={"topic": "billing"})
    end_of_call(client, "call-1", ts=at(1), metadata={"topic": "a refund"}, duration=120)
    memory = memory_document(clean_firestore)
    assert memory["calls"] == 1
    assert memory["metadata"] == {"topic": "a refund"}
    assert memory["last_duration_seconds"] == 120
    assert [entry["session_id"] for entry in memory["recent"]] == ["call-1"]


def test_calls_out_of_order_leave_the_latest_as_last(
    make_client: Any, clean_firestore: Any, dataset: str
) -> None:
    turn_memory_on(clean_firestore, calls=2)
    client = make_client(bigquery_dataset=dataset)
    end_of_call(client, "call-3", ts=at(3), metadata={"topic": "third"})
    end_of_call(client, "call-1", ts=at(1), metadata={"topic": "first", "campaign": "c1"})
    end_of_call(client, "call-2", ts=at(2), metadata={"topic": "second"})
    memory = memory_document(clean_firestore)
    assert memory["calls"] == 3
    assert memory["last_session_id"] == "call-3"
    assert memory["last_call_at"] == datetime(2026, 12, 3, 12, tzinfo=UTC)
    assert memory["first_call_at"] == datetime(2026, 12, 1, 12, tzinfo=UTC)
    # Two calls kept (the oldest goes first, with what only it said); the latest value wins.
    assert [entry["session_id"] for entry in memory["recent"]] == ["call-2", "call-3"]
    assert memory["metadata"] == {"topic": "third"}


def test_values_and_the_whole_memory_are_bounded(
    make_client: Any, clean_firestore: Any, dataset: str
) -> None:
    keys = [f"k{n}" for n in range(19)]
    turn_memory_on(clean_firestore, calls=20, metadata_keys=[*keys, "nested"])
    client = make_client(bigquery_dataset=dataset)
    for day in range(1, 21):
        metadata = {key: f"{day}" * 5000 for key in keys} | {"nested": [[1, 2], [3]]}
        end_of_call(client, f"call-{day}", ts=at(day), metadata=metadata)
    memory = memory_document(clean_firestore)
    assert memory["calls"] == 20
    assert memory["metadata"]["k0"] == "20" * 250  # each value: 500 characters at most
    assert memory["metadata"]["nested"] == "[[1, 2], [3]]"  # Firestore refuses nested arrays
    assert len(json.dumps(memory, default=str)) <= 64 * 1024
    # The whole memory: the oldest calls went first, the latest is kept.
    assert 1 < len(memory["recent"]) < 20 and memory["recent"][-1]["session_id"] == "call-20"
    assert memory["last_session_id"] == "call-20"


def test_the_transaction_alone_counts_concurrent_updates_exactly_once(
    clean_firestore: Any,
) -> None:
    """As from separate instances (no in-process turn-taking): the transaction is the guarantee."""
    from service.memory.record import Contribution, record_call
    from service.memory.settings import MemorySettings

    settings = MemorySettings(AGENT, calls=20)
    outcomes: list[str] = []

    def update(session_id: str) -> None:
        call = Contribution(session_id, datetime(2026, 12, 1, tzinfo=UTC), AGENT, "ended", 1.0)
        outcomes.append(
            record_call(
                clean_firestore,
                settings,
                CALLER,
                call,
                profiles_collection="profiles",
                timeout=60,
                retention=timedelta(days=1),
            )
        )

    for sessions in (["same"] * 6, [f"many-{i}" for i in range(6)]):
        threads = [threading.Thread(target=update, args=(s,)) for s in sessions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(outcomes) == ["added"] * 7 + ["unchanged"] * 5
    assert memory_document(clean_firestore)["calls"] == 7


class BrokenFirestore:
    """Fault injection: every memory update fails as if Firestore were down, or hangs."""

    def __init__(self, hang_seconds: float = 0.0) -> None:
        self.hang_seconds = hang_seconds

    def document(self, path: str) -> Any:
        from google.api_core import exceptions

        time.sleep(self.hang_seconds)
        raise exceptions.ServiceUnavailable("firestore is down")


@pytest.mark.parametrize("hang_seconds", [0.0, 5.0])
def test_a_memory_failure_changes_neither_the_answer_nor_its_time_and_is_caught_up(
    make_client: Any, clean_firestore: Any, bigquery_client: Any, dataset: str, hang_seconds: float
) -> None:
    turn_memory_on(clean_firestore)
    broken = BrokenFirestore(hang_seconds)
    client = make_client(bigquery_dataset=dataset, firestore=broken, memory_timeout_seconds=0.5)
    started = time.monotonic()
    response = end_of_call(client, "call-missed", ts=time.time())
    assert time.monotonic() - started < 3.0
    assert response.get_json() == {"status": "inserted", "session_id": "call-missed"}
    assert memory_document(clean_firestore) is None

    # Firestore is back: the replay job's catch-up applies the call from its BigQuery row, once.
    def run() -> Any:
        return catch_up(
            clean_firestore,
            bigquery_client,
            events_table=f"{PROJECT}.{dataset}.call_events",
            agents_collection="agents",
            profiles_collection="profiles",
            caller_id=client.handler.prefetch.prefetch.caller_id,
            retention=timedelta(days=30),
        )

    assert run().outcomes == {"added": 1}
    assert run().outcomes == {"unchanged": 1}  # the overlap re-reads it: counted once
    memory = memory_document(clean_firestore)
    assert (memory["calls"], memory["last_session_id"]) == (1, "call-missed")
    assert prefetch(make_client(bigquery_dataset=dataset))["metadata"]["memory"]["calls"] == 1


def test_erase_removes_the_memory_and_the_session_markers(
    make_client: Any, clean_firestore: Any, bigquery_client: Any, dataset: str
) -> None:
    from erase import erase

    from service.config import Settings

    turn_memory_on(clean_firestore)
    turn_memory_on(clean_firestore, "agent-night", group="night")
    client = make_client(bigquery_dataset=dataset)
    for session_id, day in (("call-1", 1), ("call-2", 2)):
        end_of_call(client, session_id, ts=at(day))
    end_of_call(client, "call-3", ts=at(3), agent_id="agent-night")
    settings = Settings(google_cloud_project=PROJECT, bigquery_dataset=dataset)

    # One session: out of the memory that counted it, marker included.
    receipt = erase(settings, clean_firestore, bigquery_client, session_id="call-2")
    assert receipt.counts["firestore memory session markers"] == 1
    memory = memory_document(clean_firestore)
    assert (memory["calls"], memory["last_session_id"]) == (1, "call-1")
    end_of_call(client, "call-1", ts=at(1))  # still counted once
    assert memory_document(clean_firestore)["calls"] == 1

    # The caller: every agent's memory, and every marker.
    receipt = erase(settings, clean_firestore, bigquery_client, phone=CALLER)
    assert receipt.counts["firestore caller memories"] == 2
    assert receipt.counts["firestore memory session markers"] == 2
    assert memory_document(clean_firestore) is None
    assert memory_document(clean_firestore, "group:night") is None
    assert not list(clean_firestore.collection_group("memory_sessions").stream())
    assert "memory" not in prefetch(make_client(bigquery_dataset=dataset)).get("metadata", {})
    again = erase(settings, clean_firestore, bigquery_client, phone=CALLER)
    assert again.counts["firestore caller memories"] == 0


def test_profiles_show_serves_the_memory_as_the_webhook_and_reports_bad_settings(
    make_client: Any, clean_firestore: Any, dataset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from profiles import show_answer

    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    turn_memory_on(clean_firestore)
    client = make_client(bigquery_dataset=dataset)
    end_of_call(client, "call-1", ts=at(1))
    shown = show_answer(clean_firestore, AGENT, CALLER, AGENT_NUMBER, {})
    served = prefetch(client)
    del shown["answer"]["metadata"]["memory"]["last_call_ago"]  # a moment later
    del served["metadata"]["memory"]["last_call_ago"]
    assert (shown["answer"], shown["profile_found"]) == (served, False)
    assert shown["answer"]["metadata"]["memory"]["calls"] == 1

    bad = {"enabled": "yes", "calls": 0, "tool_params": ["save_note"], "group": "a/b", "x": 1}
    clean_firestore.collection("agents").document(AGENT).update({"memory": bad})
    shown = show_answer(clean_firestore, AGENT, CALLER, AGENT_NUMBER, {})
    assert "memory" not in shown["answer"].get("metadata", {})  # wrong types: memory off
    assert shown["problems"] == {
        f"agents/{AGENT}": [
            "memory.x is not a memory setting",
            "memory.enabled must be true or false (a boolean)",
            "memory.tool_params must map tools to lists of parameter names (20 at most)",
            "memory.calls must be a whole number from 1 to 20",
            "memory.group must be a name (letters, digits, _ and -)",
        ]
    }
    end_of_call(make_client(bigquery_dataset=dataset), "call-2", ts=at(2))
    assert memory_document(clean_firestore)["calls"] == 1  # nor written


def stored(session_id: str, source: str, **overrides: Any) -> dict[str, Any]:
    """A call as the service stores it (a dead letter's row, a backfilled row)."""
    from service.end_of_call.normalise import normalise_call, parse_payload
    from service.end_of_call.redaction import Redactor

    raw = current_payload(session_id, **overrides)
    return normalise_call(
        raw,
        parse_payload(raw),
        received_at=datetime.now(UTC),
        source=source,  # type: ignore[arg-type]
        redactor=Redactor(["token"]),
        store_agent_config=False,
    )


def test_a_replayed_dead_letter_counts_once(
    make_client: Any, clean_firestore: Any, sink_for: Any, dataset: str
) -> None:
    from service.config import Settings
    from service.memory.catch_up import remember_replayed
    from service.stores.dead_letters import DeadLetterStore, replay

    turn_memory_on(clean_firestore)
    settings = Settings(google_cloud_project=PROJECT, bigquery_dataset=dataset)
    letters = DeadLetterStore(clean_firestore, "dead_letters")
    remember = remember_replayed(
        settings, clean_firestore, caller_identity(settings, clean_firestore)
    )
    # A call kept as a dead letter whose memory was never updated, and one whose memory was
    # (through the webhook, answered "dead_lettered").
    letters.store(stored("call-old", "webhook", ts=at(1)), reason="insert_failed", error="x")
    end_of_call(make_client(bigquery_dataset=dataset), "call-new", ts=at(2))
    letters.store(stored("call-new", "webhook", ts=at(2)), reason="insert_failed", error="x")

    report = replay(letters, sink_for(dataset), after_insert=remember)
    assert len(report.replayed) == 2
    memory = memory_document(clean_firestore)
    assert memory["calls"] == 2  # the old one added, the new one not again
    assert (memory["first_call_at"], memory["last_session_id"]) == (
        datetime(2026, 12, 1, 12, tzinfo=UTC),
        "call-new",
    )


def test_a_backfill_of_delivered_calls_changes_nothing(
    make_client: Any,
    clean_firestore: Any,
    bigquery_client: Any,
    sink_for: Any,
    dataset: str,
) -> None:
    from service.config import Settings
    from service.memory.catch_up import run_catch_up
    from service.stored_row import insert_id

    turn_memory_on(clean_firestore)
    end_of_call(make_client(bigquery_dataset=dataset), "call-1", ts=at(1))
    before = memory_document(clean_firestore)
    # Backfilled from the Millis API and received now: the delivered call again, and an older
    # call that never reached the webhook. The catch-up reads them all from BigQuery.
    old = time.time() - 40 * 86400
    rows = [stored("call-1", "backfill", ts=at(1)), stored("call-0", "backfill", ts=old)]
    assert sink_for(dataset).insert(rows, [insert_id(row) for row in rows]) == []
    settings = Settings(google_cloud_project=PROJECT, bigquery_dataset=dataset)
    caller_id = caller_identity(settings, clean_firestore)
    report = run_catch_up(settings, clean_firestore, bigquery_client, caller_id)
    assert report.outcomes == {"unchanged": 2, "added": 1}  # webhook row, backfill row; call-0
    memory = memory_document(clean_firestore)
    assert memory["calls"] == 2
    assert memory["last_session_id"] == "call-1" == before["last_session_id"]
    assert memory["first_call_at"].timestamp() == pytest.approx(old, abs=1)


class CountingReader:
    """The service's own REST reader, counting its round trips and what each asked for."""

    def __init__(self) -> None:
        from service.prefetch.firestore_rest import RestDocumentReader

        self.real = RestDocumentReader(PROJECT, "(default)")
        self.reads: list[list[tuple[str, str]]] = []

    def get_documents(self, paths: Any, timeout: float) -> Any:
        self.reads.append(list(paths))
        return self.real.get_documents(paths, timeout)


def test_the_memory_shares_the_prefetchs_one_round_trip_and_is_never_served_stale_by_the_cache(
    make_client: Any, clean_firestore: Any, dataset: str
) -> None:
    from service.prefetch.profiles import DocumentCache, ProfileStore

    turn_memory_on(clean_firestore)
    clean_firestore.collection("profiles").document(CALLER).set({"name": "Ana"})
    reader = CountingReader()
    store = ProfileStore(
        reader,
        profiles_collection="profiles",
        agents_collection="agents",
        cache=DocumentCache(fresh_seconds=30, stale_seconds=600, max_entries=100),
    )
    client = make_client(bigquery_dataset=dataset, profile_store=store)
    prefetch(client)  # the agent's first call on this instance: its settings are learnt
    end_of_call(client, "call-1", ts=at(1))
    reader.reads.clear()
    answer = prefetch(client)
    assert answer["metadata"]["name"] == "Ana" and answer["metadata"]["memory"]["calls"] == 1
    # One round trip: the agent and the profile come from the cache, the memory is read fresh.
    assert reader.reads == [[("profiles", f"{CALLER}/memory/agent:{AGENT}")]]
    end_of_call(client, "call-2", ts=at(2))
    assert prefetch(client)["metadata"]["memory"]["calls"] == 2  # at once, not after a TTL


def test_a_web_call_is_remembered_by_the_lookup_key_and_otherwise_not_at_all(
    make_client: Any, clean_firestore: Any, dataset: str
) -> None:
    clean_firestore.collection("agents").document(AGENT).set(
        {"lookup_key": "crm_id", "memory": MEMORY}
    )
    client = make_client(bigquery_dataset=dataset)
    web = {"voip": None, "metadata": {"crm_id": "C-1001", "topic": "pricing"}}
    end_of_call(client, "web-1", ts=at(1), **web)
    assert memory_document(clean_firestore, caller="lookup:crm_id:C-1001")["calls"] == 1
    query = {"agent_id": AGENT, "session_id": "next", "crm_id": "C-1001"}
    answer = client.get("/prefetch?" + urlencode(query)).get_json()
    assert answer["metadata"]["memory"]["metadata"] == {"topic": "pricing"}
    # Nothing identifies this one: nothing is remembered, and nobody's memory is touched.
    response = end_of_call(client, "web-2", ts=at(2), voip=None, metadata={"topic": "x"})
    assert response.get_json()["status"] == "inserted"
    assert [d.id for d in clean_firestore.collection_group("memory").stream()] == [f"agent:{AGENT}"]


def test_numbers_identify_the_caller_for_memory_only_where_the_agent_says_so(
    make_client: Any, clean_firestore: Any, dataset: str
) -> None:
    for mode in ("off", "signed"):  # signed: the call's metadata carries no from_sig
        turn_memory_on(clean_firestore)
        clean_firestore.collection("agents").document(AGENT).update({"caller_numbers": mode})
        client = make_client(bigquery_dataset=dataset)
        assert end_of_call(client, f"call-{mode}").get_json()["status"] == "inserted"
        assert memory_document(clean_firestore) is None
        assert "memory" not in prefetch(client).get("metadata", {})
    turn_memory_on(clean_firestore)  # phone
    client = make_client(bigquery_dataset=dataset)
    end_of_call(client, "call-phone")
    assert memory_document(clean_firestore)["calls"] == 1

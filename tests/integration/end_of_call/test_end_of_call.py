"""End-of-call through HTTP into the BigQuery emulator, with Firestore dead letters."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from service.stores.bigquery import make_client as make_bigquery_client
from service.stores.dead_letters import DeadLetterStore, replay
from tests.conftest import PROJECT, WRITE_APIS, query
from tests.payloads import CHAT, SECRETS, current_payload, original_payload, stored_row


def post(client: Any, body: Any, **headers: str) -> Any:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(
        "/end-of-call", data=data, headers={"Content-Type": "application/json", **headers}
    )


def rows(bigquery_client: Any, dataset: str, view: str = "call_events") -> list[dict[str, Any]]:
    return query(
        bigquery_client, f"SELECT * FROM `{PROJECT}.{dataset}.{view}` ORDER BY received_at"
    )


@pytest.mark.parametrize("write_api", WRITE_APIS)
def test_original_format_lands_in_bigquery(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    response = post(make_client(bigquery_dataset=dataset), original_payload("orig-1"))
    assert (response.status_code, response.get_json()) == (
        200,
        {"status": "inserted", "session_id": "orig-1"},
    )
    [row] = rows(bigquery_client, dataset)
    assert row["session_id"] == "orig-1" and row["payload_format"] == "original"
    assert row["started_at"].isoformat() == "2024-08-06T12:00:00+00:00"
    assert row["duration_seconds"] == 300 and row["chars_used"] == 500
    assert [(c["type"], c["provider"], c["credit"]) for c in row["cost_breakdown"]] == [
        ("stt", "elevenlabs", 123.0),
        ("llm", "openai", 12.0),
    ]
    assert row["total_credit"] == 135.0
    assert row["metadata"] == {"name": "John"}
    assert row["chat"][0]["content"] == "Hello"


@pytest.mark.parametrize("write_api", WRITE_APIS)
def test_current_format_lands_with_transcript_tools_and_extras(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    post(make_client(bigquery_dataset=dataset), current_payload("cur-1"))
    [row] = rows(bigquery_client, dataset)
    assert row["payload_format"] == "current" and row["call_status"] == "user-ended"
    assert [m["role"] for m in row["chat"]] == [m["role"] for m in CHAT]
    assert row["chat"][3]["tool_call_id"] == "call_1"
    assert row["function_calls"][0]["name"] == "book_appointment"
    assert row["voip_provider"] == "twilio" and row["call_id"] == "call-42"
    assert abs(row["started_at"].timestamp() - 1729840680.886249) < 0.001
    assert row["raw_payload"]["sentiment"] == "positive"
    assert row["recording_url"].endswith(".wav")


@pytest.mark.parametrize("write_api", WRITE_APIS)
def test_secrets_never_reach_bigquery(make_client: Any, bigquery_client: Any, dataset: str) -> None:
    post(make_client(bigquery_dataset=dataset), current_payload("sec-1"))
    stored = json.dumps(rows(bigquery_client, dataset), default=str)
    for secret in SECRETS:
        assert secret not in stored
    assert "You are Ava" in stored  # the prompt itself is kept

    post(make_client(bigquery_dataset=dataset, store_agent_config="none"), current_payload("sec-2"))
    [row] = query(
        bigquery_client,
        f"SELECT agent_config FROM `{PROJECT}.{dataset}.call_events` WHERE session_id = @id",
        id="sec-2",
    )
    assert row["agent_config"] is None


@pytest.mark.parametrize("write_api", WRITE_APIS)
def test_duplicate_delivery_counts_once(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    client = make_client(bigquery_dataset=dataset)
    first = current_payload("dup-1")
    post(client, first)
    post(client, first)
    post(client, {**first, "call_status": "agent-ended"})  # a later, corrected delivery
    post(client, current_payload("dup-2"))
    assert len(rows(bigquery_client, dataset)) == 4  # the append-only log keeps every delivery
    calls = rows(bigquery_client, dataset, "calls")
    assert sorted(row["session_id"] for row in calls) == ["dup-1", "dup-2"]
    assert next(r for r in calls if r["session_id"] == "dup-1")["call_status"] == "agent-ended"
    [daily] = query(bigquery_client, f"SELECT calls FROM `{PROJECT}.{dataset}.cost_daily_by_agent`")
    assert daily["calls"] == 2


@pytest.mark.parametrize("write_api", WRITE_APIS)
def test_unicode_and_a_500_message_transcript(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    chat = [
        {"role": "user" if i % 2 else "assistant", "content": f"message {i}: héllo 你好 🙂 \u200b"}
        for i in range(500)
    ]
    response = post(
        make_client(bigquery_dataset=dataset), current_payload("long-1", chat=json.dumps(chat))
    )
    assert response.get_json()["status"] == "inserted"
    [row] = rows(bigquery_client, dataset)
    assert len(row["chat"]) == 500
    assert row["chat"][499]["content"] == chat[499]["content"]
    assert [m["position"] for m in row["chat"]] == list(range(500))


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b'{"session_id": NaN}', 400, "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "payload_too_deep"),
        (b"[" * 5_000 + b"]" * 5_000, 400, "payload_too_deep"),
        (
            b'{"session_id": "s", "chat": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',
            400,
            "invalid_payload",
        ),
        (b'"just text"', 400, "invalid_payload"),
        (b'{"agent_id": "a"}', 400, "invalid_payload"),
        (b'{"session_id": "s", "chat": "{broken"}', 400, "invalid_payload"),
        (b"\xff\xfe\x00garbage", 400, "invalid_json"),
        (
            b'{"session_id": "s", "metadata": ' + b'{"a": ' * 40 + b"1" + b"}" * 41,
            400,
            "payload_too_deep",
        ),
    ],
)
def test_bad_bodies_get_a_clear_400(make_client: Any, body: bytes, status: int, error: str) -> None:
    response = post(make_client(), body)
    assert response.status_code == status
    assert response.get_json()["error"] == error
    assert "Traceback" not in response.get_data(as_text=True)


def test_missing_session_id_message_names_it(make_client: Any) -> None:
    response = post(make_client(), {"agent_id": "a"})
    assert "session_id" in response.get_json()["message"]


def test_wrong_content_type_is_415(make_client: Any) -> None:
    response = make_client().post("/end-of-call", data="session_id=s", content_type="text/plain")
    assert (response.status_code, response.get_json()["error"]) == (415, "unsupported_media_type")


def test_oversized_body_is_413_before_it_is_read(make_client: Any) -> None:
    client = make_client(max_body_bytes=64 * 1024)
    big = json.dumps(original_payload("big", chat=[{"role": "user", "content": "x" * 100_000}]))
    response = post(client, big)
    assert (response.status_code, response.get_json()["error"]) == (413, "body_too_large")


@pytest.mark.parametrize("write_api", WRITE_APIS)
def test_large_payload_within_the_limit_is_stored(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    chat = [{"role": "user", "content": "word " * 2000} for _ in range(300)]  # about 3 MB
    response = post(make_client(bigquery_dataset=dataset), original_payload("large-1", chat=chat))
    assert response.get_json()["status"] == "inserted"
    [row] = query(
        bigquery_client,
        f"SELECT ARRAY_LENGTH(chat) AS messages FROM `{PROJECT}.{dataset}.call_events`",
    )
    assert row["messages"] == 300


# -- BigQuery failures: nothing accepted is lost ------------------------------------------------


@pytest.fixture
def refusing_endpoint() -> Iterator[str]:
    """host:port where nothing listens: every call fails to connect."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def bigquery_at(host_port: str, monkeypatch: pytest.MonkeyPatch, write_api: str) -> Any:
    """A client of the write API under test that talks to `host_port` instead of the emulator."""
    if write_api == "storage_write":
        from service.stores.storage_write import EMULATOR_ENV, make_write_client

        monkeypatch.setenv(EMULATOR_ENV, host_port)
        return make_write_client()
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", f"http://{host_port}")
    return make_bigquery_client(PROJECT)


@pytest.mark.parametrize("write_api", WRITE_APIS)
@pytest.mark.parametrize("fault", ["refusing_endpoint", "hanging_endpoint"])
def test_bigquery_down_or_hanging_keeps_a_dead_letter_and_replay_lands_it(
    make_client: Any,
    bigquery_client: Any,
    clean_firestore: Any,
    dataset: str,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    fault: str,
    write_api: str,
    sink_for: Any,
) -> None:
    broken = bigquery_at(request.getfixturevalue(fault), monkeypatch, write_api)
    client = make_client(
        bigquery=broken,
        bigquery_dataset=dataset,
        bigquery_insert_timeout_seconds=1.0,
        bigquery_insert_attempts=2,
    )
    started = time.monotonic()
    responses = [post(client, current_payload(f"dl-{i}")) for i in range(3)]
    elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert {r.get_json()["status"] for r in responses} == {"dead_lettered"}
    assert elapsed < 3 * 3.0  # each request bounded by its 1 s budget, not the client's retries

    store = DeadLetterStore(clean_firestore, "dead_letters")
    assert store.count() == 3
    letters = list(store.list())
    assert {letter.reason for letter in letters} == {"insert_failed"}
    assert all(secret not in json.dumps(letters[0].row) for secret in SECRETS)

    report = replay(store, sink_for(dataset))
    assert (len(report.replayed), report.still_failing) == (3, {})
    assert store.count() == 0
    landed = rows(bigquery_client, dataset, "calls")
    assert sorted(r["session_id"] for r in landed) == ["dl-0", "dl-1", "dl-2"]
    assert {r["source"] for r in landed} == {"replay"}
    assert landed[0]["chat"][1]["content"] == CHAT[1]["content"]


@pytest.mark.parametrize("write_api", WRITE_APIS)
def test_replay_is_idempotent_after_a_crash_between_insert_and_delete(
    clean_firestore: Any, bigquery_client: Any, dataset: str, sink_for: Any
) -> None:
    store = DeadLetterStore(clean_firestore, "dead_letters")
    row = stored_row("crash-1", store_agent_config=False)
    store.store(row, reason="insert_failed", error="test")
    sink = sink_for(dataset)
    # first replay inserts, then "crashes" before deleting: simulate by re-storing the letter
    replay(store, sink)
    store.store(row, reason="insert_failed", error="test")
    replay(store, sink)
    assert store.count() == 0
    assert len(rows(bigquery_client, dataset, "calls")) == 1


class RejectingBigQuery:
    """Fault injection: BigQuery answers 200 with a per-row error (the emulator answers 500)."""

    def insert_rows_json(self, table: str, rows: list[Any], **kwargs: Any) -> list[Any]:
        return [{"index": 0, "errors": [{"reason": "invalid", "message": "no such field: x"}]}]


class RejectingStorageWrite:
    """Fault injection: AppendRows answers with a row error (the emulator never sends one)."""

    def append_rows(self, requests: Any, **kwargs: Any) -> Any:
        from google.cloud.bigquery_storage_v1 import types

        next(iter(requests))
        error = types.RowError(
            index=0, code=types.RowError.RowErrorCode.FIELDS_ERROR, message="no such field: x"
        )
        return iter([types.AppendRowsResponse(row_errors=[error])])


@pytest.mark.parametrize("write_api", WRITE_APIS)
def test_rows_bigquery_rejects_are_kept_with_the_error(
    make_client: Any, clean_firestore: Any, write_api: str
) -> None:
    fake = RejectingStorageWrite() if write_api == "storage_write" else RejectingBigQuery()
    response = post(make_client(bigquery=fake), current_payload("bad-row"))
    assert response.get_json() == {"status": "dead_lettered", "session_id": "bad-row"}
    [letter] = DeadLetterStore(clean_firestore, "dead_letters").list()
    assert letter.reason == "invalid_row" and "no such field" in letter.error
    assert letter.row["session_id"] == "bad-row"


class BrokenFirestore:
    def collection(self, name: str) -> Any:
        raise RuntimeError("firestore is down")


@pytest.mark.parametrize("write_api", WRITE_APIS)
def test_both_stores_down_is_503_so_the_caller_retries(
    make_client: Any, refusing_endpoint: str, monkeypatch: pytest.MonkeyPatch, write_api: str
) -> None:
    client = make_client(
        firestore=BrokenFirestore(),
        bigquery=bigquery_at(refusing_endpoint, monkeypatch, write_api),
        bigquery_insert_timeout_seconds=0.5,
        profile_store=object(),
    )
    response = post(client, current_payload("lost-1"))
    assert (response.status_code, response.get_json()["error"]) == (503, "storage_unavailable")


def test_dead_letter_larger_than_a_firestore_document_is_chunked(clean_firestore: Any) -> None:
    import os

    store = DeadLetterStore(clean_firestore, "dead_letters")
    # incompressible content: about 2.5 MB compressed, three chunks
    noise = os.urandom(1_900_000).hex()
    row = {"session_id": "huge-1", "chat": [{"position": 0, "content": noise}]}
    store.store(row, reason="insert_failed", error="row too large")
    [letter] = store.list()
    assert letter.row == row
    parent = clean_firestore.collection("dead_letters").document(letter.id).get().to_dict()
    assert parent["chunk_count"] == 3 and "payload" not in parent
    store.delete(letter.id)
    assert store.count() == 0
    assert (
        list(
            clean_firestore.collection("dead_letters")
            .document(letter.id)
            .collection("chunks")
            .stream()
        )
        == []
    )

"""BigQuery's rules applied to rows before they are sent (service/stored_row.py, end_of_call)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.end_of_call.normalise import normalise_call, parse_payload
from service.end_of_call.redaction import Redactor
from service.stored_row import (
    MAX_INSERT_ID_CHARS,
    PayloadTooLarge,
    conform_stored_row,
    encoded_request_bytes,
    in_streaming_window,
    insert_id,
)
from tests.bigquery_rules import assert_row_conforms
from tests.payloads import current_payload, original_payload

RECEIVED = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
REDACTOR = Redactor(["token", "key"])


def row_of(raw: Any, received: datetime = RECEIVED) -> dict[str, Any]:
    repairs: list[dict[str, str]] = []
    payload = parse_payload(raw, repairs)
    row = normalise_call(
        raw,
        payload,
        received_at=received,
        source="webhook",
        redactor=REDACTOR,
        store_agent_config=True,
        repairs=repairs,
    )
    assert_row_conforms(row, insert_id(row), now=received)
    return row


def test_lone_surrogates_are_replaced_and_the_repair_recorded() -> None:
    chat = [{"role": "assistant", "content": "See you \ud83d"}, {"role": "user", "content": "ok"}]
    body = original_payload(chat=chat, metadata={"name\udc00": "Jo\ud800hn"})
    row = row_of({**body, "session_id": "s-\udfff"})
    assert row["chat"][0]["content"] == "See you \ufffd"
    assert row["session_id"] == "s-\ufffd"
    assert json.loads(row["metadata"]) == {"name\ufffd": "Jo\ufffdhn"}
    fields = {(r["field"], r["repair"]) for r in row["repairs"]}
    assert ("chat[0].content", "lone_surrogate_replaced") in fields
    assert ("session_id", "lone_surrogate_replaced") in fields
    assert ("metadata", "lone_surrogate_replaced_in_key") in fields
    json.dumps(row).encode("utf-8")  # the whole row encodes


def test_a_valid_surrogate_pair_is_kept() -> None:
    row = row_of(original_payload(chat=[{"role": "user", "content": "See you 😀"}]))
    assert row["chat"][0]["content"] == "See you 😀" and row["repairs"] == []


def test_non_finite_numbers_in_json_columns_become_null_and_are_recorded() -> None:
    chat_text = json.dumps([{"role": "user", "content": "hi", "score": float("nan")}])
    body = current_payload(
        chat=chat_text,
        metadata={"deep": {"list": [1, float("inf")]}},
        function_calls=[{"name": "f", "params": {"x": float("-inf")}}],
    )
    row = row_of(body)
    assert json.loads(row["metadata"]) == {"deep": {"list": [1, None]}}
    assert json.loads(row["chat"][0]["extra"]) == {"score": None}
    assert json.loads(row["function_calls"][0]["params"]) == {"x": None}
    repaired = {r["field"] for r in row["repairs"] if r["repair"] == "non_finite_number_nulled"}
    # Named as sent: chat text is parsed (and repaired) before its messages are modelled.
    assert {"metadata.deep.list[1]", "function_calls[0].params.x", "chat[0].score"} <= repaired


def test_a_non_finite_modelled_number_is_kept_as_null_like_any_other() -> None:
    row = row_of(current_payload(duration=float("inf"), chars_used=float("nan")))
    assert row["duration_seconds"] is None and row["chars_used"] is None
    assert {r["field"] for r in row["repairs"]} == {"duration", "chars_used"}


@pytest.mark.parametrize(
    "ts",
    [
        0,
        1_764_064_800_000,  # milliseconds sent as seconds
        -5,
        "2199-01-01T00:00:00Z",
        "1990-01-01T00:00:00Z",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-23:59",
    ],
)
def test_a_ts_outside_the_streaming_window_keeps_the_call_dated_by_arrival(ts: Any) -> None:
    row = row_of(current_payload(ts=ts, duration=60))
    assert row["started_at"] == (RECEIVED - timedelta(seconds=60)).isoformat()
    assert row["ts_out_of_range"] is True
    assert row["ts_reported"] == (ts if isinstance(ts, str) else json.dumps(ts))


def test_a_ts_inside_the_window_dates_the_call() -> None:
    row = row_of(current_payload(ts=1_764_064_800, duration=60))
    assert row["started_at"] == "2025-11-25T10:00:00+00:00"
    assert row["ts_out_of_range"] is False and row["ts_reported"] == "1764064800"


def test_insert_id_follows_content_not_delivery() -> None:
    first = row_of(current_payload())
    again = row_of(current_payload(), received=RECEIVED + timedelta(seconds=5))
    corrected = row_of(current_payload(duration=99))
    assert insert_id(first) == insert_id(again)  # an identical re-delivery de-duplicates
    assert insert_id(first) != insert_id(corrected)  # a correction is never dropped
    long_id = row_of(current_payload(session_id="s" * 512))
    assert len(insert_id(long_id)) <= MAX_INSERT_ID_CHARS


def test_encoded_size_counts_ascii_escapes_like_the_client() -> None:
    row = {"chat": "漢" * 10}
    # Each CJK character is sent as \\uXXXX: 6 bytes, not its 3 UTF-8 bytes.
    assert encoded_request_bytes([row], ["i"]) - encoded_request_bytes([{"chat": ""}], ["i"]) == 60


def test_a_row_over_ten_megabytes_as_sent_is_refused() -> None:
    # 1.7 million CJK characters: 5.1 MB of UTF-8, 10.2 MB as the client sends it.
    chat = [{"role": "user", "content": "漢" * 1_700_000}]
    with pytest.raises(PayloadTooLarge):
        row_of(original_payload(chat=chat))


def test_a_stored_row_from_an_older_version_is_brought_to_the_rules() -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    old = row_of(current_payload(metadata={"a": 1}))
    old = {**old, "started_at": "1970-01-01T00:00:00+00:00", "metadata": '{"a": NaN}'}
    old.pop("repairs")
    old.pop("ts_reported")
    row = conform_stored_row(old, now)
    assert in_streaming_window(datetime.fromisoformat(row["started_at"]), now)
    assert row["ts_out_of_range"] is True and row["ts_reported"] == "1970-01-01T00:00:00+00:00"
    assert json.loads(row["metadata"]) == {"a": None}
    assert_row_conforms(row, insert_id(row), now=now)


def test_integers_wider_than_bigquery_json_holds_are_kept_as_text() -> None:
    row = row_of(current_payload(metadata={"order": 2**70 + 1, "small": 2**63, "neg": -(2**64)}))
    assert json.loads(row["metadata"]) == {
        "order": str(2**70 + 1),
        "small": 2**63,
        "neg": str(-(2**64)),
    }
    assert {r["field"] for r in row["repairs"]} == {"metadata.order", "metadata.neg"}

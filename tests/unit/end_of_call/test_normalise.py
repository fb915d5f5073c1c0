from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from service.config import Settings
from service.end_of_call.normalise import normalise_call, parse_payload
from service.end_of_call.redaction import Redactor
from service.schemas import table_definitions
from tests.payloads import CHAT, SECRETS, current_payload, original_payload

RECEIVED = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
REDACTOR = Redactor(Settings(google_cloud_project="demo-x").redact_key_patterns)


def row_of(raw: dict[str, object], store_agent_config: bool = True) -> dict[str, object]:
    return normalise_call(
        raw,
        parse_payload(raw),
        received_at=RECEIVED,
        source="webhook",
        redactor=REDACTOR,
        store_agent_config=store_agent_config,
    )


def test_row_has_exactly_the_schema_columns() -> None:
    columns = {field["name"] for field in table_definitions()["call_events"]["schema"]}
    assert set(row_of(current_payload())) == columns
    assert set(row_of(original_payload())) == columns


def test_original_payload_row() -> None:
    row = row_of(original_payload())
    assert row["started_at"] == "2024-08-06T12:00:00+00:00"
    assert row["payload_format"] == "original"
    assert row["total_credit"] == 135.0
    assert row["chat"] == [
        {
            "position": 0,
            "role": "user",
            "content": "Hello",
            "tool_call_id": None,
            "tool_name": None,
            "tool_calls": None,
            "extra": None,
        }
    ]
    assert (row["from_number"], row["to_number"], row["voip_provider"]) == (
        "+1234567890",
        "+0987654321",
        None,
    )
    assert json.loads(str(row["metadata"])) == {"name": "John"}


def test_current_payload_row_keeps_tool_calls_and_extras() -> None:
    row = row_of(current_payload())
    chat = row["chat"]
    assert isinstance(chat, list) and len(chat) == len(CHAT)
    assert json.loads(chat[2]["tool_calls"])[0]["function"]["name"] == "book_appointment"
    assert (chat[3]["tool_call_id"], chat[3]["tool_name"]) == ("call_1", "book_appointment")
    assert row["payload_format"] == "current"
    assert row["total_credit"] == pytest.approx(0.0278)
    assert row["function_calls"] == [
        {"name": "book_appointment", "params": '{"date":"2026-12-01"}'}
    ]
    assert row["recording_url"] == "https://recordings.example.com/sess-current-1.wav"
    assert row["call_status"] == "user-ended"
    raw = json.loads(str(row["raw_payload"]))
    assert raw["sentiment"] == "positive"  # fields Millis adds later are kept


def test_no_secret_reaches_the_row() -> None:
    text = json.dumps(row_of(current_payload()))
    for secret in SECRETS:
        assert secret not in text
    config = json.loads(str(row_of(current_payload())["agent_config"]))
    assert config["prompt"].startswith("You are Ava")
    assert config["tools"][0]["headers"] == {
        "Authorization": "[REDACTED]",
        "X-Tenant": "[REDACTED]",
    }
    assert config["llm"]["max_tokens"] == 300 and config["keywords"] == ["Acme", "dental"]


def test_agent_config_can_be_dropped_entirely() -> None:
    row = row_of(current_payload(), store_agent_config=False)
    assert row["agent_config"] is None
    assert "agent_config" not in json.loads(str(row["raw_payload"]))
    assert "You are Ava" not in json.dumps(row)


def test_missing_ts_falls_back_to_received_time_minus_duration() -> None:
    row = row_of({"session_id": "s", "duration": 60})
    assert row["started_at"] == "2026-11-25T09:59:00+00:00"
    assert row["total_credit"] is None and row["chat"] == []


def test_raw_payload_holds_only_what_no_column_holds() -> None:
    chat = [{"role": "user", "content": "x" * 100}] * 50
    body = original_payload(chat=chat, voip={"from": "+15551230000", "country": "US"})
    row = row_of({**body, "cost_breakdown": [{"type": "llm", "credit": 0.1, "model": "m"}]})
    assert len(row["chat"]) == 50  # type: ignore[arg-type]
    raw = json.loads(str(row["raw_payload"]))
    # The transcript, metadata and agent config have their columns; new nested fields are kept.
    assert "chat" not in raw and "metadata" not in raw and "agent_config" not in raw
    assert raw["voip"] == {"country": "US"}
    assert raw["cost_breakdown"] == {"0": {"model": "m"}}

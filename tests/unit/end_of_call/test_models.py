from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from service.end_of_call.models import EndOfCallPayload, detect_format
from service.end_of_call.normalise import InvalidPayload, parse_payload
from tests.payloads import CHAT, current_payload, original_payload


def test_original_format_parses_chat_list_and_iso_ts() -> None:
    payload = parse_payload(original_payload())
    assert payload.ts == datetime(2024, 8, 6, 12, 0, tzinfo=UTC)
    assert [(m.role, m.content) for m in payload.chat or []] == [("user", "Hello")]
    assert payload.voip is not None and payload.voip.from_number == "+1234567890"
    assert [c.credit for c in payload.cost_breakdown or []] == [123.0, 12.0]


def test_current_format_parses_chat_text_and_epoch_ts() -> None:
    payload = parse_payload(current_payload())
    assert payload.ts is not None
    assert payload.ts.timestamp() == pytest.approx(1729840680.886249)
    assert len(payload.chat or []) == len(CHAT)
    tool_result = (payload.chat or [])[3]
    assert (tool_result.role, tool_result.tool_call_id, tool_result.name) == (
        "tool",
        "call_1",
        "book_appointment",
    )
    assert payload.call_status == "user-ended"
    assert payload.recording is not None and payload.recording.recording_url
    assert payload.voip is not None and payload.voip.provider == "twilio"


def test_unknown_fields_are_kept_at_every_level() -> None:
    raw = current_payload(new_top_level={"x": 1})
    raw["voip"]["carrier_id"] = "abc"
    payload = parse_payload(raw)
    assert payload.model_extra == {"sentiment": "positive", "new_top_level": {"x": 1}}
    assert payload.voip is not None and payload.voip.model_extra == {"carrier_id": "abc"}


def test_every_field_but_session_id_may_be_null_or_absent() -> None:
    nulls = {key: None for key in current_payload()}
    nulls["session_id"] = "only-id"
    assert parse_payload(nulls).session_id == "only-id"
    assert parse_payload({"session_id": "bare"}).chat is None


def test_unknown_call_status_is_stored_not_rejected() -> None:
    assert parse_payload(current_payload(call_status="teleported")).call_status == "teleported"


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"session_id": ""},
        {"session_id": "   "},
        {"session_id": None},
        {"session_id": ["a"]},
        {"session_id": True},
        {"agent_id": "a"},
    ],
)
def test_missing_or_unusable_session_id_is_rejected(raw: dict[str, object]) -> None:
    with pytest.raises(InvalidPayload, match="session_id"):
        parse_payload(raw)


@pytest.mark.parametrize(
    "overrides",
    [
        {"chat": "not json ["},
        {"chat": 5},
        {"chat": '{"role": "user"}'},
        {"ts": "yesterday"},
        {"ts": True},
        {"duration": "long"},
        {"duration": -1},
        {"duration": 1e300},
        {"chars_used": 2**70},
        {"cost_breakdown": [{"credit": 1e300}]},
        {"cost_breakdown": "lots"},
        {"cost_breakdown": [{"credit": "free"}]},
        {"voip": "twilio"},
        {"metadata": [1, 2]},
    ],
)
def test_wrong_types_are_rejected_with_the_field_named(overrides: dict[str, object]) -> None:
    with pytest.raises(InvalidPayload) as caught:
        parse_payload(current_payload(**overrides))
    fields = {detail["field"].split(".")[0] for detail in caught.value.details}
    assert fields == set(overrides)


def test_rejection_details_do_not_echo_values() -> None:
    with pytest.raises(InvalidPayload) as caught:
        parse_payload(current_payload(duration="call +15551234567"))
    assert "+15551234567" not in json.dumps(caught.value.details)


@pytest.mark.parametrize("body", [[], "text", 3, None])
def test_non_object_bodies_are_rejected(body: object) -> None:
    with pytest.raises(InvalidPayload, match="JSON object"):
        parse_payload(body)


def test_empty_chat_text_is_no_transcript() -> None:
    assert parse_payload(current_payload(chat="")).chat is None
    assert parse_payload(current_payload(chat="[]")).chat == []


def test_structured_fields_are_accepted_as_json_text() -> None:
    raw = current_payload(
        cost_breakdown=json.dumps([{"type": "llm", "credit": 0.5, "provider": "openai"}]),
        function_calls=json.dumps([{"name": "f", "params": {"a": 1}}]),
        voip=json.dumps({"from": "+15551234567", "to": "+15550001111"}),
        metadata=json.dumps({"k": "v"}),
        recording="https://recordings.example.com/r.wav",
    )
    payload = parse_payload(raw)
    assert [c.credit for c in payload.cost_breakdown or []] == [0.5]
    assert (payload.function_calls or [])[0].params == {"a": 1}
    assert payload.voip is not None and payload.voip.to_number == "+15550001111"
    assert payload.metadata == {"k": "v"}
    assert payload.recording is not None
    assert payload.recording.recording_url == "https://recordings.example.com/r.wav"


def test_numbers_where_text_is_expected_are_kept_as_text() -> None:
    raw = current_payload(voip={"from": 15551234567, "to": 15550001111}, call_status=3)
    raw["chat"] = [{"role": "tool", "content": "ok", "tool_call_id": 7, "name": "f"}]
    payload = parse_payload(raw)
    assert payload.voip is not None and payload.voip.from_number == "15551234567"
    assert payload.call_status == "3"
    assert (payload.chat or [])[0].tool_call_id == "7"


def test_structured_message_content_is_kept_as_json_text() -> None:
    chat = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    message = (parse_payload(original_payload(chat=chat)).chat or [])[0]
    assert json.loads(message.content or "") == [{"type": "text", "text": "hi"}]


def test_numeric_ids_and_string_counts_are_coerced() -> None:
    payload = parse_payload({"session_id": 12345, "chars_used": "500", "agent_id": 7})
    assert (payload.session_id, payload.agent_id, payload.chars_used) == ("12345", "7", 500)


def test_naive_iso_timestamp_is_taken_as_utc() -> None:
    payload = EndOfCallPayload.model_validate({"session_id": "s", "ts": "2024-08-06T12:00:00"})
    assert payload.ts == datetime(2024, 8, 6, 12, 0, tzinfo=UTC)


def test_format_detection() -> None:
    assert detect_format(original_payload()) == "original"
    assert detect_format(current_payload()) == "current"
    assert detect_format({"session_id": "s", "ts": 1.5}) == "current"
    assert detect_format({"session_id": "s", "call_status": "queued"}) == "current"
    assert detect_format({"session_id": "s"}) == "original"

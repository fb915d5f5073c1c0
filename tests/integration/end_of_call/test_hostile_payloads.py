"""Payload shapes that crashed or refused a call, through HTTP into the BigQuery emulator."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.end_of_call.test_end_of_call import post, rows
from tests.payloads import current_payload


@pytest.mark.parametrize("field", ["chat", "metadata", "agent_config", "cost_breakdown"])
def test_json_text_too_deep_is_a_400_naming_the_field_never_a_500(
    make_client: Any, bigquery_client: Any, dataset: str, field: str
) -> None:
    text = "[" * 5_000 + "]" * 5_000 if field != "metadata" else '{"a":' * 5_000 + "1" + "}" * 5_000
    response = post(make_client(bigquery_dataset=dataset), current_payload(**{field: text}))
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_payload"
    assert [detail["field"] for detail in body["details"]] == [field]
    assert rows(bigquery_client, dataset) == []


def test_odd_elements_and_non_finite_numbers_in_text_keep_the_call_with_repairs(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    body = current_payload(
        "odd-1",
        chat=json.dumps([None, "Hello?", {"role": "assistant", "content": "Hi!"}]),
        cost_breakdown='[{"type": "llm", "provider": "openai", "credit": NaN}, null, '
        '{"type": "tts", "provider": "elevenlabs", "credit": 0.25}]',
        function_calls=[None, {"name": "book", "params": {"x": 1}}],
    )
    response = post(make_client(bigquery_dataset=dataset), body)
    assert (response.status_code, response.get_json()["status"]) == (200, "inserted")
    [row] = rows(bigquery_client, dataset)
    assert [(m["position"], m["role"], m["content"]) for m in row["chat"]] == [
        (0, None, "Hello?"),
        (1, "assistant", "Hi!"),
    ]
    assert [(c["type"], c["credit"]) for c in row["cost_breakdown"]] == [
        ("llm", None),
        ("tts", 0.25),
    ]
    assert row["total_credit"] == 0.25
    assert [call["name"] for call in row["function_calls"]] == ["book"]
    assert {(r["field"], r["repair"]) for r in row["repairs"]} == {
        ("chat[0]", "null_element_dropped"),
        ("chat[1]", "value_as_message_content"),
        ("cost_breakdown[1]", "null_element_dropped"),
        ("cost_breakdown[0].credit", "non_finite_number_nulled"),
        ("function_calls[0]", "null_element_dropped"),
    }

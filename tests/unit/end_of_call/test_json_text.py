"""JSON sent as text inside a payload: parsed within the body's bound, its content repaired like the
body's, its odd elements kept rather than refusing the call."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.end_of_call.json_text import MAX_DEPTH, JsonTextError, depth_of, loads_bounded
from service.end_of_call.normalise import TEXT_FIELDS, InvalidPayload, parse_payload
from tests.payloads import current_payload


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("[]", 1),
        ('{"a": [1, {"b": 2}]}', 3),
        ('"[[[["', 0),
        ('["\\"[[", "\\\\", [[]]]', 3),
        ('"unclosed [[[', 0),
        ("", 0),
    ],
)
def test_depth_is_counted_outside_strings(text: str, depth: int) -> None:
    assert depth_of(text) == depth


@pytest.mark.timeout(60)
@pytest.mark.parametrize("unit", ["[", '"\\', '\\"', '"[', '"\\\\', "{", '"a'])
def test_depth_of_hostile_text_is_found_in_linear_time(unit: str) -> None:
    """A guard, not a benchmark: a string pattern that backtracks took minutes on 2 MB of `"\\`."""
    text = unit * (2_000_000 // len(unit))
    assert depth_of(text) >= 0


def test_text_deeper_than_the_bound_is_refused_before_parsing() -> None:
    assert loads_bounded("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(JsonTextError, match="deeper than 32"):
        loads_bounded("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(JsonTextError, match="not valid JSON"):
        loads_bounded("{broken")


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 5_000, 200_000])
def test_too_deep_text_in_any_field_is_a_400_naming_it_never_a_recursion_error(
    field: str, levels: int
) -> None:
    # Before: json.loads inside a validator raised RecursionError, a 500 on every retry.
    text = '{"a": ' * levels + "1" + "}" * levels
    with pytest.raises(InvalidPayload) as caught:
        parse_payload(current_payload(**{field: text}))
    assert caught.value.details == [
        {"field": field, "problem": f"JSON text nested deeper than {MAX_DEPTH} levels"}
    ]


def test_null_elements_are_dropped_and_recorded() -> None:
    repairs: list[dict[str, str]] = []
    payload = parse_payload(
        current_payload(
            chat=json.dumps([None, {"role": "user", "content": "Hi"}]),
            cost_breakdown=[{"type": "llm", "credit": 0.5}, None],
            function_calls=json.dumps([None]),
        ),
        repairs,
    )
    assert [m.content for m in payload.chat or []] == ["Hi"]
    assert [c.credit for c in payload.cost_breakdown or []] == [0.5]
    assert payload.function_calls == []
    assert repairs == [
        {"field": "chat[0]", "repair": "null_element_dropped"},
        {"field": "cost_breakdown[1]", "repair": "null_element_dropped"},
        {"field": "function_calls[0]", "repair": "null_element_dropped"},
    ]


@pytest.mark.parametrize("chat", [["Hello", "Hi, how can I help?"], [1, True, ["a"]]])
def test_chat_elements_that_are_not_messages_become_their_content(chat: list[Any]) -> None:
    repairs: list[dict[str, str]] = []
    payload = parse_payload(current_payload(chat=json.dumps(chat)), repairs)
    assert [m.content for m in payload.chat or []] == [
        item if isinstance(item, str) else json.dumps(item) for item in chat
    ]
    assert {r["repair"] for r in repairs} == {"value_as_message_content"}


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_inside_text_are_repaired_like_the_body(constant: str) -> None:
    repairs: list[dict[str, str]] = []
    text = f'[{{"type": "llm", "provider": "openai", "credit": {constant}}}]'
    payload = parse_payload(current_payload(cost_breakdown=text), repairs)
    assert [(c.type, c.credit) for c in payload.cost_breakdown or []] == [("llm", None)]
    assert {"field": "cost_breakdown[0].credit", "repair": "non_finite_number_nulled"} in repairs

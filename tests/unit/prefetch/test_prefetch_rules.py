from __future__ import annotations

import pytest

from service.prefetch.answer import normalise_phone, render_template, safe_document_id
from service.prefetch.profiles import to_plain


@pytest.mark.parametrize(
    "raw",
    ["+15551234567", "+1 (555) 123-4567", "+1-555-123-4567", "(555) 123-4567", "555.123.4567"],
)
def test_phone_formats_normalise_to_one_e164(raw: str) -> None:
    assert normalise_phone(raw, "US") == "+15551234567"


def test_default_region_applies_to_national_numbers() -> None:
    assert normalise_phone("07700 900123", "GB") == "+447700900123"
    assert normalise_phone("+447700900123", "US") == "+447700900123"


@pytest.mark.parametrize(
    "raw", [None, "", "abc", "../../agents/x", "+1" * 40, "1", "+0987654321", "☎☎☎"]
)
def test_non_numbers_are_not_looked_up(raw: str | None) -> None:
    assert normalise_phone(raw, "US") is None


@pytest.mark.parametrize(
    "value",
    ["../x", "a/b", ".", "..", "__name__", "", "x" * 129, "agents/demo", "a b", None, 5, "é"],
)
def test_unsafe_document_ids_are_refused(value: object) -> None:
    assert safe_document_id(value) is None


@pytest.mark.parametrize("value", ["C-1001", "crm_42", "jane@example.com", "+15551234567"])
def test_plain_ids_are_accepted(value: str) -> None:
    assert safe_document_id(value) == value


def test_template_fills_fields_and_leaves_unknown_placeholders() -> None:
    values = {"name": "Ana", "account": {"tier": "gold"}, "n": 3, "none": None}
    text = "Hi {name} ({account.tier}) #{n}{none} {missing} {0} {name.__class__}"
    assert render_template(text, values) == "Hi Ana (gold) #3 {missing} {0} {name.__class__}"


def test_template_cannot_reach_attributes() -> None:
    assert render_template("{__class__}", {"x": 1}) == "{__class__}"
    assert render_template("{a.__dict__}", {"a": {"b": 1}}) == "{a.__dict__}"


def test_firestore_values_become_json_safe() -> None:
    from datetime import UTC, datetime

    from google.cloud.firestore import GeoPoint

    class Reference:  # stands in for DocumentReference: an object without a JSON meaning
        path = "agents/x"

    value = {
        "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "where": GeoPoint(1.5, 2.5),
        "ref": Reference(),
        "blob": b"\x00\x01",
        "nan": float("nan"),
        "nested": {"list": [1, b"x", "y"], "ok": True},
    }
    assert to_plain(value) == {
        "when": "2026-01-02T03:04:05+00:00",
        "where": {"latitude": 1.5, "longitude": 2.5},
        "nested": {"list": [1, "y"], "ok": True},
    }


def test_rendering_stops_at_the_cap_without_expanding_the_rest() -> None:
    from service.prefetch.answer import render_template

    calls = 0

    class Counting(dict[str, str]):
        def __getitem__(self, key: str) -> str:
            nonlocal calls
            calls += 1
            return super().__getitem__(key)

    values = Counting(x="y" * 1000)
    text = render_template("{x}" * 300_000, values, max_chars=20_000)
    assert text == "y" * 20_000
    assert calls == 1  # each distinct placeholder is turned into text once


def test_rendering_stops_after_the_substitution_limit_and_at_the_deadline() -> None:
    import time

    from service.prefetch.answer import render_template

    assert render_template("{x}." * 5000, {"x": ""}) == "." * 1000
    assert render_template("a{x}b", {"x": "1"}, deadline=time.monotonic() - 1) == "a"


class CountingMap(dict):  # type: ignore[type-arg]
    """A profile map that counts the entries the JSON encoder reads from it."""

    read = 0

    def items(self):  # type: ignore[no-untyped-def,override]
        for item in super().items():
            CountingMap.read += 1
            yield item


def test_a_large_value_is_serialised_only_up_to_the_value_cap() -> None:
    CountingMap.read = 0
    huge = CountingMap({f"k{i:05d}": "v" * 90 for i in range(10_000)})  # ~1 MB as JSON
    text = render_template("{m}" * 1000, {"m": huge})
    assert len(text) == 20_000
    assert text.startswith('{"k00000": "' + "v" * 90)
    # ~1,000 characters of JSON read about ten entries, once for all 1,000 references
    assert CountingMap.read < 20

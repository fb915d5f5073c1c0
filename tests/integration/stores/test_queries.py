"""The example queries of the README and docs/, run against the views in the BigQuery emulator."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.conftest import PROJECT, ROOT, query
from tests.payloads import current_payload

EXAMPLE = re.compile(r"<!-- example-query: (\w+) -->\n```sql\n(.*?)```", re.DOTALL)
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = dict(
    example for document in DOCUMENTS for example in EXAMPLE.findall(document.read_text())
)
DAY = 86_400


def call(
    session_id: str,
    agent: str,
    age_days: float,
    minutes: float,
    costs: dict[str, float],
    **extra: Any,
) -> dict[str, Any]:
    return current_payload(
        session_id,
        agent_id=agent,
        ts=time.time() - age_days * DAY,
        duration=minutes * 60,
        cost_breakdown=[
            {"type": kind.split(":")[0], "provider": kind.split(":")[1], "credit": credit}
            for kind, credit in costs.items()
        ],
        **extra,
    )


CALLS = [
    call("c1", "agent-ava", 1 / 1440, 2.0, {"llm:openai": 0.5, "tts:elevenlabs": 0.25}),
    call("c2", "agent-ava", 1 / 1440, 4.0, {"llm:openai": 1.0, "stt:deepgram": 0.5}),
    call(
        "c3",
        "agent-bob",
        1 / 1440,
        1.0,
        {"llm:anthropic": 3.0},
        call_status="error",
        error_message="LLM timeout",
    ),
    call("c4", "agent-ava", 40, 10.0, {"llm:openai": 9.0}),  # outside last week and this month
    call(
        "c5",
        "agent-bob",
        1 / 1440,
        3.0,
        {"tts:elevenlabs": 0.3},
        chat=json.dumps(
            [
                {"role": "user", "content": "I want a REFUND please"},
                {"role": "assistant", "content": "Sure."},
            ]
        ),
    ),
]


@pytest.fixture
def results(
    make_client: Any, bigquery_client: Any, dataset: str
) -> dict[str, list[dict[str, Any]]]:
    client = make_client(bigquery_dataset=dataset)
    for payload in CALLS:
        assert client.post("/end-of-call", json=payload).get_json()["status"] == "inserted"
    # a duplicate delivery must not change any answer
    assert client.post("/end-of-call", json=CALLS[0]).status_code == 200
    return {
        # As written, `millis.VIEW` is read in the current project; here, the test's dataset.
        name: query(bigquery_client, re.sub(r"\bmillis\.", f"{PROJECT}.{dataset}.", sql))
        for name, sql in EXAMPLES.items()
    }


def test_readme_and_docs_have_the_examples() -> None:
    assert set(EXAMPLES) == {
        "agent_last_week_by_provider",
        "most_expensive_calls_this_month",
        "cost_per_minute_by_day",
        "monthly_cost_per_agent",
        "failed_calls",
        "transcripts_mentioning_refund",
    }


def test_agent_cost_last_week_by_provider(results: dict[str, list[dict[str, Any]]]) -> None:
    rows = {
        (r["cost_type"], r["provider"]): (r["calls"], r["credits"])
        for r in results["agent_last_week_by_provider"]
    }
    assert rows == {
        ("llm", "openai"): (2, 1.5),
        ("stt", "deepgram"): (1, 0.5),
        ("tts", "elevenlabs"): (1, 0.25),
    }


def test_most_expensive_calls_this_month(results: dict[str, list[dict[str, Any]]]) -> None:
    rows = results["most_expensive_calls_this_month"]
    assert [r["session_id"] for r in rows] == ["c3", "c2", "c1", "c5"]
    assert rows[0]["credits"] == 3.0


def test_cost_per_minute_by_day(results: dict[str, list[dict[str, Any]]]) -> None:
    rows = results["cost_per_minute_by_day"]
    assert [r["calls"] for r in rows] == [1, 4]
    assert rows[0]["credits_per_minute"] == pytest.approx(0.9)
    assert rows[1]["credits_per_minute"] == pytest.approx((0.75 + 1.5 + 3.0 + 0.3) / 10)


def test_monthly_cost_per_agent(results: dict[str, list[dict[str, Any]]]) -> None:
    latest = [r for r in results["monthly_cost_per_agent"] if r["calls"] and r["agent_id"]]
    by_agent = {r["agent_id"]: r for r in latest if r["month"] == max(x["month"] for x in latest)}
    assert by_agent["agent-ava"]["calls"] == 2
    assert by_agent["agent-ava"]["speech_credits"] == pytest.approx(0.75)
    assert by_agent["agent-bob"]["credits"] == pytest.approx(3.3)


def test_failed_calls(results: dict[str, list[dict[str, Any]]]) -> None:
    assert [(r["session_id"], r["error_message"]) for r in results["failed_calls"]] == [
        ("c3", "LLM timeout")
    ]


def test_transcripts_mentioning_refund(results: dict[str, list[dict[str, Any]]]) -> None:
    assert [(r["session_id"], r["position"]) for r in results["transcripts_mentioning_refund"]] == [
        ("c5", 0)
    ]

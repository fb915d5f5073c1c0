"""Payloads at BigQuery's edges, posted through HTTP and read back from the emulator.

Every insert is also held to real BigQuery's rules by the autouse fixture in tests/conftest.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.stores.dead_letters import DeadLetterStore, replay
from tests.conftest import PROJECT, WRITE_APIS, query
from tests.integration.end_of_call.test_end_of_call import post, rows
from tests.payloads import current_payload, original_payload


@pytest.mark.parametrize("write_api", WRITE_APIS)
def test_a_cut_emoji_is_stored_repaired_never_503(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    body = '{"session_id": "cut-1", "chat": [{"role": "assistant", "content": "See you \\ud83d"}]}'
    response = post(make_client(bigquery_dataset=dataset), body)
    assert response.status_code == 200 and response.get_json()["status"] == "inserted"
    [row] = rows(bigquery_client, dataset)
    assert row["chat"][0]["content"] == "See you \ufffd"
    assert row["repairs"] == [{"field": "chat[0].content", "repair": "lone_surrogate_replaced"}]


@pytest.mark.parametrize("write_api", WRITE_APIS)
def test_infinity_and_nan_never_reach_json_columns(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    chat = '[{"role": "user", "content": "hi", "score": NaN}]'
    body = json.dumps(current_payload("inf-1", chat=chat))[:-1] + ', "metadata": {"x": 1e400}}'
    assert post(make_client(bigquery_dataset=dataset), body).status_code == 200
    [row] = rows(bigquery_client, dataset)
    assert row["metadata"] == {"x": None}
    assert json.loads(row["chat"][0]["extra"]) == {"score": None}  # nested JSON comes as text
    # Every cost view still answers.
    for view in ("calls", "call_costs", "cost_daily_by_agent", "cost_by_provider"):
        query(bigquery_client, f"SELECT * FROM `{PROJECT}.{dataset}.{view}`")


@pytest.mark.parametrize("write_api", WRITE_APIS)
def test_out_of_range_times_keep_the_call_in_todays_partition(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    client = make_client(bigquery_dataset=dataset)
    sent = [0, 1_764_064_800_000, "2199-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00"]
    for number, ts in enumerate(sent):
        assert post(client, current_payload(f"ts-{number}", ts=ts)).status_code == 200
    stored = rows(bigquery_client, dataset)
    assert {row["ts_reported"] for row in stored} == {
        ts if isinstance(ts, str) else json.dumps(ts) for ts in sent
    }
    today = datetime.now(UTC)
    for row in stored:
        assert row["ts_out_of_range"] is True
        assert abs(row["started_at"] - today) < timedelta(days=1)
    costs = query(
        bigquery_client,
        f"SELECT call_date FROM `{PROJECT}.{dataset}.call_costs`",
    )
    assert {row["call_date"] for row in costs} <= {today.date(), (today - timedelta(1)).date()}


def test_a_body_whose_row_cannot_fit_is_refused_with_413(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    # 1.2 MB of empty messages: each becomes a record of a few dozen bytes in the row.
    body = json.dumps({"session_id": "wide", "chat": [{}] * 400_000})
    response = post(make_client(bigquery_dataset=dataset), body)
    assert response.status_code == 413
    assert response.get_json()["error"] == "row_too_large"
    assert rows(bigquery_client, dataset) == []


@pytest.mark.parametrize("write_api", WRITE_APIS)
def test_a_three_megabyte_cjk_transcript_is_stored(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    content = "漢字" * 500_000  # 3 MB of UTF-8, 6 MB as the client sends it
    body = original_payload("cjk-1", chat=[{"role": "user", "content": content}])
    response = post(make_client(bigquery_dataset=dataset), json.dumps(body, ensure_ascii=False))
    assert response.status_code == 200 and response.get_json()["status"] == "inserted"
    [row] = query(
        bigquery_client,
        f"SELECT LENGTH(chat[OFFSET(0)].content) AS n FROM `{PROJECT}.{dataset}.call_events`",
    )
    assert row["n"] == len(content)


@pytest.mark.parametrize("write_api", WRITE_APIS)
def test_credit_columns_add_up_to_total_credit_with_null_types(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    costs = [
        {"type": "llm", "credit": 1.5},
        {"type": None, "credit": 2.0},
        {"credit": 0.25},
        {"type": "carrier_fee", "credit": 4.0},
    ]
    post(make_client(bigquery_dataset=dataset), original_payload("nulltype", cost_breakdown=costs))
    [row] = query(bigquery_client, f"SELECT * FROM `{PROJECT}.{dataset}.call_costs`")
    parts = ("millis", "llm", "tts", "stt", "voip", "other")
    assert sum(row[f"{part}_credit"] for part in parts) == row["total_credit"] == 7.75
    assert row["other_credit"] == 6.25


def test_table_functions_match_the_views_for_their_dates(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    client = make_client(bigquery_dataset=dataset)
    now = datetime.now(UTC).replace(microsecond=0)
    for days in (0, 3, 40):
        ts = (now - timedelta(days=days)).isoformat()
        post(client, original_payload(f"d-{days}", ts=ts))
    post(client, original_payload("d-0", ts=now.isoformat(), duration=7))  # a correction
    start, end = (now - timedelta(days=5)).date(), now.date()
    between = query(
        bigquery_client,
        f"SELECT session_id, duration_seconds FROM `{PROJECT}.{dataset}.calls_between`"
        f"(DATE '{start}', DATE '{end}') ORDER BY session_id",
    )
    viewed = query(
        bigquery_client,
        f"SELECT session_id, duration_seconds FROM `{PROJECT}.{dataset}.calls` "
        f"WHERE DATE(started_at) BETWEEN DATE '{start}' AND DATE '{end}' ORDER BY session_id",
    )
    assert (
        between
        == viewed
        == [
            {"session_id": "d-0", "duration_seconds": 7.0},
            {"session_id": "d-3", "duration_seconds": 300.0},
        ]
    )
    costs = query(
        bigquery_client,
        f"SELECT session_id FROM `{PROJECT}.{dataset}.call_costs_between`"
        f"(DATE '{start}', DATE '{end}') ORDER BY session_id",
    )
    assert [row["session_id"] for row in costs] == ["d-0", "d-3"]


@pytest.mark.parametrize("write_api", WRITE_APIS)
def test_replay_brings_an_old_dead_letter_to_the_rules(
    bigquery_client: Any, clean_firestore: Any, dataset: str, sink_for: Any
) -> None:
    store = DeadLetterStore(clean_firestore, "dead_letters")
    received = datetime.now(UTC).isoformat()
    old_row = {  # as an older version wrote it: ts 0 partitioned in 1970, NaN in JSON text
        "session_id": "old-1",
        "started_at": "1970-01-01T00:00:00+00:00",
        "chat": [],
        "function_calls": [],
        "cost_breakdown": [],
        "metadata": '{"x": NaN}',
        "received_at": received,
        "payload_format": "current",
        "source": "webhook",
    }
    store.store(old_row, reason="insert_failed", error="test")
    report = replay(store, sink_for(dataset))
    assert report.replayed and not report.still_failing
    [row] = rows(bigquery_client, dataset)
    assert row["ts_out_of_range"] is True and row["metadata"] == {"x": None}


class QuotaThenOk:
    """Fault injection: BigQuery refuses with 403 quotaExceeded, then accepts."""

    def __init__(self, real: Any, failures: int) -> None:
        self.real, self.failures, self.calls = real, failures, 0

    def insert_rows_json(self, *args: Any, **kwargs: Any) -> Any:
        from google.api_core.exceptions import Forbidden

        self.calls += 1
        if self.calls <= self.failures:
            raise Forbidden("quota", errors=[{"reason": "quotaExceeded", "message": "quota"}])
        return self.real.insert_rows_json(*args, **kwargs)


def test_quota_errors_are_retried_inside_the_budget(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    flaky = QuotaThenOk(bigquery_client, failures=2)
    response = post(make_client(bigquery=flaky, bigquery_dataset=dataset), current_payload("q-1"))
    assert response.get_json()["status"] == "inserted" and flaky.calls == 3
    assert len(rows(bigquery_client, dataset)) == 1


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(codec=None), max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
payloads = st.fixed_dictionaries(
    {"session_id": st.text(min_size=1, max_size=30)},
    optional={
        "ts": st.one_of(
            st.integers(-(10**13), 10**13),
            st.floats(),
            st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
            st.text(max_size=30),
        ),
        "duration": st.one_of(st.floats(), st.integers(-5, 10**9)),
        "chat": st.one_of(
            st.lists(st.dictionaries(st.text(max_size=10), json_values, max_size=4), max_size=4),
            json_values.map(lambda v: json.dumps(v)),
        ),
        "metadata": st.dictionaries(st.text(max_size=10), json_values, max_size=4),
        "cost_breakdown": st.lists(
            st.fixed_dictionaries({}, optional={"type": json_values, "credit": json_values}),
            max_size=3,
        ),
        "agent_config": st.dictionaries(st.text(max_size=10), json_values, max_size=4),
        "extra_field": json_values,
    },
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=payloads)
def test_any_payload_answered_2xx_yields_a_conforming_row(
    make_client: Any, bigquery_client: Any, dataset: str, body: dict[str, Any]
) -> None:
    """The autouse conformance check raises inside the insert if a row would be refused."""
    client = make_client(bigquery_dataset=dataset)
    text = json.dumps(body, allow_nan=True).replace("NaN", "1e400").replace("Infinity", "1e400")
    response = post(client, text)
    assert response.status_code in (200, 400), response.get_json()
    if response.status_code == 200:
        assert response.get_json()["status"] == "inserted"

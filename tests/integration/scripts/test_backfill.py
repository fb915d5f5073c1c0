"""scripts/backfill.py against a local fake of the Millis call-log API and the BigQuery emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import toolkit

import pytest
from backfill import ApiError, CallLogs, load, main

from service.config import Settings
from service.stores.bigquery import BigQuerySink
from service.stores.dead_letters import DeadLetterStore
from tests.conftest import PROJECT, query
from tests.fake_millis_api import FakeMillisApi, serving
from tests.payloads import current_payload

NOV_1 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
DAY = 86_400


def history(index: int, agent: str = "agent-a", day: int = 0) -> dict[str, Any]:
    call = current_payload(f"hist-{index:03d}", agent_id=agent, ts=NOV_1 + day * DAY + index)
    call["agent_config"] = {"llm": {"api_key": "sk-should-not-land"}}
    return call


CALLS = [history(i) for i in range(230)] + [history(500 + i, "agent-b", day=1) for i in range(5)]
CALLS += [history(900, day=10)]  # outside the range


@pytest.fixture
def api() -> Iterator[tuple[FakeMillisApi, str]]:
    fake = FakeMillisApi(CALLS)
    with serving(fake) as url:
        yield fake, url


def sessions(bigquery_client: Any, dataset: str, view: str = "calls") -> list[str]:
    rows = query(bigquery_client, f"SELECT session_id FROM `{PROJECT}.{dataset}.{view}`")
    return sorted(row["session_id"] for row in rows)


def run(url: str, dataset: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setenv("MILLIS_API_KEY", "test-key")
    monkeypatch.setenv("BIGQUERY_DATASET", dataset)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    from service.config import get_settings

    get_settings.cache_clear()
    try:
        return main(["--base-url", url, *args])
    finally:
        get_settings.cache_clear()


def test_date_range_over_several_pages_then_rerun_is_idempotent(
    api: tuple[FakeMillisApi, str],
    bigquery_client: Any,
    dataset: str,
    clean_firestore: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake, url = api
    # --to is included: November 1 and 2.
    assert run(url, dataset, monkeypatch, "--from", "2026-11-01", "--to", "2026-11-02") == 0
    assert "fetched 235, inserted 235" in capsys.readouterr().out
    assert sum("start_after_ts" in path for path in fake.requests) == 2  # three pages of 100
    expected = sorted(call["session_id"] for call in CALLS[:235])
    assert sessions(bigquery_client, dataset) == expected

    assert run(url, dataset, monkeypatch, "--from", "2026-11-01", "--to", "2026-11-02") == 0
    assert len(sessions(bigquery_client, dataset, "call_events")) == 470  # every delivery logged
    assert sessions(bigquery_client, dataset) == expected  # one row per session for readers
    stored = json.dumps(
        query(bigquery_client, f"SELECT * FROM `{PROJECT}.{dataset}.calls`"), default=str
    )
    assert "sk-should-not-land" not in stored
    [row] = query(bigquery_client, f"SELECT DISTINCT source FROM `{PROJECT}.{dataset}.calls`")
    assert row["source"] == "backfill"


def test_agent_filter_and_session_ids(
    api: tuple[FakeMillisApi, str],
    bigquery_client: Any,
    dataset: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, url = api
    assert (
        run(
            url,
            dataset,
            monkeypatch,
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-30",
            "--agent-id",
            "agent-b",
        )
        == 0
    )
    assert sessions(bigquery_client, dataset) == [f"hist-{500 + i}" for i in range(5)]
    status = run(
        url, dataset, monkeypatch, "--session-id", "hist-900", "--session-id", "no-such-call"
    )
    assert status == 1
    assert "not found" in capsys.readouterr().out
    assert "hist-900" in sessions(bigquery_client, dataset)


def test_retries_after_503_and_429(
    api: tuple[FakeMillisApi, str],
    bigquery_client: Any,
    dataset: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = api
    fake.fail_next = [503, 429]
    assert run(url, dataset, monkeypatch, "--session-id", "hist-001") == 0
    assert sessions(bigquery_client, dataset) == ["hist-001"]


def test_wrong_key_fails_cleanly(
    api: tuple[FakeMillisApi, str],
    dataset: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, url = api
    monkeypatch.setenv("MILLIS_API_KEY", "wrong")
    with pytest.raises(ApiError, match="401"):
        list(
            CallLogs(url, "wrong").calls_between(
                datetime.fromtimestamp(NOV_1, UTC), datetime.now(UTC), None
            )
        )
    with pytest.raises(SystemExit) as exited:
        toolkit.run("backfill", lambda: main(["--base-url", url, "--session-id", "hist-001"]))
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "HTTP 401" in err
    assert "Traceback" not in err and "wrong" not in err


def test_dry_run_inserts_nothing(
    api: tuple[FakeMillisApi, str],
    bigquery_client: Any,
    dataset: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, url = api
    assert (
        run(url, dataset, monkeypatch, "--from", "2026-11-01", "--to", "2026-11-01", "--dry-run")
        == 0
    )
    assert "would insert 230" in capsys.readouterr().out  # one day: November 1
    assert sessions(bigquery_client, dataset, "call_events") == []


class RejectSecond:
    def __init__(self, real: BigQuerySink) -> None:
        self.real = real

    def insert(self, rows: list[dict[str, Any]], row_ids: list[str]) -> list[Any]:
        from service.stores.errors import RowError

        self.real.insert(
            [row for i, row in enumerate(rows) if i != 1],
            [r for i, r in enumerate(row_ids) if i != 1],
        )
        return [RowError(1, "invalid: injected")]


def test_bad_records_are_skipped_and_rejected_rows_kept(
    bigquery_client: Any, dataset: str, clean_firestore: Any
) -> None:
    settings = Settings(google_cloud_project=PROJECT)
    sink = RejectSecond(BigQuerySink(bigquery_client, f"{PROJECT}.{dataset}.call_events", 10, 3))
    dead = DeadLetterStore(clean_firestore, "dead_letters")
    calls = [history(1), {"agent_id": "no session"}, history(2), history(3), None]
    report = load(calls, sink=sink, dead_letters=dead, settings=settings)
    assert (report.fetched, report.inserted, report.dead_lettered) == (5, 2, 1)
    assert [reason.split(":")[0] for reason in report.skipped] == ["call 2", "call 5"]
    assert [letter.session_id for letter in dead.list()] == ["hist-002"]
    assert sessions(bigquery_client, dataset) == ["hist-001", "hist-003"]

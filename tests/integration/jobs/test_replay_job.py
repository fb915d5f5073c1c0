"""The replay job: leases keep concurrent replays from inserting a letter twice; the exit code
says when letters have waited too long."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from service.stores.bigquery import BigQuerySink
from service.stores.dead_letters import DeadLetterStore, replay
from tests.conftest import PROJECT, query


def stored_row(session_id: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "session_id": session_id,
        "started_at": now,
        "chat": [],
        "function_calls": [],
        "cost_breakdown": [],
        "received_at": now,
        "payload_format": "current",
        "source": "webhook",
    }


class SlowSink:
    """Fault injection: a slow BigQuery, so that two replays overlap on every letter."""

    def __init__(self, sink: BigQuerySink) -> None:
        self.sink = sink

    def insert(self, rows: Any, row_ids: Any) -> Any:
        time.sleep(0.2)
        return self.sink.insert(rows, row_ids)


def test_overlapping_replays_insert_each_letter_once(
    clean_firestore: Any, bigquery_client: Any, dataset: str
) -> None:
    store = DeadLetterStore(clean_firestore, "dead_letters")
    for number in range(6):
        store.store(stored_row(f"late-{number}"), reason="insert_failed", error="test")
    sink = SlowSink(BigQuerySink(bigquery_client, f"{PROJECT}.{dataset}.call_events", 10, 3))
    reports = []
    runs = [
        threading.Thread(target=lambda o=owner: reports.append(replay(store, sink, owner=o)))
        for owner in ("scheduled", "manual")
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join(60)
    assert sum(len(report.replayed) for report in reports) == 6
    assert sum(len(report.skipped) for report in reports) >= 1  # they did overlap
    events = query(bigquery_client, f"SELECT session_id FROM `{PROJECT}.{dataset}.call_events`")
    assert sorted(row["session_id"] for row in events) == [f"late-{n}" for n in range(6)]
    assert store.count() == 0


def test_a_lease_holds_until_it_expires(clean_firestore: Any) -> None:
    store = DeadLetterStore(clean_firestore, "dead_letters")
    letter_id = store.store(stored_row("leased"), reason="insert_failed", error="test")
    assert store.claim(letter_id, "first", 60) is True
    assert store.claim(letter_id, "second", 60) is False
    short = store.store(stored_row("short"), reason="insert_failed", error="test")
    assert store.claim(short, "crashed", 0.2) is True
    time.sleep(0.3)
    assert store.claim(short, "next", 60) is True  # a crashed replay frees its letters
    assert store.claim("no-such-letter", "x", 60) is False


def test_the_job_fails_only_when_letters_wait_too_long(
    clean_firestore: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.config import get_settings
    from service.jobs.replay import main

    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv("BIGQUERY_DATASET", "no_such_dataset")  # BigQuery refuses every insert
    get_settings.cache_clear()
    try:
        store = DeadLetterStore(clean_firestore, "dead_letters")
        store.store(stored_row("stuck"), reason="insert_failed", error="test")
        assert main(["--alert-after-minutes", "60"]) == 0  # young: the next run will take it
        time.sleep(0.5)
        assert main(["--alert-after-minutes", "0.001"]) == 1
        assert "older than" in capsys.readouterr().out
        assert store.count() == 1  # never deleted without being inserted
    finally:
        get_settings.cache_clear()


def test_a_dry_run_names_the_sessions_or_says_there_is_nothing(
    clean_firestore: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.config import get_settings
    from service.jobs.replay import main

    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    get_settings.cache_clear()
    try:
        assert main(["--dry-run"]) == 0
        assert capsys.readouterr().out == "no dead letters: nothing to replay\n"
        store = DeadLetterStore(clean_firestore, "dead_letters")
        store.store(stored_row("waiting-1"), reason="insert_failed", error="test")
        assert main(["--dry-run"]) == 0
        said = capsys.readouterr().out.splitlines()
        assert said[0] == "would replay 1 dead letters, oldest first (changing nothing):"
        assert said[1].startswith("  session waiting-1  reason insert_failed  kept since 20")
        assert store.count() == 1
    finally:
        get_settings.cache_clear()


def seed_letters(store: DeadLetterStore, count: int, prefix: str) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda n: store.store(
                    stored_row(f"{prefix}-{n}"), reason="insert_failed", error="t"
                ),
                range(count),
            )
        )


def events_per_session(bigquery_client: Any, dataset: str) -> Counter[str]:
    rows = query(bigquery_client, f"SELECT session_id FROM `{PROJECT}.{dataset}.call_events`")
    return Counter(row["session_id"] for row in rows)


def test_a_backlog_of_thousands_drains_in_pages_in_one_run(
    clean_firestore: Any,
    dataset: str,
    bigquery_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from service.config import get_settings
    from service.jobs.replay import main

    store = DeadLetterStore(clean_firestore, "dead_letters")
    seed_letters(store, 3000, "backlog")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv("BIGQUERY_DATASET", dataset)
    get_settings.cache_clear()
    try:
        started = time.monotonic()
        assert main(["--page-size", "250", "--max-seconds", "120"]) == 0
        seconds = time.monotonic() - started
    finally:
        get_settings.cache_clear()
    output = capsys.readouterr().out
    assert "3000 dead letters to replay" in output
    assert "page 12: replayed 3000, still failing 0, held 0 so far; 0 remain" in output
    assert store.count() == 0
    assert events_per_session(bigquery_client, dataset) == Counter(
        {f"backlog-{n}": 1 for n in range(3000)}
    )
    print(f"3000 letters replayed in {seconds:.1f} s")


def test_a_run_out_of_time_stops_between_pages_and_the_next_continues(
    clean_firestore: Any, bigquery_client: Any, dataset: str
) -> None:
    store = DeadLetterStore(clean_firestore, "dead_letters")
    seed_letters(store, 1000, "budget")
    sink = SlowSink(BigQuerySink(bigquery_client, f"{PROJECT}.{dataset}.call_events", 10, 3))
    pages: list[int] = []
    first = replay(
        store,
        sink,
        page_size=100,
        max_seconds=0.3,
        progress=lambda report: pages.append(len(report.replayed)),
    )
    assert first.stopped == "time budget"
    assert len(first.replayed) == pages[-1] < 1000
    assert pages == [100 * n for n in range(1, len(pages) + 1)]  # visible page by page
    assert store.count() == 1000 - len(first.replayed)
    second = replay(store, sink, page_size=100)  # starts again from the oldest letter left
    assert second.stopped == ""
    assert len(first.replayed) + len(second.replayed) == 1000
    assert store.count() == 0
    assert events_per_session(bigquery_client, dataset) == Counter(
        {f"budget-{n}": 1 for n in range(1000)}
    )


class FailingSink:
    """Fault injection: BigQuery refusing every request."""

    def __init__(self) -> None:
        self.requests = 0

    def insert(self, rows: Any, row_ids: Any) -> Any:
        from service.stores.errors import InsertFailed

        self.requests += 1
        raise InsertFailed("ServiceUnavailable: 503")


def test_a_bigquery_outage_ends_the_run_at_the_first_page_and_keeps_every_letter(
    clean_firestore: Any,
) -> None:
    store = DeadLetterStore(clean_firestore, "dead_letters")
    seed_letters(store, 450, "outage")
    sink = FailingSink()
    report = replay(store, sink, page_size=200)
    assert sink.requests == 1  # not 450 requests waiting out BigQuery's budget one by one
    assert (report.stopped, len(report.still_failing), report.replayed) == (
        "bigquery failing",
        200,
        [],
    )
    assert store.count() == 450


class RefusesOneRow:
    """Fault injection: BigQuery answering per-row errors for one session; as insertAll does,
    the other rows of that request are not stored either ("stopped")."""

    def __init__(self, sink: BigQuerySink, bad: str) -> None:
        self.sink = sink
        self.bad = bad
        self.requests = 0

    def insert(self, rows: Any, row_ids: Any) -> Any:
        from service.stores.errors import RowError

        self.requests += 1
        if any(row["session_id"] == self.bad for row in rows):
            return [
                RowError(i, "invalid: bad" if row["session_id"] == self.bad else "stopped: ")
                for i, row in enumerate(rows)
            ]
        return self.sink.insert(rows, row_ids)


def test_a_refused_row_keeps_its_letter_and_the_rest_of_its_page_is_stored(
    clean_firestore: Any, bigquery_client: Any, dataset: str
) -> None:
    store = DeadLetterStore(clean_firestore, "dead_letters")
    seed_letters(store, 30, "page")
    sink = RefusesOneRow(
        BigQuerySink(bigquery_client, f"{PROJECT}.{dataset}.call_events", 10, 3), "page-7"
    )
    report = replay(store, sink, page_size=20)
    assert sink.requests == 3  # the page with the refused row once more, without it
    assert len(report.replayed) == 29
    assert list(report.still_failing.values()) == ["invalid: bad"]
    assert [letter.session_id for letter in store.list()] == ["page-7"]
    assert set(events_per_session(bigquery_client, dataset)) == {
        f"page-{n}" for n in range(30) if n != 7
    }


def test_the_job_tells_making_progress_from_stuck(
    clean_firestore: Any,
    dataset: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from service.config import get_settings
    from service.jobs.replay import main

    store = DeadLetterStore(clean_firestore, "dead_letters")
    seed_letters(store, 300, "late")
    time.sleep(0.5)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv("BIGQUERY_DATASET", dataset)
    get_settings.cache_clear()
    try:
        # One page fits in the time budget: overdue letters remain, but the run made progress.
        assert (
            main(["--alert-after-minutes", "0.001", "--page-size", "100", "--max-seconds", "0.01"])
            == 0
        )
        assert "making progress: 200 remain" in capsys.readouterr().out
        monkeypatch.setenv("BIGQUERY_DATASET", "no_such_dataset")  # BigQuery refuses every page
        get_settings.cache_clear()
        assert main(["--alert-after-minutes", "0.001"]) == 1
        assert "stuck: 200 dead letters older than 0.001 minutes remain" in capsys.readouterr().out
        assert store.count() == 200
    finally:
        get_settings.cache_clear()

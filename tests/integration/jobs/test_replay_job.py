"""The replay job: leases keep concurrent replays from inserting a letter twice; the exit code
says when letters have waited too long."""

from __future__ import annotations

import threading
import time
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

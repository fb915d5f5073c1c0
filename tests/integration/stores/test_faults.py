"""Fault tests with real emulators stopped and restarted in the middle of a run.

These emulators are this module's own (stopping the shared ones would break other tests). The
BigQuery emulator runs persistent, so rows inserted before it stopped are still there after the
restart and every call can be accounted for: sent = rows in BigQuery + dead letters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from emulators import Emulator, free_port, start_bigquery, start_firestore

from service.config import Settings
from service.stores.dead_letters import DeadLetterStore
from tests.conftest import WRITE_APIS, query
from tests.payloads import current_payload

PROJECT = "fault-millis"


class Stack:
    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp
        self.monkeypatch = monkeypatch
        self.firestore = start_firestore(tmp)
        self.bigquery_port = free_port()
        self.grpc_port = free_port()
        self.bigquery = self.start_bigquery()

    def start_bigquery(self) -> Emulator:
        return start_bigquery(
            self.tmp,
            PROJECT,
            port=self.bigquery_port,
            data_dir=self.tmp / "bigquery-data",
            grpc_port=self.grpc_port,
        )

    def clients(self) -> tuple[Any, Any]:
        from service.stores.bigquery import make_client as bigquery_client
        from service.stores.firestore import make_client as firestore_client

        for key, value in {**self.firestore.env, **self.bigquery.env}.items():
            self.monkeypatch.setenv(key, value)
        return firestore_client(PROJECT, "(default)"), bigquery_client(PROJECT)

    def write_client(self, write_api: str, bigquery: Any) -> Any:
        """The client the handler writes with: the REST client or a Storage Write API one."""
        if write_api == "storage_write":
            from service.stores.storage_write import make_write_client

            return make_write_client()
        return bigquery

    def stop(self) -> None:
        self.firestore.stop()
        self.bigquery.stop()


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    running = Stack(tmp_path, monkeypatch)
    yield running
    running.stop()


def served(make_client: Any, firestore: Any, bigquery: Any, **settings: Any) -> Any:
    from service.web.routes import Router

    # `bigquery` is an insertAll client unless the test names the write API it stands for.
    settings.setdefault("bigquery_write_api", "insert_all")
    client = make_client(**settings)  # the functions-framework app, with a handler we replace
    handler = Router(
        Settings(google_cloud_project=PROJECT, **settings), firestore, bigquery_client=bigquery
    )
    import sys

    handler.store.warm_up(3.0)  # as service/main.py does before the first request
    sys.modules["main"].handler = handler
    return client


@pytest.mark.parametrize("write_api", WRITE_APIS)
def test_bigquery_stopped_mid_run_loses_nothing(
    make_client: Any, stack: Stack, write_api: str
) -> None:
    from service.stores.bigquery import create_tables_and_views

    firestore, bigquery = stack.clients()
    create_tables_and_views(bigquery, "millis")
    client = served(
        make_client,
        firestore,
        stack.write_client(write_api, bigquery),
        bigquery_write_api=write_api,
        bigquery_insert_timeout_seconds=1.0,
        bigquery_insert_attempts=2,
    )
    sent = [f"fault-bq-{i}" for i in range(30)]
    statuses = []
    for index, session_id in enumerate(sent):
        if index == 10:
            stack.bigquery.stop()
        if index == 20:
            stack.bigquery = stack.start_bigquery()
        statuses.append(client.post("/end-of-call", json=current_payload(session_id)).get_json())
    assert all(status["session_id"] == sid for status, sid in zip(statuses, sent, strict=True))
    assert [s["status"] for s in statuses].count("dead_lettered") == 10

    _, bigquery = stack.clients()
    in_bigquery = {
        row["session_id"]
        for row in query(bigquery, f"SELECT session_id FROM `{PROJECT}.millis.call_events`")
    }
    dead = {letter.session_id for letter in DeadLetterStore(firestore, "dead_letters").list()}
    assert in_bigquery | dead == set(sent)
    assert not in_bigquery & dead


def test_firestore_stopped_mid_run_prefetch_keeps_answering_in_time(
    make_client: Any, stack: Stack
) -> None:
    from service.stores.bigquery import create_tables_and_views

    firestore, bigquery = stack.clients()
    create_tables_and_views(bigquery, "millis")
    firestore.collection("agents").document("agent-1").set(
        {"company": "Acme", "caller_numbers": "phone"}
    )
    firestore.collection("profiles").document("+15551234567").set({"name": "Ann"})
    client = served(
        make_client, firestore, bigquery, prefetch_deadline_ms=300, profile_cache_ttl_seconds=0
    )
    url = "/prefetch?agent_id=agent-1&session_id=s&from=%2B15551234567"
    assert client.get(url).get_json()["metadata"] == {"company": "Acme", "name": "Ann"}

    stack.firestore.stop()
    timings = []
    for _ in range(5):
        started = time.monotonic()
        response = client.get(url)
        timings.append(time.monotonic() - started)
        assert response.status_code == 200
        assert response.get_json()["metadata"] == {"company": "Acme", "name": "Ann"}
    assert max(timings) < 1.0  # within the 0.3 s budget plus framework overhead

    # end of call while Firestore is down: BigQuery takes it, nothing depends on Firestore
    response = client.post("/end-of-call", json=current_payload("fault-fs-1"))
    assert response.get_json()["status"] == "inserted"


def test_both_stores_stopped_answers_503_and_nothing_is_claimed(
    make_client: Any, stack: Stack
) -> None:
    # The Storage Write API's variant: test_both_stores_down_is_503_so_the_caller_retries.
    firestore, bigquery = stack.clients()
    client = served(
        make_client,
        firestore,
        bigquery,
        bigquery_insert_timeout_seconds=0.5,
        dead_letter_timeout_seconds=1.0,
    )
    stack.bigquery.stop()
    stack.firestore.stop()
    started = time.monotonic()
    response = client.post("/end-of-call", json=current_payload("fault-both-1"))
    assert time.monotonic() - started < 5  # both budgets, not the client libraries' retries
    assert (response.status_code, response.get_json()["error"]) == (503, "storage_unavailable")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{stack.firestore.host_port}/", timeout=1)

"""What reaches the logs when callers or dependencies misbehave: never content they chose, never
row content, never a phone number; and start-up work that may fail never stops the service."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from google.api_core.exceptions import BadRequest

from service.prefetch.firestore_rest import RestDocumentReader
from service.prefetch.profiles import DocumentCache, ProfileStore
from tests.conftest import PROJECT
from tests.integration.end_of_call.test_end_of_call import post
from tests.payloads import current_payload

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_hostile_tracestate_header_is_not_logged(
    make_client: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"traceparent": TRACEPARENT, "tracestate": "ATTACKER-CHOSEN-TEXT " * 50}
    response = make_client().get("/prefetch?agent_id=a&session_id=s", headers=headers)
    assert response.status_code == 200
    assert "ATTACKER-CHOSEN-TEXT" not in caplog.text + "".join(capsys.readouterr())


class RefusingBigQuery:
    """Fault injection: BigQuery refuses with a message quoting the row (as it does)."""

    def insert_rows_json(self, *args: Any, **kwargs: Any) -> Any:
        raise BadRequest("Invalid value at chat[0]: 'call me at +15551234567 about my refund'")


def test_bigquery_error_messages_are_not_logged(
    make_client: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    response = post(make_client(bigquery=RefusingBigQuery()), current_payload("log-1"))
    assert response.get_json()["status"] == "dead_lettered"
    logged = caplog.text + "".join(capsys.readouterr())
    assert "+15551234567" not in logged and "refund" not in logged


class BrokenReader:
    def get_documents(self, paths: Any, timeout: float) -> Any:
        raise RuntimeError("no credentials")


def test_warm_up_is_bounded_and_never_fatal(clean_firestore: Any) -> None:
    def store(reader: Any) -> ProfileStore:
        return ProfileStore(
            reader,
            profiles_collection="profiles",
            agents_collection="agents",
            cache=DocumentCache(0, 0, 0),
        )

    assert store(RestDocumentReader(PROJECT, "(default)")).warm_up(3.0) is True
    assert store(BrokenReader()).warm_up(0.5) is False

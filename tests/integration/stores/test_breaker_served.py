"""The circuit breaker through a served port: while BigQuery does not answer, end-of-calls stop
waiting out the insert budget and go straight to the dead-letter store; none is lost."""

from __future__ import annotations

import time
from typing import Any

import requests

from service.stores.dead_letters import DeadLetterStore
from tests.conftest import PROJECT, served_service
from tests.payloads import current_payload


def test_while_bigquery_hangs_end_of_calls_are_dead_lettered_without_waiting(
    emulator_env: dict[str, str], clean_firestore: Any, hanging_endpoint: str
) -> None:
    env = {
        **emulator_env,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "BIGQUERY_EMULATOR_HOST": f"http://{hanging_endpoint}",  # accepts, never answers
        "BIGQUERY_WRITE_API": "insert_all",
        "BIGQUERY_INSERT_TIMEOUT_SECONDS": "1",
        "BIGQUERY_BREAKER_FAILURES": "3",
        "BIGQUERY_BREAKER_PROBE_SECONDS": "60",
        "ALLOW_UNAUTHENTICATED": "true",
        "LOG_LEVEL": "WARNING",
    }
    sent = [f"breaker-{n}" for n in range(12)]
    timings, statuses = [], []
    with served_service(env) as (url, _), requests.Session() as http:
        for session_id in sent:
            started = time.monotonic()
            response = http.post(f"{url}/end-of-call", json=current_payload(session_id), timeout=30)
            timings.append(time.monotonic() - started)
            statuses.append((response.status_code, response.json()["status"]))
    assert statuses == [(200, "dead_lettered")] * len(sent)
    assert min(timings[:3]) >= 0.9  # each waited out the 1 s budget: the circuit was closed
    assert max(timings[3:]) < 0.5  # then straight to the dead-letter store
    stored = {
        letter.session_id for letter in DeadLetterStore(clean_firestore, "dead_letters").list()
    }
    assert stored == set(sent)

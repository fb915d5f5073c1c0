"""Routing, errors, authentication and logs, through the app functions-framework serves."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any

import pytest
import requests

from service.web.openapi import OPENAPI_PATH, render
from tests.conftest import ROOT, served_service
from tests.payloads import CHAT, current_payload


@pytest.mark.parametrize("path", ["/health", "/healthz"])
def test_health_answers_without_dependencies(make_client: Any, path: str) -> None:
    # /health for Cloud Run's probes (it reserves paths ending in z); /healthz for local tools.
    response = make_client(firestore=object(), bigquery=object()).get(path)
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


@pytest.mark.parametrize(
    "path", ["/", "/nope", "/prefetch/extra", "/robots.txt", "/favicon.ico", "/../etc/passwd"]
)
def test_unknown_paths_are_404_json(make_client: Any, path: str) -> None:
    response = make_client().get(path)
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/prefetch", "GET, HEAD"),
        ("GET", "/end-of-call", "POST"),
        ("DELETE", "/health", "GET, HEAD"),
        ("PUT", "/end-of-call", "POST"),
    ],
)
def test_wrong_method_is_405_json_with_allow(
    make_client: Any, method: str, path: str, allowed: str
) -> None:
    response = make_client().open(path, method=method)
    assert response.status_code == 405
    assert response.headers["Allow"] == allowed
    assert response.get_json()["error"] == "method_not_allowed"


def test_prefetch_skips_flask_dispatch_and_answers_the_same(
    make_client: Any, framework_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The guard hands the prefetch straight to the handler (the caller is waiting); every other
    # route still goes through the Flask app functions-framework builds.
    dispatched: list[str] = []
    monkeypatch.setitem(
        framework_app.before_request_funcs, None, [lambda: dispatched.append("flask")]
    )
    client = make_client()
    answer = client.get("/prefetch/?agent_id=a&session_id=s&from=%2B15551234567")
    head = client.head("/prefetch?agent_id=a&session_id=s")
    assert (answer.status_code, answer.mimetype, answer.get_json()) == (200, "application/json", {})
    assert answer.headers["Cache-Control"] == "no-store"
    assert (head.status_code, head.data) == (200, b"")
    assert dispatched == []
    assert client.get("/health").status_code == 200
    assert dispatched == ["flask"]


def test_trailing_slash_is_the_same_route(make_client: Any) -> None:
    assert make_client().get("/healthz/").status_code == 200


def test_webhooks_require_the_token_when_configured(make_client: Any) -> None:
    client = make_client(webhook_tokens="tok-1,tok-2")
    params = "agent_id=a&session_id=s"
    assert client.get(f"/prefetch?{params}").status_code == 401
    assert client.get(f"/prefetch?{params}&token=tok-2").status_code == 200
    assert (
        client.get(f"/prefetch?{params}", headers={"Authorization": "Bearer tok-1"}).status_code
        == 200
    )
    refused = client.post("/end-of-call", json=current_payload("s"))
    assert (refused.status_code, refused.get_json()["error"]) == (401, "unauthenticated")
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    # strangers learn nothing about the payload rules: the token is checked first
    assert client.post("/end-of-call", data="x", content_type="text/plain").status_code == 401
    assert client.get("/healthz").status_code == 200


def test_fails_closed_on_cloud_run_without_a_token(make_client: Any) -> None:
    client = make_client(k_service="millis-webhooks")
    response = client.get("/prefetch?agent_id=a&session_id=s")
    assert (response.status_code, response.get_json()["error"]) == (503, "auth_not_configured")
    opted_out = make_client(k_service="millis-webhooks", allow_unauthenticated=True)
    assert opted_out.get("/prefetch?agent_id=a&session_id=s").status_code == 200


def test_openapi_document_is_served_and_matches_the_models(make_client: Any) -> None:
    assert OPENAPI_PATH.read_text() == render(), "run: .venv/bin/python -m service.web.openapi"
    response = make_client().get("/openapi.json")
    assert response.status_code == 200
    paths = response.get_json()["paths"]
    assert paths["/end-of-call"]["post"]["operationId"] == "endOfCall"
    # Every route the router serves is documented, /health (Cloud Run's probe) included.
    assert set(paths) >= {"/prefetch", "/end-of-call", "/health", "/healthz"}


def test_logs_are_cloud_logging_json_linked_to_the_trace_and_free_of_personal_data(
    make_client: Any,
    clean_firestore: Any,
    dataset: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # successful requests are logged at DEBUG
    clean_firestore.collection("profiles").document("+15551234567").set({"name": "Zelda Q"})
    client = make_client(bigquery_dataset=dataset, webhook_tokens="tok-secret-1")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    client.get(
        "/prefetch?agent_id=a&session_id=s&from=%2B15551234567&to=%2B15550009999&token=tok-secret-1",
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    client.post(
        "/end-of-call",
        json=current_payload("log-1"),
        headers={
            "Authorization": "Bearer tok-secret-1",
            "X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1",
        },
    )
    client.post("/end-of-call", data="{broken", content_type="application/json")
    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    assert lines and all({"severity", "message", "time"} <= set(line) for line in lines)
    traces = {line.get("logging.googleapis.com/trace") for line in lines}
    assert f"projects/test-millis/traces/{trace_id}" in traces
    assert "projects/test-millis/traces/105445aa7843bc8bf206b12000100000" in traces
    text = json.dumps(lines)
    for private in [
        "+15551234567",
        "5551234567",
        "+15550009999",
        "Zelda",
        "tok-secret-1",
        CHAT[1]["content"],
        "Acme Dental",
        "crm-secret-456",
    ]:
        assert private not in text


def serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "service.web.server"],
        cwd=ROOT,
        env={**os.environ, **env, "PORT": str(port), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_served_as_deployed_on_a_port(emulator_env: dict[str, str]) -> None:
    with served_service({"GOOGLE_CLOUD_PROJECT": "test-millis"}) as (url, _):
        assert requests.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
        prefetch = requests.get(
            f"{url}/prefetch", params={"agent_id": "a", "session_id": "s"}, timeout=5
        )
        assert prefetch.status_code == 200


def test_invalid_configuration_stops_start_up_naming_the_variable() -> None:
    from emulators import free_port

    process = serve(
        {"GOOGLE_CLOUD_PROJECT": "test-millis", "PREFETCH_DEADLINE_MS": "soon"}, free_port()
    )
    output, _ = process.communicate(timeout=30)
    assert process.returncode != 0
    assert b"PREFETCH_DEADLINE_MS" in output


def test_signed_end_of_call_is_accepted_without_a_token(make_client: Any, dataset: str) -> None:
    from tests.unit.web.test_auth import SIGNING_SECRET, signed_headers

    client = make_client(
        webhook_tokens="tok-1", webhook_signing_secrets=SIGNING_SECRET, bigquery_dataset=dataset
    )
    body = json.dumps(current_payload("signed-1")).encode()
    headers = {**signed_headers(body), "Content-Type": "application/json"}
    accepted = client.post("/end-of-call", data=body, headers=headers)
    assert accepted.get_json() == {"status": "inserted", "session_id": "signed-1"}
    tampered = client.post(
        "/end-of-call", data=body.replace(b"signed-1", b"signed-2"), headers=headers
    )
    assert (tampered.status_code, tampered.get_json()["error"]) == (401, "invalid_signature")

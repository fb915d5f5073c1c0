"""Hostile headers against a real served port: trace context that cannot fail a request, refusals
that never wait for a body whatever the authentication headers, and a served log that holds none
of what a caller sent (issue 20, points 1, 3 and 7)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import PROJECT, served_service
from tests.integration.web.test_hostile_http import (
    AUTH,
    READ_TIMEOUT,
    TOKEN,
    Served,
    exchange,
    request_head,
    served,  # noqa: F401 - the module's served instance (no signing secret) is a fixture here too
)
from tests.payloads import current_payload

TRACE_ID = "105445aa7843bc8bf206b12000100000"
# Every header that feeds the trace context, with values no parser was written for.
HOSTILE_TRACE_HEADERS = [
    ("X-Cloud-Trace-Context", f"{TRACE_ID}/1;o={'1' * 5000}"),  # int() refuses > 4,300 digits
    ("X-Cloud-Trace-Context", f"{TRACE_ID}/1;o=99999999999"),
    ("X-Cloud-Trace-Context", f"{TRACE_ID}/99999999999999999999;o=1"),  # span id > 64 bits
    ("X-Cloud-Trace-Context", f"{'0' * 32}/0;o=1"),
    ("X-Cloud-Trace-Context", f"{TRACE_ID}/{'9' * 4000}"),
    ("X-Cloud-Trace-Context", "\xe9" * 40),  # Latin-1 bytes, as gunicorn decodes them
    ("X-Cloud-Trace-Context", ";o=1/"),
    ("traceparent", f"00-{'f' * 32}-{'f' * 16}-ff"),
    ("traceparent", f"ff-{TRACE_ID}-{'1' * 16}-01"),
    ("traceparent", "00-" + "1" * 7000),
    ("tracestate", "a=" + "b" * 7000),
    ("tracestate", ",".join(f"k{index}=v" for index in range(64))),
    ("tracestate", "=,=,=,\xe9=\xe9"),
]


# Other headers the service, Flask or functions-framework read, with values nobody expects. On
# the authenticated routes these come on top of a valid token (sent in the query where the header
# under test is Authorization), so the request must still be answered normally.
HOSTILE_OTHER_HEADERS = [
    ("Authorization", "Bearer " + "\xe9" * 300),
    ("Authorization", "Basic " + "=" * 5000),
    ("X-Webhook-Token", "\xff" * 100),
    ("Content-Type", "application/json; charset=" + "x" * 5000),
    ("Content-Type", 'application/json; a="' + "\\" * 2000),
    ("webhook-id", "\xe9" * 100),
    ("webhook-timestamp", "9" * 5000),
    ("Host", "\xe9" * 200),
    ("Cookie", "a=" + "%" * 5000),
    ("Function-Execution-Id", "x" * 5000),
    ("Accept", "*/*;q=" + "9" * 5000),
    ("Forwarded", "for=" + "\xe9" * 100),
]


def _routes(port: int) -> Iterator[tuple[str, bytes, bytes]]:
    yield "prefetch", request_head("GET", f"/prefetch?agent_id=a&session_id=s&token={TOKEN}"), b""
    yield "health", request_head("GET", "/health"), b""
    body = json.dumps(current_payload(f"trace-{uuid.uuid4().hex[:8]}")).encode()
    head = request_head(
        "POST",
        "/end-of-call",
        AUTH,
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    )
    yield "end-of-call", head, body


def _with_header(head: bytes, name: str, value: str) -> bytes:
    return head[:-2] + f"{name}: {value}\r\n\r\n".encode("latin-1")


@pytest.mark.parametrize(("name", "value"), HOSTILE_TRACE_HEADERS, ids=lambda v: str(v)[:24])
def test_no_trace_header_value_fails_a_request(
    served: Served,  # noqa: F811
    name: str,
    value: str,
) -> None:
    for route, head, body in _routes(served.port):
        answer = exchange(served.port, _with_header(head, name, value), body, wait=20)
        assert answer.status == 200, (route, answer.status, answer.body[:200])
        assert answer.headers["content-type"] == "application/json"


@pytest.mark.parametrize(("name", "value"), HOSTILE_OTHER_HEADERS, ids=lambda v: str(v)[:24])
def test_no_other_header_value_fails_a_request(
    served: Served,  # noqa: F811
    name: str,
    value: str,
) -> None:
    for route, head, body in _routes(served.port):
        if name == "Authorization":  # the token travels in the query instead
            head = head.replace(AUTH.encode() + b"\r\n", b"").replace(
                b"/end-of-call", f"/end-of-call?token={TOKEN}".encode(), 1
            )
        if name == "Host":
            head = head.replace(b"Host: 127.0.0.1\r\n", b"")
        answer = exchange(served.port, _with_header(head, name, value), body, wait=20)
        assert answer.status < 500 and answer.headers["content-type"] == "application/json", (
            route,
            answer.status,
        )


def test_a_well_formed_trace_header_next_to_a_hostile_one_still_answers(
    served: Served,  # noqa: F811
) -> None:
    head = request_head(
        "GET",
        f"/prefetch?agent_id=a&session_id=s&token={TOKEN}",
        f"traceparent: 00-{TRACE_ID}-00f067aa0ba902b7-01",
        f"X-Cloud-Trace-Context: {TRACE_ID}/1;o={'1' * 5000}",
        "tracestate: " + "x" * 6000,
    )
    assert exchange(served.port, head).status == 200


# -- authentication before the body, in every combination of headers -------------------------

SIGNING_SECRET = "whsec_" + base64.b64encode(b"hostile-http-signing-secret-0001").decode()


@pytest.fixture(scope="module")
def served_with_signing(emulator_env: dict[str, str]) -> Iterator[Served]:
    env = {
        **emulator_env,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "WEBHOOK_TOKENS": TOKEN,
        "WEBHOOK_SIGNING_SECRETS": SIGNING_SECRET,
        "REQUEST_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
        "LOG_LEVEL": "WARNING",
    }
    with served_service(env) as (url, process):
        yield Served(int(url.rsplit(":", 1)[1]), process)


def _signature_headers(*, age_seconds: float = 0, signature: str | None = None) -> list[str]:
    forged = "v1," + base64.b64encode(b"\x00" * 32).decode()
    return [
        "webhook-id: msg_1",
        f"webhook-timestamp: {int(time.time() - age_seconds)}",
        f"webhook-signature: {signature if signature is not None else forged}",
    ]


# Unauthenticated POSTs: each must be refused at once, before its body, on both instances
# (with no signing secret, a signature can never authenticate; with one, these cannot be valid).
UNAUTHENTICATED = {
    "signature only": ["webhook-signature: v1,abc"],
    "empty signature": ["webhook-signature: "],
    "well-formed forged signature, stale": _signature_headers(age_seconds=3600),
    "well-formed forged signature, from the future": _signature_headers(age_seconds=-3600),
    "signature of the wrong version": _signature_headers(signature="v2,abc"),
    "signature without id": _signature_headers()[1:],
    "non-ASCII digits as timestamp": [
        "webhook-id: m",
        "webhook-timestamp: \xb2\xb3",
        "webhook-signature: v1,abc",
    ],
    "wrong bearer and a signature": ["Authorization: Bearer wrong", "webhook-signature: v1,x"],
    "wrong token header and a signature": ["X-Webhook-Token: wrong", "webhook-signature: v1,x"],
    "upper-case signature header": ["WEBHOOK-SIGNATURE: v1,abc"],
    "basic auth": ["Authorization: Basic dXNlcjpwYXNz"],
}


@pytest.mark.parametrize("case", sorted(UNAUTHENTICATED))
@pytest.mark.parametrize("instance", ["served", "served_with_signing"])
def test_unauthenticated_posts_are_refused_before_their_body(
    request: pytest.FixtureRequest, instance: str, case: str
) -> None:
    port = request.getfixturevalue(instance).port
    for query in ("", "?token=wrong"):
        head = request_head(
            "POST",
            f"/end-of-call{query}",
            *UNAUTHENTICATED[case],
            "Content-Type: application/json",
            "Content-Length: 3000000",
        )
        answer = exchange(port, head, b"{}")  # 3 MB announced, 2 bytes sent
        assert answer.status == 401, (case, answer.status)
        assert answer.seconds < READ_TIMEOUT  # not after waiting for the body
        assert answer.closed and answer.headers["connection"] == "close"


def test_without_a_signing_secret_a_signature_header_is_ignored_and_the_token_decides(
    served: Served,  # noqa: F811
) -> None:
    body = json.dumps(current_payload(f"sig-{uuid.uuid4().hex[:8]}")).encode()
    head = request_head(
        "POST",
        "/end-of-call",
        AUTH,
        *_signature_headers(),
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    )
    assert exchange(served.port, head, body, wait=20).status == 200


def test_a_plausible_forged_signature_is_read_within_bounds_and_refused(
    served_with_signing: Served,
) -> None:
    # The one case only the body can decide (the signature covers it): read within the size and
    # time limits like any accepted body, then refused.
    head = request_head(
        "POST",
        "/end-of-call",
        *_signature_headers(),
        "Content-Type: application/json",
        "Content-Length: 2",
    )
    answer = exchange(served_with_signing.port, head, b"{}")
    assert (answer.status, answer.json()["error"]) == (401, "invalid_signature")


# -- nothing a caller sent reaches the served output -------------------------------------------

PLANTED_TOKEN = "planted-token-7Qx9Zr"
PLANTED_SECRET = "whsec_" + base64.b64encode(b"planted-signing-secret-0123456").decode()
PLANTED_NUMBER = "+15559870123"
PLANTED_OTHER_NUMBER = "+447700900456"


@pytest.fixture(scope="module")
def hostile_run_output(
    emulator_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Everything a served instance wrote (stdout and stderr) at its most verbose log levels
    while hostile and ordinary requests carried planted values in every place a caller controls."""
    output = tmp_path_factory.mktemp("served-output") / "output.txt"
    env = {
        **emulator_env,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "WEBHOOK_TOKENS": PLANTED_TOKEN,
        "WEBHOOK_SIGNING_SECRETS": PLANTED_SECRET,
        "REQUEST_READ_TIMEOUT_SECONDS": "1",
        "LOG_LEVEL": "DEBUG",
        "GUNICORN_LOG_LEVEL": "debug",
    }
    with served_service(env, output) as (url, _process):
        _hostile_run(int(url.rsplit(":", 1)[1]), url)
        time.sleep(0.5)
    return output.read_text(errors="replace")


def _hostile_run(port: int, url: str) -> None:
    number = PLANTED_NUMBER.replace("+", "%2B")
    query = (
        f"agent_id=planted-agent&session_id=planted-session&from={number}"
        f"&to={PLANTED_OTHER_NUMBER}&crm_id=planted-metadata-value&note=planted%20note"
    )
    trace_bomb = f"X-Cloud-Trace-Context: {TRACE_ID}/1;o={'1' * 5000}"
    raw_requests = [
        # the token in the query, every trace header hostile
        request_head(
            "GET",
            f"/prefetch?{query}&token={PLANTED_TOKEN}",
            trace_bomb,
            "tracestate: planted-tracestate=" + "x" * 600,
            "traceparent: 00-planted-traceparent",
        ),
        # a wrong token, repeated and ambiguous parameters
        request_head("GET", f"/prefetch?{query}&from=%2B15550000001&token=planted-wrong-token"),
        request_head("GET", f"/prefetch?{query}&agent_id=other&token={PLANTED_TOKEN}"),
        # unknown path and wrong method with the query
        request_head("GET", f"/planted-path?{query}&token={PLANTED_TOKEN}"),
        request_head("DELETE", f"/prefetch?{query}&token={PLANTED_TOKEN}"),
        # gunicorn's own errors: a bad Content-Length, a bad request line, oversized headers
        request_head("GET", f"/prefetch?{query}&token={PLANTED_TOKEN}", "Content-Length: x1"),
        f"GARBAGE /prefetch?{query}&token={PLANTED_TOKEN}\r\n\r\n".encode(),
        request_head("GET", f"/prefetch?{query}", f"X-Planted: {PLANTED_TOKEN}" * 500),
        request_head(
            "GET", f"/prefetch?{query}", f"Authorization: Bearer {PLANTED_TOKEN}", "Bad Header"
        ),
        # refusals that quote what they refuse: a header line without a colon, a bad method
        request_head("GET", f"/prefetch?{query}", "planted-header-line"),
        request_head("planted-method", f"/prefetch?{query}"),
        # malformed chunked framing on every route
        request_head("GET", f"/prefetch?{query}", "Transfer-Encoding: chunked") + b"ZZ\r\n",
    ]
    for raw in raw_requests:
        exchange(port, raw, wait=5, answer_has_body=False)

    # Bodies: a valid call, an invalid one, one too deep, one signed with a forged signature.
    headers = {"Authorization": f"Bearer {PLANTED_TOKEN}", "Content-Type": "application/json"}
    call = current_payload("planted-session-id")
    call["voip"] = {"provider": "twilio", "from": PLANTED_NUMBER, "to": PLANTED_OTHER_NUMBER}
    call["chat"] = json.dumps(
        [{"role": "user", "content": f"planted transcript, call me on {PLANTED_NUMBER}"}]
    )
    for body in (
        json.dumps(call),
        '{"chat": "planted-invalid-body", ',
        "[" * 5000 + '"planted-deep-body"' + "]" * 5000,
        json.dumps({"session_id": "planted-bad-shape", "chat": 5, "ts": "planted-ts"}),
    ):
        requests.post(f"{url}/end-of-call", data=body.encode(), headers=headers, timeout=20)
    requests.post(
        f"{url}/end-of-call?token=planted-wrong-token",
        data=b'{"planted": "signed body"}',
        headers={
            "Content-Type": "application/json",
            **dict(line.split(": ", 1) for line in _signature_headers()),
        },
        timeout=20,
    )
    requests.get(f"{url}/prefetch?{query}", headers={"X-Webhook-Token": PLANTED_TOKEN}, timeout=10)


PLANTED = [
    PLANTED_TOKEN,
    PLANTED_SECRET,
    PLANTED_SECRET.removeprefix("whsec_"),
    PLANTED_NUMBER,
    PLANTED_NUMBER.lstrip("+"),
    PLANTED_NUMBER.replace("+", "%2B"),
    PLANTED_OTHER_NUMBER.lstrip("+"),
    "planted-metadata-value",
    "planted note",
    "planted%20note",
    "planted-wrong-token",
    "planted-tracestate",
    "planted-traceparent",
    "planted transcript",
    "planted-invalid-body",
    "planted-deep-body",
    "planted-bad-shape",
    "planted-ts",
    "signed body",
    "planted-path",
    "planted-header-line",
    "planted-method",
    "crm_id=",
    "token=",
]


def test_the_served_output_holds_nothing_a_caller_sent(hostile_run_output: str) -> None:
    assert "gunicorn" in hostile_run_output  # gunicorn's own debug lines are in the output
    found = [value for value in PLANTED if value in hostile_run_output]
    assert found == []
    # Every line is one JSON object from the service's formatter: no traceback, no line in
    # gunicorn's own format (those quoted the request line).
    for line in hostile_run_output.splitlines():
        assert isinstance(json.loads(line), dict), line[:80]


def test_the_hostile_run_did_log_what_operators_need(hostile_run_output: str) -> None:
    # The hygiene above is not bought by logging nothing: refusals and the stored call are there.
    lines = [json.loads(line) for line in hostile_run_output.splitlines()]
    messages = {line.get("message") for line in lines}
    assert "end-of-call stored" in messages and "webhook request" in messages
    assert any(line.get("logger", "").startswith("gunicorn") for line in lines)


def test_whatever_escapes_a_route_is_a_json_500_not_an_html_page(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: the span set-up itself fails (as the trace header once made it), outside
    # the router's own error handling; on the guard's direct route and on Flask's routes alike.
    import service.web.routes

    def broken_span(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracing broke")

    client = make_client()
    monkeypatch.setattr(service.web.routes, "request_span", broken_span)
    for path in ("/prefetch?agent_id=a&session_id=s", "/health"):
        response = client.get(path)
        assert response.status_code == 500, path
        assert response.get_json() == {"error": "internal", "message": "internal error"}

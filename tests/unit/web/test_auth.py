from __future__ import annotations

import time
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from service.config import Settings
from service.web.auth import Authenticator

SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def authenticator(**settings: object) -> Authenticator:
    return Authenticator(Settings(google_cloud_project="demo-x", **settings))  # type: ignore[arg-type]


def test_token_accepted_as_bearer_header_or_query_parameter() -> None:
    auth = authenticator(webhook_tokens="secret-a")
    assert auth.check("GET", {"authorization": "Bearer secret-a"}, None, b"") is None
    assert auth.check("GET", {"authorization": "bearer secret-a"}, None, b"") is None
    assert auth.check("GET", {"x-webhook-token": "secret-a"}, None, b"") is None
    assert auth.check("GET", {}, "secret-a", b"") is None


def test_wrong_or_missing_token_is_401() -> None:
    auth = authenticator(webhook_tokens="secret-a")
    for headers, query in [
        ({}, None),
        ({"authorization": "Bearer nope"}, None),
        ({}, "secret-"),
        ({"authorization": "Basic secret-a"}, None),
        ({}, "secret-a "),
    ]:
        failure = auth.check("GET", headers, query, b"")
        assert failure is not None and (failure.status, failure.error) == (401, "unauthenticated")


def test_configurable_header_name() -> None:
    auth = authenticator(webhook_tokens="t1", webhook_token_header="X-Millis-Secret")
    assert auth.check("GET", {"x-millis-secret": "t1"}, None, b"") is None
    assert auth.check("GET", {"x-webhook-token": "t1"}, None, b"") is not None


def test_two_tokens_valid_during_rotation() -> None:
    auth = authenticator(webhook_tokens="old,new")
    assert auth.check("GET", {}, "old", b"") is None
    assert auth.check("GET", {}, "new", b"") is None
    assert auth.check("GET", {}, "older", b"") is not None


def test_fails_closed_on_cloud_run_without_tokens() -> None:
    failure = authenticator(k_service="millis-webhooks").check("GET", {}, None, b"")
    assert failure is not None and (failure.status, failure.error) == (503, "auth_not_configured")


def test_explicit_opt_out_on_cloud_run() -> None:
    auth = authenticator(k_service="millis-webhooks", allow_unauthenticated=True)
    assert auth.check("GET", {}, None, b"") is None


def test_open_locally_without_tokens() -> None:
    assert authenticator().check("POST", {}, None, b"{}") is None


def signed_headers(
    body: bytes, secret: str = SIGNING_SECRET, at: float | None = None
) -> dict[str, str]:
    timestamp = datetime.fromtimestamp(at or time.time(), UTC)
    signature = Webhook(secret).sign("msg_1", timestamp, body.decode())
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
    }


def test_valid_signature_accepted_for_post() -> None:
    auth = authenticator(webhook_tokens="t", webhook_signing_secrets=SIGNING_SECRET)
    body = b'{"session_id": "s"}'
    assert auth.check("POST", signed_headers(body), None, body) is None


def test_tampered_stale_or_foreign_signature_rejected() -> None:
    auth = authenticator(webhook_tokens="t", webhook_signing_secrets=SIGNING_SECRET)
    body = b'{"session_id": "s"}'
    other_secret = "whsec_" + "A" * 32
    for headers, sent in [
        (signed_headers(body), b'{"session_id": "t"}'),
        (signed_headers(body, at=time.time() - 3600), body),
        (signed_headers(body, secret=other_secret), body),
        ({**signed_headers(body), "webhook-signature": "garbage"}, body),
        ({**signed_headers(body), "webhook-timestamp": "soon"}, body),
    ]:
        failure = auth.check("POST", headers, None, sent)
        assert failure is not None and failure.error == "invalid_signature"


def test_signature_does_not_authenticate_a_get() -> None:
    auth = authenticator(webhook_tokens="t", webhook_signing_secrets=SIGNING_SECRET)
    assert auth.check("GET", signed_headers(b""), None, b"") is not None

"""Authentication of webhook calls: a shared token, or a Standard Webhooks HMAC signature.

Millis cannot send Google identity tokens and its dashboard only takes a URL, so the token may
come as `Authorization: Bearer`, as a configurable header, or as the `token` query parameter.
Several tokens may be valid at once (rotation without downtime). Signed requests (replay,
backfill, a signing proxy) carry `webhook-id`, `webhook-timestamp` and `webhook-signature`;
the signature covers the body, so it is accepted for POST requests only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from standardwebhooks.webhooks import Webhook
from werkzeug.datastructures import Headers

from service.config import Settings

# Flask's case-insensitive headers, or a plain mapping with lower-case names.
HeaderLookup = Headers | Mapping[str, str]

TOKEN_PARAMETER = "token"  # noqa: S105 - a parameter name, not a secret


@dataclass(frozen=True)
class AuthFailure:
    status: int
    error: str
    message: str


def _digest(value: str) -> bytes:
    # Comparing fixed-length digests keeps the comparison constant-time whatever the lengths.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.token_digests = [
            _digest(token.get_secret_value()) for token in settings.webhook_tokens
        ]
        self.signers = [
            Webhook(secret.get_secret_value()) for secret in settings.webhook_signing_secrets
        ]
        self.header_name = settings.webhook_token_header
        self.header = self.header_name.lower()
        self.fail_closed = settings.on_cloud_run and not settings.allow_unauthenticated
        self.open = not self.token_digests and not self.signers

    def needs_body(self, method: str, headers: HeaderLookup) -> bool:
        """Whether only the body can decide: a signed POST that could be valid (signing secrets
        are configured, and its id, timestamp and signature are well formed and fresh). Any other
        request is decided by check() from its headers and query alone, before the body."""
        if not (self.signers and method == "POST" and headers.get("webhook-signature")):
            return False
        return signature_headers_plausible(headers)

    def check(
        self, method: str, headers: HeaderLookup, query_token: str | None, body: bytes
    ) -> AuthFailure | None:
        """None when the request may proceed. `headers` is looked up by lower-case names."""
        if self.open:
            if self.fail_closed:
                return AuthFailure(
                    503, "auth_not_configured", "the service has no webhook token configured"
                )
            return None  # local development without tokens
        if self.signers and method == "POST" and headers.get("webhook-signature"):
            return (
                None
                if self._signature_valid(headers, body)
                else AuthFailure(
                    401, "invalid_signature", "the webhook signature is invalid or too old"
                )
            )
        candidates = [
            value
            for value in (self._bearer(headers), headers.get(self.header), query_token)
            if value
        ]
        if candidates and self._token_valid(candidates):
            return None
        return AuthFailure(
            401,
            "unauthenticated",
            "a valid token is required (Authorization: Bearer, "
            f"{self.header_name} header or ?{TOKEN_PARAMETER}=)",
        )

    @staticmethod
    def _bearer(headers: HeaderLookup) -> str | None:
        scheme, _, credentials = (headers.get("authorization") or "").partition(" ")
        return credentials.strip() if scheme.lower() == "bearer" else None

    def _token_valid(self, candidates: list[str]) -> bool:
        matched = False
        for candidate in candidates:
            digest = _digest(candidate)
            for expected in self.token_digests:
                matched |= hmac.compare_digest(digest, expected)
        return matched

    def _signature_valid(self, headers: HeaderLookup, body: bytes) -> bool:
        wanted = {
            name: headers.get(name, "")
            for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
        }
        for signer in self.signers:
            try:
                signer.verify(body, wanted, json_parse=False)
            except Exception:  # noqa: S112 - malformed input raises assorted errors: all "invalid"
                continue
            return True
        return False


# Standard Webhooks: a timestamp within 5 minutes of now, `v1,<base64 HMAC-SHA256>` signatures.
SIGNATURE_TOLERANCE_SECONDS = 5 * 60
_SIGNATURE = re.compile(r"v1,[A-Za-z0-9+/]{43}=")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() takes others too
_MAX_SIGNATURES = 10
_MAX_WEBHOOK_ID_CHARS = 256


def signature_headers_plausible(headers: HeaderLookup, now: float | None = None) -> bool:
    """Whether a signature could be valid, judged without the body (which it covers): anything
    else is refused before a byte of the body is read."""
    webhook_id = headers.get("webhook-id") or ""
    timestamp = headers.get("webhook-timestamp") or ""
    signatures = (headers.get("webhook-signature") or "").split(" ")
    if not 0 < len(webhook_id) <= _MAX_WEBHOOK_ID_CHARS or not _TIMESTAMP.fullmatch(timestamp):
        return False
    if len(signatures) > _MAX_SIGNATURES:
        return False
    current = time.time() if now is None else now
    if abs(int(timestamp) - current) > SIGNATURE_TOLERANCE_SECONDS:
        return False
    return any(_SIGNATURE.fullmatch(signature) for signature in signatures)

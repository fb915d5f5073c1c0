"""Checks both webhooks make before their own work: the bounds of the query string, and the
caller's token or signature. Each failure is an HttpError the router answers in JSON."""

from __future__ import annotations

import logging
from collections.abc import Callable

import flask

from service.config import Settings
from service.web.auth import TOKEN_PARAMETER, Authenticator
from service.web.guard import HttpError, refused

log = logging.getLogger("service")

MAX_QUERY_KEY_CHARS = 128
MAX_QUERY_STRING_CHARS = 64 * 1024


def check_query_limits(request: flask.Request, settings: Settings) -> None:
    if len(request.query_string) > MAX_QUERY_STRING_CHARS:
        raise HttpError(414, "query_too_large", "the query string is too long")
    for count, (key, value) in enumerate(request.args.items(multi=True), start=1):
        if count > settings.max_query_params:
            raise HttpError(
                400,
                "too_many_parameters",
                f"at most {settings.max_query_params} parameters",
            )
        if len(key) > MAX_QUERY_KEY_CHARS or len(value) > settings.max_query_value_chars:
            raise HttpError(
                400,
                "parameter_too_long",
                f"parameter names are limited to {MAX_QUERY_KEY_CHARS} characters and values "
                f"to {settings.max_query_value_chars}",
            )


def authenticate(auth: Authenticator, request: flask.Request, body: Callable[[], bytes]) -> None:
    """Refuse the request unless its token or signature is valid. `body` is read only when a
    signature that could be valid needs it (the signature covers the body)."""
    failure = auth.check(
        request.method,
        request.headers,
        request.args.get(TOKEN_PARAMETER),
        body() if auth.needs_body(request.method, request.headers) else b"",
    )
    if failure is not None:
        if failure.status >= 500:
            log.error("webhook refused: " + failure.message, extra={"error": failure.error})
        raise refused(failure)

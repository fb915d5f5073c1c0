"""Both webhooks: prefetch (Firestore profile lookup) and end of call (BigQuery row), behind the
request guard (service/http_guard.py), which has already refused what it could and read the body."""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import flask

from service.auth import TOKEN_PARAMETER, Authenticator
from service.config import Settings
from service.firestore_rest import RestDocumentReader
from service.http_guard import (
    MAX_JSON_DEPTH,
    HttpError,
    allowed_methods,
    json_depth_exceeds,
    json_response,
)
from service.prefetch import CALL_PARAMETERS, PrefetchRequest, PrefetchService
from service.profiles import DocumentCache, ProfileStore
from service.telemetry import child_span, request_span

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from service.dead_letters import DeadLetterStore
    from service.redaction import Redactor
    from service.sink import Sink

log = logging.getLogger("service")

JSON_CONTENT_TYPES = ("application/json", "application/cloudevents+json")
MAX_QUERY_KEY_CHARS = 128
MAX_QUERY_STRING_CHARS = 64 * 1024


class WebhookHandler:
    """Both webhooks for one instance. Clients are created once, on first use for the end of call;
    tests inject fakes. Profiles are read over Firestore's REST API (service/firestore_rest.py);
    `firestore_client` (google-cloud-firestore) is for dead letters only."""

    def __init__(
        self,
        settings: Settings,
        firestore_client: Any = None,
        *,
        bigquery_client: Any = None,
        profile_store: ProfileStore | None = None,
    ) -> None:
        self.settings = settings
        self.firestore_client = firestore_client
        self.bigquery_client = bigquery_client
        self.auth = Authenticator(settings)
        self.store = profile_store or ProfileStore(
            RestDocumentReader(settings.google_cloud_project, settings.firestore_database),
            profiles_collection=settings.profiles_collection,
            agents_collection=settings.agents_collection,
            cache=DocumentCache(
                settings.profile_cache_ttl_seconds,
                settings.profile_cache_stale_seconds,
                settings.profile_cache_max_entries,
                agent_fresh_seconds=settings.agent_cache_ttl_seconds,
            ),
            max_concurrent_reads=settings.prefetch_max_concurrent_reads,
        )
        self.prefetch = PrefetchService(
            self.store,
            deadline_seconds=settings.prefetch_deadline_ms / 1000,
            default_format=settings.prefetch_response_format,
            default_region=settings.default_phone_region,
            default_lookup_key=settings.prefetch_lookup_key,
            lookup_signing_secrets={
                agent: [secret.get_secret_value() for secret in secrets]
                for agent, secrets in settings.lookup_signing_secrets.items()
            },
        )
        self._end_of_call: tuple[Sink, DeadLetterStore, Redactor] | None = None
        self._end_of_call_lock = threading.Lock()
        self.routes: dict[str, dict[str, Callable[[flask.Request, Span], flask.Response]]] = {
            "/prefetch": {"GET": self.handle_prefetch},
            "/end-of-call": {"POST": self.handle_end_of_call},
            "/health": {"GET": self.handle_health},
            "/healthz": {"GET": self.handle_health},
            "/openapi.json": {"GET": self.handle_openapi},
        }
        if self.auth.open and self.auth.fail_closed:
            log.error(
                "no WEBHOOK_TOKENS configured on Cloud Run: webhooks answer 503 until one is set "
                "(or ALLOW_UNAUTHENTICATED=true)"
            )

    # -- routing -------------------------------------------------------------------------------

    def __call__(self, request: flask.Request) -> flask.Response:
        started = time.perf_counter()
        path = request.path.rstrip("/") or "/"
        with request_span(f"{request.method} {path}", request.headers) as span:
            try:
                # The guard refused unknown paths and methods already; checked again for callers
                # that serve this handler without it.
                methods = self.routes.get(path)
                if methods is None:
                    raise HttpError(404, "not_found", f"no webhook at {path[:100]}")
                method = "GET" if request.method == "HEAD" else request.method
                if method not in methods:
                    allowed = ", ".join(allowed_methods(path) or ())
                    raise HttpError(
                        405, "method_not_allowed", f"use {allowed} for {path}", {"Allow": allowed}
                    )
                response = methods[method](request, span)
            except HttpError as exc:
                response = json_response(
                    exc.status, {"error": exc.error, "message": exc.message}, exc.headers
                )
                span.set_attribute("outcome", exc.error)
            except Exception as exc:
                log.error("unhandled error", extra={"path": path, "error_type": type(exc).__name__})
                span.set_attribute("outcome", "internal_error")
                response = json_response(500, {"error": "internal", "message": "internal error"})
            span.set_attribute("http.status_code", response.status_code)
            # Cloud Run logs every request already; our line adds the outcome where it matters.
            level = logging.DEBUG if response.status_code < 400 else logging.WARNING
            if path not in ("/health", "/healthz") and log.isEnabledFor(level):
                log.log(
                    level,
                    "request",
                    extra={
                        "httpRequest": {
                            "requestMethod": request.method,
                            "status": response.status_code,
                            "latency": f"{time.perf_counter() - started:.6f}s",
                        },
                        "path": path[:100],
                    },
                )
            return response

    # -- prefetch ------------------------------------------------------------------------------

    def handle_prefetch(self, request: flask.Request, span: Span) -> flask.Response:
        self._check_query_limits(request)
        self._authenticate(request, lambda: b"")
        parameters = {key: value for key, value in request.args.items() if key != TOKEN_PARAMETER}
        missing = [name for name in ("agent_id", "session_id") if not parameters.get(name)]
        if missing:
            raise HttpError(400, "missing_parameter", f"required: {', '.join(missing)}")
        agent_id = parameters["agent_id"]
        span.set_attribute("agent_id", agent_id)
        prefetch_request = PrefetchRequest(
            agent_id=agent_id,
            session_id=parameters["session_id"],
            from_number=parameters.get("from"),
            to_number=parameters.get("to"),
            metadata={k: v for k, v in parameters.items() if k not in CALL_PARAMETERS},
        )
        try:
            with child_span("firestore.read"):
                answer = self.prefetch.answer(prefetch_request)
        except Exception as exc:  # the caller is waiting: answer empty rather than stop the call
            log.error("prefetch failed; answered {}", extra={"error_type": type(exc).__name__})
            span.set_attribute("outcome", "error_empty_answer")
            return json_response(200, {})
        span.set_attribute("profile_found", answer.profile_found)
        span.set_attribute("cache_hits", answer.cache_hits)
        span.set_attribute("outcome", "degraded" if answer.degraded else "answered")
        return json_response(200, answer.body)

    def _check_query_limits(self, request: flask.Request) -> None:
        if len(request.query_string) > MAX_QUERY_STRING_CHARS:
            raise HttpError(414, "query_too_large", "the query string is too long")
        for count, (key, value) in enumerate(request.args.items(multi=True), start=1):
            if count > self.settings.max_query_params:
                raise HttpError(
                    400,
                    "too_many_parameters",
                    f"at most {self.settings.max_query_params} parameters",
                )
            if len(key) > MAX_QUERY_KEY_CHARS or len(value) > self.settings.max_query_value_chars:
                raise HttpError(
                    400,
                    "parameter_too_long",
                    f"parameter names are limited to {MAX_QUERY_KEY_CHARS} characters and values "
                    f"to {self.settings.max_query_value_chars}",
                )

    # -- end of call ---------------------------------------------------------------------------

    def handle_end_of_call(self, request: flask.Request, span: Span) -> flask.Response:
        from service.end_of_call import (
            InvalidPayload,
            StoresUnavailable,
            insert_or_dead_letter,
            normalise_call,
            parse_payload,
        )
        from service.row_limits import PayloadTooLarge

        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise HttpError(413, "body_too_large", f"the body is limited to {limit} bytes")
        self._check_query_limits(request)
        # Read once, and only after the token check passed (or to verify a signature).
        read_body = functools.cache(functools.partial(self._read_body, request, limit))
        self._authenticate(request, read_body)
        mimetype = request.mimetype
        if mimetype not in JSON_CONTENT_TYPES and not mimetype.endswith("+json"):
            raise HttpError(415, "unsupported_media_type", "send the payload as application/json")

        body = read_body()
        if json_depth_exceeds(body):  # before parsing: the parser recurses
            raise HttpError(
                400, "payload_too_deep", f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
            )
        try:
            raw = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise HttpError(400, "invalid_json", "the body is not valid JSON") from None
        repairs: list[dict[str, str]] = []
        try:
            payload = parse_payload(raw, repairs)
        except InvalidPayload as exc:
            response = json_response(
                400, {"error": "invalid_payload", "message": str(exc), "details": exc.details}
            )
            span.set_attribute("outcome", "invalid_payload")
            return response
        span.set_attribute("agent_id", payload.agent_id or "")
        sink, dead_letters, redactor = self._end_of_call_dependencies()
        try:
            row = normalise_call(
                raw,
                payload,
                received_at=datetime.now(UTC),
                source="webhook",
                redactor=redactor,
                store_agent_config=self.settings.store_agent_config != "none",
                repairs=repairs,
            )
        except PayloadTooLarge as exc:  # refused now rather than dead-lettered forever
            raise HttpError(413, "row_too_large", str(exc)) from None
        try:
            with child_span("bigquery.insert"):
                outcome = insert_or_dead_letter(row, sink, dead_letters)
        except StoresUnavailable:
            span.set_attribute("outcome", "storage_unavailable")
            raise HttpError(
                503, "storage_unavailable", "the call could not be stored; retry later"
            ) from None
        span.set_attribute("outcome", outcome.status)
        log.info(
            "end-of-call stored",
            extra={
                "session_id": outcome.session_id,
                "status": outcome.status,
                "reason": outcome.reason,
            },
        )
        return json_response(200, {"status": outcome.status, "session_id": outcome.session_id})

    def _read_body(self, request: flask.Request, limit: int) -> bytes:
        body = request.stream.read(limit + 1)
        if len(body) > limit:
            raise HttpError(413, "body_too_large", f"the body is limited to {limit} bytes")
        return body

    def _end_of_call_dependencies(self) -> tuple[Sink, DeadLetterStore, Redactor]:
        # BigQuery is imported on first use: the prefetch path and cold start do not pay for it.
        with self._end_of_call_lock:
            if self._end_of_call is None:
                from service.dead_letters import DeadLetterStore
                from service.profiles import make_client as firestore_client
                from service.redaction import Redactor
                from service.sink import make_sink

                settings = self.settings
                if self.firestore_client is None:
                    self.firestore_client = firestore_client(
                        settings.google_cloud_project, settings.firestore_database
                    )
                self._end_of_call = (
                    make_sink(settings, self.bigquery_client),
                    DeadLetterStore(
                        self.firestore_client,
                        settings.dead_letter_collection,
                        settings.dead_letter_timeout_seconds,
                    ),
                    Redactor.from_settings(settings),
                )
            return self._end_of_call

    # -- small routes --------------------------------------------------------------------------

    def handle_health(self, request: flask.Request, span: Span) -> flask.Response:
        return json_response(200, {"status": "ok"})

    def handle_openapi(self, request: flask.Request, span: Span) -> flask.Response:
        from service.openapi import OPENAPI_PATH

        return flask.Response(OPENAPI_PATH.read_bytes(), status=200, mimetype="application/json")

    def _authenticate(self, request: flask.Request, body: Callable[[], bytes]) -> None:
        signed = bool(request.headers.get("webhook-signature"))
        failure = self.auth.check(
            request.method,
            request.headers,
            request.args.get(TOKEN_PARAMETER),
            body() if signed else b"",
        )
        if failure is not None:
            if failure.status >= 500:
                log.error("webhook refused: " + failure.message, extra={"error": failure.error})
            headers = {"WWW-Authenticate": "Bearer"} if failure.status == 401 else None
            raise HttpError(failure.status, failure.error, failure.message, headers)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")

"""The end-of-call webhook: a POST from Millis after a call, stored as one BigQuery row
(service.end_of_call.normalise, then service.end_of_call.delivery), or kept as a dead letter.

BigQuery, the dead-letter store and the redactor are created on the first end-of-call: the
prefetch path and cold start never import them."""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import flask

from service.config import Settings
from service.telemetry import child_span
from service.web.auth import Authenticator
from service.web.checks import authenticate, check_query_limits
from service.web.guard import MAX_JSON_DEPTH, HttpError, json_depth_exceeds, json_response

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from service.end_of_call.redaction import Redactor
    from service.memory.recorder import MemoryRecorder, ReadAgent
    from service.memory.settings import CallerId
    from service.stores.dead_letters import DeadLetterStore
    from service.stores.errors import Sink

log = logging.getLogger("service")

JSON_CONTENT_TYPES = ("application/json", "application/cloudevents+json")


class EndOfCallWebhook:
    """`firestore_client` (google-cloud-firestore) holds the dead letters and caller memory;
    `bigquery_client` is the client of the configured write API. Both are created on first use
    unless injected (tests). `read_agent` and `caller_id` come from the prefetch side (the Router):
    the agent's settings and whose call it is, decided as the prefetch decides them."""

    def __init__(
        self,
        settings: Settings,
        auth: Authenticator,
        firestore_client: Any = None,
        bigquery_client: Any = None,
        *,
        read_agent: ReadAgent | None = None,
        caller_id: CallerId | None = None,
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.firestore_client = firestore_client
        self.bigquery_client = bigquery_client
        self.read_agent = read_agent
        self.caller_id = caller_id
        self._stores: tuple[Sink, DeadLetterStore, Redactor] | None = None
        self._memory: MemoryRecorder | None = None
        self._stores_lock = threading.Lock()

    def __call__(self, request: flask.Request, span: Span) -> flask.Response:
        started = time.monotonic()
        from service.end_of_call.delivery import StoresUnavailable, insert_or_dead_letter
        from service.end_of_call.normalise import InvalidPayload, normalise_call, parse_payload
        from service.stored_row import PayloadTooLarge

        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise HttpError(413, "body_too_large", f"the body is limited to {limit} bytes")
        check_query_limits(request, self.settings)
        # Read once, and only after the token check passed (or to verify a signature).
        read_body = functools.cache(functools.partial(_read_body, request, limit))
        authenticate(self.auth, request, read_body)
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
        sink, dead_letters, redactor = self._stores_once()
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
        memory = self._remember(row, started)
        span.set_attribute("memory", memory)
        log.info(
            "end-of-call stored",
            extra={
                "session_id": outcome.session_id,
                "status": outcome.status,
                "reason": outcome.reason,
                "memory": memory,
            },
        )
        return json_response(200, {"status": outcome.status, "session_id": outcome.session_id})

    def _stores_once(self) -> tuple[Sink, DeadLetterStore, Redactor]:
        # BigQuery is imported on first use: the prefetch path and cold start do not pay for it.
        with self._stores_lock:
            if self._stores is None:
                from service.end_of_call.redaction import Redactor
                from service.stores.bigquery import make_sink
                from service.stores.breaker import BreakerSink
                from service.stores.dead_letters import DeadLetterStore
                from service.stores.firestore import make_client as firestore_client

                settings = self.settings
                if self.firestore_client is None:
                    self.firestore_client = firestore_client(
                        settings.google_cloud_project, settings.firestore_database
                    )
                self._stores = (
                    # While BigQuery fails, calls become dead letters at once (stores/breaker.py).
                    BreakerSink(
                        make_sink(settings, self.bigquery_client),
                        failures=settings.bigquery_breaker_failures,
                        probe_seconds=settings.bigquery_breaker_probe_seconds,
                        slow_seconds=settings.bigquery_breaker_slow_seconds,
                    ),
                    DeadLetterStore(
                        self.firestore_client,
                        settings.dead_letter_collection,
                        settings.dead_letter_timeout_seconds,
                    ),
                    Redactor.from_settings(settings),
                )
            return self._stores

    def _remember(self, row: dict[str, Any], started: float) -> str:
        """The caller's memory, once the row is stored: within what is left of the end-of-call
        budgets and never longer than MEMORY_TIMEOUT_SECONDS (service/memory/recorder.py)."""
        if self.read_agent is None or self.caller_id is None:
            return "off"
        settings = self.settings
        budget = settings.bigquery_insert_timeout_seconds + settings.dead_letter_timeout_seconds
        wait = min(settings.memory_timeout_seconds, budget - (time.monotonic() - started))
        with child_span("firestore.memory"):
            return self._memory_once().record(row, wait)

    def _memory_once(self) -> MemoryRecorder:
        with self._stores_lock:
            if self._memory is None:
                from service.memory.recorder import MemoryRecorder

                assert self.read_agent is not None and self.caller_id is not None
                self._memory = MemoryRecorder(
                    lambda: self.firestore_client,  # created with the stores, before any row
                    self.read_agent,
                    self.caller_id,
                    profiles_collection=self.settings.profiles_collection,
                    retention=timedelta(days=self.settings.memory_retention_days),
                )
            return self._memory


def _read_body(request: flask.Request, limit: int) -> bytes:
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise HttpError(413, "body_too_large", f"the body is limited to {limit} bytes")
    return body


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")

"""Routing: a path and method to its webhook, one span and one structured line per request, and
every error as JSON. No business logic: each webhook lives in its own package
(service.prefetch.webhook, service.end_of_call.webhook), behind the request guard
(service/web/guard.py), which has already refused what it could and read the body."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import flask

from service.config import Settings
from service.end_of_call.webhook import EndOfCallWebhook
from service.prefetch.answer import safe_document_id
from service.prefetch.profiles import ProfileStore
from service.prefetch.webhook import PrefetchWebhook, make_profile_store
from service.telemetry import request_span
from service.web.auth import Authenticator
from service.web.guard import HttpError, allowed_methods, json_response
from service.web.request_log import log_request

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger("service")

Route = Callable[[flask.Request, "Span"], flask.Response]


class Router:
    """Both webhooks for one instance. Tests inject clients and stores; `firestore_client`
    (google-cloud-firestore) is for dead letters only, profiles are read over REST."""

    def __init__(
        self,
        settings: Settings,
        firestore_client: Any = None,
        *,
        bigquery_client: Any = None,
        profile_store: ProfileStore | None = None,
    ) -> None:
        self.settings = settings
        self.auth = Authenticator(settings)
        self.store = profile_store or make_profile_store(settings)
        self.prefetch = PrefetchWebhook(settings, self.auth, self.store)
        # Caller memory (service/memory): the end of call reads the agent and decides whose call
        # it is exactly as the prefetch does, through the prefetch's store and rules.
        self.end_of_call = EndOfCallWebhook(
            settings,
            self.auth,
            firestore_client,
            bigquery_client=bigquery_client,
            read_agent=self.read_agent,
            caller_id=self.prefetch.prefetch.caller_id,
        )
        self.routes: dict[str, dict[str, Route]] = {
            "/prefetch": {"GET": self.prefetch},
            "/end-of-call": {"POST": self.end_of_call},
            "/health": {"GET": handle_health},
            "/healthz": {"GET": handle_health},
            "/openapi.json": {"GET": handle_openapi},
        }
        if self.auth.open and self.auth.fail_closed:
            log.error(
                "no WEBHOOK_TOKENS configured on Cloud Run: webhooks answer 503 until one is set "
                "(or ALLOW_UNAUTHENTICATED=true)"
            )

    def read_agent(self, agent_id: str, timeout: float) -> dict[str, Any] | None:
        """An agent document as the prefetch reads it (cached; one REST read otherwise)."""
        if safe_document_id(agent_id) is None:
            return None
        return self.store.read([("agent", agent_id)], timeout).documents.get(("agent", agent_id))

    def __call__(self, request: flask.Request) -> flask.Response:
        started = time.perf_counter()
        path = request.path.rstrip("/") or "/"
        with request_span(f"{request.method} {path}", request.headers) as span:
            try:
                # The guard refused unknown paths and methods already; checked again for callers
                # that serve this router without it.
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
            route = path if path in self.routes else "other"
            log_request(route, request.method, response.status_code, started)
            return response


def handle_health(request: flask.Request, span: Span) -> flask.Response:
    return json_response(200, {"status": "ok"})


def handle_openapi(request: flask.Request, span: Span) -> flask.Response:
    from service.web.openapi import OPENAPI_PATH

    return flask.Response(OPENAPI_PATH.read_bytes(), status=200, mimetype="application/json")

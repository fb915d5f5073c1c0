"""The prefetch webhook: a GET from Millis before a call starts, answered with the caller's
profile (service.prefetch.answer). The caller is waiting: a failure answers `{}`, never an error."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import flask

from service.config import Settings
from service.prefetch.answer import PrefetchRequest, PrefetchService
from service.prefetch.firestore_rest import RestDocumentReader
from service.prefetch.identity import CALL_PARAMETERS, AmbiguousParameter, single_valued
from service.prefetch.profiles import DocumentCache, ProfileStore
from service.telemetry import child_span
from service.web.auth import TOKEN_PARAMETER, Authenticator
from service.web.checks import authenticate, check_query_limits
from service.web.guard import HttpError, json_response

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger("service")


def make_profile_store(settings: Settings) -> ProfileStore:
    """Profiles read over Firestore's REST API (service/prefetch/firestore_rest.py), cached."""
    return ProfileStore(
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


class PrefetchWebhook:
    def __init__(self, settings: Settings, auth: Authenticator, store: ProfileStore) -> None:
        self.settings = settings
        self.auth = auth
        self.store = store
        self.prefetch = PrefetchService(
            store,
            deadline_seconds=settings.prefetch_deadline_ms / 1000,
            default_format=settings.prefetch_response_format,
            default_region=settings.default_phone_region,
            default_lookup_key=settings.prefetch_lookup_key,
            lookup_signing_secrets={
                agent: [secret.get_secret_value() for secret in secrets]
                for agent, secrets in settings.lookup_signing_secrets.items()
            },
            default_caller_numbers=settings.prefetch_caller_numbers,
        )

    def __call__(self, request: flask.Request, span: Span) -> flask.Response:
        check_query_limits(request, self.settings)
        authenticate(self.auth, request, lambda: b"")
        try:  # a parameter sent twice with different values: nobody can tell which is Millis's
            parameters = single_valued(
                (key, values) for key, values in request.args.lists() if key != TOKEN_PARAMETER
            )
        except AmbiguousParameter as exc:
            raise HttpError(400, "ambiguous_parameter", str(exc)) from None
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

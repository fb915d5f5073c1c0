"""HTTP entry point (functions-framework target `app`): wiring only. Settings, logging and tracing
are set up once; the webhooks live in service.web.routes, the request guard in service.web.guard,
and service.web.server serves it all with gunicorn."""

from __future__ import annotations

import atexit
import logging

import flask
import functions_framework

from service.config import Settings, get_settings
from service.telemetry import configure_logging, configure_tracing, shutdown_tracing
from service.web.routes import Router

log = logging.getLogger("service")
# Long enough for credentials and TLS; start-up never waits longer.
WARM_UP_TIMEOUT_SECONDS = 3.0


def build_handler(settings: Settings) -> Router:
    handler = Router(settings)
    handler.store.warm_up(WARM_UP_TIMEOUT_SECONDS)
    return handler


_settings = get_settings()  # invalid configuration stops the start-up here, naming the variable
configure_logging(_settings)
configure_tracing(_settings)
atexit.register(shutdown_tracing)  # gunicorn exits cleanly on SIGTERM: flush pending spans
handler = build_handler(_settings)


@functions_framework.http
def app(request: flask.Request) -> flask.Response:
    return handler(request)

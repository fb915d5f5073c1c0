"""Serve the service: gunicorn, as functions-framework does, with the request guard in front.

    python -m service.web.server            (the Dockerfile's command; honours PORT, THREADS)

Differences from `functions-framework --target=app` (why this launcher exists):
- service.web.guard answers refusals before any body is read and reads accepted bodies with a
  size and time limit; a body left unread closes the connection instead of being drained;
- errors gunicorn answers itself (a bad request line, headers over 8 KB) carry our JSON body;
- graceful shutdown fits Cloud Run's 10 s between SIGTERM and SIGKILL;
- threads default to CONCURRENCY + 4 spare, so a health probe always finds a free thread.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path
from typing import Any

import gunicorn.util
from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

from service.web.guard import (
    RequestGuard,
    error_json,
    headers_done,
    json_response,
    watch_headers,
)

MAIN = Path(__file__).resolve().parents[1] / "main.py"
# Cloud Run sends SIGTERM and, 10 s later, SIGKILL: requests in flight get 9 s to finish.
GRACEFUL_TIMEOUT_SECONDS = 9
SPARE_THREADS = 4

# gunicorn's own answers (it parses the request line and headers before any application code).
_SERVER_ERRORS = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal",
    501: "not_implemented",
}


def _write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    # The message can quote the request's own bytes (a header, the request line): not echoed.
    body = error_json(_SERVER_ERRORS.get(status_int, "bad_request"), reason.lower())
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)


def _close_without_waiting(sock: Any, timeout: float = 2.0, max_drain: int = 65536) -> None:
    """gunicorn's graceful close, minus the wait. gunicorn closes a connection on its main loop,
    and its graceful close waits up to 2 s there for the client to close too: a few clients that
    never do would stall accepting and dispatching for everyone. This drains only what has
    already arrived; the guard lingers in the worker thread where a body is left unread
    (service/web/guard.py), which is where a reset could cost the client its answer."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(False)
        drained = 0
        while drained < max_drain:
            data = sock.recv(65536)
            if not data:
                break
            drained += len(data)
    with contextlib.suppress(OSError):
        sock.close()


class RequestSafeLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger, writing through the service's log formatter (service/telemetry.py)
    instead of its own stderr handler: its lines keep their message template and lose their
    arguments (`Error handling request %s` came with the full URI, token and caller number
    included) and their tracebacks. No access log: Cloud Run writes one per request."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
        self.error_log.propagate = True  # to the root handler that configure_logging set

    def access(self, *args: Any, **kwargs: Any) -> None:
        pass


class JsonErrorThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker, answering its own protocol errors with our JSON body, with a
    deadline on a request's headers (gunicorn has none: a client sending a header byte a second
    would hold a thread for as long as it likes)."""

    def init_process(self) -> None:
        gunicorn.util.close_graceful = _close_without_waiting  # TConn.close calls it by module
        super().init_process()

    def handle(self, conn: Any) -> Any:
        watch_headers(conn.sock, _read_timeout_seconds())
        try:
            return super().handle(conn)
        finally:
            headers_done()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        original = gunicorn.util.write_error
        gunicorn.util.write_error = _write_json_error
        try:
            super().handle_error(req, client, addr, exc)
        finally:
            gunicorn.util.write_error = original


def _read_timeout_seconds() -> float:
    from service.config import get_settings

    return get_settings().request_read_timeout_seconds


def build_app() -> Any:
    """The functions-framework app of service/main.py with the guard in front of it."""
    import functions_framework

    app = functions_framework.create_app(target="app", source=str(MAIN))  # type: ignore[no-untyped-call]
    main = sys.modules["main"]  # the module functions-framework loaded from service/main.py
    app.wsgi_app = RequestGuard(app.wsgi_app, lambda: main.handler)
    # Whatever escapes a route is our JSON 500, not functions-framework's empty "crash" answer.
    app.register_error_handler(500, _internal_error)
    return app


def _internal_error(error: Exception) -> Any:
    return json_response(500, {"error": "internal", "message": "internal error"})


class Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self.application, self.options = app, options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.application


def server_options(environ: dict[str, str]) -> dict[str, Any]:
    concurrency = int(environ.get("CONCURRENCY", "40"))
    return {
        "bind": f"{environ.get('HOST', '0.0.0.0')}:{environ.get('PORT', '8080')}",
        "workers": int(environ.get("WORKERS", "1")),
        "worker_class": JsonErrorThreadWorker,
        "threads": int(environ.get("THREADS", str(concurrency + SPARE_THREADS))),
        # Cloud Run ends requests itself (its request timeout); gunicorn's would kill the worker.
        "timeout": 0,
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        "keepalive": 5,
        # gunicorn's defaults, stated: the request line up to 8,190 bytes, 100 header fields of
        # up to 8,190 bytes each. Beyond, gunicorn answers 414/431 (in JSON, above).
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        "limit_request_field_size": 8190,
        "loglevel": environ.get("GUNICORN_LOG_LEVEL", "error"),
        "logger_class": RequestSafeLogger,
    }


def main() -> None:
    Server(build_app(), server_options(dict(os.environ))).run()


if __name__ == "__main__":
    main()

"""Serve the service: gunicorn, as functions-framework does, with the request guard in front.

    python -m service.web.server            (the Dockerfile's command; honours PORT, THREADS)

Differences from `functions-framework --target=app` (why this launcher exists):
- service.web.guard answers refusals before any body is read and reads accepted bodies with a
  size and time limit; a body left unread closes the connection instead of being drained;
- errors gunicorn answers itself (a bad request line, headers over 8 KB) carry our JSON body;
- no thread waits on a client: a request's head is read, and its answer written, on the worker's
  event loop (service/web/connections.py), so silent or non-reading clients cost no thread;
- graceful shutdown fits Cloud Run's 10 s between SIGTERM and SIGKILL;
- threads default to CONCURRENCY + 4 spare, so a health probe always finds a free thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import sys
import time
from collections import deque
from functools import partial
from pathlib import Path
from typing import Any

import gunicorn.util
from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import TConn, ThreadWorker

from service.web.connections import (
    HEAD_LIMIT_BYTES,
    WRITE_TIMEOUT_SECONDS,
    HandOverSocket,
    HeadReader,
)
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
    """gunicorn's gthread worker where a thread never waits on a client: request heads are read
    and answers written on the event loop (service/web/connections.py), and a thread gets a
    connection only with a whole request head. Also: a deadline on a head that goes to a thread
    incomplete, and gunicorn's own protocol errors answered with our JSON body."""

    def init_process(self) -> None:
        gunicorn.util.close_graceful = _close_without_waiting  # TConn.close calls it by module
        # Connections waiting for their answer to be written: (deadline, conn, result).
        self.flushing: deque[tuple[float, Any, Any]] = deque()
        self.head_seconds = _read_timeout_seconds()
        super().init_process()

    # Event loop side: heads.
    def accept(self, listener: Any) -> None:
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self._drop_oldest_waiting()  # out of descriptors: make room, do not crash
                return
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        if self.nr_conns >= self.worker_connections:
            self._drop_oldest_waiting()
        self.nr_conns += 1
        conn = TConn(self.cfg, HandOverSocket.adopt(client), address, listener.getsockname())
        self._await_head(conn, HeadReader())

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        # A kept-alive connection: its next head is read on the loop too.
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_head(conn, HeadReader())

    def _await_head(self, conn: Any, reader: HeadReader) -> None:
        conn.head_reader = reader
        # One duration for every entry keeps pending_conns sorted by deadline (murder_pending).
        conn.timeout = time.monotonic() + self.head_seconds
        conn.sock.setblocking(False)
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_bytes, conn))

    def _on_head_bytes(self, conn: Any, client: Any) -> None:
        head = conn.head_reader.feed(conn.sock)
        if head is None:
            return
        self.poller.unregister(client)
        self.pending_conns.remove(conn)
        conn.head_reader = None
        if not head:  # closed before a byte
            self.nr_conns -= 1
            conn.close()
            return
        conn.init()  # the parser (plain HTTP/1.x: no handshake on this thread)
        conn.parser.unreader.unread(head)
        conn.data_ready = True
        self.enqueue_req(conn)

    def _drop_oldest_waiting(self) -> None:
        """At the connection limit, the connection that has waited longest without sending a
        request makes room, instead of accepting stopping for everyone."""
        if self.pending_conns:
            conn = self.pending_conns.popleft()
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.poller.unregister(conn.sock)
            self.nr_conns -= 1
            conn.close()

    # Event loop side: answers.
    def finish_request(self, conn: Any, fs: Any) -> None:
        sock = conn.sock
        if isinstance(sock, HandOverSocket) and sock.pending:
            # The client has not taken the whole answer: the loop writes the rest, and only then
            # does the connection go on (a next request, keep-alive, or close).
            self.flushing.append((time.monotonic() + WRITE_TIMEOUT_SECONDS, conn, fs))
            self.poller.register(sock, selectors.EVENT_WRITE, partial(self._on_writable, conn, fs))
            return
        self._go_on(conn, fs)

    def _on_writable(self, conn: Any, fs: Any, client: Any) -> None:
        try:
            done = conn.sock.flush_some()
        except OSError:
            done = None
        if done is False:
            return
        self.poller.unregister(client)
        self.flushing = deque(entry for entry in self.flushing if entry[1] is not conn)
        if done is None:
            self.nr_conns -= 1
            conn.close()
            return
        conn.sock.setblocking(True)
        self._go_on(conn, fs)

    def _go_on(self, conn: Any, fs: Any) -> None:
        """gunicorn's next step for the connection, except that a pipelined next request whose
        head is not all there yet waits for the rest on the loop, not in a thread."""
        keepalive = not fs.cancelled() and fs.exception() is None and fs.result()
        if keepalive and self.alive and conn.parser is not None:
            buffered = conn.parser.unreader.buf.getvalue()
            reader = HeadReader(buffered)
            if buffered and not reader.complete() and len(buffered) < HEAD_LIMIT_BYTES:
                conn.parser.unreader.take_buffered()
                self._await_head(conn, reader)
                return
        super().finish_request(conn, fs)

    def set_accept_enabled(self, enabled: bool) -> None:
        if not enabled and self.alive:
            while self.nr_conns >= self.worker_connections and self.pending_conns:
                self._drop_oldest_waiting()
            enabled = self.nr_conns < self.worker_connections
        super().set_accept_enabled(enabled)

    def murder_pending(self) -> None:
        super().murder_pending()  # heads past their deadline
        now = time.monotonic()
        while self.flushing and self.flushing[0][0] <= now:
            _, conn, _ = self.flushing.popleft()
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.poller.unregister(conn.sock)
            self.nr_conns -= 1
            conn.close()

    # Thread side.
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

"""The HTTP guard: what is decided before the application reads a byte of the body.

A WSGI middleware in front of the Flask app that functions-framework builds. functions-framework
reads every request body in full after the handler has answered (an `after_request` hook), with no
limit, for every route and without a token; and a malformed chunked body surfaces as an HTML 500.
Here, in order, each answered at once and without reading the body (the connection then closes
instead of being drained):

- an unknown path: 404; a method the route does not serve: 405 with `Allow`;
- a declared body over MAX_BODY_BYTES: 413;
- a POST without a valid token (unless signed, which needs the body to check): 401.

Then the body of an accepted POST is read here, bounded in size (chunked bodies too) and in time
(REQUEST_READ_TIMEOUT_SECONDS for the whole body, so a client dripping a byte at a time cannot hold
a thread), and malformed framing answers 400. GET routes never read a body. The application then
sees the body already in memory. Every refusal is our JSON error body. The prefetch, where a
caller waits, goes from here straight to the handler (DIRECT_ROUTES).
"""

from __future__ import annotations

import contextlib
import heapq
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import flask
from werkzeug.wrappers import Request

from service.web.auth import TOKEN_PARAMETER, AuthFailure
from service.web.request_log import log_request

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("service")

# Path -> methods served. HEAD is answered wherever GET is.
ROUTES: dict[str, tuple[str, ...]] = {
    "/prefetch": ("GET",),
    "/end-of-call": ("POST",),
    # Cloud Run reserves some paths ending in `z` (its known issues advise against all of them):
    # probes use /health; /healthz stays for local tools.
    "/health": ("GET",),
    "/healthz": ("GET",),
    "/openapi.json": ("GET",),
}
# Served by the handler directly (see RequestGuard); every other route goes through the Flask app.
DIRECT_ROUTES = frozenset({"/prefetch"})
READ_CHUNK_BYTES = 64 * 1024
# After a refusal with a body still arriving: how long, and how much, to read and discard so that
# the client sees the answer instead of a reset.
LINGER_SECONDS = 1.0
LINGER_MAX_BYTES = 1024 * 1024
# Millis payloads nest a few levels; BigQuery refuses JSON deeper than 500 and Firestore maps
# deeper than 20, so a deep body is refused rather than kept as a dead letter forever.
MAX_JSON_DEPTH = 32
# What a 503 for a full end-of-call share asks the caller to wait before retrying.
BUSY_RETRY_AFTER_SECONDS = 5
# End-of-call bodies being processed at once, in bytes. Parsing, redacting and encoding a body
# takes several times its size at once, so this bounds the memory end-of-calls can take
# (docs/performance.md); one body of MAX_BODY_BYTES always fits.
BODY_BYTES_IN_FLIGHT = 24 * 1024 * 1024


class EndOfCallShare:
    """Admission of end-of-calls: at most `calls` at once (the rest of the threads stay for the
    prefetch) and at most `body_bytes` of their bodies. Never waits: full is a 503."""

    def __init__(self, calls: int, body_bytes: int) -> None:
        self.calls, self.body_bytes = calls, body_bytes
        self._calls_in, self._bytes_in = 0, 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        """A call may start (before its body is read: reading holds a thread too)."""
        with self._lock:
            if self._calls_in >= self.calls:
                return False
            self._calls_in += 1
            return True

    def hold(self, size: int) -> bool:
        """A call that has entered may go on with a body of `size` bytes."""
        with self._lock:
            if self._bytes_in + size > self.body_bytes:
                return False
            self._bytes_in += size
            return True

    def leave(self, size: int) -> None:
        """A call is done, with the body bytes it held (0 if none)."""
        with self._lock:
            self._calls_in -= 1
            self._bytes_in -= size


class HttpError(Exception):
    def __init__(
        self, status: int, error: str, message: str, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status, self.error, self.message, self.headers = status, error, message, headers or {}


def refused(failure: AuthFailure) -> HttpError:
    """An authentication failure as the answer it gets (a 401 names the scheme to use)."""
    headers = {"WWW-Authenticate": "Bearer"} if failure.status == 401 else None
    return HttpError(failure.status, failure.error, failure.message, headers)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> flask.Response:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    response = flask.Response(text, status=status, mimetype="application/json", headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def error_json(error: str, message: str) -> bytes:
    return json.dumps({"error": error, "message": message}, separators=(",", ":")).encode()


def allowed_methods(path: str) -> tuple[str, ...] | None:
    methods = ROUTES.get(path)
    if methods is None:
        return None
    return (*methods, "HEAD") if "GET" in methods else methods


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests deeper than `limit`, found without parsing (the parser would
    recurse): brackets are counted outside strings."""
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


class RequestGuard:
    """WSGI middleware; `handler()` returns the live Router (settings and auth)."""

    def __init__(self, app: WSGIApplication, handler: Callable[[], Any]) -> None:
        self.app = app
        self.handler = handler
        self._share: EndOfCallShare | None = None
        self._share_lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        headers_done()  # gunicorn has parsed them; a body gets its own deadline
        started = time.perf_counter()
        path = environ.get("PATH_INFO", "").rstrip("/") or "/"
        method = environ.get("REQUEST_METHOD", "")
        methods = allowed_methods(path)
        try:
            if methods is None:
                raise HttpError(404, "not_found", f"no webhook at {path[:100]}")
            if method not in methods:
                allow = ", ".join(methods)
                raise HttpError(
                    405, "method_not_allowed", f"use {allow} for {path}", {"Allow": allow}
                )
            if method == "POST":
                return self._end_of_call(environ, start_response)
            elif path in DIRECT_ROUTES and not _announces_body(environ):
                # The caller is waiting on this one: straight to the handler, without Flask's
                # request dispatch (context push, URL map, functions-framework's wrappers), which
                # is about 15 % of a prefetch's CPU (bench/prefetch.py).
                return self._direct(environ, start_response)
            elif _announces_body(environ):
                _replace_body(environ, b"")  # never read
                _close_after_answer(start_response)
                return _Lingering(self.app(environ, start_response), environ)
        except HttpError as exc:
            # Refused before the handler (a 401 of a Millis without its token): still counted.
            log_request(path if methods is not None else "other", method, exc.status, started)
            if not _announces_body(environ):
                return _refuse(start_response, exc)
            _close_after_answer(start_response)
            return _Lingering(_refuse(start_response, exc), environ)
        return self.app(environ, start_response)

    def _direct(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            response = self.handler()(flask.Request(environ))
        except Exception as exc:  # the handler answers its own errors; this is the backstop
            log.error("unhandled error", extra={"error_type": type(exc).__name__})
            return _refuse(start_response, HttpError(500, "internal", "internal error"))
        return response(environ, start_response)  # type: ignore[no-any-return]

    def _end_of_call(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """A POST holds a thread from here until its answer is ready: at most
        END_OF_CALL_MAX_IN_FLIGHT at once, so the rest of the threads stay for the prefetch."""
        share = self._end_of_call_share()
        size = self._accept_body(environ, share)
        try:
            # The answer is computed by the time the app returns (not streamed), and writing it
            # never waits on the client (service/web/connections.py): the share ends here.
            return self.app(environ, start_response)
        finally:
            share.leave(size)

    def _end_of_call_share(self) -> EndOfCallShare:
        settings = self.handler().settings
        calls = settings.end_of_call_max_in_flight
        body_bytes = max(BODY_BYTES_IN_FLIGHT, settings.max_body_bytes)
        with self._share_lock:
            if self._share is None or (self._share.calls, self._share.body_bytes) != (
                calls,
                body_bytes,
            ):
                self._share = EndOfCallShare(calls, body_bytes)
            return self._share

    def _accept_body(self, environ: WSGIEnvironment, share: EndOfCallShare) -> int:
        """Reads the body of an admitted POST; returns the size it holds in the share."""
        handler = self.handler()
        limit = handler.settings.max_body_bytes
        declared = _content_length(environ)
        if declared is not None and declared > limit:
            raise HttpError(413, "body_too_large", f"the body is limited to {limit} bytes")
        request = Request(environ, shallow=True)
        if not handler.auth.needs_body("POST", request.headers):
            # Decided from the headers and query alone: a token, or no token. Only a signature
            # that could be valid waits for the body it covers (read below, bounded).
            failure = handler.auth.check(
                "POST", request.headers, request.args.get(TOKEN_PARAMETER), b""
            )
            if failure is not None:
                raise refused(failure)
        if not share.enter():
            # Millis retries a 503; answering at once keeps this thread free for the prefetch.
            raise _busy()
        try:
            body = _read_body(environ, limit, handler.settings.request_read_timeout_seconds)
        except BaseException:
            share.leave(0)
            raise
        if not share.hold(len(body)):
            share.leave(0)
            raise _busy()
        _replace_body(environ, body)
        return len(body)


def _busy() -> HttpError:
    log.warning("end-of-call refused: busy")  # the 5xx alert's runbook names this line
    return HttpError(
        503,
        "busy",
        "too many end-of-calls in progress, retry later",
        {"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)},
    )


def _close_after_answer(start_response: StartResponse) -> None:
    """Close the connection after this answer instead of draining an unread body into a next
    request. gunicorn's start_response is a method of its Response, which can force that (and
    then says `Connection: close`); other servers are left to their own rules."""
    response = getattr(start_response, "__self__", None)
    if callable(getattr(response, "force_close", None)):
        response.force_close()  # type: ignore[union-attr]


def _refuse(start_response: StartResponse, exc: HttpError) -> Iterable[bytes]:
    body = error_json(exc.error, exc.message)
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        *exc.headers.items(),
    ]
    start_response(f"{exc.status} {_REASONS.get(exc.status, 'Error')}", headers)
    return [body]


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _content_length(environ: WSGIEnvironment) -> int | None:
    text = environ.get("CONTENT_LENGTH") or ""
    if not text:
        return None
    if not text.isdigit():
        raise HttpError(400, "bad_request", "Content-Length is not a number")
    return int(text)


def _announces_body(environ: WSGIEnvironment) -> bool:
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    return chunked or (environ.get("CONTENT_LENGTH") or "0") not in ("", "0")


def _replace_body(environ: WSGIEnvironment, body: bytes) -> None:
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ["wsgi.input_terminated"] = False


def _read_body(environ: WSGIEnvironment, limit: int, timeout_seconds: float) -> bytes:
    """Read at most limit + 1 bytes within the time allowed; framing errors are the client's.

    gunicorn's body reader loops until it has the bytes asked for, so a client dripping a byte at
    a time never trips a socket timeout: at the deadline, a timer shuts the socket for reading,
    which ends the read (the answer can still be written).
    """
    stream = environ["wsgi.input"]
    sock = environ.get("gunicorn.socket")
    deadline = time.monotonic() + timeout_seconds
    ticket = None
    if sock is not None:
        sock.settimeout(timeout_seconds)  # an idle wait ends at the deadline too
        ticket = _watchdog.watch(sock, deadline)
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            chunk = stream.read(min(READ_CHUNK_BYTES, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if time.monotonic() >= deadline:
            raise TimeoutError
    except Exception as exc:  # gunicorn's ParseException family, NoMoreData, a reset connection
        if isinstance(exc, TimeoutError) or time.monotonic() >= deadline:
            raise HttpError(
                408, "body_timeout", f"the body did not arrive within {timeout_seconds:g} s"
            ) from None
        log.info("unreadable request body", extra={"error_type": type(exc).__name__})
        raise HttpError(400, "bad_body", "the body is malformed or incomplete") from None
    finally:
        if ticket is not None:
            _watchdog.cancel(ticket)
        if sock is not None:
            sock.settimeout(None)
    if size > limit:
        raise HttpError(413, "body_too_large", f"the body is limited to {limit} bytes")
    return b"".join(chunks)


# How late past its deadline a read may be cut off.
WATCHDOG_GRANULARITY_SECONDS = 0.1


class _Watchdog:
    """One thread for the whole process that ends reads past their deadline by shutting the
    socket's read side: the blocked read returns at once. (A per-read timeout alone lets a client
    sending a byte a second hold a thread as long as it likes; a timer thread per request would
    cost a thread start on every request.)"""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._cancelled: set[int] = set()
        self._condition = threading.Condition()
        self._counter = 0
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, deadline: float) -> int:
        with self._condition:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="read-deadline", daemon=True)
                self._thread.start()
            self._counter += 1
            heapq.heappush(self._heap, (deadline, self._counter, sock))
            if self._heap[0][1] == self._counter:
                # Only a new earliest deadline needs the thread awake; waking it on every request
                # cost each prefetch a thread switch.
                self._condition.notify()
            return self._counter

    def cancel(self, ticket: int) -> None:
        with self._condition:
            self._cancelled.add(ticket)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._heap:
                    self._condition.wait()
                deadline, ticket, sock = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    # At most one wake-up per WATCHDOG_GRANULARITY_SECONDS whatever the request
                    # rate: each request leaves an entry (most of them cancelled) to expire.
                    self._condition.wait(max(wait, WATCHDOG_GRANULARITY_SECONDS))
                    continue
                heapq.heappop(self._heap)
                if ticket in self._cancelled:
                    self._cancelled.discard(ticket)
                    continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)


_watchdog = _Watchdog()
_header_ticket = threading.local()


def watch_headers(sock: socket.socket, seconds: float) -> None:
    """Start a request's header deadline on this worker thread (service/web/server.py's worker calls
    it before gunicorn parses the request): a client dripping its headers is cut off too."""
    _header_ticket.value = _watchdog.watch(sock, time.monotonic() + seconds)


def headers_done() -> None:
    ticket = getattr(_header_ticket, "value", None)
    if ticket is not None:
        _watchdog.cancel(ticket)
        _header_ticket.value = None


class _Lingering:
    """The answer, then a short lingering close: half-close so that the client reads the answer
    (closing with its unread data still arriving would reset the connection and lose the
    answer), discard what it still sends for at most LINGER_SECONDS / LINGER_MAX_BYTES, then shut
    the read side, so gunicorn's own close returns at once."""

    def __init__(self, body: Iterable[bytes], environ: WSGIEnvironment) -> None:
        self.body, self.sock = body, environ.get("gunicorn.socket")

    def __iter__(self) -> Iterator[bytes]:
        yield from self.body

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()
        if self.sock is None:
            return
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            drained = 0
            while drained < LINGER_MAX_BYTES and (remaining := deadline - time.monotonic()) > 0:
                self.sock.settimeout(remaining)
                data = self.sock.recv(READ_CHUNK_BYTES)
                if not data:
                    break
                drained += len(data)
            self.sock.shutdown(socket.SHUT_RD)

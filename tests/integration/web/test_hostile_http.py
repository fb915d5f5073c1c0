"""Hostile clients against a real served port (service/web/server.py, gunicorn, on the emulators).

Each test speaks raw HTTP over a socket, as an attacker would: bodies announced and never sent,
bodies too large, malformed chunked framing, bodies dripped a byte at a time, oversized headers.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.conftest import PROJECT, served_service

TOKEN = "hostile-test-token"
READ_TIMEOUT = 2.0
THREADS = 16


@dataclass
class Served:
    port: int
    process: subprocess.Popen[bytes]

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def served(emulator_env: dict[str, str]) -> Iterator[Served]:
    env = {
        **emulator_env,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "WEBHOOK_TOKENS": TOKEN,
        "REQUEST_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
        "THREADS": str(THREADS),
        "LOG_LEVEL": "WARNING",
    }
    with served_service(env) as (url, process):
        yield Served(int(url.rsplit(":", 1)[1]), process)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float
    closed: bool

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(
    port: int,
    head: bytes,
    body: bytes = b"",
    *,
    wait: float = 5.0,
    drip: float = 0.0,
    answer_has_body: bool = True,
) -> Answer:
    """Send a request (the body from another thread, optionally a byte every `drip` seconds) and
    read the answer meanwhile, as a client does when the server answers before the body ends."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(head)
        answered = threading.Event()

        def send_body() -> None:
            pieces = [bytes([byte]) for byte in body] if drip else [body]
            for piece in pieces:
                if answered.is_set():
                    return
                try:
                    sock.sendall(piece)
                except OSError:  # the server answered and closed: expected
                    return
                if drip:
                    time.sleep(drip)

        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        data = b""
        closed = False
        try:
            while b"\r\n\r\n" not in data or (
                answer_has_body and len(data) < _expected_length(data)
            ):
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
        except ConnectionResetError:
            closed = True
        answered.set()
        seconds = time.monotonic() - started
        if not closed:
            sock.settimeout(0.5)
            try:
                closed = sock.recv(1) == b""
            except ConnectionResetError:
                closed = True
            except (TimeoutError, OSError):
                closed = False
        sender.join(wait)
    header_text, _, payload = data.partition(b"\r\n\r\n")
    lines = header_text.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers, payload, seconds, closed)


def _expected_length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(head) + 4 + int(line.split(b":")[1])
    return len(data) + 1


def request_head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


AUTH = f"Authorization: Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/end-of-call", 401),  # no token
        ("POST", "/nowhere", 404),
        ("PUT", "/end-of-call", 405),
        ("POST", "/prefetch", 405),
        ("POST", "/health", 405),
    ],
)
def test_refusals_come_at_once_without_reading_the_body(
    served: Served, method: str, path: str, status: int
) -> None:
    # 3 MB announced (within the limit), 2 bytes sent: the answer must not wait for the rest.
    head = request_head(method, path, "Content-Type: application/json", "Content-Length: 3000000")
    answer = exchange(served.port, head, b"{}")
    # At once: a body is never waited for (3 MB would take the full 5 s wait to never arrive).
    assert answer.status == status and answer.seconds < 3
    assert answer.json()["error"] and answer.headers["content-type"] == "application/json"
    assert answer.closed  # the unread body is not drained into the next request
    assert answer.headers["connection"] == "close"


def test_a_declared_body_over_the_limit_is_413_at_once_even_with_a_token(served: Served) -> None:
    head = request_head("POST", "/end-of-call", AUTH, "Content-Length: 50000000")
    answer = exchange(served.port, head, b"{}")
    assert (answer.status, answer.json()["error"]) == (413, "body_too_large")
    assert answer.seconds < 3 and answer.closed


def test_a_chunked_body_over_the_limit_is_cut_at_the_limit(served: Served) -> None:
    head = request_head(
        "POST", "/end-of-call", AUTH, "Content-Type: application/json", "Transfer-Encoding: chunked"
    )
    chunk = b"x" * 1_048_576
    body = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 8 + b"0\r\n\r\n"
    answer = exchange(served.port, head, body, wait=10)
    assert (answer.status, answer.json()["error"]) == (413, "body_too_large")


@pytest.mark.parametrize(
    ("method", "path", "extra"),
    [
        ("POST", "/end-of-call", [AUTH, "Content-Type: application/json"]),
        ("GET", f"/prefetch?agent_id=a&session_id=s&token={TOKEN}", []),
        ("GET", "/health", []),
    ],
)
def test_malformed_chunked_framing_is_never_a_5xx(
    served: Served, method: str, path: str, extra: list[str]
) -> None:
    head = request_head(method, path, *extra, "Transfer-Encoding: chunked")
    answer = exchange(served.port, head, b"ZZ\r\nhello\r\n0\r\n\r\n", wait=20)
    assert answer.status < 500 and answer.headers["content-type"] == "application/json"
    if method == "POST":
        assert (answer.status, answer.json()["error"]) == (400, "bad_body")
    else:
        assert answer.status == 200


def test_a_dripped_body_is_cut_at_the_read_timeout(served: Served) -> None:
    head = request_head(
        "POST", "/end-of-call", AUTH, "Content-Type: application/json", "Content-Length: 200"
    )
    answer = exchange(served.port, head, b"{" + b" " * 199, drip=0.3, wait=10)
    assert (answer.status, answer.json()["error"]) == (408, "body_timeout")
    assert READ_TIMEOUT <= answer.seconds < READ_TIMEOUT + 5  # cut at the deadline, not at 60 s


def test_slow_clients_do_not_starve_prefetch(served: Served) -> None:
    stop = threading.Event()
    head = request_head(
        "POST", "/end-of-call", AUTH, "Content-Type: application/json", "Content-Length: 1000"
    )

    def slow_client() -> None:
        while not stop.is_set():
            with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
                sock.sendall(head)
                while not stop.is_set():
                    try:
                        sock.sendall(b" ")
                    except OSError:
                        break
                    time.sleep(0.5)

    clients = [threading.Thread(target=slow_client, daemon=True) for _ in range(10)]
    for client in clients:
        client.start()
    try:
        time.sleep(0.5)
        url = f"http://127.0.0.1:{served.port}/prefetch"
        params = {"agent_id": "a", "session_id": "s", "token": TOKEN}
        for _ in range(10):
            started = time.monotonic()
            response = requests.get(url, params=params, timeout=5)
            assert response.status_code == 200 and time.monotonic() - started < 3
    finally:
        stop.set()
        for client in clients:
            client.join(5)


def test_headers_over_the_limit_and_bad_request_lines_get_json(served: Served) -> None:
    big = request_head("GET", "/health", "X-Big: " + "a" * 9000)
    answer = exchange(served.port, big)
    assert answer.status in (400, 431) and answer.headers["content-type"] == "application/json"
    assert "aaaa" not in answer.body.decode()  # the request is not echoed
    bad = exchange(served.port, b"GARBAGE\r\n\r\n")
    assert bad.status == 400 and bad.json()["error"] == "bad_request"


def test_head_is_served_where_get_is(served: Served) -> None:
    answer = exchange(served.port, request_head("HEAD", "/health"), answer_has_body=False)
    assert answer.status == 200


def test_memory_stays_bounded_under_large_parallel_bodies(served: Served) -> None:
    before = served.rss_mb()
    head = request_head(
        "POST", "/end-of-call", AUTH, "Content-Type: application/json", "Transfer-Encoding: chunked"
    )
    chunk = b"x" * 1_048_576
    body = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 32 + b"0\r\n\r\n"
    answers: list[Answer] = []

    def send() -> None:
        answers.append(exchange(served.port, head, body, wait=30))

    senders = [threading.Thread(target=send) for _ in range(16)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(60)
    assert [a.status for a in answers] == [413] * 16
    # At most the 3 MiB limit per request is ever held; 16 x 32 MiB would be 512 MiB.
    assert served.rss_mb() - before < 120


def test_clients_dripping_headers_are_cut_and_do_not_starve_prefetch(served: Served) -> None:
    stop = threading.Event()

    def drip_headers() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    while not stop.wait(0.5):
                        sock.sendall(b"a")
            except OSError:
                continue  # cut at the header deadline: come back, as an attacker would

    clients = [threading.Thread(target=drip_headers, daemon=True) for _ in range(THREADS + 4)]
    for client in clients:
        client.start()
    try:
        time.sleep(1)
        url = f"http://127.0.0.1:{served.port}/prefetch"
        params = {"agent_id": "a", "session_id": "s", "token": TOKEN}
        # More drippers than threads: without a header deadline no thread ever comes free.
        response = requests.get(url, params=params, timeout=READ_TIMEOUT * 4)
        assert response.status_code == 200
    finally:
        stop.set()
        for client in clients:
            client.join(5)


def test_a_client_that_sends_its_whole_body_before_reading_still_gets_the_answer(
    served: Served,
) -> None:
    # No token, 900 KB sent in full before reading, as simple clients do: the refusal is sent at
    # once, and the lingering close keeps the connection from being reset under the client.
    body = b"{" + b" " * 899_999
    head = request_head(
        "POST", "/end-of-call", "Content-Type: application/json", f"Content-Length: {len(body)}"
    )
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 401")
    assert b'"error":"unauthenticated"' in data or b'"error":' in data


def test_clients_that_never_close_do_not_stall_the_server(served: Served) -> None:
    # Each asks for `Connection: close` and then keeps its end open. gunicorn's graceful close
    # waits up to 2 s per connection on its main loop: 12 of them stalled everyone for ~24 s.
    sockets = []
    try:
        for _ in range(12):
            sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
            sock.sendall(request_head("GET", "/health", "Connection: close"))
            sockets.append(sock)
        time.sleep(0.5)
        url = f"http://127.0.0.1:{served.port}/prefetch"
        params = {"agent_id": "a", "session_id": "s", "token": TOKEN}
        assert requests.get(url, params=params, timeout=8).status_code == 200
    finally:
        for sock in sockets:
            sock.close()

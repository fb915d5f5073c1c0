"""What a client costs the served port while it is slow (service/web/connections.py, the worker in
service/web/server.py), and the end-of-call share of threads (service/web/guard.py).

Through a real served port (`python -m service.web.server`, gunicorn) with few threads, so that
clients holding one thread each would starve everyone: silent connections, heads sent a byte at a
time, pipelined requests whose answers are never read, end-of-calls stuck on a BigQuery that never
answers. Each time a bystander's prefetch on a new connection must answer within its deadline.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import PROJECT, served_service
from tests.payloads import current_payload

TOKEN = "served-port-token"
THREADS = 8
PREFETCH = f"/prefetch?agent_id=a&session_id=s&token={TOKEN}"
# The prefetch deadline is 500 ms; a little more for a loaded 2-CPU test machine.
BYSTANDER_SECONDS = 1.0


@dataclass
class Served:
    port: int
    pid: int

    def rss_mb(self) -> float:
        """Resident memory of the served process tree (arbiter and worker)."""
        total = 0
        pids = [self.pid]
        with contextlib.suppress(OSError), open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
            pids += [int(pid) for pid in f.read().split()]
        for pid in pids:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total / 1024


def serve(emulator_env: dict[str, str], **extra: str) -> contextlib.AbstractContextManager:
    env = {
        **emulator_env,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "WEBHOOK_TOKENS": TOKEN,
        "THREADS": str(THREADS),
        "LOG_LEVEL": "WARNING",
        **extra,
    }
    return served_service(env)


@pytest.fixture(scope="module")
def served(emulator_env: dict[str, str]) -> Iterator[Served]:
    with serve(emulator_env) as (url, process):
        yield Served(int(url.rsplit(":", 1)[1]), process.pid)


def ask(port: int, request: bytes, timeout: float = 5.0) -> tuple[bytes, float]:
    """One request on a new connection; the whole answer and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        with contextlib.suppress(TimeoutError):
            while chunk := sock.recv(65536):
                data += chunk
    return data, time.monotonic() - started


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def bystander_prefetches(port: int, count: int = 10) -> list[float]:
    """Seconds each prefetch took, on a new connection each (as a caller arriving now)."""
    seconds = []
    for _ in range(count):
        answer, took = ask(port, get(PREFETCH, "Connection: close"), timeout=5)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
        seconds.append(took)
        time.sleep(0.05)
    return seconds


@contextlib.contextmanager
def running(target, *args: object) -> Iterator[threading.Event]:  # type: ignore[no-untyped-def]
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(*args, stop), daemon=True)
    thread.start()
    try:
        time.sleep(1)
        yield stop
    finally:
        stop.set()
        thread.join(15)


def open_silent_connections(port: int, per_second: int, stop: threading.Event) -> None:
    held: list[socket.socket] = []
    try:
        while not stop.wait(1 / per_second):
            with contextlib.suppress(OSError):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
    finally:
        for sock in held:
            sock.close()


def test_connections_that_send_nothing_do_not_hold_threads(served: Served) -> None:
    # 30 new connections a second that never send a byte: each used to hold a thread for 5 s
    # (gunicorn's wait for the first byte), so 8 threads were gone within a third of a second.
    with running(open_silent_connections, served.port, 30):
        seconds = bystander_prefetches(served.port)
    assert max(seconds) < BYSTANDER_SECONDS, seconds


def drip_heads(port: int, stop: threading.Event) -> None:
    def one() -> None:
        while not stop.is_set():
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
            ):
                for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaa":
                    if stop.wait(0.2):
                        return
                    sock.sendall(bytes([byte]))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(THREADS * 3)]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(5)


def test_heads_sent_a_byte_at_a_time_do_not_hold_threads(served: Served) -> None:
    with running(drip_heads, served.port):
        seconds = bystander_prefetches(served.port)
    assert max(seconds) < BYSTANDER_SECONDS, seconds


def test_a_head_sent_a_byte_at_a_time_is_still_served(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        for byte in get("/health", "Connection: close"):
            sock.sendall(bytes([byte]))
            time.sleep(0.005)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")


def pipeline_without_reading(port: int, stop: threading.Event) -> None:
    """Clients that pipeline requests for the largest answer (no token needed) with a small
    receive window, never read, and keep the connection open."""
    request = get("/openapi.json")

    def one() -> None:
        while not stop.is_set():
            sock = socket.socket()
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.settimeout(1)
                sock.connect(("127.0.0.1", port))
                while not stop.is_set():
                    sock.sendall(request * 20)
            except OSError:
                stop.wait(30)  # the server stopped reading: hold the connection, never read
            finally:
                sock.close()

    threads = [threading.Thread(target=one, daemon=True) for _ in range(THREADS * 2)]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(5)


def test_clients_that_never_read_their_answers_do_not_hold_threads(served: Served) -> None:
    before = served.rss_mb()
    with running(pipeline_without_reading, served.port):
        time.sleep(2)  # time for their answers to back up
        seconds = bystander_prefetches(served.port)
        grown = served.rss_mb() - before
    assert max(seconds) < BYSTANDER_SECONDS, seconds
    # At most one unread answer (openapi.json, ~20 KB) waits per connection.
    assert grown < 30, grown


def test_pipelined_answers_all_arrive_in_order_to_a_slow_reader(served: Served) -> None:
    count = 60
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", served.port))
        requests_ = get("/openapi.json") * (count - 1) + get("/health", "Connection: close")
        sender = threading.Thread(target=sock.sendall, args=(requests_,), daemon=True)
        sender.start()
        time.sleep(1)  # nothing read yet: the answers wait on the server's side
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        sender.join(5)
    document = json.loads(
        ask(served.port, get("/openapi.json", "Connection: close"))[0].split(b"\r\n\r\n", 1)[1]
    )
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == count
    assert all(answer.startswith(b"200") for answer in answers)
    assert json.loads(answers[0].split(b"\r\n\r\n", 1)[1]) == document
    assert b'"status":"ok"' in answers[-1] or answers[-1].startswith(b"200")


def test_idle_connections_past_the_limit_make_room_instead_of_blocking_accept(
    emulator_env: dict[str, str],
) -> None:
    # gunicorn stops accepting at worker_connections (1,000) open connections: a client holding
    # that many idle ones would lock every caller out until they time out.
    with serve(emulator_env, REQUEST_READ_TIMEOUT_SECONDS="30") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        held = []
        try:
            for _ in range(1100):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            seconds = bystander_prefetches(port, count=3)
        finally:
            for sock in held:
                sock.close()
    assert max(seconds) < BYSTANDER_SECONDS, seconds


def end_of_call(port: int, session_id: str) -> tuple[bytes, float]:
    body = json.dumps(current_payload(session_id=session_id)).encode()
    head = (
        f"POST /end-of-call?token={TOKEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return ask(port, head + body, timeout=30)


def test_end_of_calls_stuck_on_bigquery_leave_threads_for_the_prefetch(
    emulator_env: dict[str, str], hanging_endpoint: str
) -> None:
    # BigQuery accepts connections and never answers: each end-of-call holds its thread for the
    # whole insert budget (3 s here). With more of them than threads, a prefetch used to queue.
    settings = {
        "BIGQUERY_EMULATOR_HOST": f"http://{hanging_endpoint}",
        "BIGQUERY_WRITE_API": "insert_all",
        "BIGQUERY_INSERT_TIMEOUT_SECONDS": "3",
        "BIGQUERY_INSERT_ATTEMPTS": "1",
        "END_OF_CALL_MAX_IN_FLIGHT": "4",
    }
    with serve(emulator_env, **settings) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        answers: list[tuple[bytes, float]] = []
        calls = [
            threading.Thread(target=lambda i=i: answers.append(end_of_call(port, f"stuck-{i}")))
            for i in range(THREADS * 2)
        ]
        for call in calls:
            call.start()
        time.sleep(0.5)
        seconds = bystander_prefetches(port, count=5)
        for call in calls:
            call.join(30)
    assert max(seconds) < BYSTANDER_SECONDS, seconds
    busy = [(a, s) for a, s in answers if a.startswith(b"HTTP/1.1 503")]
    assert len(busy) >= THREADS * 2 - 4
    for answer, took in busy:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"\r\nRetry-After: 5" in head
        assert json.loads(body)["error"] == "busy"
        assert took < 1.0  # at once, before the body is read
    # The ones within the share waited out BigQuery and were kept as dead letters.
    assert [a[:12] for a, _ in answers if not a.startswith(b"HTTP/1.1 503")] == [
        b"HTTP/1.1 200"
    ] * (len(answers) - len(busy))


def test_end_of_call_bodies_in_memory_at_once_are_bounded(
    emulator_env: dict[str, str], hanging_endpoint: str
) -> None:
    # Each body takes several times its size while it is parsed, redacted and stored; with
    # BigQuery hanging they are all held at once. Beyond 24 MiB of bodies: 503 busy at once.
    settings = {
        "BIGQUERY_EMULATOR_HOST": f"http://{hanging_endpoint}",
        "BIGQUERY_WRITE_API": "insert_all",
        "BIGQUERY_INSERT_TIMEOUT_SECONDS": "3",
        "BIGQUERY_INSERT_ATTEMPTS": "1",
        "THREADS": "30",
        "END_OF_CALL_MAX_IN_FLIGHT": "24",
    }
    body_bytes = 2_000_000
    calls = 20
    admitted_at_most = 24 * 1024 * 1024 // body_bytes  # 12
    with serve(emulator_env, **settings) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        answers: list[tuple[bytes, float]] = []

        def send(index: int) -> None:
            # Padded with whitespace: large to hold, cheap to parse (the test is about admission).
            body = json.dumps(current_payload(session_id=f"big-{index}")).encode()
            body += b" " * (body_bytes - len(body))
            head = (
                f"POST /end-of-call?token={TOKEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            answers.append(ask(port, head + body, timeout=30))

        senders = [threading.Thread(target=send, args=(i,)) for i in range(calls)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(30)
    busy = [a for a, _ in answers if b'"error":"busy"' in a]
    assert len(busy) >= calls - admitted_at_most
    assert all(b"\r\nRetry-After: 5" in a for a in busy)

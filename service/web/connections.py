"""What a client's connection may cost while it is slow: no thread, bounded memory.

gunicorn's gthread worker gives a connection a thread as soon as it is accepted, and the thread
then waits for the request's first byte (up to 5 s), and writes the answer with a blocking send
(no deadline). A client that opens connections and sends nothing, or pipelines requests and never
reads the answers, holds threads for free. Here both waits happen on the worker's event loop
instead (service/web/server.py wires it):

- `HeadReader`: the request head (request line and headers) is read without blocking, into a
  buffer of at most HEAD_LIMIT_BYTES; a thread gets the connection once the head is complete;
- `HandOverSocket`: an answer is sent without blocking; what the client's window does not take
  waits in memory (one answer at most: the next request on the connection is read only once it
  has gone) and the event loop writes it, within WRITE_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

# Request heads we serve are well under this (the request line is limited to 8,190 bytes); a head
# still incomplete at this size goes to a thread, where gunicorn's limits and the header deadline
# apply. The loop holds at most this much per connection.
HEAD_LIMIT_BYTES = 32 * 1024
# How long the event loop keeps writing an answer the client does not read.
WRITE_TIMEOUT_SECONDS = 10.0
# How long a thread closing the connection waits for its answer to go out first.
SHUTDOWN_FLUSH_SECONDS = 1.0


class HandOverSocket(socket.socket):
    """A socket whose sendall never waits: bytes the kernel does not take at once are kept in
    `pending` for the event loop to write (`flush_some`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending = bytearray()

    @classmethod
    def adopt(cls, sock: socket.socket) -> HandOverSocket:
        timeout = sock.gettimeout()
        adopted = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        adopted.settimeout(timeout)
        return adopted

    def sendall(self, data: Any, flags: int = 0) -> None:
        if self.pending:
            self.pending += data
            return
        view = memoryview(data).cast("B")
        sent = self._send_now(view)
        if sent < len(view):
            self.pending += view[sent:]

    def flush_some(self) -> bool:
        """Write what the kernel takes now; True once nothing is pending."""
        sent = self._send_now(memoryview(self.pending))
        del self.pending[:sent]
        return not self.pending

    def flush_within(self, seconds: float) -> None:
        """Write what is pending, waiting at most `seconds` (for a thread about to close)."""
        deadline = time.monotonic() + seconds
        timeout = self.gettimeout()
        try:
            while self.pending and (remaining := deadline - time.monotonic()) > 0:
                self.settimeout(remaining)
                sent = super().send(self.pending)
                del self.pending[:sent]
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                self.settimeout(timeout)

    def shutdown(self, how: int) -> None:
        if how != socket.SHUT_RD and self.pending:
            self.flush_within(SHUTDOWN_FLUSH_SECONDS)
        super().shutdown(how)

    def _send_now(self, view: memoryview) -> int:
        """Send without waiting, whatever the socket's timeout (with one, socket.send would first
        wait for the socket to be writable)."""
        total = 0
        while total < len(view):
            try:
                sent = super().send(view[total:], socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if sent == 0:
                break
            total += sent
        return total


class HeadReader:
    """Collects a request head without blocking. `feed` returns None while more is needed, else
    the bytes read so far (possibly empty when the client closed)."""

    def __init__(self, already: bytes = b"") -> None:
        self.buffer = bytearray(already)

    def complete(self) -> bool:
        return b"\r\n\r\n" in self.buffer or b"\n\n" in self.buffer

    def feed(self, sock: socket.socket) -> bytes | None:
        try:
            data = sock.recv(HEAD_LIMIT_BYTES - len(self.buffer), socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data = b""
        if not data:
            return bytes(self.buffer)  # closed: the thread sees the end (or a partial head)
        self.buffer += data
        if self.complete() or len(self.buffer) >= HEAD_LIMIT_BYTES:
            return bytes(self.buffer)
        return None

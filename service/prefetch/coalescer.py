"""Concurrent reads share round trips to the store.

While the allowed number of batched reads is in flight (one by default), later requests queue;
when a read returns, the oldest queued request sends every queued key in one call and hands the
answer to the others. A lone request reads at once in its own thread (no hand-off, no waiting
for a batch to fill), so this costs nothing at low load, and under load it turns N small reads
into one: fewer calls for the instance, fewer lookups for Firestore (in
bench/prefetch.py, about four requests per call at concurrency 64, and 10-20 % more
requests per second).

Every caller keeps its own deadline: a queued request gives up when its time is over, and the
request that sends a batch is the oldest one in it, so the call's deadline (its own) is never
later than anybody else's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, Literal, TypeVar

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")

Role = Literal["leader", "queued", "batched"]


class ReadFailed(Exception):
    """The shared read failed or ran out of time; `reason` names why (an exception type)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Request(Generic[Key, Value]):
    __slots__ = ("answer", "deadline", "done", "failure", "keys", "role")

    def __init__(self, keys: Sequence[Key], deadline: float, role: Role) -> None:
        self.keys = keys
        self.deadline = deadline
        self.role: Role = role
        self.done: threading.Event | None = None if role == "leader" else threading.Event()
        self.answer: dict[Key, Value] | None = None
        self.failure = ""


class ReadCoalescer(Generic[Key, Value]):
    def __init__(
        self, fetch: Callable[[list[Key], float], dict[Key, Value]], max_in_flight: int = 1
    ) -> None:
        """`fetch(keys, timeout)` reads every key in one call, within `timeout` seconds; at most
        `max_in_flight` calls run at once, later reads queue for the next one to go."""
        self.fetch = fetch
        self.max_in_flight = max(1, max_in_flight)
        self._lock = threading.Lock()
        self._queue: list[_Request[Key, Value]] = []
        self._in_flight = 0

    def read(self, keys: Sequence[Key], timeout: float) -> dict[Key, Value]:
        """Values of `keys` (and possibly of other keys); raises ReadFailed."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._in_flight >= self.max_in_flight:
                request: _Request[Key, Value] = _Request(keys, deadline, "queued")
                self._queue.append(request)
            else:
                self._in_flight += 1
                request = _Request(keys, deadline, "leader")
        if request.role != "leader":
            assert request.done is not None
            request.done.wait(max(0.0, deadline - time.monotonic()))
            with self._lock:
                if request.role == "queued":  # time is up and nobody took it
                    self._queue.remove(request)
                    raise ReadFailed("TimeoutError")
                if request.role == "batched":
                    if not request.done.is_set():  # its batch is still in flight
                        raise ReadFailed("TimeoutError")
                    if request.answer is None:
                        raise ReadFailed(request.failure)
                    return request.answer
            # role == "leader": the previous batch has returned and this request is the oldest
        return self._lead(request)

    def _lead(self, leader: _Request[Key, Value]) -> dict[Key, Value]:
        batch = [leader]
        answer: dict[Key, Value] | None = None
        failure = ""
        try:
            remaining = leader.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no time left")  # leave the queue to the next leader
            with self._lock:
                batch.extend(self._queue)
                self._queue.clear()
                for member in batch[1:]:
                    member.role = "batched"
            wanted = list(dict.fromkeys(key for member in batch for key in member.keys))
            answer = self.fetch(wanted, remaining)
        except Exception as exc:
            failure = type(exc).__name__
        finally:
            with self._lock:
                if self._queue:  # the oldest waiting request sends the next batch
                    successor = self._queue.pop(0)
                    successor.role = "leader"
                    assert successor.done is not None
                    successor.done.set()
                else:
                    self._in_flight -= 1
        for member in batch[1:]:
            member.answer, member.failure = answer, failure
            assert member.done is not None
            member.done.set()
        if answer is None:
            raise ReadFailed(failure)
        return answer

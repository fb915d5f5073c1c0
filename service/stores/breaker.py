"""A circuit breaker in front of the BigQuery sink: while BigQuery is failing, stop paying for it.

Without it, during an outage every end-of-call spends the whole insert budget (6 s by default)
before becoming a dead letter, holding a thread all that time. After `failures` inserts in a row
have failed (InsertFailed: transport error, timeout, 5xx), the circuit opens: inserts fail at
once, so the caller dead-letters the call in milliseconds. Every `probe_seconds` one insert is let
through as a probe; when it succeeds the circuit closes, when it fails it stays open. Rows BigQuery
refuses as invalid are an answer, not an outage: they count as success here.

A BigQuery that hangs fails nothing until the first budgets run out, and every call arriving
meanwhile would wait too: so while an insert has been waiting longer than `slow_seconds` (an
insert normally answers in well under a second), new calls are not attempted either.

Hand-written rather than pybreaker: pybreaker holds one lock around every call, which would let
only one insert at a time through in a threaded server.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from service.stores.errors import InsertFailed, RowError, Sink

log = logging.getLogger(__name__)


class CircuitOpen(InsertFailed):
    """Not attempted: BigQuery failed recently and the next probe is not due yet."""


class BreakerSink:
    def __init__(
        self,
        sink: Sink,
        *,
        failures: int = 3,
        probe_seconds: float = 5.0,
        slow_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.failures = failures
        self.probe_seconds = probe_seconds
        self.slow_seconds = slow_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._failed_in_a_row = 0
        self._open_until: float | None = None  # None: closed
        self._probing = False
        self._waiting: dict[int, float] = {}  # inserts in flight: token -> start
        self._tokens = itertools.count()

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None

    def insert(self, rows: Sequence[dict[str, Any]], row_ids: Sequence[str]) -> list[RowError]:
        token = next(self._tokens)
        probe = self._admit(token)
        try:
            errors = self.sink.insert(rows, row_ids)
        except InsertFailed:
            self._failed(probe)
            raise
        except BaseException:
            if probe:
                self._end_probe()
            raise
        finally:
            with self._lock:
                del self._waiting[token]
        self._succeeded()
        return errors

    def _admit(self, token: int) -> bool:
        """True when this call is the probe; raises CircuitOpen when it may not go at all."""
        with self._lock:
            now = self.clock()
            if self._open_until is None:
                if self._waiting and now - min(self._waiting.values()) > self.slow_seconds:
                    raise CircuitOpen("BigQuery is not answering: not attempted")
                self._waiting[token] = now
                return False
            if self._probing or now < self._open_until:
                raise CircuitOpen("BigQuery is failing: not attempted (circuit open)")
            self._probing = True
            self._waiting[token] = now
            return True

    def _failed(self, probe: bool) -> None:
        with self._lock:
            self._failed_in_a_row += 1
            if probe:
                self._probing = False
            if probe or self._failed_in_a_row >= self.failures:
                if self._open_until is None:
                    log.warning(
                        "bigquery circuit opened: calls go to the dead-letter store",
                        extra={"failed_in_a_row": self._failed_in_a_row},
                    )
                self._open_until = self.clock() + self.probe_seconds

    def _succeeded(self) -> None:
        with self._lock:
            if self._open_until is not None:
                log.warning("bigquery circuit closed: BigQuery answers again")
            self._failed_in_a_row = 0
            self._open_until = None
            self._probing = False

    def _end_probe(self) -> None:
        with self._lock:
            self._probing = False

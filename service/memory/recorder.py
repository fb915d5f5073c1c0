"""The end-of-call's memory update: after the row is stored, never at the call's expense.

The update runs on a small pool and the webhook waits for it at most MEMORY_TIMEOUT_SECONDS
(and never past the end-of-call budgets): a slow or failing Firestore changes neither the answer
nor its time. An update not waited for finishes in the background; one that fails, or that a busy
instance skips, is caught up by the replay job from BigQuery (service/memory/catch_up.py).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import timedelta
from typing import Any

from service.memory.record import contribution, record_call
from service.memory.settings import CallerId, memory_settings

log = logging.getLogger(__name__)

# Updates in flight per instance; beyond it a call's update is left to the catch-up, so a
# Firestore that hangs cannot pile up threads.
MAX_PENDING = 32

ReadAgent = Callable[[str, float], Mapping[str, Any] | None]


class MemoryRecorder:
    def __init__(
        self,
        client: Callable[[], Any],
        read_agent: ReadAgent,
        caller_id: CallerId,
        *,
        profiles_collection: str,
        retention: timedelta,
        workers: int = 4,
    ) -> None:
        self.client = client  # called in the worker: the client is created on first use
        self.read_agent = read_agent
        self.caller_id = caller_id
        self.profiles_collection = profiles_collection
        self.retention = retention
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="memory")
        self.pending = threading.BoundedSemaphore(MAX_PENDING)
        self.locks = [threading.Lock() for _ in range(64)]

    def record(self, row: Mapping[str, Any], wait_seconds: float) -> str:
        """Update the caller's memory for a stored row; the outcome, for the span and the log:
        off, no_caller, added, replaced, unchanged, not_for_this_agent, not_waited, busy,
        or failed."""
        if not self.pending.acquire(blocking=False):
            return "busy"
        try:
            # The update's own budget outlasts the wait: one not waited for can still finish.
            future = self.pool.submit(self._update_logged, row, max(wait_seconds, 0.25) * 4)
        except RuntimeError:  # the pool is shut down (the instance is stopping)
            self.pending.release()
            return "busy"
        future.add_done_callback(lambda _: self.pending.release())
        try:
            return str(future.result(timeout=max(wait_seconds, 0.0)))
        except FutureTimeout:
            return "not_waited"

    def _update_logged(self, row: Mapping[str, Any], timeout: float) -> str:
        try:
            return self._update(row, timeout)
        except Exception as exc:  # logged by type only: the message may quote the caller
            log.warning("caller memory not updated", extra={"error_type": type(exc).__name__})
            return "failed"

    def _update(self, row: Mapping[str, Any], timeout: float) -> str:
        agent_id = str(row.get("agent_id") or "")
        if not agent_id:
            return "off"
        agent = self.read_agent(agent_id, timeout)
        settings = memory_settings(agent_id, agent)
        if settings is None:
            return "off"
        caller = self.caller_id(
            agent, agent_id, row.get("from_number"), row.get("to_number"), row_metadata(row)
        )
        if caller is None:
            return "no_caller"
        # Deliveries to one instance for one caller take turns: in a transaction they would only
        # hold each other up (Firestore aborts all but one); other instances still contend.
        with self.locks[hash((caller, settings.scope)) % len(self.locks)]:
            return record_call(
                self.client(),
                settings,
                caller,
                contribution(row, settings),
                profiles_collection=self.profiles_collection,
                timeout=timeout,
                retention=self.retention,
                check_first=False,  # a delivery is mostly a new call
            )


def row_metadata(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """The call's final metadata (JSON text in a row about to be stored, parsed in one read back
    from BigQuery): where a lookup key's value is found at the end of a call."""
    value = row.get("metadata")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, Mapping) else {}

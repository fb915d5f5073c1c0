"""The one line per request that the log-based metrics and alerts read (terraform/monitoring.tf).

Written on `telemetry.signals`, so at every LOG_LEVEL: a quieter level must never silence an
alert. It carries the route, the status and the latency, never the path or the query: Cloud Run's
own request log holds the full URL (phone numbers, caller metadata, a token in the query) and is
kept out of Cloud Logging by Terraform, so this line is what operations read instead.
"""

from __future__ import annotations

import logging
import time

from service.telemetry import signals

UNLOGGED = frozenset({"/health", "/healthz"})  # probes, every few seconds


def log_request(route: str, method: str, status: int, started: float) -> None:
    """`route` is a path the service serves or "other"; `started` a time.perf_counter()."""
    if route in UNLOGGED:
        return
    latency = time.perf_counter() - started
    signals.log(
        logging.INFO if status < 400 else logging.WARNING,
        "webhook request",
        extra={
            "route": route,
            "status": status,
            "latency_seconds": round(latency, 6),
            # 1 for an end-of-call accepted, 0 for any other request: the silence alert's mean.
            "end_of_call_accepted": int(route == "/end-of-call" and status == 200),
            "httpRequest": {
                "requestMethod": method,
                "status": status,
                "latency": f"{latency:.6f}s",
            },
        },
    )

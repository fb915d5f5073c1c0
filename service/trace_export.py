"""Spans leave while the request still has the CPU.

Cloud Run's default billing (`cpu_idle = true`, request-based) takes the CPU away once a response
is sent: "You shouldn't start background threads or routines that run outside the scope of the
request handlers if you use this type of billing" (https://cloud.google.com/run/docs/tips/general).
OpenTelemetry's BatchSpanProcessor exports from such a thread, after the response. This processor
exports a request's spans in the request's own thread, when its local root span (the server span
of service/telemetry.py) ends, which is before the response is returned. Only sampled traces are
recorded at all, so an unsampled request pays nothing; a sampled one pays one export call.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import Span
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

# Bounds for traces whose root never ends here (a child span outliving its request).
MAX_OPEN_TRACES = 1000
MAX_SPANS_PER_TRACE = 128


class ExportAtRequestEnd(SpanProcessor):
    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self._lock = threading.Lock()
        self._open: dict[int, list[ReadableSpan]] = {}

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None or not span.context.trace_flags.sampled:
            return
        trace_id = span.context.trace_id
        local_root = span.parent is None or span.parent.is_remote
        with self._lock:
            if not local_root:
                if trace_id not in self._open and len(self._open) >= MAX_OPEN_TRACES:
                    self._open.pop(next(iter(self._open)))  # the oldest
                spans = self._open.setdefault(trace_id, [])
                if len(spans) < MAX_SPANS_PER_TRACE:
                    spans.append(span)
                return
            spans = self._open.pop(trace_id, [])
        try:
            self.exporter.export([*spans, span])
        except Exception as exc:  # tracing never fails a request
            log.warning("spans not exported", extra={"error_type": type(exc).__name__})

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # nothing waits: every finished request has been exported

"""Logging in the Cloud Logging JSON format, and OpenTelemetry tracing (Cloud Trace on Cloud Run).

Logs are one JSON object per line on stdout: `severity`, `message`, our structured fields, and
`logging.googleapis.com/trace` / `spanId` when the request carries a trace, so Cloud Logging links
each line to its trace. Stack traces and exception messages are never logged: they can carry
payload data; only the exception type is.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.cloud_trace_propagator import CloudTraceFormatPropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service.config import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

# Attributes every LogRecord has; anything else passed through `extra=` is a structured field.
_RECORD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# W3C traceparent wins over Cloud Run's X-Cloud-Trace-Context when both are present.
_PROPAGATOR = CompositePropagator([CloudTraceFormatPropagator(), TraceContextTextMapPropagator()])
_TRACE_HEADERS = tuple(_PROPAGATOR.fields)  # the headers those two read

tracer = trace.get_tracer("millis-webhooks")

# Lines that log-based metrics and alerts read (terraform/monitoring.tf: "webhook request", "call
# kept as a dead letter") go through this logger, written at every LOG_LEVEL: a quieter level must
# never silence an alert (tests/integration/test_alert_signals.py checks each metric's filter).
signals = logging.getLogger("service.signals")


class CloudLoggingFormatter(logging.Formatter):
    def __init__(self, project: str) -> None:
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["logging.googleapis.com/trace"] = (
                f"projects/{self.project}/traces/{span_context.trace_id:032x}"
            )
            entry["logging.googleapis.com/spanId"] = f"{span_context.span_id:016x}"
            entry["logging.googleapis.com/trace_sampled"] = span_context.trace_flags.sampled
        return json.dumps(entry, default=str, ensure_ascii=False)


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is at the time (test runners swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(settings: Settings) -> None:
    handler = _StdoutHandler()
    handler.setFormatter(CloudLoggingFormatter(settings.google_cloud_project))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    signals.setLevel(min(logging.INFO, root.level))
    # Client libraries log request details at DEBUG/INFO; keep them quiet.
    for noisy in ("google", "urllib3", "grpc", "werkzeug", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # OpenTelemetry warns about a malformed `tracestate` header quoting its contents: any caller,
    # authenticated or not, would choose what and how much we log. The header is ignored anyway.
    logging.getLogger("opentelemetry.trace.span").setLevel(logging.ERROR)


def cloud_trace_on_first_export(project: str) -> SpanExporter:
    """The Cloud Trace exporter, created when the first spans are exported: its client (gRPC and
    google-api-core, ~0.3 s and ~30 MB) then loads during the first sampled request of an
    instance, instead of in every new instance before its first answer."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class CloudTraceOnFirstExport(SpanExporter):
        def __init__(self) -> None:
            self._exporter: Any = None
            self._lock = threading.Lock()

        def _get(self) -> Any:
            with self._lock:
                if self._exporter is None:
                    from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

                    self._exporter = CloudTraceSpanExporter(project_id=project)  # type: ignore[no-untyped-call]
                return self._exporter

        def export(self, spans: Any) -> SpanExportResult:
            result: SpanExportResult = self._get().export(spans)
            return result

        def shutdown(self) -> None:
            if self._exporter is not None:
                self._exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return self._exporter is None or bool(self._exporter.force_flush(timeout_millis))

    return CloudTraceOnFirstExport()


def configure_tracing(settings: Settings) -> None:
    """Export spans to Cloud Trace on Cloud Run, to stdout for `console`, nowhere otherwise."""
    exporter_name = settings.trace_exporter
    if exporter_name == "auto":
        exporter_name = "gcp" if settings.on_cloud_run else "none"
    if exporter_name == "none":
        # Nobody would read the spans: keep OpenTelemetry's no-op tracer, which costs nothing.
        # The caller's trace context is still attached, so log lines keep their trace id.
        return
    try:
        # Imported here: cold start need not pay for the SDK and the Cloud Trace client.
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        from service.trace_export import ExportAtRequestEnd

        # Exported in the request, while Cloud Run gives it CPU (service/trace_export.py).
        exporter: SpanExporter
        if exporter_name == "gcp":
            exporter = cloud_trace_on_first_export(settings.google_cloud_project)
        else:
            exporter = ConsoleSpanExporter()
        processor: SpanProcessor = ExportAtRequestEnd(exporter)
    except Exception as exc:  # no credentials locally: trace nothing rather than fail
        logging.getLogger(__name__).warning(
            "trace exporter unavailable; spans are not exported",
            extra={"exporter": exporter_name, "error_type": type(exc).__name__},
        )
        return
    resource = Resource.create(
        {"service.name": settings.k_service or "millis-webhooks", "cloud.provider": "gcp"}
    )
    # The default sampler follows the caller's decision (Cloud Run's trace header carries it).
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)


@contextmanager
def request_span(name: str, headers: Any) -> Iterator[trace.Span]:
    """A server span for one request, continuing the caller's trace when it sent one."""
    if any(headers.get(header) for header in _TRACE_HEADERS):
        parent = _PROPAGATOR.extract(carrier=headers)
    else:  # Millis itself sends no trace context: skip parsing for nothing
        parent = otel_context.Context()
    token = otel_context.attach(parent)
    try:
        with tracer.start_as_current_span(name, kind=trace.SpanKind.SERVER) as span:
            yield span
    finally:
        otel_context.detach(token)


def child_span(name: str) -> AbstractContextManager[trace.Span]:
    """A child of the current span, or nothing when that span is not recorded (no exporter, or
    a trace the caller did not sample): the prefetch path is measured in microseconds."""
    if not trace.get_current_span().is_recording():
        return nullcontext(trace.INVALID_SPAN)
    return tracer.start_as_current_span(name)


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()

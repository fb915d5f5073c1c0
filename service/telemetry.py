"""Logging in the Cloud Logging JSON format, and OpenTelemetry tracing (Cloud Trace on Cloud Run).

Logs are one JSON object per line on stdout: `severity`, `message`, our structured fields, and
`logging.googleapis.com/trace` / `spanId` when the request carries a trace, so Cloud Logging links
each line to its trace. Stack traces and exception messages are never logged: they can carry
payload data; only the exception type is.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Iterator
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

tracer = trace.get_tracer("millis-webhooks")
_log = logging.getLogger(__name__)


# Loggers whose records are ours: their messages are constants and their fields chosen in review.
_OWN_LOGGERS = ("service",)
# Identifiers our lines carry, taken from the request: logged only when shaped like an id.
_ID_FIELDS = frozenset({"agent_id", "session_id"})
_ID_SHAPE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
# What a caller chose, in text we did not write: anything quoted (gunicorn quotes the request
# line or header it refuses), a query string, an IP address, a phone number (7 or more digits,
# possibly spaced or dashed).
_QUOTED = re.compile(r"""(['"]).*?(?:\1|$)""")
_QUERY_STRING = re.compile(r"\?\S*")
_IP_ADDRESS = re.compile(r"\bip=\S+|\b\d{1,3}(?:\.\d{1,3}){3}\b")
_PHONE_LIKE = re.compile(r"\+?\d(?:[\s()\-]?\d){6,}")
_MAX_FOREIGN_MESSAGE_CHARS = 300


def loggable_id(value: Any) -> str:
    """An identifier as it may be logged: as sent when it has the shape of an id (letters, digits,
    `-`, `_`, at most 64) and holds no phone-number-like run of digits; otherwise withheld."""
    if isinstance(value, str) and _ID_SHAPE.fullmatch(value) and not _PHONE_LIKE.search(value):
        return value
    return "(withheld)"


def _foreign_message(record: logging.LogRecord) -> str:
    """A library's line (gunicorn, Flask, OpenTelemetry, the Google clients...): its message
    template only. The arguments are where request data goes (gunicorn's `Error handling request
    %s` is followed by the full URI); a message formatted before logging (gunicorn's `Invalid
    request from ip=...: Invalid HTTP request line: '...'`) is masked for quoted text, query
    strings, addresses and phone numbers, and cut short."""
    if record.name == "py.warnings":
        return "Python warning (text withheld)"
    template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
    for pattern, mask in (
        (_QUOTED, "'[withheld]'"),
        (_QUERY_STRING, "?[query]"),
        (_IP_ADDRESS, "[address]"),
        (_PHONE_LIKE, "[number]"),
    ):
        template = pattern.sub(mask, template)
    return template[:_MAX_FOREIGN_MESSAGE_CHARS]


# Lines that log-based metrics and alerts read (terraform/monitoring.tf: "webhook request", "call
# kept as a dead letter") go through this logger, written at every LOG_LEVEL: a quieter level must
# never silence an alert (tests/integration/test_alert_signals.py checks each metric's filter).
signals = logging.getLogger("service.signals")


class CloudLoggingFormatter(logging.Formatter):
    """The only way out for log lines. Whatever logs, the line can hold no request data it did
    not choose to log: library records keep their template only (no arguments, no extra fields),
    no line ever carries a traceback or an exception message (only the exception type), and the
    configured secrets are masked wherever they appear."""

    def __init__(self, project: str, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.project = project
        self.secrets = [secret for secret in secrets if secret]

    def format(self, record: logging.LogRecord) -> str:
        own = record.name in _OWN_LOGGERS or record.name.startswith(
            tuple(f"{name}." for name in _OWN_LOGGERS)
        )
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": _own_message(record) if own else _foreign_message(record),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        if own:
            for key, value in record.__dict__.items():
                if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                    entry[key] = loggable_id(value) if key in _ID_FIELDS else value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__
        entry.update(_trace_fields(self.project))
        line = json.dumps(entry, default=str, ensure_ascii=False)
        for secret in self.secrets:
            if secret in line:
                line = line.replace(secret, "[secret]")
        return line


def _own_message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad format string: the template, never a logging error on stderr
        return str(record.msg)


def _trace_fields(project: str) -> dict[str, Any]:
    try:
        span_context = trace.get_current_span().get_span_context()
        if not span_context.is_valid:
            return {}
        return {
            "logging.googleapis.com/trace": (
                f"projects/{project}/traces/{span_context.trace_id:032x}"
            ),
            "logging.googleapis.com/spanId": f"{span_context.span_id:016x}",
            "logging.googleapis.com/trace_sampled": bool(span_context.trace_flags.sampled),
        }
    except Exception:  # a caller's odd trace context costs the line its trace, nothing else
        return {}


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
    handler.setFormatter(
        CloudLoggingFormatter(settings.google_cloud_project, configured_secrets(settings))
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    signals.setLevel(min(logging.INFO, root.level))
    # Client libraries log request details at DEBUG/INFO; keep them quiet.
    for noisy in ("google", "urllib3", "grpc", "werkzeug", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # OpenTelemetry warns about a malformed `tracestate` header: with its template only, the line
    # says nothing useful, and any caller could have us write it at will.
    logging.getLogger("opentelemetry.trace.span").setLevel(logging.ERROR)
    # The other ways text reaches stdout/stderr, each quoting what it was given: a handler that
    # fails prints the record's arguments; warnings and uncaught exceptions in threads print
    # their message and traceback. All of them go through the formatter above instead.
    logging.raiseExceptions = False
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_exception
    sys.unraisablehook = _log_unraisable


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret the service is configured with, as it could appear in text."""
    secrets = [token.get_secret_value() for token in settings.webhook_tokens]
    for secret in settings.webhook_signing_secrets:
        value = secret.get_secret_value()
        secrets += [value, value.removeprefix("whsec_")]
    for agent_secrets in settings.lookup_signing_secrets.values():
        secrets += [secret.get_secret_value() for secret in agent_secrets]
    return secrets


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    _log.error(
        "uncaught exception in a thread",
        extra={"error_type": getattr(args.exc_type, "__name__", "unknown")},
    )


def _log_unraisable(args: Any) -> None:
    _log.error(
        "unraisable exception",
        extra={"error_type": getattr(args.exc_type, "__name__", "unknown")},
    )


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


# Longest value each trace header can have when well formed (X-Cloud-Trace-Context:
# 32 hex / a 64-bit decimal span id / ;o=1; traceparent: 55 characters; tracestate: W3C's 512).
# Longer values are ignored unread: the parsers behind them are not written for hostile input (a
# trace option of thousands of digits raised ValueError inside OpenTelemetry's Cloud Trace
# propagator, outside any handler).
_TRACE_HEADER_LIMITS = {"x-cloud-trace-context": 64, "traceparent": 64, "tracestate": 512}


def caller_trace_context(headers: Any) -> otel_context.Context:
    """The caller's trace context, or an empty one: a header that is too long, not ASCII or that
    OpenTelemetry cannot parse drops the trace, never the request."""
    carrier = {}
    for name, limit in _TRACE_HEADER_LIMITS.items():
        value = headers.get(name)
        if value and len(value) <= limit and value.isascii():
            carrier[name] = value
    if not carrier:  # Millis itself sends no trace context: skip parsing for nothing
        return otel_context.Context()
    try:
        return _PROPAGATOR.extract(carrier=carrier)
    except Exception as exc:
        _log.debug("trace context ignored", extra={"error_type": type(exc).__name__})
        return otel_context.Context()


@contextmanager
def request_span(name: str, headers: Any) -> Iterator[trace.Span]:
    """A server span for one request, continuing the caller's trace when it sent a usable one.
    Tracing never fails the request: if the span cannot be started or ended, the request goes on
    without it."""
    try:
        span = tracer.start_span(name, caller_trace_context(headers), kind=trace.SpanKind.SERVER)
    except Exception as exc:
        _log.debug("request span not started", extra={"error_type": type(exc).__name__})
        span = trace.INVALID_SPAN
    token = otel_context.attach(trace.set_span_in_context(span, otel_context.Context()))
    try:
        yield span
    finally:
        otel_context.detach(token)
        try:
            span.end()
        except Exception as exc:
            _log.debug("request span not ended", extra={"error_type": type(exc).__name__})


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

"""Spans are exported in the request's own thread when its server span ends (before the answer
leaves), never by a background thread that Cloud Run's request-based billing starves of CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from service.trace_export import ExportAtRequestEnd

ROOT = Path(__file__).resolve().parents[2]


class Recording(SpanExporter):
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[tuple[list[str], str]] = []
        self.fail = fail

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches.append(([span.name for span in spans], threading.current_thread().name))
        if self.fail:
            raise ConnectionError("cloud trace unreachable")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def tracer_with(exporter: SpanExporter) -> trace.Tracer:
    provider = TracerProvider()
    provider.add_span_processor(ExportAtRequestEnd(exporter))
    return provider.get_tracer("test")


def remote_parent(sampled: bool) -> Any:
    context = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(NonRecordingSpan(context))


def test_a_requests_spans_leave_together_in_its_thread_when_its_server_span_ends() -> None:
    exporter = Recording()
    tracer = tracer_with(exporter)
    with tracer.start_as_current_span("GET /prefetch", context=remote_parent(sampled=True)):
        with tracer.start_as_current_span("firestore.read"):
            pass
        assert exporter.batches == []  # the child waits for its request
    assert exporter.batches == [
        (["firestore.read", "GET /prefetch"], threading.current_thread().name)
    ]


def test_a_trace_the_caller_did_not_sample_costs_no_export() -> None:
    exporter = Recording()
    tracer = tracer_with(exporter)
    parent = remote_parent(sampled=False)
    with (
        tracer.start_as_current_span("GET /prefetch", context=parent),
        tracer.start_as_current_span("firestore.read"),
    ):
        pass
    assert exporter.batches == []


def test_an_export_failure_never_fails_the_request(caplog: pytest.LogCaptureFixture) -> None:
    exporter = Recording(fail=True)
    with tracer_with(exporter).start_as_current_span("POST /end-of-call"):
        pass
    assert len(exporter.batches) == 1
    assert "unreachable" not in caplog.text


def test_the_service_exports_without_a_background_thread() -> None:
    code = """
import json, threading
from opentelemetry import trace
from service.config import Settings
from service.telemetry import configure_tracing, request_span
configure_tracing(Settings(google_cloud_project="p-1234", trace_exporter="console"))
headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
with request_span("GET /prefetch", headers):
    pass
processors = trace.get_tracer_provider()._active_span_processor._span_processors
print(json.dumps({"processors": [type(p).__name__ for p in processors],
                  "threads": sorted(t.name for t in threading.enumerate())}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["processors"] == ["ExportAtRequestEnd"]
    assert found["threads"] == ["MainThread"]
    assert '"name": "GET /prefetch"' in result.stdout  # exported by the console exporter

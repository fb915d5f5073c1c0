"""OpenTelemetry spans: one server span per request continuing the caller's trace, child spans
for the Firestore read and the BigQuery insert, and attributes that identify no one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.payloads import current_payload

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def test_prefetch_span_continues_traceparent_with_a_firestore_child(
    make_client: Any, clean_firestore: Any, spans: InMemorySpanExporter
) -> None:
    clean_firestore.collection("profiles").document("+15551234567").set({"name": "Ann"})
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    make_client(prefetch_caller_numbers="phone").get(
        "/prefetch?agent_id=agent-1&session_id=s&from=%2B15551234567",
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    finished = {span.name: span for span in spans.get_finished_spans()}
    server, read = finished["GET /prefetch"], finished["firestore.read"]
    assert f"{server.context.trace_id:032x}" == trace_id
    assert server.parent is not None and f"{server.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert read.parent is not None and read.parent.span_id == server.context.span_id
    assert server.attributes is not None
    assert server.attributes["agent_id"] == "agent-1"
    assert server.attributes["profile_found"] is True
    assert server.attributes["outcome"] == "answered"
    assert server.attributes["http.status_code"] == 200
    assert "+15551234567" not in str(dict(server.attributes))


def test_end_of_call_span_continues_cloud_run_header_with_a_bigquery_child(
    make_client: Any, dataset: str, spans: InMemorySpanExporter
) -> None:
    make_client(bigquery_dataset=dataset).post(
        "/end-of-call",
        json=current_payload("trace-1"),
        headers={"X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1"},
    )
    finished = {span.name: span for span in spans.get_finished_spans()}
    server, insert = finished["POST /end-of-call"], finished["bigquery.insert"]
    assert f"{server.context.trace_id:032x}" == "105445aa7843bc8bf206b12000100000"
    assert insert.parent is not None and insert.parent.span_id == server.context.span_id
    assert server.attributes is not None and server.attributes["outcome"] == "inserted"
    text = str(dict(server.attributes)) + str(dict(insert.attributes or {}))
    assert "+15551234567" not in text and "Acme" not in text


def test_request_without_trace_headers_starts_its_own_trace(
    make_client: Any, clean_firestore: Any, spans: InMemorySpanExporter
) -> None:
    make_client().get("/prefetch?agent_id=agent-1&session_id=s&from=%2B15551234567")
    finished = {span.name: span for span in spans.get_finished_spans()}
    server, read = finished["GET /prefetch"], finished["firestore.read"]
    assert server.parent is None and server.context.trace_id != 0
    assert read.parent is not None and read.parent.span_id == server.context.span_id


def test_child_spans_are_not_even_created_under_a_span_nobody_records(
    spans: InMemorySpanExporter,
) -> None:
    from service.telemetry import child_span, tracer

    unsampled = trace.NonRecordingSpan(
        trace.SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True)
    )
    with trace.use_span(unsampled), child_span("firestore.read") as child:
        assert child is trace.INVALID_SPAN
    with tracer.start_as_current_span("GET /prefetch"), child_span("firestore.read") as child:
        assert child.is_recording()
    assert [span.name for span in spans.get_finished_spans()] == ["firestore.read", "GET /prefetch"]

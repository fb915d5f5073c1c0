"""Trace export benchmark: what exporting a request's spans inside the request costs the prefetch.

    bench/run trace_export [--requests 3000] [--rounds 3]

Spans are exported in the request's thread when its server span ends (service/trace_export.py),
so a sampled request waits for the export; an unsampled one records nothing. Serves the service
on the Firestore emulator three ways, rounds rotated: tracing off; tracing on (console exporter,
output discarded) with requests carrying no trace header, as Millis sends them; and tracing on
with every request sampled (a `traceparent` ending in -01). Then times the Cloud Trace exporter
itself (its gRPC client, as deployed) writing one prefetch's two spans to a local gRPC server
that answers BatchWriteSpans at once: the part of a sampled request's export that the console
exporter leaves out, minus the network to Cloud Trace, which cannot be reached from here.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from concurrent import futures
from pathlib import Path
from urllib.parse import quote

# bench/service.py would shadow the `service` package as the script's own directory comes first;
# bench/ stays importable through PYTHONPATH (bench/run).
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from benchlib import Result, Server, Summary, call_load, http_load, print_table
from emulators import free_port, start_firestore, treat_sigterm_as_ctrl_c
from prefetch import AGENT, AGENT_NUMBER, PROJECT, caller_numbers, seed


def fake_cloud_trace() -> tuple[object, int]:
    """A gRPC server on 127.0.0.1 answering every BatchWriteSpans with an empty reply."""
    import grpc

    def write(request: bytes, context: object) -> bytes:
        return b""  # google.protobuf.Empty

    handler = grpc.method_handlers_generic_handler(
        "google.devtools.cloudtrace.v2.TraceService",
        {
            "BatchWriteSpans": grpc.unary_unary_rpc_method_handler(
                write, request_deserializer=None, response_serializer=None
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def exporter_call(port: int) -> object:
    """One export of a prefetch's spans (server span + Firestore read) by the Cloud Trace
    exporter over gRPC to the local server."""
    import grpc
    from google.cloud.trace_v2 import TraceServiceClient
    from google.cloud.trace_v2.services.trace_service.transports import TraceServiceGrpcTransport
    from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    client = TraceServiceClient(transport=TraceServiceGrpcTransport(channel=channel))
    exporter = CloudTraceSpanExporter(project_id=PROJECT, client=client)  # type: ignore[no-untyped-call]
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    with tracer.start_as_current_span("GET /prefetch") as span:
        span.set_attribute("agent_id", AGENT)
        with tracer.start_as_current_span("firestore.read"):
            pass
    spans = memory.get_finished_spans()

    def export(_: int) -> None:
        exporter.export(spans)

    return export


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--profiles", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=3000, help="per target and concurrency")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm-up", type=int, default=1000)
    args = parser.parse_args()
    treat_sigterm_as_ctrl_c()
    rng = random.Random(11)
    firestore_emulator = start_firestore(Path(tempfile.mkdtemp(prefix="bench-")))
    os.environ.update(firestore_emulator.env)
    servers: list[Server] = []
    trace_server = None
    try:
        from service.stores.firestore import make_client

        numbers = seed(make_client(PROJECT, "(default)"), args.profiles)
        env = {**firestore_emulator.env, "GOOGLE_CLOUD_PROJECT": PROJECT}
        off = Server("service/main.py", "app", free_port(), {**env, "TRACE_EXPORTER": "none"})
        on = Server("service/main.py", "app", free_port(), {**env, "TRACE_EXPORTER": "console"})
        servers += [off, on]

        def requests(count: int, sampled: bool) -> list[tuple[str, str, bytes, dict[str, str]]]:
            made = []
            for i, number in enumerate(caller_numbers(numbers, count, rng)):
                headers = {}
                if sampled:
                    headers["traceparent"] = (
                        f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01"
                    )
                path = f"/prefetch?agent_id={AGENT}&session_id=s{i}&from={quote(number)}&to={quote(AGENT_NUMBER)}"
                made.append(("GET", path, b"", headers))
            return made

        targets = [
            ("tracing off", off, False),
            ("tracing on, no trace header", on, False),
            ("tracing on, every request sampled", on, True),
        ]
        for _, server, sampled in targets:
            http_load("warm-up", server.port, requests(args.warm_up, sampled), 8)
        for concurrency in (1, 8):
            rounds: dict[str, list[Result]] = {name: [] for name, _, _ in targets}
            per_round = max(1, args.requests // args.rounds)
            for round_index in range(args.rounds):
                order = (
                    targets[round_index % len(targets) :] + targets[: round_index % len(targets)]
                )
                for name, server, sampled in order:
                    rounds[name].append(
                        http_load(name, server.port, requests(per_round, sampled), concurrency)
                    )
            print_table(
                [Summary.of_rounds(results) for results in rounds.values()],
                f"prefetch, concurrency {concurrency} (medians of {args.rounds} rounds)",
            )

        trace_server, port = fake_cloud_trace()
        export = exporter_call(port)
        call_load("warm-up", export, 200, 1)  # type: ignore[arg-type]
        exports = [call_load("Cloud Trace exporter, one request's 2 spans", export, 1000, 1)]  # type: ignore[arg-type]
        print_table(exports, "export call alone, gRPC to 127.0.0.1")
    finally:
        for server in servers:
            server.stop()
        if trace_server is not None:
            trace_server.stop(0)  # type: ignore[attr-defined]
        firestore_emulator.stop()


if __name__ == "__main__":
    main()

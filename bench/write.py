"""The write-path benchmark: BigQuery's legacy insertAll against the Storage Write API's default
stream, in one run on the local emulators.

Four targets, each writing the same demo call rows into its own table (same schema):
POST /end-of-call through the service with BIGQUERY_WRITE_API=insert_all and with
storage_write (two service processes, as deployed), and a direct insert with each API (the
client library call alone, one row per call, as the service makes it). Each concurrency runs in
rounds; the order of the targets rotates every round and every target adds the same number of
rows per round, so each round of each target meets a table of the same size. The statistics are
the medians of the rounds.

    bench/run write [--requests 120] [--rounds 3] [--concurrency 1 8 64]

Bounded: every round stops after --requests requests or 30 seconds, on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import demo_data
from benchlib import Result, Server, Summary, call_load, http_load, print_table
from emulators import free_port, running_emulators, treat_sigterm_as_ctrl_c

PROJECT = "bench-millis"
APIS = ("insert_all", "storage_write")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=120, help="per round and target")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()
    treat_sigterm_as_ctrl_c()

    with running_emulators(PROJECT, Path(tempfile.mkdtemp(prefix="bench-write-"))) as emulator_env:
        os.environ.update(emulator_env)
        from service.stores.bigquery import create_tables_and_views
        from service.stores.bigquery import make_client as bigquery_client
        from service.stores.firestore import make_client as firestore_client
        from service.stores.storage_write import RowEncoder, make_write_client, stream_name

        bigquery = bigquery_client(PROJECT)
        datasets = {
            "service insert_all": "w_service_insert_all",
            "service storage_write": "w_service_storage_write",
            "direct insertAll": "w_direct_insert_all",
            "direct AppendRows": "w_direct_append_rows",
        }
        for dataset in datasets.values():
            create_tables_and_views(bigquery, dataset)

        servers = {
            api: Server(
                "service/main.py",
                "app",
                free_port(),
                {
                    **emulator_env,
                    "GOOGLE_CLOUD_PROJECT": PROJECT,
                    "BIGQUERY_WRITE_API": api,
                    "BIGQUERY_DATASET": datasets[f"service {api}"],
                },
            )
            for api in APIS
        }
        row = demo_data.demo_row

        insert_table = f"{PROJECT}.{datasets['direct insertAll']}.call_events"

        def direct_insert_all(_: int) -> None:
            one = row()
            errors = bigquery.insert_rows_json(
                insert_table, [one], row_ids=[one["session_id"]], timeout=10
            )
            if errors:
                raise RuntimeError(errors)

        from google.cloud.bigquery_storage_v1 import types

        write_client = make_write_client()
        encoder = RowEncoder()
        stream = stream_name(f"{PROJECT}.{datasets['direct AppendRows']}.call_events")
        schema = types.ProtoSchema(proto_descriptor=encoder.descriptor)

        def direct_append_rows(_: int) -> None:
            request = types.AppendRowsRequest(
                write_stream=stream,
                proto_rows=types.AppendRowsRequest.ProtoData(
                    writer_schema=schema,
                    rows=types.ProtoRows(serialized_rows=[encoder.encode(row())]),
                ),
            )
            responses = write_client.append_rows(
                iter([request]),
                timeout=10,
                metadata=(("x-goog-request-params", f"write_stream={stream}"),),
            )
            response = next(iter(responses))
            if response.row_errors or response.error.code:
                raise RuntimeError(str(response)[:200])

        post_requests = demo_data.demo_end_of_call_requests

        def service_target(api: str) -> Callable[[int, int], Result]:
            def run(count: int, concurrency: int) -> Result:
                return http_load(
                    f"POST /end-of-call {api}",
                    servers[api].port,
                    post_requests(count),
                    concurrency,
                )

            return run

        def direct_target(
            name: str, function: Callable[[int], None]
        ) -> Callable[[int, int], Result]:
            def run(count: int, concurrency: int) -> Result:
                return call_load(name, function, count, concurrency)

            return run

        targets: list[tuple[str, Callable[[int, int], Result]]] = [
            ("service insert_all", service_target("insert_all")),
            ("service storage_write", service_target("storage_write")),
            ("direct insertAll", direct_target("direct insertAll", direct_insert_all)),
            ("direct AppendRows", direct_target("direct AppendRows", direct_append_rows)),
        ]

        # Warm-up: every connection made and every lazy import done before the first round.
        for _, run in targets:
            run(20, 4)
        summaries: list[Summary] = []
        for concurrency in args.concurrency:
            rounds: dict[str, list[Result]] = {name: [] for name, _ in targets}
            for number in range(args.rounds):
                shift = number % len(targets)
                for name, run in targets[shift:] + targets[:shift]:
                    rounds[name].append(run(args.requests, concurrency))
            summaries += [Summary.of_rounds(rounds[name]) for name, _ in targets]
        for server in servers.values():
            server.stop()

        print_table(
            summaries,
            f"Write path, {args.rounds} rotated rounds of {args.requests} per target "
            f"(medians of the rounds); {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, emulators, {datetime.now(UTC):%Y-%m-%d}",
        )
        by = {(s.name, s.concurrency): s for s in summaries}
        print("\nRatios (same run): storage_write / insert_all, and service / direct per API")
        for concurrency in args.concurrency:
            svc_ia = by[("POST /end-of-call insert_all", concurrency)]
            svc_sw = by[("POST /end-of-call storage_write", concurrency)]
            dir_ia = by[("direct insertAll", concurrency)]
            dir_sw = by[("direct AppendRows", concurrency)]
            print(
                f"  c={concurrency:<3} service req/s {svc_sw.rps / svc_ia.rps:.2f}x "
                f"p50 {svc_sw.p50_ms / svc_ia.p50_ms:.2f}x p99 {svc_sw.p99_ms / svc_ia.p99_ms:.2f}x"
                f" | direct req/s {dir_sw.rps / dir_ia.rps:.2f}x p50 {dir_sw.p50_ms / dir_ia.p50_ms:.2f}x"
                f" | service/direct req/s insert_all {svc_ia.rps / dir_ia.rps:.2f}x,"
                f" storage_write {svc_sw.rps / dir_sw.rps:.2f}x"
            )
        counts = {}
        for name, dataset in datasets.items():
            sql = f"SELECT COUNT(*) AS n FROM `{PROJECT}.{dataset}.call_events`"
            counts[name] = next(iter(bigquery.query(sql).result()))["n"]
        firestore = firestore_client(PROJECT, "(default)")
        dead = firestore.collection("dead_letters").count().get()[0][0].value  # type: ignore[no-untyped-call]
        print(f"\nRows per table (equal tables): {counts}; dead letters: {int(dead)}")
        print(f"errors: {sum(s.errors for s in summaries)}")


if __name__ == "__main__":
    main()

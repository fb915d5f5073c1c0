"""The Storage Write API sink's own rules (the shared end-of-call and fault tests run it too):
the proto types per BigQuery type, batches of several rows, row errors, refusals, lazy import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from service.stores.errors import InsertFailed
from service.stores.storage_write import (
    MAX_REQUEST_BYTES,
    RowEncoder,
    StorageWriteSink,
    descriptor_for,
    message_class,
)
from tests.conftest import PROJECT, ROOT, query
from tests.payloads import stored_row as row

ALL_TYPES = [
    {"name": "s", "type": "STRING"},
    {"name": "i", "type": "INTEGER"},
    {"name": "f", "type": "FLOAT"},
    {"name": "b", "type": "BOOLEAN"},
    {"name": "ts", "type": "TIMESTAMP", "mode": "REQUIRED"},
    {"name": "d", "type": "DATE"},
    {"name": "j", "type": "JSON"},
    {"name": "n", "type": "NUMERIC"},
    {"name": "bn", "type": "BIGNUMERIC"},
    {"name": "raw", "type": "BYTES"},
    {"name": "tags", "type": "STRING", "mode": "REPEATED"},
    {
        "name": "items",
        "type": "RECORD",
        "mode": "REPEATED",
        "fields": [{"name": "k", "type": "STRING"}, {"name": "v", "type": "FLOAT"}],
    },
]


def test_descriptor_uses_the_documented_proto_types() -> None:
    # https://cloud.google.com/bigquery/docs/supported-data-types
    from google.protobuf import descriptor_pb2

    descriptor = descriptor_for(ALL_TYPES, "Row")
    types = {
        f.name: descriptor_pb2.FieldDescriptorProto.Type.Name(f.type) for f in descriptor.field
    }
    assert types == {
        "s": "TYPE_STRING",
        "i": "TYPE_INT64",
        "f": "TYPE_DOUBLE",
        "b": "TYPE_BOOL",
        "ts": "TYPE_INT64",
        "d": "TYPE_INT32",
        "j": "TYPE_STRING",
        "n": "TYPE_STRING",
        "bn": "TYPE_STRING",
        "raw": "TYPE_BYTES",
        "tags": "TYPE_STRING",
        "items": "TYPE_MESSAGE",
    }
    labels = {f.name: f.label for f in descriptor.field}
    assert labels["ts"] == descriptor_pb2.FieldDescriptorProto.LABEL_REQUIRED
    assert labels["items"] == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    assert labels["s"] == descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    # self-contained: the record is a nested type, as the writer schema requires
    assert [m.name for m in descriptor.nested_type] == ["ItemsRecord"]


def test_values_are_encoded_as_bigquery_reads_them() -> None:
    from service.stores.storage_write import _fill

    message = message_class(descriptor_for(ALL_TYPES, "Row"))()
    _fill(
        message,
        {
            "ts": "1970-01-02T00:00:00.000001+00:00",
            "d": "1969-12-31",
            "n": "1.5",
            "j": '{"a":1}',
            "items": [{"k": "x", "v": 2}],
            "s": None,
        },
        ALL_TYPES,
        "",
    )
    assert message.ts == 86_400_000_001  # microseconds since the epoch
    assert message.d == -1  # days since the epoch
    assert message.n == "1.5" and message.j == '{"a":1}'
    assert message.items[0].k == "x" and message.items[0].v == 2.0
    assert not message.HasField("s")  # NULL is an absent field


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"unknown_column": 1}, "outside the schema"),
        ({"session_id": None}, "REQUIRED"),
        ({"chars_used": "12"}, "not an integer"),
        ({"chars_used": 2**63}, "does not fit INTEGER"),
        ({"metadata": {"not": "text"}}, "not text"),
        ({"chat": [None]}, "null in a REPEATED field"),
        ({"started_at": "yesterday"}, "does not fit TIMESTAMP"),
    ],
)
def test_a_row_the_proto_types_cannot_carry_is_refused_with_its_field(
    change: dict[str, Any], problem: str
) -> None:
    from service.stores.storage_write import RowNotEncodable

    with pytest.raises(RowNotEncodable, match=problem):
        RowEncoder().encode({**row("enc-1"), **change})


def test_several_rows_land_and_a_bad_one_is_reported_alone(
    storage_write_client: Any, bigquery_client: Any, dataset: str
) -> None:
    sink = StorageWriteSink(storage_write_client, f"{PROJECT}.{dataset}.call_events", 10, 3)
    rows = [row("many-0"), {**row("many-1"), "chars_used": "many"}, row("many-2")]
    errors = sink.insert(rows, ["a", "b", "c"])
    assert [(e.index, "chars_used" in e.message) for e in errors] == [(1, True)]
    landed = query(bigquery_client, f"SELECT session_id FROM `{PROJECT}.{dataset}.call_events`")
    assert sorted(r["session_id"] for r in landed) == ["many-0", "many-2"]


def test_rows_over_one_request_are_split_under_10_mb(
    storage_write_client: Any, bigquery_client: Any, dataset: str
) -> None:
    # three rows of about 4 MB: one request would be 12 MB; the conformance check (conftest)
    # fails the test if any request reaches 10 MB
    big = [{**row(f"big-{i}"), "error_message": "x" * 4_000_000} for i in range(3)]
    sink = StorageWriteSink(storage_write_client, f"{PROJECT}.{dataset}.call_events", 20, 3)
    assert sink.insert(big, ["a", "b", "c"]) == []
    [count] = query(bigquery_client, f"SELECT COUNT(*) AS n FROM `{PROJECT}.{dataset}.call_events`")
    assert count["n"] == 3
    sizes = [len(sink.encoder.encode(r)) for r in big]
    assert sum(sizes) > MAX_REQUEST_BYTES


class ScriptedWriteClient:
    """Fault injection: answers AppendRows from a script and records what was sent."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.sent: list[int] = []

    def append_rows(self, requests: Any, **kwargs: Any) -> Any:
        request = next(iter(requests))  # one request per connection: the answer ends it
        self.sent.append(len(request.proto_rows.rows.serialized_rows))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return iter([answer])


def test_row_errors_refuse_the_whole_request_so_the_other_rows_are_sent_again() -> None:
    from google.cloud.bigquery_storage_v1 import types

    error = types.RowError(index=1, code=types.RowError.RowErrorCode.FIELDS_ERROR, message="bad")
    client = ScriptedWriteClient(
        types.AppendRowsResponse(row_errors=[error]), types.AppendRowsResponse()
    )
    sink = StorageWriteSink(client, f"{PROJECT}.d.call_events", 5, 3)  # type: ignore[arg-type]
    errors = sink.insert([row("r-0"), row("r-1"), row("r-2")], ["a", "b", "c"])
    assert [(e.index, e.message) for e in errors] == [(1, "invalid: bad")]
    assert client.sent == [3, 2]


def test_row_errors_naming_no_row_sent_refuse_every_row_once() -> None:
    from google.cloud.bigquery_storage_v1 import types

    error = types.RowError(index=7, code=types.RowError.RowErrorCode.FIELDS_ERROR, message="odd")
    client = ScriptedWriteClient(types.AppendRowsResponse(row_errors=[error]))
    sink = StorageWriteSink(client, f"{PROJECT}.d.call_events", 5, 3)  # type: ignore[arg-type]
    errors = sink.insert([row("o-0"), row("o-1")], ["a", "b"])
    assert [(e.index, e.message) for e in errors] == [(0, "invalid: odd"), (1, "invalid: odd")]
    assert client.sent == [2]  # not sent again and again until the budget is spent


def test_a_refused_request_is_a_row_error_and_an_outage_is_insert_failed() -> None:
    from google.api_core import exceptions
    from google.cloud.bigquery_storage_v1 import types
    from google.rpc import status_pb2

    refused = types.AppendRowsResponse(error=status_pb2.Status(code=3, message="malformed"))
    sink = StorageWriteSink(ScriptedWriteClient(refused), "p.d.call_events", 5, 3)  # type: ignore[arg-type]
    [error] = sink.insert([row("x-1")], ["a"])
    assert error.index == 0 and "malformed" in error.message

    outage = ScriptedWriteClient(*[exceptions.ServiceUnavailable("down")] * 2)
    sink = StorageWriteSink(outage, "p.d.call_events", 5, 2)  # type: ignore[arg-type]
    with pytest.raises(InsertFailed, match="ServiceUnavailable"):
        sink.insert([row("x-2")], ["a"])
    assert outage.sent == [1, 1]  # retried within the budget, then gave up

    missing = ScriptedWriteClient(exceptions.NotFound("no table"), types.AppendRowsResponse())
    sink = StorageWriteSink(missing, "p.d.call_events", 5, 3)  # type: ignore[arg-type]
    with pytest.raises(InsertFailed, match="NotFound"):
        sink.insert([row("x-3")], ["a"])
    assert missing.sent == [1]  # not retried: it cannot pass


def test_a_missing_table_on_the_emulator_is_insert_failed(storage_write_client: Any) -> None:
    sink = StorageWriteSink(storage_write_client, f"{PROJECT}.nowhere.call_events", 3, 2)
    with pytest.raises(InsertFailed):
        sink.insert([row("gone-1")], ["a"])


def test_the_service_imports_neither_grpc_storage_nor_the_sink_at_start(
    emulator_env: dict[str, str],
) -> None:
    code = (
        "import sys, json, service.main\n"
        "print(json.dumps([m for m in ('google.cloud.bigquery_storage_v1', "
        "'service.stores.storage_write') if m in sys.modules]))"
    )
    env = {**os.environ, **emulator_env, "BIGQUERY_WRITE_API": "storage_write"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


class QuotaThenReal:
    """Fault injection: AppendRows refused with RESOURCE_EXHAUSTED (a quota), then the emulator."""

    def __init__(self, real: Any, failures: int) -> None:
        self.real, self.failures, self.calls = real, failures, 0

    def append_rows(self, requests: Any, **kwargs: Any) -> Any:
        from google.api_core.exceptions import ResourceExhausted

        self.calls += 1
        if self.calls <= self.failures:
            raise ResourceExhausted("quota")
        return self.real.append_rows(requests, **kwargs)


def test_quota_refusals_are_retried_inside_the_budget(
    storage_write_client: Any, bigquery_client: Any, dataset: str
) -> None:
    client = QuotaThenReal(storage_write_client, failures=2)
    sink = StorageWriteSink(client, f"{PROJECT}.{dataset}.call_events", 5, 3)  # type: ignore[arg-type]
    assert sink.insert([row("quota-1")], ["a"]) == []
    assert client.calls == 3
    landed = query(bigquery_client, f"SELECT session_id FROM `{PROJECT}.{dataset}.call_events`")
    assert [r["session_id"] for r in landed] == ["quota-1"]


class EchoingWriteClient:
    """Fault injection: one connection answering every request in order, slowly and with a row
    error naming the session of the row it answers."""

    def __init__(self) -> None:
        self.connections = 0

    def append_rows(self, requests: Any, **kwargs: Any) -> Any:
        import random
        import time

        from google.cloud.bigquery_storage_v1 import types

        self.connections += 1
        decode = RowEncoder().message_class.FromString

        def answers() -> Any:
            for request in requests:
                time.sleep(random.random() / 200)
                session = decode(request.proto_rows.rows.serialized_rows[0]).session_id
                error = types.RowError(index=0, message=session)
                yield types.AppendRowsResponse(row_errors=[error])

        return answers()


def test_threads_sharing_the_connection_each_get_their_own_answer() -> None:
    from concurrent.futures import ThreadPoolExecutor

    client = EchoingWriteClient()
    sink = StorageWriteSink(client, f"{PROJECT}.d.call_events", 10, 1)  # type: ignore[arg-type]
    sessions = [f"pair-{i}" for i in range(64)]
    rows_by_session = {session: row(session) for session in sessions}

    def insert(session: str) -> str:
        [error] = sink.insert([rows_by_session[session]], ["a"])
        return error.message

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(insert, sessions))
    assert answers == [f"invalid: {session}" for session in sessions]
    assert client.connections == 1  # one kept connection, not one per insert


# -- a table older than the code: a column the code knows is missing ----------------------------

MISSING = "repairs"  # a column the code writes that an older table lacks


@pytest.fixture
def older_table(bigquery_client: Any) -> str:
    """A dataset whose call_events lacks a column this version writes (a new image deployed
    before the table was updated)."""
    from google.cloud import bigquery

    from service.schemas import table_definitions

    name = f"t_{uuid.uuid4().hex[:12]}"
    bigquery_client.create_dataset(name)
    fields = [f for f in table_definitions()["call_events"]["schema"] if f["name"] != MISSING]
    schema = [bigquery.SchemaField.from_api_repr(field) for field in fields]
    bigquery_client.create_table(bigquery.Table(f"{PROJECT}.{name}.call_events", schema=schema))
    return f"{PROJECT}.{name}.call_events"


def with_missing_column(session_id: str) -> dict[str, Any]:
    return {**row(session_id), MISSING: [{"field": "chat[0].content", "repair": "test"}]}


def test_the_emulator_refuses_a_writer_schema_with_a_field_the_table_lacks(
    storage_write_client: Any, older_table: str
) -> None:
    # What BigQuery does (SCHEMA_MISMATCH_EXTRA_FIELDS), and what the next tests rely on.
    from google.cloud.bigquery_storage_v1 import types

    sink = StorageWriteSink(storage_write_client, older_table, 10, 1)
    request = sink.request([RowEncoder().encode(row("direct-1"))])
    [answer] = storage_write_client.append_rows(iter([request]))
    assert answer.error.code == 3 and "SCHEMA_MISMATCH_EXTRA_FIELDS" in answer.error.message
    assert f"'{MISSING}'" in answer.error.message
    assert isinstance(answer, types.AppendRowsResponse)


def test_a_table_missing_a_column_costs_no_dead_letter(
    storage_write_client: Any, bigquery_client: Any, older_table: str
) -> None:
    sink = StorageWriteSink(storage_write_client, older_table, 10, 3)
    assert sink.insert([with_missing_column("older-1"), row("older-2")], ["a", "b"]) == []
    landed = query(bigquery_client, f"SELECT session_id, raw_payload FROM `{older_table}`")
    assert sorted(r["session_id"] for r in landed) == ["older-1", "older-2"]
    assert all(r["raw_payload"] for r in landed)  # the call stays whole there
    assert MISSING in sink.encoder.left_out


class SchemaUnreadable:
    """Fault injection: GetWriteStream fails (no right to read the table, or an outage), so the
    sink starts with every column it knows and learns from BigQuery's refusal."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.transport = client.transport

    def get_write_stream(self, *args: Any, **kwargs: Any) -> Any:
        from google.api_core.exceptions import PermissionDenied

        raise PermissionDenied("bigquery.tables.get")

    def append_rows(self, *args: Any, **kwargs: Any) -> Any:
        return self.client.append_rows(*args, **kwargs)


def test_a_refused_writer_schema_reconnects_without_the_named_columns(
    storage_write_client: Any, bigquery_client: Any, older_table: str
) -> None:
    sink = StorageWriteSink(SchemaUnreadable(storage_write_client), older_table, 10, 3)  # type: ignore[arg-type]
    assert sink.insert([with_missing_column("refused-1")], ["a"]) == []
    assert sink.insert([row("refused-2")], ["b"]) == []  # the next connection already fits
    landed = query(bigquery_client, f"SELECT session_id FROM `{older_table}`")
    assert sorted(r["session_id"] for r in landed) == ["refused-1", "refused-2"]


def test_a_column_added_later_is_written_once_the_connection_renews(
    storage_write_client: Any,
    bigquery_client: Any,
    older_table: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from google.cloud import bigquery

    import service.stores.storage_write as module
    from service.schemas import table_definitions

    sink = StorageWriteSink(storage_write_client, older_table, 10, 3)
    assert sink.insert([with_missing_column("before-1")], ["a"]) == []
    # as `bq update` does (the emulator keeps its catalog and its DuckDB table apart: both)
    bigquery_client.query(
        f"ALTER TABLE `{older_table}` ADD COLUMN {MISSING} "
        "ARRAY<STRUCT<field STRING, repair STRING>>"
    ).result()
    table = bigquery_client.get_table(older_table)
    if MISSING not in {field.name for field in table.schema}:
        [added] = [f for f in table_definitions()["call_events"]["schema"] if f["name"] == MISSING]
        table.schema = [*table.schema, bigquery.SchemaField.from_api_repr(added)]
        bigquery_client.update_table(table, ["schema"])
    monkeypatch.setattr(module, "SCHEMA_REFRESH_SECONDS", 0.0)
    assert sink.insert([with_missing_column("after-1")], ["b"]) == []
    assert not sink.encoder.left_out
    landed = query(bigquery_client, f"SELECT session_id, {MISSING} FROM `{older_table}`")
    by_session = {r["session_id"]: r[MISSING] for r in landed}
    assert not by_session["before-1"] and by_session["after-1"]

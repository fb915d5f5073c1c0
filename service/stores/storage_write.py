"""BigQuery Storage Write API sink: call rows appended to the table's default stream as protobuf.

Same interface as the insertAll sink (service/stores/bigquery.py): `insert(rows, row_ids)` returns
the rows BigQuery refused and raises InsertFailed when it took nothing within the budget. Imported
only when BIGQUERY_WRITE_API=storage_write, on the first end-of-call: prefetch and cold start never
pay for gRPC or the storage client.

What Google documents and this module relies on:

- the default stream is at-least-once: a write retried after a lost answer may land twice, and
  there is no insertId de-duplication (row_ids are accepted and ignored)
  (https://cloud.google.com/bigquery/docs/write-api-streaming);
- an AppendRowsRequest must be under 10 MB
  (https://cloud.google.com/python/docs/reference/bigquerystorage/latest/google.cloud.bigquery_storage_v1.types.AppendRowsRequest);
- when some rows are invalid, none of the request is appended and `row_errors` names the bad rows:
  the others are sent again (https://cloud.google.com/bigquery/docs/reference/storage/rpc/google.cloud.bigquery.storage.v1#appendrowsresponse);
- the proto types per BigQuery type: TIMESTAMP int64 microseconds since the epoch, DATE int32
  days, JSON, NUMERIC, BIGNUMERIC, DATETIME, TIME and GEOGRAPHY as strings, RECORD a nested
  message, REPEATED a repeated field (https://cloud.google.com/bigquery/docs/supported-data-types).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, date, datetime
from typing import Any

import grpc
from google.api_core import exceptions as google_exceptions
from google.cloud.bigquery_storage_v1 import BigQueryWriteClient, types
from google.cloud.bigquery_storage_v1.services.big_query_write.transports import (
    BigQueryWriteGrpcTransport,
)
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from service.schemas import table_definitions
from service.stores.errors import InsertFailed, RowError

log = logging.getLogger(__name__)

EMULATOR_ENV = "BIGQUERY_STORAGE_EMULATOR_HOST"
# A connection (and the table columns its writer schema holds) is renewed this often, so that a
# column added to the table is written within minutes of BigQuery accepting it.
SCHEMA_REFRESH_SECONDS = 600.0
# Under 10 MB (decimal, the smaller reading) as documented for one AppendRowsRequest.
MAX_REQUEST_BYTES = 10_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE = date(1970, 1, 1)
_FieldType = descriptor_pb2.FieldDescriptorProto.Type
_SCALARS: dict[str, int] = {
    "STRING": _FieldType.TYPE_STRING,
    "JSON": _FieldType.TYPE_STRING,
    "NUMERIC": _FieldType.TYPE_STRING,
    "BIGNUMERIC": _FieldType.TYPE_STRING,
    "DATETIME": _FieldType.TYPE_STRING,
    "TIME": _FieldType.TYPE_STRING,
    "GEOGRAPHY": _FieldType.TYPE_STRING,
    "BYTES": _FieldType.TYPE_BYTES,
    "INTEGER": _FieldType.TYPE_INT64,
    "INT64": _FieldType.TYPE_INT64,
    "TIMESTAMP": _FieldType.TYPE_INT64,
    "DATE": _FieldType.TYPE_INT32,
    "FLOAT": _FieldType.TYPE_DOUBLE,
    "FLOAT64": _FieldType.TYPE_DOUBLE,
    "BOOLEAN": _FieldType.TYPE_BOOL,
    "BOOL": _FieldType.TYPE_BOOL,
}
_LABELS = {
    "NULLABLE": descriptor_pb2.FieldDescriptorProto.Label.LABEL_OPTIONAL,
    "REQUIRED": descriptor_pb2.FieldDescriptorProto.Label.LABEL_REQUIRED,
    "REPEATED": descriptor_pb2.FieldDescriptorProto.Label.LABEL_REPEATED,
}
# Answers worth another attempt inside the budget; anything else means the request is wrong.
_RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE.value[0],
        grpc.StatusCode.INTERNAL.value[0],
        grpc.StatusCode.ABORTED.value[0],
        grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
        grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
        grpc.StatusCode.UNKNOWN.value[0],
    }
)


# gRPC waits up to 120 s between reconnections to a server that went away (growing from 1 s): every
# call in that wait fails at once and becomes a dead letter although BigQuery is back. Retry every
# half second (plus gRPC's 20 % jitter): well inside the shortest insert budget. No message size
# cap of our own: requests are held under 10 MB above, as the library's own transport does.
# And wait for a connection instead of failing at once while one is being made (a restarted
# server, a new instance's first call): the call's deadline still bounds the wait.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "google.cloud.bigquery.storage.v1.BigQueryWrite"}],
                "waitForReady": True,
            }
        ]
    }
)
CHANNEL_OPTIONS = [
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]


class RowNotEncodable(ValueError):
    """A value that the table's proto type cannot carry (BigQuery would refuse the row)."""


class _BadValue(ValueError):
    """Our own reason a value does not fit (never quotes the value)."""


def make_write_client() -> BigQueryWriteClient:
    """A client for real BigQuery, or an insecure channel to the emulator named by
    BIGQUERY_STORAGE_EMULATOR_HOST (host:port)."""
    host = os.environ.get(EMULATOR_ENV)
    if host:
        channel = grpc.insecure_channel(host, options=CHANNEL_OPTIONS)
    else:
        channel = BigQueryWriteGrpcTransport.create_channel(options=CHANNEL_OPTIONS)
    transport = BigQueryWriteGrpcTransport(channel=channel)
    return BigQueryWriteClient(transport=transport)  # type: ignore[no-untyped-call]


# -- the row message, built from service/schemas --------------------------------------------------


def descriptor_for(fields: list[dict[str, Any]], name: str) -> descriptor_pb2.DescriptorProto:
    """A self-contained proto2 message for a BigQuery schema: records become nested types
    (the writer schema must decode on its own) and proto2 gives every scalar a presence bit, so a
    NULL is an absent field."""
    message = descriptor_pb2.DescriptorProto(name=name)
    for number, field in enumerate(fields, start=1):
        kind = field["type"].upper()
        proto_field = message.field.add(
            name=field["name"], number=number, label=_LABELS[field.get("mode", "NULLABLE")]
        )
        if kind in ("RECORD", "STRUCT"):
            nested_name = "".join(part.title() for part in field["name"].split("_")) + "Record"
            message.nested_type.add().CopyFrom(descriptor_for(field["fields"], nested_name))
            proto_field.type = _FieldType.TYPE_MESSAGE
            proto_field.type_name = nested_name
        elif kind in _SCALARS:
            proto_field.type = _SCALARS[kind]
        else:
            raise ValueError(f"no proto mapping for BigQuery type {kind} ({field['name']})")
    return message


def message_class(descriptor: descriptor_pb2.DescriptorProto) -> type[Message]:
    pool = descriptor_pool.DescriptorPool()
    file_proto = descriptor_pb2.FileDescriptorProto(
        name=f"{descriptor.name.lower()}.proto", package="millis", syntax="proto2"
    )
    file_proto.message_type.add().CopyFrom(descriptor)
    pool.Add(file_proto)
    found: type[Message] = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"millis.{descriptor.name}")
    )
    return found


def _micros(value: Any) -> int:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(moment, datetime):
        raise _BadValue("a TIMESTAMP must be an ISO-8601 string or a datetime")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _days(value: Any) -> int:
    if isinstance(value, str):
        value = date.fromisoformat(value)
    if not isinstance(value, date):
        raise _BadValue("a DATE must be an ISO-8601 string or a date")
    days: int = (value - _EPOCH_DATE).days
    return days


def _fill(message: Any, record: dict[str, Any], fields: list[dict[str, Any]], where: str) -> None:
    known = {field["name"] for field in fields}
    unknown = set(record) - known
    if unknown:
        raise RowNotEncodable(f"{where or 'row'} has fields outside the schema: {sorted(unknown)}")
    for field in fields:
        name = field["name"]
        value = record.get(name)
        path = f"{where}.{name}" if where else name
        if value is None:
            if field.get("mode") == "REQUIRED":
                raise RowNotEncodable(f"{path} is REQUIRED")
            continue
        kind = field["type"].upper()
        try:
            if field.get("mode") == "REPEATED":
                if not isinstance(value, list):
                    raise RowNotEncodable(f"{path} is REPEATED but not a list")
                target = getattr(message, name)
                for index, item in enumerate(value):
                    if item is None:
                        raise RowNotEncodable(f"{path}[{index}] is null in a REPEATED field")
                    if kind in ("RECORD", "STRUCT"):
                        _fill(target.add(), item, field["fields"], f"{path}[{index}]")
                    else:
                        target.append(_scalar(kind, item))
            elif kind in ("RECORD", "STRUCT"):
                if not isinstance(value, dict):
                    raise RowNotEncodable(f"{path} is not a record")
                _fill(getattr(message, name), value, field["fields"], path)
                getattr(message, name).SetInParent()
            else:
                setattr(message, name, _scalar(kind, value))
        except RowNotEncodable:
            raise
        except _BadValue as exc:
            raise RowNotEncodable(f"{path} does not fit {kind}: {exc}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            # The type only: the message of protobuf's error can quote the value.
            raise RowNotEncodable(f"{path} does not fit {kind}: {type(exc).__name__}") from None


def _scalar(kind: str, value: Any) -> Any:
    if kind == "TIMESTAMP":
        return _micros(value)
    if kind == "DATE":
        return _days(value)
    if kind in ("FLOAT", "FLOAT64"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _BadValue("not a number")
        return float(value)
    if kind in ("INTEGER", "INT64"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _BadValue("not an integer")
        return value
    if kind in ("BOOLEAN", "BOOL"):
        if not isinstance(value, bool):
            raise _BadValue("not a boolean")
        return value
    if kind == "BYTES":
        return bytes(value)
    if not isinstance(value, str):
        raise _BadValue("not text")
    return value


class RowEncoder:
    """Rows of one table as serialized protobuf, with the writer schema to send alongside.

    `fields` narrows the message to the columns the table has (`columns_in_table`): a value of
    a column the table lacks is left out of the row (the call stays whole in `raw_payload`)."""

    def __init__(
        self, table: str = "call_events", fields: list[dict[str, Any]] | None = None
    ) -> None:
        known: list[dict[str, Any]] = table_definitions()[table]["schema"]
        self.fields = known if fields is None else fields
        self.left_out = frozenset(f["name"] for f in known) - {f["name"] for f in self.fields}
        self.descriptor = descriptor_for(self.fields, "CallRow")
        self.message_class = message_class(self.descriptor)

    def encode(self, row: dict[str, Any]) -> bytes:
        if self.left_out:
            row = {key: value for key, value in row.items() if key not in self.left_out}
        message = self.message_class()
        _fill(message, row, self.fields, "")
        try:
            data: bytes = message.SerializeToString()
        except Exception as exc:  # a REQUIRED field missing deep inside, text not UTF-8
            raise RowNotEncodable(f"the row does not serialize: {type(exc).__name__}") from None
        return data


def columns_in_table(
    fields: list[dict[str, Any]], table_fields: Sequence[Any], refused: frozenset[str]
) -> list[dict[str, Any]]:
    """Our columns that the table has (from GetWriteStream's `table_schema`), minus the ones
    BigQuery refused lately. A RECORD is kept only when the table has every field of ours in it:
    a record the table knows only in part is left out whole (it stays in `raw_payload`)."""
    in_table = {field.name.lower(): field for field in table_fields}

    def complete(ours: dict[str, Any], theirs: Any) -> bool:
        if ours["type"].upper() not in ("RECORD", "STRUCT"):
            return True
        children = {child.name.lower(): child for child in theirs.fields}
        return all(
            child["name"].lower() in children and complete(child, children[child["name"].lower()])
            for child in ours["fields"]
        )

    return [
        field
        for field in fields
        if field["name"].lower() in in_table
        and field["name"] not in refused
        and complete(field, in_table[field["name"].lower()])
    ]


_EXTRA_FIELDS = re.compile(r"extra fields?:?\s*(.*)", re.IGNORECASE)


def refused_fields(message: str) -> frozenset[str] | None:
    """The top-level fields a SCHEMA_MISMATCH_EXTRA_FIELDS error names; None when the error is
    not a schema mismatch."""
    if "SCHEMA_MISMATCH" not in message and "more fields than" not in message:
        return None
    match = _EXTRA_FIELDS.search(message)
    names = re.findall(r"'([^']+)'", match.group(1)) if match else []
    return frozenset(name.split(".")[0] for name in names)


# -- the sink -------------------------------------------------------------------------------------


def stream_name(table_id: str) -> str:
    """The table's default stream, from `project.dataset.table`."""
    project, dataset, table = table_id.split(".")
    return f"projects/{project}/datasets/{dataset}/tables/{table}/streams/_default"


class StorageWriteSink:
    """Appends rows to the default stream with bounded retries inside the caller's time budget.

    Every insert of the instance goes through one kept AppendRows connection (`_Connection`).
    Its writer schema holds only the columns the table has, read with GetWriteStream when the
    connection opens: BigQuery refuses a writer schema with a field the table lacks
    (SCHEMA_MISMATCH_EXTRA_FIELDS), which an image newer than its table would otherwise turn into
    a dead letter per call. A refusal all the same (a column added minutes ago is accepted only
    after a while) leaves the named columns out and reconnects within the budget; a connection
    is renewed every SCHEMA_REFRESH_SECONDS so that a new column is written once it is accepted.
    """

    def __init__(
        self,
        client: BigQueryWriteClient,
        table_id: str,
        timeout_seconds: float,
        attempts: int,
        encoder: RowEncoder | None = None,
    ) -> None:
        self.client = client
        self.table_id = table_id
        self.table = table_id.rsplit(".", 1)[1]
        self.stream = stream_name(table_id)
        self.timeout_seconds = timeout_seconds
        self.attempts = attempts
        self.encoder = encoder or RowEncoder(self.table)
        self._schema_read = False
        self._refused: frozenset[str] = frozenset()
        self._connection: _Connection | None = None
        self._connection_lock = threading.Lock()

    def insert(self, rows: Sequence[dict[str, Any]], row_ids: Sequence[str]) -> list[RowError]:
        """Append rows; return the rows BigQuery refused, or raise InsertFailed.

        `row_ids` is accepted for the interface and unused: the default stream has no
        de-duplication (the `calls` view keeps one row per session)."""
        deadline = time.monotonic() + self.timeout_seconds
        errors: list[RowError] = []
        pending: list[tuple[int, dict[str, Any], bytes]] = []
        encoder = self.encoder
        for index, row in enumerate(rows):
            try:
                pending.append((index, row, encoder.encode(row)))
            except RowNotEncodable as exc:
                errors.append(RowError(index, f"invalid: {exc}"[:1000]))
        for batch in self._batches(pending, errors):
            errors += self._append(batch, deadline, encoder)
        return sorted(errors, key=lambda error: error.index)

    def request(
        self, serialized: Sequence[bytes], encoder: RowEncoder | None = None
    ) -> types.AppendRowsRequest:
        descriptor = (encoder or self.encoder).descriptor
        return types.AppendRowsRequest(
            write_stream=self.stream,
            proto_rows=types.AppendRowsRequest.ProtoData(
                writer_schema=types.ProtoSchema(proto_descriptor=descriptor),
                rows=types.ProtoRows(serialized_rows=list(serialized)),
            ),
        )

    def _batches(
        self, pending: list[tuple[int, dict[str, Any], bytes]], errors: list[RowError]
    ) -> list[list[tuple[int, dict[str, Any], bytes]]]:
        """Split rows into requests under MAX_REQUEST_BYTES; a row too large alone is refused."""
        overhead = types.AppendRowsRequest.pb(self.request([])).ByteSize()
        batches: list[list[tuple[int, dict[str, Any], bytes]]] = []
        current: list[tuple[int, dict[str, Any], bytes]] = []
        size = overhead
        for index, row, data in pending:
            cost = len(data) + 6  # the bytes field's tag and length prefix
            if overhead + cost >= MAX_REQUEST_BYTES:
                errors.append(
                    RowError(
                        index,
                        f"invalid: the row is {len(data)} bytes as protobuf; an "
                        f"AppendRows request must be under {MAX_REQUEST_BYTES}",
                    )
                )
                continue
            if current and size + cost >= MAX_REQUEST_BYTES:
                batches.append(current)
                current, size = [], overhead
            current.append((index, row, data))
            size += cost
        if current:
            batches.append(current)
        return batches

    def _append(
        self,
        batch: list[tuple[int, dict[str, Any], bytes]],
        deadline: float,
        encoded_with: RowEncoder,
    ) -> list[RowError]:
        errors: list[RowError] = []
        last_error = "no attempt made"
        attempt = 0
        while batch and attempt < self.attempts:
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                break
            try:
                response, encoded_with = self._send(batch, encoded_with, errors, remaining)
            except google_exceptions.GoogleAPICallError as exc:
                last_error = f"{type(exc).__name__}: {str(exc.message)[:300]}"
                if self._schema_refused(str(exc.message)):
                    pass  # reconnect without the refused columns, below
                elif exc.grpc_status_code is not None and (
                    exc.grpc_status_code.value[0] not in _RETRYABLE_CODES
                ):
                    raise InsertFailed(last_error) from exc
            except grpc.RpcError as exc:  # the raw call's status
                code = exc.code() if callable(getattr(exc, "code", None)) else None
                last_error = f"{getattr(code, 'name', 'RpcError')}: {_details(exc)}"
                if self._schema_refused(_details(exc)):
                    pass
                elif code is not None and code.value[0] not in _RETRYABLE_CODES:
                    raise InsertFailed(last_error) from None
            except Exception as exc:  # a closed connection, a timeout, transport errors
                last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
            else:
                if response.row_errors:
                    # Nothing of this request was appended: keep the refused rows' errors and
                    # send the others again (this does not count as a failed attempt).
                    refused = {error.index: error.message for error in response.row_errors}
                    if not refused.keys() & set(range(len(batch))):
                        # Errors naming no row of ours: every row is refused, nothing resent.
                        message = f"invalid: {next(iter(refused.values()))}"[:1000]
                        return errors + [RowError(index, message) for index, _, _ in batch]
                    for position, (index, _, _) in enumerate(batch):
                        if position in refused:
                            errors.append(RowError(index, f"invalid: {refused[position]}"[:1000]))
                    batch = [item for position, item in enumerate(batch) if position not in refused]
                    continue
                status = response.error
                if status is None or not status.code:
                    return errors
                last_error = f"status {status.code}: {status.message[:300]}"
                if self._schema_refused(status.message):
                    pass  # not the rows' fault: reconnect without the refused columns
                elif status.code not in _RETRYABLE_CODES:
                    # The whole request refused as malformed: each row keeps the reason.
                    return errors + [
                        RowError(index, f"invalid: {last_error}") for index, _, _ in batch
                    ]
            attempt += 1
            log.warning(
                "bigquery append failed",
                extra={"attempt": attempt, "error_type": last_error.split(":", 1)[0]},
            )
            time.sleep(min(0.2 * 2 ** (attempt - 1), max(0.0, deadline - time.monotonic())))
        if not batch:
            return errors
        raise InsertFailed(last_error)

    def _schema_refused(self, message: str) -> bool:
        """A writer schema with a column the stream does not accept: close the connection and
        leave those columns out of the next one (read the table's columns again)."""
        refused = refused_fields(message)
        if refused is None:
            return False
        with self._connection_lock:
            self._refused |= refused
            self._schema_read = False
            if self._connection is not None:
                self._connection.close(ConnectionClosed("writer schema refused"))
        log.warning("bigquery refused the writer schema; reconnecting without the new columns")
        return True

    def _send(
        self,
        batch: list[tuple[int, dict[str, Any], bytes]],
        encoded_with: RowEncoder,
        errors: list[RowError],
        timeout: float,
    ) -> tuple[Any, RowEncoder]:
        """Send the batch on the kept connection; re-encode it (in place) first when the
        connection writes another set of columns. Returns the answer and the encoder used."""
        connection = self._open_connection(timeout)
        if connection.encoder is not encoded_with:
            encoded: list[tuple[int, dict[str, Any], bytes]] = []
            for index, row, _ in batch:
                try:
                    encoded.append((index, row, connection.encoder.encode(row)))
                except RowNotEncodable as exc:
                    errors.append(RowError(index, f"invalid: {exc}"[:1000]))
            batch[:] = encoded
            encoded_with = connection.encoder
        future = connection.send(self.request([data for _, _, data in batch], encoded_with))
        try:
            return future.result(timeout=timeout), encoded_with
        except FutureTimeout:
            # The connection is stuck (or the server is): a new one for the next request.
            connection.close(TimeoutError("no answer within the insert budget"))
            raise TimeoutError("no answer within the insert budget") from None

    def _open_connection(self, timeout: float = 5.0) -> _Connection:
        with self._connection_lock:
            current = self._connection
            if current is not None and not current.closed and current.expired():
                current.retire()  # answers still come; new writes take a new connection
                self._schema_read = False
            if current is None or current.closed:
                if not self._schema_read:
                    self.encoder = self._encoder_for_table(timeout)
                current = self._connection = _Connection(self.client, self.stream, self.encoder)
            return current

    def _encoder_for_table(self, timeout: float) -> RowEncoder:
        """Our columns that the table has, read with GetWriteStream (FULL view); all of ours
        when the table's cannot be read (the append then says whether they fit)."""
        known = table_definitions()[self.table]["schema"]
        try:
            stream = self.client.get_write_stream(
                request=types.GetWriteStreamRequest(
                    name=self.stream, view=types.WriteStreamView.FULL
                ),
                # Half the budget at most, no retries: the append must keep time for itself.
                timeout=max(0.1, min(timeout / 2, 5.0)),
                retry=None,
            )
            fields = columns_in_table(known, stream.table_schema.fields, self._refused)
        except Exception as exc:
            log.warning(
                "table schema not read; writing every known column",
                extra={"error_type": type(exc).__name__},
            )
            fields = [field for field in known if field["name"] not in self._refused]
        self._schema_read = True
        if [f["name"] for f in fields] == [f["name"] for f in self.encoder.fields]:
            return self.encoder
        if len(fields) < len(known):
            log.warning(
                "the table lacks columns this version writes; they stay in raw_payload",
                extra={
                    "left_out": sorted({f["name"] for f in known} - {f["name"] for f in fields})
                },
            )
        return RowEncoder(self.table, fields)


def _details(exc: grpc.RpcError) -> str:
    details = exc.details() if callable(getattr(exc, "details", None)) else ""
    return str(details or "")[:300]


class ConnectionClosed(Exception):
    """The AppendRows connection ended before answering (the request may or may not have landed)."""


_END = object()
# Every connection not yet closed (tests close them all between tests; a process exit drops them).
_OPEN: weakref.WeakSet[_Connection] = weakref.WeakSet()


def close_all_connections() -> None:
    for connection in list(_OPEN):
        connection.close(ConnectionClosed("closed by close_all_connections"))


class _Connection:
    """One AppendRows stream kept open and shared by every thread of the instance.

    Google asks for one connection for as many writes as possible, not one per write
    (https://cloud.google.com/bigquery/docs/write-api-best-practices#connection_pool_management).
    Answers come back in the order of the requests, so a request and its future are queued under
    one lock: two threads sending at once can never receive each other's answer. The writer schema
    goes with the first request of the connection only. Any failure closes the connection (every
    waiting request fails and is retried by its caller); the next request opens a new one.
    """

    def __init__(self, client: Any, stream: str, encoder: RowEncoder) -> None:
        self.encoder = encoder  # the columns this connection's writer schema holds
        self.opened = time.monotonic()
        self.closed = False
        self._lock = threading.Lock()
        self._pending: deque[Future[Any]] = deque()
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._call: Any = None
        self._first = True
        # The raw gRPC call returns at once and can be cancelled; the client's wrapper waits for
        # the first answer (fakes in the tests have only that one).
        transport = getattr(client, "transport", None)
        self._open = getattr(transport, "append_rows", None) or client.append_rows
        self._metadata = (("x-goog-request-params", f"write_stream={stream}"),)
        _OPEN.add(self)
        threading.Thread(target=self._read, name="append-rows", daemon=True).start()

    def send(self, request: types.AppendRowsRequest) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self.closed:
                raise ConnectionClosed("the connection is closed")
            if not self._first:
                # The writer schema is sent once per connection.
                types.AppendRowsRequest.pb(request).proto_rows.ClearField("writer_schema")
            self._first = False
            self._pending.append(future)
            self._requests.put(request)
        return future

    def expired(self) -> bool:
        return time.monotonic() - self.opened > SCHEMA_REFRESH_SECONDS

    def retire(self) -> None:
        """Take no more requests; the ones sent still get their answers, then the stream ends."""
        with self._lock:
            self.closed = True
        self._requests.put(_END)

    def _read(self) -> None:
        error: BaseException
        try:
            self._call = self._open(iter(self._requests.get, _END), metadata=self._metadata)
            if self.closed:  # closed while opening
                raise ConnectionClosed("the connection was closed")
            for response in self._call:
                with self._lock:
                    future = self._pending.popleft() if self._pending else None
                if future is not None and not future.done():
                    future.set_result(response)
            error = ConnectionClosed("the server ended the connection")
        except BaseException as exc:
            error = exc
        self.close(error)

    def close(self, error: BaseException) -> None:
        _OPEN.discard(self)
        with self._lock:
            self.closed = True
            pending = list(self._pending)
            self._pending.clear()
        self._requests.put(_END)
        call = self._call
        if call is not None and hasattr(call, "cancel"):
            with contextlib.suppress(Exception):
                call.cancel()
        for future in pending:
            if not future.done():
                future.set_exception(error)

"""What real BigQuery accepts in a streamed row, checked on every insert the tests make.

The emulator is more lenient than BigQuery: it stores timestamps outside the streaming window,
NaN in JSON columns, rows over 10 MB and lone surrogates. Each rule here is from Google's
documentation, so a row that passes the emulator but would be refused in production fails the
test instead:

- https://cloud.google.com/bigquery/quotas#streaming_inserts: row and request at most 10 MB as
  sent, insertId at most 128 characters;
- https://cloud.google.com/bigquery/docs/streaming-data-into-bigquery#streaming_into_partitioned_tables:
  a partitioning value from 10 years in the past to 1 year in the future;
- https://cloud.google.com/bigquery/docs/reference/standard-sql/data-types: TIMESTAMP in
  0001-01-01 .. 9999-12-31 UTC, INT64 range, STRING valid UTF-8, JSON strict (no NaN/Infinity);
- REQUIRED fields present and not null; no field outside the schema.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from service.schemas import table_definitions

MAX_BYTES = 10_000_000
MAX_INSERT_ID = 128
WINDOW_PAST = timedelta(days=3650)
WINDOW_FUTURE = timedelta(days=365)
TABLE = table_definitions()["call_events"]


class NonConformingRow(AssertionError):
    pass


def assert_request_conforms(
    rows: list[dict[str, Any]], row_ids: list[str], now: datetime | None = None
) -> None:
    body = {"rows": [{"json": row, "insertId": i} for row, i in zip(rows, row_ids, strict=True)]}
    size = len(json.dumps(body).encode())
    if size > MAX_BYTES:
        raise NonConformingRow(f"request of {size} bytes as sent exceeds {MAX_BYTES}")
    for row, row_id in zip(rows, row_ids, strict=True):
        assert_row_conforms(row, row_id, now=now)


def assert_row_conforms(row: dict[str, Any], row_id: str, now: datetime | None = None) -> None:
    now = now or datetime.now(UTC)
    if not isinstance(row_id, str) or not 0 < len(row_id) <= MAX_INSERT_ID:
        raise NonConformingRow(f"insertId of {len(str(row_id))} characters")
    size = len(json.dumps(row).encode())
    if size > MAX_BYTES:
        raise NonConformingRow(f"row of {size} bytes as sent exceeds {MAX_BYTES}")
    _check_record(row, TABLE["schema"], "")
    partition = TABLE["time_partitioning"]["field"]
    value = _parse_timestamp(row[partition], partition)
    if not now - WINDOW_PAST <= value <= now + WINDOW_FUTURE:
        raise NonConformingRow(f"{partition} {value} is outside the streaming window")


def _check_record(record: Any, fields: list[dict[str, Any]], where: str) -> None:
    if not isinstance(record, dict):
        raise NonConformingRow(f"{where or 'row'} is not a record")
    known = {field["name"] for field in fields}
    unknown = set(record) - known
    if unknown:
        raise NonConformingRow(f"{where or 'row'} has fields outside the schema: {sorted(unknown)}")
    for field in fields:
        path = f"{where}.{field['name']}" if where else field["name"]
        value = record.get(field["name"])
        mode = field.get("mode", "NULLABLE")
        if mode == "REPEATED":
            if value is None:
                continue
            if not isinstance(value, list):
                raise NonConformingRow(f"{path} is REPEATED but not a list")
            for index, item in enumerate(value):
                if item is None:
                    raise NonConformingRow(f"{path}[{index}] is null in a REPEATED field")
                _check_value(item, field, f"{path}[{index}]")
        elif value is None:
            if mode == "REQUIRED":
                raise NonConformingRow(f"{path} is REQUIRED")
        else:
            _check_value(value, field, path)


def _check_value(value: Any, field: dict[str, Any], path: str) -> None:
    kind = field["type"]
    if kind in ("RECORD", "STRUCT"):
        _check_record(value, field["fields"], path)
    elif kind == "STRING":
        _check_text(value, path)
    elif kind == "JSON":
        _check_text(value, path)
        try:
            json.loads(value, parse_constant=_refuse_constant, parse_int=_json_integer)
        except ValueError as exc:
            raise NonConformingRow(f"{path} is not strict JSON: {exc}") from None
    elif kind == "TIMESTAMP":
        _parse_timestamp(value, path)
    elif kind in ("FLOAT", "FLOAT64"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise NonConformingRow(f"{path} is not a number")
        if not math.isfinite(value):
            raise NonConformingRow(f"{path} is not finite")
    elif kind in ("INTEGER", "INT64"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise NonConformingRow(f"{path} is not an integer")
        if not -(2**63) <= value < 2**63:
            raise NonConformingRow(f"{path} is outside INT64")
    elif kind in ("BOOLEAN", "BOOL") and not isinstance(value, bool):
        raise NonConformingRow(f"{path} is not a boolean")


def _check_text(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise NonConformingRow(f"{path} is not text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise NonConformingRow(f"{path} is not valid UTF-8 (a lone surrogate)") from None


def _parse_timestamp(value: Any, path: str) -> datetime:
    if not isinstance(value, str):
        raise NonConformingRow(f"{path} is not an ISO-8601 timestamp")
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise NonConformingRow(f"{path} {value!r} is outside TIMESTAMP's range") from None


def _json_integer(text: str) -> int:
    # BigQuery's JSON type holds integers of INT64 or UINT64 range (and FLOAT64 numbers).
    value = int(text)
    if not -(2**63) <= value < 2**64:
        raise ValueError(f"integer {text[:30]} is wider than INT64/UINT64")
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# -- the Storage Write API (service/stores/storage_write.py) --------------------------------------
#
# - https://cloud.google.com/python/docs/reference/bigquerystorage/latest/google.cloud.bigquery_storage_v1.types.AppendRowsRequest:
#   one AppendRowsRequest under 10 MB;
# - https://cloud.google.com/bigquery/docs/supported-data-types: the proto type each BigQuery type
#   accepts (TIMESTAMP int64 microseconds, JSON string, RECORD a nested message, ...).
# The rows are decoded from the request with the writer schema it carries (as BigQuery does) and
# then held to the row rules above: a value that only the proto path could carry out of range (a
# TIMESTAMP of 10,000 years in microseconds) fails here.

MAX_APPEND_BYTES = 10_000_000
_PROTO_TYPES = {
    "STRING": {"TYPE_STRING"},
    "JSON": {"TYPE_STRING"},
    "INTEGER": {"TYPE_INT64", "TYPE_INT32", "TYPE_UINT32"},
    "FLOAT": {"TYPE_DOUBLE", "TYPE_FLOAT"},
    "BOOLEAN": {"TYPE_BOOL"},
    "TIMESTAMP": {"TYPE_INT64", "TYPE_INT32", "TYPE_UINT32"},
    "RECORD": {"TYPE_MESSAGE"},
}


def assert_append_request_conforms(request: Any, now: datetime | None = None) -> None:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pb = type(request).pb(request)
    size = pb.ByteSize()
    if size >= MAX_APPEND_BYTES:
        raise NonConformingRow(f"AppendRows request of {size} bytes; the limit is under 10 MB")
    if not pb.write_stream.endswith("/streams/_default"):
        raise NonConformingRow(f"not the default stream: {pb.write_stream}")
    descriptor = pb.proto_rows.writer_schema.proto_descriptor
    _check_descriptor(descriptor, TABLE["schema"], "")
    pool = descriptor_pool.DescriptorPool()
    file_proto = descriptor_pb2.FileDescriptorProto(name="check.proto", syntax="proto2")
    file_proto.message_type.add().CopyFrom(descriptor)
    pool.Add(file_proto)
    message_class = message_factory.GetMessageClass(pool.FindMessageTypeByName(descriptor.name))
    for data in pb.proto_rows.rows.serialized_rows:
        try:
            message = message_class.FromString(data)
        except Exception as exc:
            raise NonConformingRow(f"a row does not decode: {exc}") from None
        # No insertId on the Storage Write API: the id rule does not apply.
        assert_row_conforms(_decoded(message, TABLE["schema"], ""), "-", now=now)


def _check_descriptor(descriptor: Any, fields: list[dict[str, Any]], where: str) -> None:
    from google.protobuf import descriptor_pb2

    proto_fields = {field.name: field for field in descriptor.field}
    unknown = set(proto_fields) - {field["name"] for field in fields}
    if unknown:
        raise NonConformingRow(f"writer schema has fields outside the table: {sorted(unknown)}")
    nested = {message.name: message for message in descriptor.nested_type}
    for field in fields:
        proto = proto_fields.get(field["name"])
        path = f"{where}.{field['name']}" if where else field["name"]
        if proto is None:
            if field.get("mode") == "REQUIRED":
                raise NonConformingRow(f"writer schema lacks REQUIRED {path}")
            continue
        kind = descriptor_pb2.FieldDescriptorProto.Type.Name(proto.type)
        if kind not in _PROTO_TYPES[field["type"]]:
            raise NonConformingRow(f"{path}: {kind} cannot carry {field['type']}")
        repeated = proto.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
        if repeated != (field.get("mode") == "REPEATED"):
            raise NonConformingRow(f"{path}: repeated in one schema only")
        if field["type"] == "RECORD":
            _check_descriptor(nested[proto.type_name.rsplit(".", 1)[-1]], field["fields"], path)


def _decoded(message: Any, fields: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """The row as insertAll would carry it: TIMESTAMPs as ISO text, absent fields as NULL."""
    row: dict[str, Any] = {}
    for field in fields:
        name = field["name"]
        path = f"{where}.{name}" if where else name
        if name not in message.DESCRIPTOR.fields_by_name:  # a writer schema without the column
            row[name] = None
        elif field.get("mode") == "REPEATED":
            values = list(getattr(message, name))
            row[name] = [_value(v, field, f"{path}[{i}]") for i, v in enumerate(values)]
        elif message.HasField(name):
            row[name] = _value(getattr(message, name), field, path)
        else:
            row[name] = None
    return row


def _value(value: Any, field: dict[str, Any], path: str) -> Any:
    if field["type"] == "RECORD":
        return _decoded(value, field["fields"], path)
    if field["type"] == "TIMESTAMP":
        try:
            return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)).isoformat()
        except OverflowError:
            raise NonConformingRow(f"{path} {value} µs is outside TIMESTAMP's range") from None
    return value

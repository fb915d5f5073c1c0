"""Run bqemulator with fixes to its Storage Write API (used by scripts/lib/emulators.py), each making
it behave as BigQuery documents:

- bqemulator 1.4.0 builds the target schema of an AppendRows request from the top-level columns
  only (`grpc_api/write_servicer.py: _table_arrow_schema`), so a RECORD column becomes a record with
  no fields and DuckDB refuses every row that has one ("Attempted to convert a STRUCT with no
  fields"). Its insertAll route builds the same schema with the nested fields; the Storage Write
  path is given that same builder here.
- GetWriteStream's `table_schema` lists the top-level columns only; here it carries the nested
  fields too, as BigQuery's does.
- A writer schema with a field the table does not have is ignored silently; BigQuery refuses it
  (`SCHEMA_MISMATCH_EXTRA_FIELDS`, https://cloud.google.com/bigquery/docs/reference/storage/rpc/google.cloud.bigquery.storage.v1#storageerrorcode),
  and so does the emulator here: the tests of a table missing a column depend on it.
Nothing else changes: every check the emulator makes still runs.
"""

from __future__ import annotations

import sys
from typing import Any

from bqemulator.api.routes.tabledata import _build_arrow_schema, _fields_raw_from_schema
from bqemulator.cli import main
from bqemulator.grpc_api import write_servicer

_rows_for_request = write_servicer._rows_for_request
_bq_type_to_storage_type = write_servicer._bq_type_to_storage_type
_bq_mode_to_storage_mode = write_servicer._bq_mode_to_storage_mode


def _table_arrow_schema(table_meta: Any) -> Any:
    return _build_arrow_schema(_fields_raw_from_schema(table_meta.schema_.fields))


def _storage_fields(fields: Any) -> list[Any]:
    from google.cloud.bigquery_storage_v1 import types

    return [
        types.TableFieldSchema(
            name=field.name,
            type_=_bq_type_to_storage_type(field.type),
            mode=_bq_mode_to_storage_mode(field.mode),
            fields=_storage_fields(field.fields or ()),
        )
        for field in fields
    ]


def _table_meta_to_proto_schema(table_meta: Any) -> Any:
    from google.cloud.bigquery_storage_v1 import types

    return types.TableSchema(fields=_storage_fields(table_meta.schema_.fields))


def _extra_fields(
    descriptor: Any, nested: dict[str, Any], arrow_type: Any, where: str
) -> list[str]:
    """Fields of the writer schema that the table (as an Arrow struct or schema) lacks."""
    import pyarrow as pa

    known = {field.name.lower(): field.type for field in arrow_type}
    extra = []
    for field in descriptor.field:
        path = f"{where}{field.name}"
        if field.name.lower() not in known:
            extra.append(path)
            continue
        target = known[field.name.lower()]
        while pa.types.is_list(target):
            target = target.value_type
        if field.type_name and pa.types.is_struct(target):
            child = nested.get(field.type_name.rsplit(".", 1)[-1])
            if child is not None:
                extra += _extra_fields(child, nested, target, f"{path}.")
    return extra


def _rows_refusing_extra_fields(
    request: Any, proto_decoder: Any, arrow_schema_bytes: Any, target_schema: Any
) -> Any:
    if write_servicer._has_field(request, "proto_rows") and write_servicer._has_field(
        request.proto_rows, "writer_schema"
    ):
        descriptor = request.proto_rows.writer_schema.proto_descriptor
        nested = {message.name: message for message in descriptor.nested_type}
        extra = _extra_fields(descriptor, nested, target_schema, "")
        if extra:
            names = ", ".join(f"'{name}'" for name in extra)
            raise ValueError(
                "SCHEMA_MISMATCH_EXTRA_FIELDS: Input schema has more fields than BigQuery "
                f"schema, extra fields: {names}"
            )
    return _rows_for_request(request, proto_decoder, arrow_schema_bytes, target_schema)


write_servicer._table_arrow_schema = _table_arrow_schema
write_servicer._table_meta_to_proto_schema = _table_meta_to_proto_schema
write_servicer._rows_for_request = _rows_refusing_extra_fields

if __name__ == "__main__":
    sys.exit(main())

"""Run bqemulator with one fix to its Storage Write API (used by scripts/lib/emulators.py).

bqemulator 1.4.0 builds the target schema of an AppendRows request from the top-level columns only
(`grpc_api/write_servicer.py: _table_arrow_schema`), so a RECORD column becomes a record with no
fields and DuckDB refuses every row that has one ("Attempted to convert a STRUCT with no fields").
Its insertAll route builds the same schema with the nested fields; the Storage Write path is given
that same builder here. Nothing else changes: every check the emulator makes still runs.
"""

from __future__ import annotations

import sys
from typing import Any

from bqemulator.api.routes.tabledata import _build_arrow_schema, _fields_raw_from_schema
from bqemulator.cli import main
from bqemulator.grpc_api import write_servicer


def _table_arrow_schema(table_meta: Any) -> Any:
    return _build_arrow_schema(_fields_raw_from_schema(table_meta.schema_.fields))


write_servicer._table_arrow_schema = _table_arrow_schema

if __name__ == "__main__":
    sys.exit(main())

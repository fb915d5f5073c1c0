"""Run bqemulator with one fix to its Storage Write API (used by scripts/lib/emulators.py).

bqemulator 1.4.0 builds the target schema of an AppendRows request from the top-level columns only
(`grpc_api/write_servicer.py: _table_arrow_schema`), so a RECORD column becomes a record with no
fields and DuckDB refuses every row that has one ("Attempted to convert a STRUCT with no fields").
Its insertAll route builds the same schema with the nested fields; the Storage Write path is given
that same builder here. Nothing else changes: every check the emulator makes still runs.

With BQEMU_TIME_TRAVEL_RETENTION_DAYS=0 (no time travel), the emulator still copies the whole table
on every append and keeps the copies until its next clean-up a minute later: memory and time grow
with the square of the rows appended (docs/emulators.md). With it, no copy is kept (the soak and
bench/replay set it).
"""

from __future__ import annotations

import sys
from typing import Any

from bqemulator.api.routes.tabledata import _build_arrow_schema, _fields_raw_from_schema
from bqemulator.cli import main
from bqemulator.grpc_api import write_servicer
from bqemulator.versioning.snapshots import SnapshotManager


def _table_arrow_schema(table_meta: Any) -> Any:
    return _build_arrow_schema(_fields_raw_from_schema(table_meta.schema_.fields))


write_servicer._table_arrow_schema = _table_arrow_schema

_capture = SnapshotManager.capture


def _capture_unless_no_time_travel(self: Any, *args: Any, kind: str = "AUTO", **kwargs: Any) -> Any:
    if kind == "AUTO" and self._retention_days == 0:
        return None  # no time travel: nothing will ever read this copy
    return _capture(self, *args, kind=kind, **kwargs)


SnapshotManager.capture = _capture_unless_no_time_travel  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())

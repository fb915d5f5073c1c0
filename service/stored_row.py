"""BigQuery's documented limits on streamed rows, applied before a row is sent.

Real BigQuery refuses, forever, a row that breaks these rules: every retry and every replay of its
dead letter fails again. The emulator accepts most of them, so the rules are enforced here (and
held in tests by tests/bigquery_rules.py):

- a TIMESTAMP lies in 0001-01-01 .. 9999-12-31 UTC;
- a streamed row's partitioning value lies between 10 years in the past and 1 year in the future
  (https://cloud.google.com/bigquery/docs/streaming-data-into-bigquery#streaming_into_partitioned_tables);
- insertId is at most 128 characters;
- a row and a whole insertAll request are at most 10 MB as sent, and google-cloud-bigquery sends
  JSON with ASCII escapes (`json.dumps` defaults): a non-ASCII character costs up to 6 bytes, one
  outside the Basic Multilingual Plane 12 (https://cloud.google.com/bigquery/quotas#streaming_inserts);
- text is valid UTF-8 (a lone UTF-16 surrogate is not) and JSON columns hold strict JSON (no NaN or
  Infinity).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

# 10 MB as documented; decimal megabytes, the smaller reading.
MAX_REQUEST_BYTES = 10_000_000
MAX_ROW_BYTES = 10_000_000
MAX_INSERT_ID_CHARS = 128
# The streaming window, with a day's margin on each side for clock skew and for a dead letter
# replayed a while after the call.
STREAMING_PAST = timedelta(days=3650 - 1)
STREAMING_FUTURE = timedelta(days=365 - 1)
_JSON_INTEGERS = (-(2**63), 2**64)
_SURROGATE = re.compile("[\ud800-\udfff]")
# Fields that differ between deliveries of the same content (they are not part of the insertId).
DELIVERY_FIELDS = ("received_at", "source")
JSON_COLUMNS = ("metadata", "agent_config", "raw_payload")
# Enough to show what happened; a payload with a million bad characters lists the first ones.
MAX_REPAIRS_LISTED = 100


class PayloadTooLarge(ValueError):
    """The call's row would exceed BigQuery's row or request size limit as the client sends it."""

    def __init__(self, encoded_bytes: int) -> None:
        super().__init__(
            f"the call's row would be {encoded_bytes} bytes as BigQuery's client sends it; "
            f"BigQuery accepts at most {MAX_ROW_BYTES}"
        )
        self.encoded_bytes = encoded_bytes


def repair_text(text: str) -> str:
    """Replace lone UTF-16 surrogates (what JavaScript emits for a cut emoji) with U+FFFD.

    Returns the same object when there is nothing to repair. (A valid pair sent as two `\\u`
    escapes is already one code point once parsed, so every surrogate left is a lone one.)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def repair_json(value: Any, path: str, repairs: list[dict[str, str]]) -> Any:
    """A copy of a JSON value that BigQuery can hold, recording each change in `repairs`.

    Lone surrogates in strings and keys become U+FFFD; numbers that are not finite (`1e400` parses
    as infinity, `NaN` inside JSON text) become null; integers beyond INT64/UINT64 become text.
    Iterative: the input is the caller's.
    """
    root: list[Any] = [None]
    stack: list[tuple[Any, str, list[Any] | dict[str, Any], int | str]] = [(value, path, root, 0)]
    while stack:
        item, where, parent, slot = stack.pop()
        if isinstance(item, str):
            fixed = repair_text(item)
            if fixed is not item:
                repairs.append({"field": where, "repair": "lone_surrogate_replaced"})
            item = fixed
        elif isinstance(item, float) and not math.isfinite(item):
            repairs.append({"field": where, "repair": "non_finite_number_nulled"})
            item = None
        elif (
            isinstance(item, int)
            and not isinstance(item, bool)
            and not _JSON_INTEGERS[0] <= item < _JSON_INTEGERS[1]
        ):
            # BigQuery's JSON type holds INT64, UINT64 and FLOAT64 numbers only; a wider integer
            # would be refused or rounded: kept exactly, as text.
            repairs.append({"field": where, "repair": "wide_integer_as_text"})
            item = str(item)
        elif isinstance(item, dict):
            copy: dict[str, Any] = {}
            for key, child in item.items():
                fixed_key = repair_text(key)
                if fixed_key is not key:
                    repairs.append({"field": where, "repair": "lone_surrogate_replaced_in_key"})
                copy[fixed_key] = None
                child_path = f"{where}.{fixed_key}" if where else fixed_key
                stack.append((child, child_path, copy, fixed_key))
            item = copy
        elif isinstance(item, list):
            items: list[Any] = [None] * len(item)
            for index, child in enumerate(item):
                stack.append((child, f"{where}[{index}]", items, index))
            item = items
        parent[slot] = item  # type: ignore[index]
    return root[0]


def strict_json_text(value: Any) -> str | None:
    """JSON text for a JSON column; raises ValueError on NaN or Infinity (repair_json first)."""
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def in_timestamp_range(value: datetime) -> bool:
    """Whether an aware datetime's UTC instant fits BigQuery's TIMESTAMP (0001..9999)."""
    try:
        value.astimezone(UTC)
    except (OverflowError, ValueError):
        return False
    return True


def in_streaming_window(value: datetime, now: datetime) -> bool:
    """Whether a partitioning value is inside the window BigQuery accepts for streamed rows."""
    if not in_timestamp_range(value):
        return False
    utc = value.astimezone(UTC)
    return now - STREAMING_PAST <= utc <= now + STREAMING_FUTURE


def insert_id(row: dict[str, Any]) -> str:
    """The row's content hash: an identical replay de-duplicates, a correction does not.

    64 hex characters, whatever the length of session_id (up to 512).
    """
    content = {key: value for key, value in row.items() if key not in DELIVERY_FIELDS}
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def encoded_request_bytes(rows: list[dict[str, Any]], row_ids: list[str]) -> int:
    """Size of the insertAll body exactly as google-cloud-bigquery encodes it (json.dumps)."""
    pairs = zip(rows, row_ids, strict=True)
    body = {"rows": [{"json": row, "insertId": row_id} for row, row_id in pairs]}
    return len(json.dumps(body).encode())


def check_row_size(row: dict[str, Any]) -> None:
    """Raise PayloadTooLarge when one row alone could never be streamed."""
    size = encoded_request_bytes([row], ["x" * 64])
    if size > MAX_ROW_BYTES:
        raise PayloadTooLarge(size)


def timestamp_text(value: datetime) -> str:
    # ISO-8601 in UTC, not epoch seconds: the streaming API and its emulator read strings reliably.
    return value.astimezone(UTC).isoformat()


def json_cells(row: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """Every (record, key) of the row that is a JSON column."""
    cells = [(row, column) for column in JSON_COLUMNS]
    cells += [(message, key) for message in row["chat"] for key in ("tool_calls", "extra")]
    cells += [(call, "params") for call in row["function_calls"]]
    return cells


def conform_stored_row(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A row kept earlier (a dead letter, possibly from an older version) held to today's rules.

    Its partition time may have left the streaming window while it waited, and older versions
    wrote `NaN` into JSON text: BigQuery would refuse either forever.
    """
    row = dict(row)
    repairs = list(row.get("repairs") or [])
    started_at = datetime.fromisoformat(row["started_at"])
    if not in_streaming_window(started_at, now):
        row.setdefault("ts_reported", row["started_at"])
        row["ts_out_of_range"] = True
        received_at = datetime.fromisoformat(row["received_at"])
        usable = in_streaming_window(received_at, now)
        row["started_at"] = timestamp_text(received_at if usable else now)
    row = repair_json(row, "", repairs)
    for holder, key in json_cells(row):
        if isinstance(holder.get(key), str):
            holder[key] = strict_json_text(repair_json(json.loads(holder[key]), key, repairs))
    row["repairs"] = repairs[:MAX_REPAIRS_LISTED]
    return row

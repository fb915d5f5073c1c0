#!/usr/bin/env python3
"""Run SQL on BigQuery: the stack of ./scripts/dev, or Google Cloud.

    ./scripts/sql.py "SELECT COUNT(*) AS calls FROM millis.calls"
    ./scripts/sql.py --file query.sql [--format table|csv|json] [--max-rows N]
    echo "SELECT 1 AS one" | ./scripts/sql.py
    ./scripts/sql.py --dry-run "SELECT * FROM millis.calls"

Write tables as `millis.VIEW` (dataset and view): BigQuery, `bq query` and the console read that
in the current project, so the README's examples run as written everywhere. Numbers are shown
rounded to 10 decimals (credits are small floats: 0.045, not 0.045000000000000005).

--dry-run asks BigQuery how many bytes the query would scan and runs nothing (the emulator
answers 0: it does not model scans). Which stack: see scripts/lib/toolkit.py (GOOGLE_CLOUD_PROJECT
set: Google Cloud; unset: the running ./scripts/dev).

Exit codes: 0 the query ran (also with no rows), 2 it could not (bad SQL, no stack, no
credentials), with BigQuery's message in one line.
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))

import toolkit  # first: the project's Python and modules


def shown(value: Any) -> Any:
    """A cell as people read it: floats rounded, times as ISO text, nested values as JSON."""
    if isinstance(value, float):
        return f"{value:.10f}".rstrip("0").rstrip(".") if abs(value) < 1e15 else repr(value)
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def print_table(columns: list[str], rows: list[list[str]], out: Any) -> None:
    cells = [["NULL" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [
        min(60, max([len(name)] + [len(row[i]) for row in cells])) for i, name in enumerate(columns)
    ]

    def line(values: list[str]) -> str:
        return "  ".join(
            (value if len(value) <= width else value[: width - 1] + "…").ljust(width)
            for value, width in zip(values, widths, strict=True)
        ).rstrip()

    print(line(columns), file=out)
    print(line(["-" * width for width in widths]), file=out)
    for row in cells:
        print(line(row), file=out)


def run_query(sql: str, fmt: str, max_rows: int, dry_run: bool, out: Any = sys.stdout) -> int:
    from google.api_core import exceptions as google_exceptions
    from google.cloud import bigquery

    from service.config import get_settings
    from service.stores.bigquery import make_client

    client = make_client(get_settings().google_cloud_project)
    try:
        if dry_run:
            job = client.query(sql, job_config=bigquery.QueryJobConfig(dry_run=True))
            print(f"would scan {job.total_bytes_processed or 0:,} bytes; ran nothing", file=out)
            return toolkit.DONE
        result = client.query(sql).result()
        columns = [field.name for field in result.schema]
        rows = [[row[name] for name in columns] for row in result]
    except (google_exceptions.BadRequest, google_exceptions.NotFound) as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise toolkit.ToolError(f"BigQuery refused the query: {message.splitlines()[0]}") from None
    if fmt == "json":
        for row in rows:
            print(json.dumps(dict(zip(columns, map(shown, row), strict=True))), file=out)
        return toolkit.DONE
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows([[shown(cell) for cell in row] for row in rows])
        return toolkit.DONE
    print_table(columns, [[shown(cell) for cell in row] for row in rows[:max_rows]], out)
    more = f", {max_rows} shown (--max-rows)" if len(rows) > max_rows else ""
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''}{more})", file=out)
    return toolkit.DONE


def main() -> int:
    parser = toolkit.parser(__doc__)
    parser.add_argument("sql", nargs="?", help="the query (or --file, or standard input)")
    parser.add_argument("--file", type=Path, help="read the query from this file")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    parser.add_argument("--max-rows", type=int, default=100, help="rows shown as a table")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the bytes it would scan, run nothing"
    )
    args = parser.parse_args()
    if args.sql and args.file:
        parser.error("give the query or --file, not both")
    if args.file:
        sql = args.file.read_text(encoding="utf-8")
    elif args.sql:
        sql = args.sql
    elif not sys.stdin.isatty():
        sql = sys.stdin.read()
    else:
        parser.error("give a query, --file FILE, or pipe one in")
    if not sql.strip():
        parser.error("the query is empty")
    toolkit.use_stack("sql")
    return run_query(sql, args.format, args.max_rows, args.dry_run)


if __name__ == "__main__":
    toolkit.run("sql", main)

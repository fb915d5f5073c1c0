"""BigQuery table schemas and view SQL: the single source for the service, the tests and Terraform.

Tables are described in `tables.json` (schema file, partitioning, clustering); view SQL lives in
`views/*.sql` with `${project}` and `${dataset}` placeholders, the syntax Terraform's
`templatefile()` and Python's `string.Template` both understand.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).parent
VIEWS_DIR = SCHEMA_DIR / "views"

# Views depend on each other: create them in this order.
VIEW_ORDER = (
    "calls",
    "call_costs",
    "cost_daily_by_agent",
    "cost_monthly_by_agent",
    "cost_by_provider",
)


def table_definitions() -> dict[str, dict[str, Any]]:
    """Table name -> {schema (list of field dicts), description, time_partitioning, clustering}."""
    tables: dict[str, dict[str, Any]] = json.loads((SCHEMA_DIR / "tables.json").read_text())
    for definition in tables.values():
        definition["schema"] = json.loads((SCHEMA_DIR / definition["schema"]).read_text())
    return tables


# Table functions: the reports of a date range, reading only that range's partitions (the views
# rank every row of the table, so a filter on them cannot prune). Both take
# (start_date DATE, end_date DATE), inclusive, in UTC. `call_costs_between` is the `call_costs`
# view's SQL over `calls_between` instead of `calls`: one SQL file for both.
FUNCTION_ORDER = ("calls_between", "call_costs_between")
FUNCTION_FILES = {
    "calls_between": "functions/calls_between.sql",
    "call_costs_between": "views/call_costs.sql",
}
FUNCTION_ARGUMENTS = ("start_date", "end_date")


def view_sql(name: str, project: str, dataset: str) -> str:
    return _render(f"views/{name}.sql", project, dataset, calls=f"`{project}.{dataset}.calls`")


def function_sql(name: str, project: str, dataset: str) -> str:
    """The body of a table function (its arguments are start_date and end_date)."""
    calls = f"`{project}.{dataset}.calls_between`({', '.join(FUNCTION_ARGUMENTS)})"
    return _render(FUNCTION_FILES[name], project, dataset, calls=calls)


def _render(path: str, project: str, dataset: str, *, calls: str) -> str:
    template = string.Template((SCHEMA_DIR / path).read_text())
    return template.substitute(project=project, dataset=dataset, calls=calls)

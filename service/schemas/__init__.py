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


def view_sql(name: str, project: str, dataset: str) -> str:
    template = string.Template((VIEWS_DIR / f"{name}.sql").read_text())
    return template.substitute(project=project, dataset=dataset)

"""The column reference of docs/bigquery.md: generated from the schema's descriptions, current,
and naming exactly the columns each view really has (read from the emulator)."""

from __future__ import annotations

from typing import Any

import column_reference

from tests.conftest import PROJECT


def test_the_doc_holds_the_generated_reference() -> None:
    text = column_reference.DOC.read_text()
    assert column_reference.current(text) == text, (
        "run: .venv/bin/python scripts/lib/column_reference.py"
    )


def test_every_column_of_every_view_is_described(bigquery_client: Any, dataset: str) -> None:
    described = column_reference.view_columns()
    for view, columns in described.items():
        result = bigquery_client.query(f"SELECT * FROM `{PROJECT}.{dataset}.{view}` LIMIT 0")
        real = [field.name for field in result.result().schema]
        assert [name for name, _ in columns] == real, view
        assert all(text.strip() for _, text in columns), view

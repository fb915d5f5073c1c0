"""Property-based fuzzing of both webhooks with schemathesis, from the OpenAPI document the app
serves, against the app functions-framework serves, on the emulators: no 5xx, and every
response conforms to the document (status codes, content types, bodies)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

TOKEN = "fuzz-token"
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("operation_id", ["prefetch", "endOfCall", "health"])
def test_webhooks_never_fail_and_always_conform(
    make_client: Any, dataset: str, operation_id: str
) -> None:
    client = make_client(webhook_tokens=TOKEN, bigquery_dataset=dataset)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", client.application)
    operation = schema.find_operation_by_id(operation_id)
    statuses: list[int] = []

    @given(case=operation.as_strategy())
    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    def fuzz(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
        statuses.append(response.status_code)
        assert response.status_code < 500, response.text
        case.validate_response(response, checks=CHECKS)

    fuzz()
    assert 200 in statuses  # the generator reached the happy path, not only rejections

"""Redaction through the end-of-call path, read back from the BigQuery emulator."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.end_of_call.test_end_of_call import post, rows
from tests.payloads import current_payload
from tests.unit.end_of_call.redaction_corpus import SECRETS


def test_no_corpus_secret_reaches_any_column(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    config = {f"part_{i}": fragment for i, (_, fragment, _) in enumerate(SECRETS)}
    body = current_payload(
        "redact-1",
        agent_config={"prompt": "You are Ava.", **config},
        # Fields no column models go to raw_payload: redacted by the same rules.
        integration={"crm": SECRETS[0][1], "hook": SECRETS[33][1]},
        voip={"from": "+15551234567", "to": "+15550009999", "sip_auth": {"password": "sip-pw-1"}},
    )
    assert post(make_client(bigquery_dataset=dataset), body).status_code == 200
    [row] = rows(bigquery_client, dataset)
    stored = json.dumps(row, default=str)
    for shape, _, secret in SECRETS:
        assert secret not in stored, shape
    assert "sip-pw-1" not in stored
    assert row["agent_config"]["prompt"] == "You are Ava."
    # raw_payload keeps the unmodelled fields, never a second (unredacted) agent configuration.
    assert "agent_config" not in row["raw_payload"]
    assert set(row["raw_payload"]) == {"sentiment", "integration", "voip"}


def test_allowlist_mode_stores_only_known_safe_fields(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    config = {
        "prompt": "You are Ava.",
        "llm": {"model": "gpt-4o", "base_url": "https://proxy.acme.io", "org": "acme"},
        "custom_integration": {"endpoint": "https://crm.acme.io", "account": "acme-42"},
    }
    client = make_client(bigquery_dataset=dataset, store_agent_config="allowlist")
    assert post(client, current_payload("allow-1", agent_config=config)).status_code == 200
    [row] = rows(bigquery_client, dataset)
    assert row["agent_config"] == {"prompt": "You are Ava.", "llm": {"model": "gpt-4o"}}

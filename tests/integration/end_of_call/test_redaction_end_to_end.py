"""Redaction through the end-of-call path, read back from the BigQuery emulator."""

from __future__ import annotations

import json
from typing import Any

from service.end_of_call.redaction import REDACTED
from tests.integration.end_of_call.test_end_of_call import post, rows
from tests.payloads import current_payload
from tests.unit.end_of_call.redaction_corpus import MISSED_BY_DETECTORS as MISSED
from tests.unit.end_of_call.redaction_corpus import SECRETS, merged


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


def test_with_the_default_allowlist_no_shape_detection_misses_reaches_bigquery(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    """Round two of adversarial testing: shapes the detectors miss, each where a real
    configuration holds it, all in one call with the service's default settings."""
    config = merged([{"prompt": "You are Ava."}, *(fragment for _, fragment, _ in MISSED)])
    body = current_payload("allow-2", agent_config=config)
    assert post(make_client(bigquery_dataset=dataset), body).status_code == 200
    [row] = rows(bigquery_client, dataset)
    stored = json.dumps(row, default=str, ensure_ascii=False)
    assert [shape for shape, _, secret in MISSED if secret in stored] == []
    # What people query is still there.
    assert row["agent_config"]["voice"]["provider"] == "custom"
    assert {tool["name"] for tool in row["agent_config"]["tools"]} >= {"crm_lookup", "notify"}
    assert row["agent_config"]["prompt"].startswith("You are Ava.")


def test_a_configuration_secret_is_gone_from_every_column_in_bigquery(
    make_client: Any, bigquery_client: Any, dataset: str
) -> None:
    key, bearer = "crm-key-7Hq2vN4mT7", "crm-bearer-9Xk2Lm5Pq8"
    config = {
        "prompt": "You are Ava.",
        "tools": [
            {
                "name": "crm",
                "webhook": f"https://crm.acme.io/v1?api_key={key}",
                "header": {"Authorization": f"Bearer {bearer}"},
            }
        ],
    }
    chat = [
        {"role": "user", "content": "Book me in"},
        {"role": "tool", "name": "crm", "content": f"401 for key {key}", "request": bearer},
    ]
    body = current_payload(
        "known-e2e",
        agent_config=config,
        chat=json.dumps(chat),
        error_message=f"crm: 401 ({bearer})",
        function_calls=[{"name": "crm", "params": {"key": key}, "debug": f"Bearer {bearer}"}],
        metadata={"last_error": f"api_key={key}"},
        crm_trace={"headers_sent": f"Authorization: Bearer {bearer}"},
    )
    assert post(make_client(bigquery_dataset=dataset), body).status_code == 200
    [row] = rows(bigquery_client, dataset)
    stored = json.dumps(row, default=str)
    assert key not in stored and bearer not in stored
    assert row["chat"][1]["content"] == f"401 for key {REDACTED}"
    assert row["error_message"] == f"crm: 401 ({REDACTED})"
    assert row["session_id"] == "known-e2e" and row["chat"][0]["content"] == "Book me in"

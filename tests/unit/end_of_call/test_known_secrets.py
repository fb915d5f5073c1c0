"""A secret redacted from the agent configuration is removed from every column of the row."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from service.config import Settings
from service.end_of_call.normalise import normalise_call, parse_payload
from service.end_of_call.redaction import REDACTED, KnownSecrets, Redactor
from service.end_of_call.redaction.known import removed_values
from tests.payloads import current_payload

REDACTOR = Redactor.from_settings(Settings(google_cloud_project="demo-x"))
API_KEY = "crm-key-7Hq2vN4mT7"
BEARER = "crm-bearer-9Xk2Lm5Pq8"


def test_what_redaction_took_out_is_known_whole_or_from_inside_text() -> None:
    original = {
        "api_key": API_KEY,
        "pin": 482913,
        "hook": "https://x.io/h?token=tok-55555&page=2",
        "note": "use Bearer abc-def-ghi and Basic dXNlcjpwYXNz please",
        "plain": "nothing here",
    }
    redacted = REDACTOR.redact(original)
    assert removed_values(original, redacted) == {
        API_KEY,
        "482913",
        "tok-55555",
        "abc-def-ghi",
        "dXNlcjpwYXNz",
    }


def test_known_secrets_are_replaced_in_values_keys_and_sent_on_forms() -> None:
    known = KnownSecrets([f"Bearer {BEARER}", 'p@ss"w0rd+1', "short"])
    value = {
        "content": f"401 for {BEARER}",
        BEARER: ["?pw=p%40ss%22w0rd%2B1", {"json_text": '{"pw": "p@ss\\"w0rd+1"}'}],
        "short": "short stays: too common to remove",
    }
    assert known.scrub(value) == {
        "content": f"401 for {REDACTED}",
        REDACTED: [f"?pw={REDACTED}", {"json_text": f'{{"pw": "{REDACTED}"}}'}],
        "short": "short stays: too common to remove",
    }


def test_descriptive_header_values_are_not_secrets() -> None:
    assert not KnownSecrets(["application/json"])


def test_a_configuration_secret_is_removed_from_every_column() -> None:
    config = {
        "prompt": "You are Ava.",
        "tools": [
            {
                "name": "crm",
                "webhook": f"https://crm.acme.io/v1?api_key={API_KEY}",
                "headers": {"Authorization": f"Bearer {BEARER}"},
            }
        ],
    }
    chat = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"arguments": f'{{"k": "{API_KEY}"}}'}],
        },
        {"role": "tool", "content": f"GET ...?api_key={API_KEY} -> 401", "debug": BEARER},
    ]
    raw = current_payload(
        "known-1",
        agent_config=config,
        chat=json.dumps(chat),
        error_message=f"tool crm failed: 401 Bearer {BEARER}",
        function_calls=[{"name": "crm", "params": {"auth": BEARER}, "result": f"key {API_KEY}"}],
        metadata={"crm_debug": f"sent {API_KEY}"},
        recording={"recording_url": f"https://rec.acme.io/a.wav?sig={BEARER}"},
        integration={"last_request": f"Authorization: Bearer {BEARER}"},
    )
    row = normalise_call(
        raw,
        parse_payload(raw),
        received_at=datetime.now(UTC),
        source="webhook",
        redactor=REDACTOR,
        store_agent_config=True,
    )
    stored = json.dumps(row)
    assert API_KEY not in stored and BEARER not in stored
    assert row["chat"][1]["content"] == f"GET ...?api_key={REDACTED} -> 401"
    assert row["error_message"] == f"tool crm failed: 401 {REDACTED}"
    assert json.loads(row["function_calls"][0]["params"]) == {"auth": REDACTED}


def test_with_the_configuration_not_stored_its_secrets_are_still_removed() -> None:
    config: dict[str, Any] = {"tools": [{"name": "crm", "header": {"X-Key": API_KEY}}]}
    raw = current_payload("known-2", agent_config=config, error_message=f"bad key {API_KEY}")
    row = normalise_call(
        raw,
        parse_payload(raw),
        received_at=datetime.now(UTC),
        source="webhook",
        redactor=REDACTOR,
        store_agent_config=False,
    )
    assert row["agent_config"] is None and row["error_message"] == f"bad key {REDACTED}"


def test_identity_columns_are_never_rewritten() -> None:
    session = "sess-crm-key-7Hq2vN4mT7"
    raw = current_payload(session, agent_config={"api_key": API_KEY}, call_id=API_KEY)
    row = normalise_call(
        raw,
        parse_payload(raw),
        received_at=datetime.now(UTC),
        source="webhook",
        redactor=REDACTOR,
        store_agent_config=True,
    )
    assert row["session_id"] == session and row["call_id"] == API_KEY

"""The agent configuration as stored by default: the parts people query, nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.config import Settings
from service.end_of_call.redaction import REDACTED, Redactor
from tests.payloads import AGENT_CONFIG, SECRETS
from tests.unit.end_of_call.redaction_corpus import MISSED_BY_DETECTORS
from tests.unit.end_of_call.redaction_corpus import SECRETS as KNOWN_SHAPES

DEFAULT = Redactor.from_settings(Settings(google_cloud_project="demo-x"))
DETECTION_ONLY = Redactor.from_settings(
    Settings(google_cloud_project="demo-x", store_agent_config="redacted")
)


def test_the_allowlist_is_the_default_and_the_other_modes_still_work() -> None:
    assert Settings(google_cloud_project="demo-x").store_agent_config == "allowlist"
    assert DEFAULT.allowlist and not DETECTION_ONLY.allowlist
    # `redacted` keeps every field (secrets removed by detection), as before.
    stored = DETECTION_ONLY.agent_config({"keywords": ["Acme"], "api_key": "k-1"})
    assert stored == {"keywords": ["Acme"], "api_key": REDACTED}


@pytest.mark.parametrize(
    ("shape", "config", "secret"), MISSED_BY_DETECTORS, ids=[c[0] for c in MISSED_BY_DETECTORS]
)
def test_no_shape_detection_misses_is_stored(
    shape: str, config: dict[str, Any], secret: str
) -> None:
    assert secret not in json.dumps(DEFAULT.agent_config(config), ensure_ascii=False), shape


@pytest.mark.parametrize(
    ("shape", "config", "secret"), KNOWN_SHAPES, ids=[c[0] for c in KNOWN_SHAPES]
)
def test_no_known_shape_is_stored_either(shape: str, config: dict[str, Any], secret: str) -> None:
    assert secret not in json.dumps(DEFAULT.agent_config(config), ensure_ascii=False), shape


def test_a_millis_configuration_keeps_what_people_query() -> None:
    config = {
        **AGENT_CONFIG,
        "first_message": "Hello, Acme Dental!",
        "language": "en-US",
        "voice": {
            "provider": "elevenlabs",
            "voice_id": "21m00Tcm4TlvDq8ikWAM",
            "settings": {"stability": 0.5, "style": "calm", "api_key_ref": True},
        },
        "flow": {
            "user_start_first": False,
            "call_transfer": {"phone": "+15550001234", "instruction": "Transfer billing calls."},
        },
        "millis_functions": [{"name": "end_call", "description": "Ends the call", "data": {}}],
        "app_functions": [{"name": "gcal", "credentials": {"token": "x"}}],
    }
    config["tools"] = [
        *AGENT_CONFIG["tools"],
        {
            "type": "function",
            "function": {
                "name": "quote",
                "description": "Price a cleaning",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "plan": {"type": "string", "enum": ["basic", "plus"]},
                        "account": {"type": "string", "default": "acct-live-1"},
                    },
                    "required": ["plan"],
                },
            },
        },
    ]
    assert DEFAULT.agent_config(config) == {
        "prompt": AGENT_CONFIG["prompt"],
        "first_message": "Hello, Acme Dental!",
        "language": "en-US",
        "voice": {
            "provider": "elevenlabs",
            "voice_id": "21m00Tcm4TlvDq8ikWAM",
            "settings": {"stability": 0.5, "api_key_ref": True},
        },
        "llm": {"model": "gpt-4o-mini", "temperature": 0.4, "max_tokens": 300},
        "flow": {
            "user_start_first": False,
            "call_transfer": {"instruction": "Transfer billing calls."},
        },
        "tools": [
            {
                "name": "book_appointment",
                "description": "Books an appointment",
                "webhook": "https://crm.example.com",
                "params": [{"name": "date", "type": "string", "required": True}],
            },
            {
                "type": "function",
                "function": {
                    "name": "quote",
                    "description": "Price a cleaning",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "plan": {"type": "string", "enum": ["basic", "plus"]},
                            "account": {"type": "string"},
                        },
                        "required": ["plan"],
                    },
                },
            },
        ],
        "extra_prompt_webhook": {"url": "https://hooks.example.com"},
        "session_data_webhook": "https://hooks.example.com",
        "millis_functions": [{"name": "end_call", "description": "Ends the call"}],
        "app_functions": [{"name": "gcal"}],
    }
    stored = json.dumps(DEFAULT.agent_config(config))
    assert not [secret for secret in SECRETS if secret in stored]


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://api.acme.io/v1/book?key=abc#frag", "https://api.acme.io"),
        ("https://ops:pw-123@crm.acme.io:8443/x", "https://crm.acme.io:8443"),
        ("wss://llm.acme.io/socket?token=t", "wss://llm.acme.io"),
        ("https://eo1a2b3c4d5e6f7.m.pipedream.net/", f"https://{REDACTED}.m.pipedream.net"),
        ("https://3f2a-81-23-45-6.ngrok-free.app/hook", f"https://{REDACTED}.ngrok-free.app"),
        ("https://hook.eu1.make.com/abc", "https://hook.eu1.make.com"),
    ],
)
def test_urls_are_kept_as_their_origin(url: str, kept: str) -> None:
    assert DEFAULT.agent_config({"tools": [{"name": "t", "webhook": url}]}) == {
        "tools": [{"name": "t", "webhook": kept}]
    }


def test_a_url_that_is_not_one_is_dropped() -> None:
    stored = DEFAULT.agent_config({"session_data_webhook": "ftp://x", "custom_llm_websocket": 5})
    assert stored == {}


def test_kept_text_still_goes_through_the_detectors() -> None:
    stored = DEFAULT.agent_config(
        {"prompt": "Call https://api.acme.io/x?token=abc-123 with Bearer zz-99-secret now"}
    )
    assert stored == {
        "prompt": f"Call https://api.acme.io/x?token={REDACTED} with Bearer {REDACTED} now"
    }


def test_fields_of_the_wrong_shape_are_dropped_not_refused() -> None:
    assert (
        DEFAULT.agent_config({"voice": "elevenlabs", "tools": {"name": "x"}, "prompt": ["a"]}) == {}
    )


def test_operator_paths_are_kept_whole_and_redacted_by_every_layer() -> None:
    redactor = Redactor(
        Settings(google_cloud_project="demo-x").redact_key_patterns,
        allowlist=True,
        extra_paths=["crm_account", "flow.custom_step", "flow.voicemail", "tools", "missing.path"],
    )
    config = {
        "crm_account": {"region": "eu", "api_key": "k-7781"},
        "flow": {
            "voicemail": {"action": "hangup", "token": "t-1"},
            "custom_step": {"say": "Bye", "token": "t-2"},
            "other": 1,
        },
        "tools": [{"name": "t", "headers": {"Authorization": "Bearer b-1"}}],
    }
    assert redactor.agent_config(config) == {
        "crm_account": {"region": "eu", "api_key": REDACTED},
        "flow": {
            "voicemail": {"action": "hangup"},
            "custom_step": {"say": "Bye", "token": REDACTED},
        },
        # A path the shape keeps its own way stays kept that way: headers never come back.
        "tools": [{"name": "t"}],
    }


def test_a_deeply_nested_configuration_is_walked_without_recursion_errors() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(30):
        schema = {"type": "object", "properties": {"x": schema}}
    stored = DEFAULT.agent_config({"tools": [{"name": "t", "parameters": schema}]})
    assert stored is not None and stored["tools"][0]["parameters"] == schema

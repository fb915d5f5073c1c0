from __future__ import annotations

import json
from typing import Any

import pytest

from service.config import Settings
from service.end_of_call.redaction import REDACTED, Redactor
from tests.unit.end_of_call.redaction_corpus import HARMLESS, SECRETS

REDACTOR = Redactor(Settings(google_cloud_project="demo-x").redact_key_patterns)


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "apiKey",
        "X-API-Key",
        "token",
        "access_token",
        "client_secret",
        "password",
        "Authorization",
        "private_key",
        "openaiApiKey",
        "credentials",
        "cookie",
        "webhookSignature",
    ],
)
def test_secret_like_keys_are_redacted(key: str) -> None:
    assert REDACTOR.redact({key: "s3cr3t"}) == {key: REDACTED}


@pytest.mark.parametrize(
    "key", ["keywords", "max_tokens", "author", "prompt", "voice_id", "description", "monkeypox"]
)
def test_ordinary_keys_are_kept(key: str) -> None:
    assert REDACTOR.redact({key: "value"}) == {key: "value"}


@pytest.mark.parametrize(("shape", "config", "secret"), SECRETS, ids=[c[0] for c in SECRETS])
def test_every_secret_shape_is_removed(shape: str, config: dict[str, Any], secret: str) -> None:
    redacted = REDACTOR.redact(config)
    assert secret not in json.dumps(redacted), shape
    assert REDACTED in json.dumps(redacted)


def test_the_corpus_has_at_least_fifty_shapes() -> None:
    assert len(SECRETS) >= 50 and len({shape for shape, _, _ in SECRETS}) == len(SECRETS)


@pytest.mark.parametrize("config", HARMLESS)
def test_harmless_configurations_are_kept_unchanged(config: dict[str, Any]) -> None:
    assert REDACTOR.redact(config) == config


@pytest.mark.parametrize(("shape", "config", "secret"), SECRETS, ids=[c[0] for c in SECRETS])
def test_redaction_is_idempotent(shape: str, config: dict[str, Any], secret: str) -> None:
    once = REDACTOR.redact(config)
    assert REDACTOR.redact(once) == once


def test_allowlist_mode_keeps_only_known_safe_fields_and_still_redacts() -> None:
    allow = Redactor(["token", "key"], allowlist=True)
    config = {
        "prompt": "Use sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z when asked.",
        "llm": {"model": "gpt-4o", "api_key": "k", "base_url": "https://x.io"},
        "voice_id": "21m00Tcm4TlvDq8ikWAM",
        "custom_thing": {"anything": "goes"},
    }
    assert allow.agent_config(config) == {
        "prompt": f"Use {REDACTED} when asked.",
        "llm": {"model": "gpt-4o"},
        "voice_id": "21m00Tcm4TlvDq8ikWAM",
    }


def test_all_header_values_are_redacted_names_kept() -> None:
    config = {"tools": [{"headers": {"X-Custom": "abc", "Accept": "json"}}]}
    assert REDACTOR.redact(config) == {
        "tools": [{"headers": {"X-Custom": REDACTED, "Accept": REDACTED}}]
    }
    as_list = {"headers": [{"name": "X-Key", "value": "abc"}]}
    assert REDACTOR.redact(as_list) == {"headers": [{"name": "X-Key", "value": REDACTED}]}


def test_secrets_in_urls_are_redacted() -> None:
    url = "https://user:pw@api.example.com/hook?token=abc&page=2&apiKey=def#frag"
    redacted = REDACTOR.redact({"url": url})["url"]
    assert "pw" not in redacted and "abc" not in redacted and "def" not in redacted
    assert "page=2" in redacted and redacted.startswith("https://user:")


def test_bearer_credentials_in_text_are_redacted() -> None:
    assert REDACTOR.redact({"note": "use Bearer abc.def-ghi please"}) == {
        "note": f"use Bearer {REDACTED} please"
    }


def test_nested_secret_objects_are_redacted_whole() -> None:
    config = {"auth": {"user": "u", "pass": "p"}, "llm": {"model": "m", "temperature": 0.2}}
    assert REDACTOR.redact(config) == {
        "auth": {"user": REDACTED, "pass": REDACTED},
        "llm": {"model": "m", "temperature": 0.2},
    }


def test_configurable_word_list() -> None:
    custom = Redactor(["pin"])
    assert custom.redact({"pin": "1234", "token": "t"}) == {"pin": REDACTED, "token": "t"}


def test_redaction_does_not_mutate_its_input() -> None:
    config = {"api_key": "x", "tools": [{"headers": {"a": "b"}}]}
    REDACTOR.redact(config)
    assert config == {"api_key": "x", "tools": [{"headers": {"a": "b"}}]}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "unit",
    [
        "eyJ",
        "eyJa.",
        "sk-",
        "xoxb-1-",
        "https://@",
        "https://x?a=1&",
        "token=1;",
        "/",
        "Bearer ",
        "a",
        "pass:",
        "pass: '",
        " -u a:",
        " -pxxxx",
        "Zq8vT3mL9xW2",
        '"\\',
    ],
)
def test_hostile_repetitions_redact_in_linear_time(unit: str) -> None:
    """A guard, not a benchmark: a pattern's own prefix repeated took 15 s on 300 KB (jwt) and
    10 s on 90 KB (openai) with detect-secrets' unanchored patterns, minutes at 1 MB; the linear
    patterns take under a second here."""
    text = (unit * (1_000_000 // len(unit) + 1))[:1_000_000]
    once = REDACTOR.redact({"prompt": text})
    assert REDACTOR.redact(once) == once

from __future__ import annotations

import pytest

from service.config import ConfigurationError, load_settings


def test_defaults_need_only_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    settings = load_settings()
    assert settings.events_table_id == "my-project.millis.call_events"
    assert settings.prefetch_deadline_ms == 500 and settings.webhook_tokens == []


def test_missing_project_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    with pytest.raises(ConfigurationError, match="GOOGLE_CLOUD_PROJECT"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PREFETCH_DEADLINE_MS", "fast"),
        ("PREFETCH_DEADLINE_MS", "0"),
        ("LOG_LEVEL", "LOUD"),
        ("PREFETCH_RESPONSE_FORMAT", "xml"),
        ("PROFILES_COLLECTION", "a/b"),
        ("BIGQUERY_DATASET", "bad-name"),
        ("DEFAULT_PHONE_REGION", "usa"),
        ("MAX_BODY_BYTES", "-1"),
    ],
)
def test_invalid_values_are_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        load_settings()


def test_lists_are_comma_separated_and_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    monkeypatch.setenv("WEBHOOK_TOKENS", "old-token, new-token,")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = load_settings()
    assert [token.get_secret_value() for token in settings.webhook_tokens] == [
        "old-token",
        "new-token",
    ]
    assert "old-token" not in repr(settings)
    assert settings.log_level == "DEBUG"

from __future__ import annotations

import pytest

from service.config import ConfigurationError, Settings, load_settings


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
        ("MAX_BODY_BYTES", "20000000"),  # more than BigQuery could ever store
        ("WEBHOOK_SIGNING_SECRETS", "whsec_!!!"),
        ("LOOKUP_SIGNING_SECRETS", "not json"),
        ("LOOKUP_SIGNING_SECRETS", '{"agent-1": ""}'),
        ("STORE_AGENT_CONFIG", "everything"),
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


def test_a_bad_signing_secret_is_named_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    monkeypatch.setenv("WEBHOOK_SIGNING_SECRETS", "whsec_c2VjcmV0,whsec_!!!topsecret")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "WEBHOOK_SIGNING_SECRETS" in str(caught.value)
    assert "topsecret" not in str(caught.value)


def test_end_of_call_budgets_must_fit_the_request_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    monkeypatch.setenv("BIGQUERY_INSERT_TIMEOUT_SECONDS", "40")
    monkeypatch.setenv("DEAD_LETTER_TIMEOUT_SECONDS", "20")
    with pytest.raises(ConfigurationError, match="DEAD_LETTER_TIMEOUT_SECONDS"):
        load_settings()


def test_defaults_fit_cloud_runs_shutdown_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.web.server import GRACEFUL_TIMEOUT_SECONDS, server_options

    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    settings = load_settings()
    # Cloud Run sends SIGKILL 10 s after SIGTERM: a call in flight finishes before.
    work = settings.bigquery_insert_timeout_seconds + settings.dead_letter_timeout_seconds
    assert work <= GRACEFUL_TIMEOUT_SECONDS < 10
    options = server_options({"CONCURRENCY": "40"})
    assert options["threads"] == 44 and options["graceful_timeout"] == GRACEFUL_TIMEOUT_SECONDS
    assert options["timeout"] == 0


def test_lookup_signing_secrets_accept_one_or_several(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    monkeypatch.setenv("LOOKUP_SIGNING_SECRETS", '{"a": "one", "b": ["new", "old"]}')
    secrets = load_settings().lookup_signing_secrets
    assert {k: [s.get_secret_value() for s in v] for k, v in secrets.items()} == {
        "a": ["one"],
        "b": ["new", "old"],
    }


def test_settings_read_the_environment_by_name_in_any_case() -> None:
    # Read without pydantic for start-up time (docs/performance.md, "Cold start and memory"):
    # names match in any case, unknown variables are ignored, lists are comma-separated, the map
    # is JSON.
    settings = Settings.from_environment(
        {
            "google_cloud_project": "my-project",
            "Prefetch_Deadline_Ms": "250",
            "WEBHOOK_TOKENS": "a, b",
            "LOOKUP_SIGNING_SECRETS": '{"agent-1": "s1"}',
            "ALLOW_UNAUTHENTICATED": "true",
            "PATH": "/usr/bin",
            "SOMETHING_ELSE": "x",
        }
    )
    assert settings.google_cloud_project == "my-project" and settings.prefetch_deadline_ms == 250
    assert [token.get_secret_value() for token in settings.webhook_tokens] == ["a", "b"]
    assert settings.lookup_signing_secrets["agent-1"][0].get_secret_value() == "s1"
    assert settings.allow_unauthenticated is True
    with pytest.raises(ConfigurationError, match="MAX_QUERY_PARAMS: must be a whole number"):
        Settings.from_environment({"GOOGLE_CLOUD_PROJECT": "my-project", "MAX_QUERY_PARAMS": "x"})


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("GOOGLE_CLOUD_PROJECT", "my-project\n", "GOOGLE_CLOUD_PROJECT: must match"),
        ("ALLOW_UNAUTHENTICATED", "maybe", "ALLOW_UNAUTHENTICATED: must be true or false"),
        ("PROFILE_CACHE_TTL_SECONDS", "nan", "PROFILE_CACHE_TTL_SECONDS: must be a finite number"),
        ("REQUEST_READ_TIMEOUT_SECONDS", "0", "REQUEST_READ_TIMEOUT_SECONDS: must be more than 0"),
        ("BIGQUERY_WRITE_API", "both", "BIGQUERY_WRITE_API: must be one of"),
    ],
)
def test_each_problem_names_its_variable(variable: str, value: str, problem: str) -> None:
    environment = {"GOOGLE_CLOUD_PROJECT": "my-project", variable: value}
    with pytest.raises(ConfigurationError, match=problem):
        Settings.from_environment(environment)


def test_switches_accept_the_usual_spellings_and_secrets_never_show() -> None:
    for text, expected in (("TRUE", True), ("1", True), ("yes", True), ("off", False)):
        settings = Settings(google_cloud_project="my-project", allow_unauthenticated=text)  # type: ignore[arg-type]
        assert settings.allow_unauthenticated is expected
    settings = Settings.from_environment(
        {"GOOGLE_CLOUD_PROJECT": "my-project", "LOOKUP_SIGNING_SECRETS": '{"a": "hush-1"}'}
    )
    assert "hush-1" not in repr(settings) and "hush-1" not in str(settings)

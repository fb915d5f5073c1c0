"""scripts/lib/toolkit.py: how every tool picks its stack, reads dates and says what is wrong."""

from __future__ import annotations

import argparse
from pathlib import Path

import toolkit

import pytest

from service.config import ConfigurationError

STACK = ("GOOGLE_CLOUD_PROJECT", *toolkit.EMULATOR_VARIABLES, "MILLIS_DEV_STACK_FILE")


@pytest.fixture
def no_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in STACK:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "dev-stack.env"
    monkeypatch.setenv("MILLIS_DEV_STACK_FILE", str(path))
    return path


def test_google_cloud_when_the_project_is_set(
    no_stack: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    toolkit.write_stack_file(no_stack, {"GOOGLE_CLOUD_PROJECT": "demo", "DEV_PID": "1"})
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    toolkit.use_stack("sql")
    said = "sql: using Google Cloud project my-project (Application Default Credentials)\n"
    assert capsys.readouterr().err == said


def test_the_dev_stack_file_when_its_process_runs(
    no_stack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    values = {"GOOGLE_CLOUD_PROJECT": "demo-millis", "FIRESTORE_EMULATOR_HOST": "127.0.0.1:1"}
    toolkit.write_stack_file(no_stack, {**values, "DEV_PID": str(os.getpid())})
    toolkit.use_stack("erase")
    assert {name: os.environ[name] for name in values} == values


def test_a_stale_or_missing_stack_file_is_a_one_line_error(no_stack: Path) -> None:
    with pytest.raises(toolkit.ToolError, match=r"start \./scripts/dev"):
        toolkit.use_stack("report")
    toolkit.write_stack_file(no_stack, {"GOOGLE_CLOUD_PROJECT": "x", "DEV_PID": "999999999"})
    with pytest.raises(toolkit.ToolError, match="no longer running"):
        toolkit.use_stack("report")


def test_dates_are_utc_days_and_both_ends_are_included() -> None:
    parser = toolkit.parser("doc")
    toolkit.add_date_range(parser)
    args = parser.parse_args(["--from", "2026-11-01", "--to", "2026-11-01"])
    toolkit.check_date_range(parser, args)  # one day: allowed
    assert "included" in parser.format_help()
    with pytest.raises(argparse.ArgumentTypeError, match="use YYYY-MM-DD"):
        toolkit.day("2026-13-01")
    backwards = parser.parse_args(["--from", "2026-11-02", "--to", "2026-11-01"])
    with pytest.raises(SystemExit) as exited:
        toolkit.check_date_range(parser, backwards)
    assert exited.value.code == 2


def test_errors_a_user_can_fix_are_one_line_and_bugs_keep_their_traceback() -> None:
    bad = ConfigurationError("invalid configuration: GOOGLE_CLOUD_PROJECT: required")
    assert toolkit.explain(bad) == "invalid configuration: GOOGLE_CLOUD_PROJECT: required"
    from google.auth.exceptions import DefaultCredentialsError

    hint = toolkit.explain(DefaultCredentialsError("long text"))
    assert hint is not None and "gcloud auth application-default login" in hint
    assert toolkit.explain(KeyError("bug")) is None

"""scripts/smoke.py against the service served by functions-framework on the emulators."""

from __future__ import annotations

from typing import Any

import pytest
from smoke import main as smoke

from tests.conftest import PROJECT, served_service


@pytest.fixture
def served_url(emulator_env: dict[str, str], dataset: str) -> Any:
    env = {
        **emulator_env,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "WEBHOOK_TOKENS": "smoke-token",
        "BIGQUERY_DATASET": dataset,
    }
    with served_service(env) as (url, _):
        yield url


def test_smoke_passes_against_a_served_instance(
    served_url: str, dataset: str, clean_firestore: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "--url",
        served_url,
        "--token",
        "smoke-token",
        "--project",
        PROJECT,
        "--dataset",
        dataset,
    ]
    assert smoke(args) == 0
    assert capsys.readouterr().out.startswith("PASS")
    assert list(clean_firestore.collection("profiles").stream()) == []  # test profile removed
    assert list(clean_firestore.collection("agents").stream()) == []  # and its agent


def test_smoke_fails_with_a_wrong_token(
    served_url: str, dataset: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "--url",
        served_url,
        "--token",
        "wrong",
        "--project",
        PROJECT,
        "--dataset",
        dataset,
        "--timeout",
        "2",
    ]
    assert smoke(args) == 1
    assert "HTTP 401" in capsys.readouterr().out

"""scripts/smoke.py against the service served by functions-framework on the emulators."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest
import requests
from emulators import free_port
from smoke import main as smoke

from tests.conftest import PROJECT, ROOT


@pytest.fixture
def served_url(emulator_env: dict[str, str], dataset: str) -> Any:
    port = free_port()
    env = {
        **os.environ,
        **emulator_env,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "PORT": str(port),
        "PYTHONPATH": str(ROOT),
        "WEBHOOK_TOKENS": "smoke-token",
        "BIGQUERY_DATASET": dataset,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "service.server"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"{url}/healthz", timeout=1)
            break
        except requests.ConnectionError:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(10)


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

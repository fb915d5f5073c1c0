"""What a new instance loads before its first answer (docs/performance.md, "Cold start and
memory"): the served app imports none of the end-of-call path's or tracing's heavy clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from emulators import free_port

from tests.conftest import ROOT

NOT_AT_START_UP = (
    "grpc",
    "google.api_core",
    "google.cloud.firestore",
    "google.cloud.bigquery",
    "pydantic",
    "pydantic_settings",
    "detect_secrets",
    "phonenumbers",
    "opentelemetry.exporter.cloud_trace",
)


def loaded_at_start_up(**env: str) -> set[str]:
    program = (
        "import json, sys\n"
        "import service.web.server, service.main\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "GOOGLE_CLOUD_PROJECT": "demo-x",
            # nothing listens there: the warm-up fails at once, which start-up tolerates
            "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{free_port()}",
            "LOG_LEVEL": "ERROR",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_the_served_app_loads_no_heavy_client_before_its_first_answer() -> None:
    modules = loaded_at_start_up()
    assert "service.prefetch.firestore_rest" in modules and "urllib3" in modules
    loaded = {name for name in NOT_AT_START_UP if name in modules}
    assert loaded == set()


def test_cloud_trace_export_loads_its_client_on_first_export_not_at_start_up() -> None:
    modules = loaded_at_start_up(TRACE_EXPORTER="gcp")
    assert "opentelemetry.sdk.trace" in modules  # tracing is configured...
    assert "opentelemetry.exporter.cloud_trace" not in modules  # ...its client is not loaded
    assert "grpc" not in modules

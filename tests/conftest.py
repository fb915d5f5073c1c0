"""Shared fixtures: the real Firestore and BigQuery emulators, started once per test session on
free ports, and a functions-framework app whose handler can be rebuilt per test."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "test-millis"


@pytest.fixture(scope="session")
def emulator_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from emulators import running_emulators

    log_dir = tmp_path_factory.mktemp("emulator-logs")
    with running_emulators(PROJECT, log_dir) as env:
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="session")
def firestore_client(emulator_env: dict[str, str]) -> Any:
    from service.stores.firestore import make_client

    return make_client(PROJECT, "(default)")


@pytest.fixture(scope="session")
def bigquery_client(emulator_env: dict[str, str]) -> Any:
    from service.stores.bigquery import make_client

    return make_client(PROJECT)


@pytest.fixture(scope="session")
def storage_write_client(emulator_env: dict[str, str]) -> Any:
    from service.stores.storage_write import make_write_client

    return make_write_client()


@pytest.fixture
def write_api() -> str:
    """The BigQuery write API a test's handler uses (BIGQUERY_WRITE_API). Tests that must hold for
    both sinks parametrize it: `@pytest.mark.parametrize("write_api", WRITE_APIS)`."""
    return "insert_all"


WRITE_APIS = ["insert_all", "storage_write"]


@pytest.fixture
def write_client(write_api: str, request: pytest.FixtureRequest) -> Any:
    """The emulator's client for the write API under test."""
    name = "storage_write_client" if write_api == "storage_write" else "bigquery_client"
    return request.getfixturevalue(name)


@pytest.fixture
def sink_for(write_api: str, write_client: Any) -> Callable[..., Any]:
    """sink_for(dataset, timeout=10, attempts=3) -> the sink of the write API under test."""
    from service.config import Settings
    from service.stores.bigquery import make_sink

    def build(dataset: str, timeout: float = 10, attempts: int = 3) -> Any:
        settings = Settings(
            google_cloud_project=PROJECT,
            bigquery_dataset=dataset,
            bigquery_write_api=write_api,  # type: ignore[arg-type]
            bigquery_insert_timeout_seconds=timeout,
            bigquery_insert_attempts=attempts,
        )
        return make_sink(settings, write_client)

    return build


@pytest.fixture
def clean_firestore(emulator_env: dict[str, str], firestore_client: Any) -> Any:
    host = emulator_env["FIRESTORE_EMULATOR_HOST"]
    url = f"http://{host}/emulator/v1/projects/{PROJECT}/databases/(default)/documents"
    requests.delete(url, timeout=10).raise_for_status()
    return firestore_client


@pytest.fixture
def dataset(bigquery_client: Any) -> str:
    """A fresh dataset with the call_events table and every view, unique to the test."""
    from service.stores.bigquery import create_tables_and_views

    name = f"t_{uuid.uuid4().hex[:12]}"
    create_tables_and_views(bigquery_client, name)
    return name


def query(bigquery_client: Any, sql: str, **parameters: Any) -> list[dict[str, Any]]:
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter(name, "STRING", value)
            for name, value in parameters.items()
        ]
    )
    return [dict(row) for row in bigquery_client.query(sql, job_config=config).result()]


@pytest.fixture(scope="session")
def framework_app(emulator_env: dict[str, str]) -> Any:
    """The app exactly as service/web/server.py serves it: functions-framework's app of
    service/main.py (target `app`) behind the request guard."""
    os.environ.setdefault("GOOGLE_CLOUD_PROJECT", PROJECT)
    from service.web.server import build_app

    return build_app()


@pytest.fixture
def make_client(
    framework_app: Any,
    clean_firestore: Any,
    write_api: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Any]:
    """make_client(**settings) -> a test client of the served app with a handler built from
    those settings (and optional injected clients/stores). The write API is the `write_api`
    fixture's unless a test passes bigquery_write_api; `bigquery` is that API's client."""
    from service.config import Settings
    from service.web.routes import Router

    main_module = sys.modules["main"]  # the module functions-framework loaded from service/main.py

    def build(
        *,
        firestore: Any = None,
        bigquery: Any = None,
        profile_store: Any = None,
        **settings: Any,
    ) -> Any:
        settings.setdefault("google_cloud_project", PROJECT)
        settings.setdefault("bigquery_write_api", write_api)
        if bigquery is None:
            storage = settings["bigquery_write_api"] == "storage_write"
            bigquery = request.getfixturevalue(
                "storage_write_client" if storage else "bigquery_client"
            )
        handler = Router(
            Settings(**settings),
            firestore or clean_firestore,
            bigquery_client=bigquery,
            profile_store=profile_store,
        )
        monkeypatch.setattr(main_module, "handler", handler)
        client = framework_app.test_client()
        client.handler = handler
        return client

    return build


@pytest.fixture
def hanging_endpoint() -> Iterator[str]:
    """host:port of a TCP server that accepts connections and never answers (fault injection)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(50)
    server.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


@contextlib.contextmanager
def served_service(
    env: dict[str, str], output: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The service as deployed (`python -m service.web.server`) on a free port with `env` on top of
    the current environment; yields its base URL once /health answers, and stops it after.
    `output`: a file that receives everything the process writes (stdout and stderr)."""
    from emulators import free_port

    port = free_port()
    sink = open(output, "wb") if output else None  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "service.web.server"],
        cwd=ROOT,
        env={**os.environ, **env, "PORT": str(port), "PYTHONPATH": str(ROOT)},
        stdout=sink or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if sink else subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/health", timeout=1)
                break
            except requests.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        process.wait(10)
        if sink:
            sink.close()


@pytest.fixture(autouse=True)
def rows_conform_to_bigquery(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every streamed insert and every AppendRows request any test makes is held to real
    BigQuery's rules first
    (tests/bigquery_rules.py): the emulator alone would store rows production refuses. A breach
    fails the test at teardown too: the sink would otherwise turn the refusal into a dead letter
    and the test could pass."""
    from google.cloud import bigquery

    from tests.bigquery_rules import NonConformingRow, assert_request_conforms

    original = bigquery.Client.insert_rows_json
    breaches: list[str] = []

    def checked(self: Any, table: Any, json_rows: Any, row_ids: Any = None, **kwargs: Any) -> Any:
        try:
            assert_request_conforms(list(json_rows), list(row_ids))
        except NonConformingRow as exc:
            breaches.append(str(exc))
            raise
        return original(self, table, json_rows, row_ids=row_ids, **kwargs)

    monkeypatch.setattr(bigquery.Client, "insert_rows_json", checked)

    from service.stores.storage_write import _Connection
    from tests.bigquery_rules import assert_append_request_conforms

    original_send = _Connection.send

    def checked_send(self: Any, append_request: Any) -> Any:
        # Every request the sink hands to its connection, writer schema included (the
        # connection sends that schema with its first request only).
        try:
            assert_append_request_conforms(append_request)
        except NonConformingRow as exc:
            breaches.append(str(exc))
            raise
        return original_send(self, append_request)

    monkeypatch.setattr(_Connection, "send", checked_send)
    yield
    # Each test's handlers keep an AppendRows connection open; the emulator serves a handful.
    from service.stores.storage_write import close_all_connections

    close_all_connections()
    assert not breaches, f"rows real BigQuery would refuse: {breaches}"

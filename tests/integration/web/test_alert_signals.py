"""Every log line an alert depends on is written at every LOG_LEVEL Terraform allows: the filters
of the log-based metrics in terraform/monitoring.tf, evaluated against the lines the service
really writes for a prefetch, an end-of-call, a refused request and a dead letter."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest
from google.api_core.exceptions import BadRequest

from service.config import Settings
from service.telemetry import configure_logging
from tests.conftest import PROJECT
from tests.integration.end_of_call.test_end_of_call import post
from tests.payloads import current_payload

TERRAFORM = Path(__file__).resolve().parents[3] / "terraform"
SERVICE = "millis-webhooks"


def _unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _parsed(name: str) -> dict[str, Any]:
    return hcl2.load((TERRAFORM / name).open())  # type: ignore[no-any-return]


def allowed_log_levels() -> list[str]:
    variables = {
        _unquote(name): body
        for block in _parsed("variables.tf")["variable"]
        for name, body in block.items()
    }
    log_level = variables["log_level"]
    condition = log_level["validation"][0]["condition"]
    levels = re.findall(r'"([A-Z]+)"', condition)
    assert levels, condition
    return levels


def metric_filters() -> dict[str, dict[str, str]]:
    """Each google_logging_metric's filter (and the fields its extractors read), with the
    locals and variables of monitoring.tf filled in."""
    parsed = _parsed("monitoring.tf")
    local_values = {
        _unquote(key): _unquote(value) for block in parsed["locals"] for key, value in block.items()
    }
    values = {"service_name": SERVICE, "project_id": PROJECT}

    def resolve(text: str) -> str:
        for _ in range(10):  # locals refer to locals
            text = re.sub(r"\$\{local\.([a-z_]+)\}", lambda m: str(local_values[m.group(1)]), text)
            text = re.sub(r"\$\{var\.([a-z_]+)\}", lambda m: values[m.group(1)], text)
        assert "${" not in text, text
        return text.replace('\\"', '"')

    found = {}
    for block in parsed["resource"]:
        for kind, named in block.items():
            if _unquote(kind) != "google_logging_metric":
                continue
            for name, body in named.items():
                extractors = " ".join(
                    [_unquote(body.get("value_extractor", ""))]
                    + [_unquote(v) for v in body.get("label_extractors", {}).values()]
                )
                found[_unquote(name)] = {
                    "filter": resolve(_unquote(body["filter"])),
                    "fields": " ".join(
                        re.findall(r"EXTRACT\((jsonPayload\.[a-z_]+)\)", extractors)
                    ),
                }
    assert found
    return found


# -- the subset of the Logging query language these filters use ----------------------------------

TERM = re.compile(r'^\s*([A-Za-z_.]+)\s*(=~|=|:)\s*"(.*)"\s*$')


def _field(entry: dict[str, Any], path: str) -> Any:
    value: Any = entry
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def matches(entry: dict[str, Any], query: str) -> bool:
    for term in query.split(" AND "):
        match = TERM.match(term)
        assert match, f"filter term this test cannot evaluate: {term!r}"
        path, operator, expected = match.groups()
        value = _field(entry, path)
        if value is None:
            return False
        text = json.dumps(value) if not isinstance(value, str) else value
        if operator == "=" and text != expected:
            return False
        if operator == ":" and expected not in text:
            return False
        if operator == "=~" and not re.search(expected, text):
            return False
    return True


def as_log_entry(line: str) -> dict[str, Any]:
    """A stdout JSON line as Cloud Run's logging agent stores it
    (https://cloud.google.com/run/docs/logging#special-fields): severity leaves the payload."""
    payload = json.loads(line)
    severity = payload.pop("severity", None)
    return {
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": SERVICE}},
        "logName": f"projects/{PROJECT}/logs/run.googleapis.com%2Fstdout",
        "severity": severity,
        "jsonPayload": payload,
    }


def test_the_evaluator_reads_the_filters_as_logging_does() -> None:
    entry = as_log_entry('{"severity": "INFO", "message": "webhook request", "route": "/prefetch"}')
    assert matches(
        entry, 'jsonPayload.message="webhook request" AND resource.type="cloud_run_revision"'
    )
    assert not matches(entry, 'jsonPayload.message="webhook request" AND jsonPayload.route="/x"')
    assert matches(entry, 'jsonPayload.route=~"^/(prefetch|end-of-call)$"')
    assert not matches(entry, 'jsonPayload.absent="x"')


class RefusingBigQuery:
    """Fault injection: BigQuery refuses the row, so the call becomes a dead letter."""

    def insert_rows_json(self, *args: Any, **kwargs: Any) -> Any:
        raise BadRequest("refused")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    configure_logging(Settings(google_cloud_project=PROJECT))
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("level", allowed_log_levels())
def test_every_metric_filter_matches_a_line_written_at_every_allowed_level(
    level: str,
    make_client: Any,
    dataset: str,
    restore_logging: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(Settings(google_cloud_project=PROJECT, log_level=level))
    capsys.readouterr()
    client = make_client(bigquery_dataset=dataset, webhook_tokens="tok-signals")
    token = {"X-Webhook-Token": "tok-signals"}
    assert client.get("/prefetch?agent_id=a&session_id=s", headers=token).status_code == 200
    assert post(client, current_payload("signals-1"), **token).status_code == 200
    assert post(client, current_payload("signals-2")).status_code == 401
    refusing = make_client(
        bigquery=RefusingBigQuery(), bigquery_write_api="insert_all", allow_unauthenticated=True
    )
    assert post(refusing, current_payload("signals-3")).get_json()["status"] == "dead_lettered"

    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    entries = [as_log_entry(line) for line in lines]
    for name, metric in metric_filters().items():
        hits = [entry for entry in entries if matches(entry, metric["filter"])]
        assert hits, f"{name}: no line at LOG_LEVEL={level} matches {metric['filter']}"
        for path in metric["fields"].split():
            assert all(_field(hit, path) is not None for hit in hits), (name, path)
    requests = [
        e["jsonPayload"] for e in entries if e["jsonPayload"]["message"] == "webhook request"
    ]
    accepted = {(r["route"], r["status"], r["end_of_call_accepted"]) for r in requests}
    assert {("/prefetch", 200, 0), ("/end-of-call", 200, 1), ("/end-of-call", 401, 0)} <= accepted


def test_the_request_line_names_the_route_never_the_url(
    make_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client(webhook_tokens="tok-in-the-query-1")
    capsys.readouterr()
    url = "/prefetch?agent_id=a&session_id=s&from=%2B15551234567&crm=C-777&token=tok-in-the-query-1"
    assert client.get(url).status_code == 200
    assert client.get("/prefetch/%2B15551234567?token=wrong").status_code == 404
    assert client.post("/end-of-call?token=wrong-token-2", json={}).status_code == 401
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if '"webhook request"' in line]
    assert [(line["route"], line["status"]) for line in lines] == [
        ("/prefetch", 200),
        ("other", 404),
        ("/end-of-call", 401),
    ]
    for secret in ("15551234567", "C-777", "tok-in-the-query", "wrong-token", "?"):
        assert secret not in out

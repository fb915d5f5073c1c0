"""The log formatter is the only way out (service/telemetry.py): whatever a library or gunicorn
logs, the line holds no request data it did not choose to write (issue 20, point 7)."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.config import Config

from service.config import Secret, Settings
from service.telemetry import configure_logging, loggable_id
from service.web.server import RequestSafeLogger

TOKEN = "unit-token-Zq81"
URI = "/prefetch?agent_id=a&session_id=s&token=unit-token-Zq81&from=%2B15559870123"


@pytest.fixture
def lines(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    saved = (logging.root.handlers[:], logging.root.level, threading.excepthook)
    unraisable = sys.unraisablehook
    configure_logging(
        Settings(
            google_cloud_project="unit-project",
            webhook_tokens=[Secret(TOKEN)],
            log_level="DEBUG",
        )
    )

    def read() -> list[dict[str, Any]]:
        out, err = capsys.readouterr()
        assert err == ""  # nothing bypasses the formatter
        return [json.loads(line) for line in out.splitlines()]

    yield read
    logging.root.handlers[:], _, threading.excepthook = saved
    logging.root.setLevel(saved[1])
    logging.captureWarnings(False)
    sys.unraisablehook = unraisable


def test_gunicorns_error_lines_keep_their_template_and_lose_the_request(lines: Any) -> None:
    config = Config()
    config.set("loglevel", "debug")
    logger = RequestSafeLogger(config)
    try:
        raise ValueError(f"failed on {URI}")
    except ValueError:
        logger.exception("Error handling request %s", URI)
    logger.access(None, None, {}, None)  # never an access line
    [line] = lines()
    assert line["message"] == "Error handling request %s"
    assert line["error_type"] == "ValueError" and line["logger"] == "gunicorn.error"
    assert "token" not in json.dumps(line) and "5559870123" not in json.dumps(line)


def test_a_librarys_message_formatted_before_logging_is_masked(lines: Any) -> None:
    logging.getLogger("some.library").warning(
        f"Invalid request from ip=10.1.2.3: Invalid HTTP request line: 'GET {URI}'"
    )
    logging.getLogger("flask.app").error(f"Exception on {URI} [GET], caller +1 555 987 0123")
    text = json.dumps(lines())
    for leaked in ("10.1.2.3", "unit-token", "from=", "555 987 0123", "5559870123"):
        assert leaked not in text


def test_a_librarys_arguments_and_extra_fields_are_never_written(lines: Any) -> None:
    logging.getLogger("opentelemetry.x").warning("bad header %s", "planted", extra={"h": "p2"})
    [line] = lines()
    assert line["message"] == "bad header %s" and "planted" not in json.dumps(line)
    assert "h" not in line


def test_configured_secrets_are_masked_even_in_our_own_lines(lines: Any) -> None:
    logging.getLogger("service").warning("refused", extra={"sent": f"Bearer {TOKEN}"})
    [line] = lines()
    assert TOKEN not in json.dumps(line) and line["sent"] == "Bearer [secret]"


@pytest.mark.parametrize(
    ("value", "logged"),
    [
        ("agent-1", "agent-1"),
        ("sess_ABC-123", "sess_ABC-123"),
        ("+15559870123", "(withheld)"),
        ("15559870123", "(withheld)"),
        ("a" * 65, "(withheld)"),
        ("a b", "(withheld)"),
        ("ok\n", "(withheld)"),
        (None, "(withheld)"),
    ],
)
def test_identifiers_are_logged_only_when_shaped_like_ids(value: Any, logged: str) -> None:
    assert loggable_id(value) == logged


def test_a_failing_record_and_a_thread_crash_write_no_details(lines: Any) -> None:
    logging.getLogger("service").error("broken %s %s", "only-one-planted")  # bad arguments
    thread = threading.Thread(target=lambda: 1 / 0)
    thread.start()
    thread.join()
    text = json.dumps(lines())
    assert "only-one-planted" not in text and "Traceback" not in text
    assert "ZeroDivisionError" in text

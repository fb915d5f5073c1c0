"""The REST reader the prefetch uses (service/prefetch/firestore_rest.py) against the emulator: the
same plain documents as the google-cloud-firestore client gives, every Firestore type included, and
a bounded failure when Firestore hangs or refuses."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from emulators import free_port
from google.cloud.firestore import GeoPoint
from google.cloud.firestore_v1.vector import Vector

from service.prefetch.firestore_rest import ReadError, RestDocumentReader
from service.prefetch.profiles import ClientDocumentReader
from tests.conftest import PROJECT

EVERY_TYPE: dict[str, Any] = {
    "text": "Ann Lee — 李安 😀",
    "empty_text": "",
    "integer": 42,
    "int64_max": 2**63 - 1,
    "negative": -7,
    "double": 2.5,
    "whole_double": 3.0,
    "nan": float("nan"),
    "infinity": float("inf"),
    "minus_infinity": float("-inf"),
    "true": True,
    "false": False,
    "null": None,
    "timestamp": datetime(2026, 11, 29, 8, 30, 15, 123456, tzinfo=UTC),
    "timestamp_whole_second": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    "geo": GeoPoint(1.5, -2.25),
    "bytes": b"\x00\x01",
    "map": {"tier": "gold", "nested": {"level": 2, "nan": float("nan")}, "dropped": b"x"},
    "empty_map": {},
    "array": ["a", 1, 2.5, None, True, {"k": "v", "l": [1]}, b"dropped", float("inf")],
    "empty_array": [],
    "vector": Vector([0.5, 1.0, -2.0]),
    "extra_prompt": "Caller {name}",
}


@pytest.fixture
def reader(clean_firestore: Any) -> RestDocumentReader:
    return RestDocumentReader(PROJECT, "(default)")


def test_documents_equal_the_clients_for_every_type(
    clean_firestore: Any, reader: RestDocumentReader
) -> None:
    clean_firestore.collection("profiles").document("+15551234567").set(EVERY_TYPE)
    clean_firestore.collection("profiles").document("lookup:crm_id:C-1").set({"a": 1})
    clean_firestore.collection("agents").document("agent-1").set(
        {"reference": clean_firestore.document("profiles/x"), "name": "Agent"}
    )
    paths = [
        ("profiles", "+15551234567"),
        ("profiles", "lookup:crm_id:C-1"),
        ("agents", "agent-1"),
        ("profiles", "+15550000000"),  # missing
    ]
    ours = reader.get_documents(paths, 5)
    theirs = ClientDocumentReader(clean_firestore).get_documents(paths, 5)
    assert ours == theirs
    assert ours[("profiles", "+15550000000")] is None
    assert ours[("agents", "agent-1")] == {"name": "Agent"}  # the reference is dropped
    document = ours[("profiles", "+15551234567")]
    assert document is not None
    assert document["int64_max"] == 2**63 - 1 and isinstance(document["whole_double"], float)
    assert document["timestamp"] == "2026-11-29T08:30:15.123456+00:00"
    assert {"nan", "infinity", "minus_infinity", "bytes"}.isdisjoint(document)


def test_many_documents_in_one_call(clean_firestore: Any, reader: RestDocumentReader) -> None:
    batch = clean_firestore.batch()
    for index in range(300):
        batch.set(
            clean_firestore.collection("profiles").document(f"+1555{index:07d}"), {"i": index}
        )
    batch.commit()
    paths = [("profiles", f"+1555{index:07d}") for index in range(400)]
    documents = reader.get_documents(paths, 5)
    assert len(documents) == 400
    assert all(documents[path] == {"i": index} for index, path in enumerate(paths[:300]))
    assert all(documents[path] is None for path in paths[300:])


def test_a_hanging_firestore_fails_within_the_timeout(hanging_endpoint: str) -> None:
    reader = RestDocumentReader(PROJECT, "(default)", emulator_host=hanging_endpoint)
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        reader.get_documents([("profiles", "+15551234567")], 0.3)
    assert time.monotonic() - started < 1.5
    assert "TimeoutError" in type(raised.value).__name__ or "Timeout" in repr(raised.value)


def test_a_refusing_firestore_fails_at_once() -> None:
    reader = RestDocumentReader(PROJECT, "(default)", emulator_host=f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(Exception):  # urllib3's connection error
        reader.get_documents([("profiles", "+15551234567")], 2)
    assert time.monotonic() - started < 1.0


def test_an_error_status_is_a_read_error_without_the_answer_body(clean_firestore: Any) -> None:
    reader = RestDocumentReader("INVALID PROJECT", "(default)")
    with pytest.raises(ReadError) as raised:
        reader.get_documents([("profiles", "+15551234567")], 5)
    # the status only: Firestore's error text can quote the request (document names: numbers)
    assert re.fullmatch(r"batchGet answered [45]\d\d", str(raised.value))


def test_on_google_cloud_each_read_carries_the_credentials_token() -> None:
    # Off the emulator the reader authorises with google-auth's credentials; a local endpoint
    # stands in for firestore.googleapis.com to show what is sent (no network here).
    from google.oauth2.credentials import Credentials

    seen: list[dict[str, str]] = []

    class Firestore(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(dict(self.headers))
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            # an entry for a name nobody asked for, then the answers
            foreign = {"found": {"name": "projects/x/databases/y/documents/a/b", "fields": {}}}
            entries = [foreign, {"readTime": "2026-11-29T00:00:00Z"}]
            entries += [{"missing": name} for name in body["documents"]]
            answer = json.dumps(entries).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Firestore)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        reader = RestDocumentReader(
            PROJECT,
            "(default)",
            emulator_host="",
            credentials=Credentials(token="token-1"),  # type: ignore[no-untyped-call]
            api_endpoint=f"http://127.0.0.1:{server.server_address[1]}",
        )
        assert reader.get_documents([("profiles", "+15551234567")], 5) == {
            ("profiles", "+15551234567"): None
        }
    finally:
        server.shutdown()
    assert {k.lower(): v for k, v in seen[0].items()}["authorization"] == "Bearer token-1"

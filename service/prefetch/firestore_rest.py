"""Profile reads over Firestore's REST API: `documents:batchGet` through google-auth's urllib3
transport.

Why not the google-cloud-firestore client on this path: importing it (with gRPC and
google-api-core) took 0.53 s and 38 MB of a new instance's start, and a read cost about twice the
CPU of this one (0.5-0.6 ms against 0.26-0.33 ms a call, measured on the emulator; README,
"Cold start and memory"). The prefetch needs one call; the full client stays for everything
else (dead letters, scripts, tests), imported only when used.

Documents come back as plain JSON-safe values, exactly as `service.prefetch.profiles.to_plain` makes
them from the client's snapshots (tested side by side on the emulator): references, bytes and
non-finite numbers are dropped, timestamps become ISO 8601 text, geo points maps, vectors lists.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import urllib3

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

FIRESTORE_URL = "https://firestore.googleapis.com"
SCOPES = ("https://www.googleapis.com/auth/datastore",)
_DROP = object()


class ReadError(Exception):
    """Firestore answered with an error status; the message holds the status only."""


class RestDocumentReader:
    """Reads documents of one database by collection and id, within a deadline per call."""

    def __init__(
        self,
        project: str,
        database: str,
        *,
        emulator_host: str | None = None,
        credentials: Credentials | None = None,
        api_endpoint: str = FIRESTORE_URL,
        max_connections: int = 64,
    ) -> None:
        if emulator_host is None:  # "" means Google Cloud even when the variable is set
            emulator_host = os.environ.get("FIRESTORE_EMULATOR_HOST")
        self.database = f"projects/{project}/databases/{database}"
        self.headers = {"Content-Type": "application/json"}
        # One pool per instance; keep-alive connections shared by the request threads.
        pool = urllib3.PoolManager(maxsize=max_connections, block=False, retries=False)
        self.http: Any
        if emulator_host:
            self.url = f"http://{emulator_host}/v1/{self.database}/documents:batchGet"
            self.headers["Authorization"] = "Bearer owner"  # the emulator's admin access
            self.http = pool
        else:
            # Imported here: the credentials and their transport (google-auth's service account
            # and cryptography modules among them) are for Google Cloud only.
            import google.auth
            from google.auth.transport.urllib3 import AuthorizedHttp

            if credentials is None:
                credentials, _ = google.auth.default(scopes=SCOPES)
            self.url = f"{api_endpoint}/v1/{self.database}/documents:batchGet"
            # Refreshes the access token when it expires and once more on a 401.
            self.http = AuthorizedHttp(credentials, http=pool)  # type: ignore[no-untyped-call]

    def get_documents(
        self, paths: Sequence[tuple[str, str]], timeout: float
    ) -> dict[tuple[str, str], dict[str, Any] | None]:
        """{(collection, id): fields as plain values, or None when the document does not exist}.
        Raises ReadError, urllib3's errors (TimeoutError among them) or google-auth's."""
        names = {
            f"{self.database}/documents/{collection}/{doc}": (collection, doc)
            for collection, doc in paths
        }
        response = self.http.urlopen(
            "POST",
            self.url,
            body=json.dumps({"documents": list(names)}).encode(),
            headers=self.headers,
            timeout=urllib3.Timeout(total=max(timeout, 0.001)),
        )
        if response.status != 200:
            raise ReadError(f"batchGet answered {response.status}")
        found: dict[tuple[str, str], dict[str, Any] | None] = {}
        for entry in json.loads(response.data):
            # A name we did not ask for is ignored: what was asked and not answered stays unread.
            if "found" in entry and entry["found"].get("name") in names:
                document = entry["found"]
                found[names[document["name"]]] = decode_fields(document.get("fields", {}))
            elif entry.get("missing") in names:
                found[names[entry["missing"]]] = None
        return found


def decode_fields(fields: dict[str, Any]) -> dict[str, Any]:
    decoded = {key: decode_value(value) for key, value in fields.items()}
    return {key: value for key, value in decoded.items() if value is not _DROP}


def decode_value(value: dict[str, Any]) -> Any:
    """One Firestore REST `Value` -> a plain value (or _DROP)."""
    if "stringValue" in value:
        return value["stringValue"]
    if "integerValue" in value:
        return int(value["integerValue"])  # int64 travels as text
    if "doubleValue" in value:
        number = value["doubleValue"]
        if isinstance(number, str):  # "NaN", "Infinity", "-Infinity"
            return _DROP
        number = float(number)
        return number if math.isfinite(number) else _DROP
    if "booleanValue" in value:
        return bool(value["booleanValue"])
    if "nullValue" in value:
        return None
    if "timestampValue" in value:
        return _timestamp(value["timestampValue"])
    if "mapValue" in value:
        fields = value["mapValue"].get("fields", {})
        if _is_vector(fields):
            return [float(item.get("doubleValue", 0)) for item in _array(fields["value"])]
        return decode_fields(fields)
    if "arrayValue" in value:
        items = (decode_value(item) for item in _array(value))
        return [item for item in items if item is not _DROP]
    if "geoPointValue" in value:
        point = value["geoPointValue"]
        return {"latitude": point.get("latitude", 0.0), "longitude": point.get("longitude", 0.0)}
    return _DROP  # referenceValue, bytesValue and anything without a JSON meaning


def _array(value: dict[str, Any]) -> list[dict[str, Any]]:
    return list(value.get("arrayValue", {}).get("values", []))


def _is_vector(fields: dict[str, Any]) -> bool:
    kind = fields.get("__type__", {}).get("stringValue")
    return kind == "__vector__" and "arrayValue" in fields.get("value", {})


def _timestamp(text: str) -> str:
    """RFC 3339 with up to nanoseconds -> the isoformat() of the client's datetimes."""
    head, _, fraction = text.rstrip("Z").partition(".")
    moment = datetime.fromisoformat(head + "+00:00")
    if fraction:
        moment = moment.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    return moment.isoformat()

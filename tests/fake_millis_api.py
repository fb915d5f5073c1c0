"""A small local fake of the Millis call-log API (the documented subset the backfill uses)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


class FakeMillisApi:
    def __init__(self, calls: list[dict[str, Any]], api_key: str = "test-key") -> None:
        self.calls = sorted(calls, key=lambda call: call.get("ts") or 0)
        self.api_key = api_key
        self.fail_next: list[int] = []  # status codes to answer before behaving (e.g. [503, 429])
        self.requests: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.requests.append(request.full_path)
        return self.respond(request)(environ, start_response)

    def respond(self, request: Request) -> Response:
        if request.headers.get("Authorization") != self.api_key:
            return self.json({"detail": "unauthorized"}, 401)
        if self.fail_next:
            return self.json({"detail": "try again"}, self.fail_next.pop(0))
        if request.path == "/call-logs":
            return self.page(request.args)
        if request.path.startswith("/call-logs/"):
            session_id = unquote(request.path.removeprefix("/call-logs/"))
            found = [call for call in self.calls if call.get("session_id") == session_id]
            return self.json(found[0]) if found else self.json({"detail": "not found"}, 404)
        return self.json({"detail": "no route"}, 404)

    def page(self, args: Any) -> Response:
        limit = min(int(args.get("limit", 100)), 100)
        start, end = float(args.get("start_time", 0)), float(args.get("end_time", 1e12))
        after = float(args.get("start_after_ts", "-inf"))
        matching = [
            call
            for call in self.calls
            if start <= (call.get("ts") or 0) < end
            and (call.get("ts") or 0) > after
            and args.get("agent_id") in (None, call.get("agent_id"))
        ]
        page = matching[:limit]
        cursor = page[-1]["ts"] if len(matching) > limit else None
        return self.json({"histories": page, "next_cursor": cursor})

    @staticmethod
    def json(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, mimetype="application/json")


@contextmanager
def serving(api: FakeMillisApi) -> Iterator[str]:
    """Serve the fake on a free port of 127.0.0.1; yield its base URL."""
    server = make_server("127.0.0.1", 0, api, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()

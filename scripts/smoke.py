#!/usr/bin/env python3
"""Smoke test of a running service: both webhooks with a test profile, and the BigQuery row.

    ./scripts/smoke.py                          # the stack of ./scripts/dev
    ./scripts/smoke.py --url https://millis-webhooks-xyz.a.run.app --token TOKEN \
        --project my-project [--dataset millis] [--database "(default)"]

Creates a profile for a fictitious number (555-01xx range) and a phone agent of its own
(`caller_numbers: phone`), calls the prefetch webhook and checks the profile comes back, posts an
end-of-call payload and polls BigQuery until the row arrives, then deletes the profile and the
agent. Prints PASS or FAIL. Without --url, --token and --project it tests the stack of
./scripts/dev; with --project (or GOOGLE_CLOUD_PROJECT) it reads Google Cloud with your
Application Default Credentials. Exit codes: 0 PASS, 1 FAIL, 2 could not run.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))

import toolkit  # first: the project's Python and modules

import requests


def main(argv: list[str] | None = None) -> int:
    parser = toolkit.parser(__doc__)
    parser.add_argument("--url", help="service URL (terraform output service_url)")
    parser.add_argument("--token", help="webhook token")
    parser.add_argument("--project", help="Google Cloud project (default GOOGLE_CLOUD_PROJECT)")
    parser.add_argument("--dataset", default="millis")
    parser.add_argument("--database", default="(default)")
    parser.add_argument("--timeout", type=float, default=90, help="seconds to wait for the row")
    args = parser.parse_args(argv)
    if args.project:
        os.environ["GOOGLE_CLOUD_PROJECT"] = args.project
    toolkit.use_stack("smoke")
    args.project = os.environ["GOOGLE_CLOUD_PROJECT"]
    args.url = args.url or os.environ.get("SERVICE_URL")
    args.token = args.token or (os.environ.get("WEBHOOK_TOKENS") or "").split(",")[0]
    if not args.url or not args.token:
        parser.error("give --url and --token (terraform output service_url and webhook_token)")

    from google.cloud import bigquery

    from service.stores.bigquery import make_client as bigquery_client
    from service.stores.firestore import make_client as firestore_client

    base = args.url.rstrip("/")
    headers = {"Authorization": f"Bearer {args.token}"}
    number = f"+1555010{random.randrange(10_000):04d}"  # 555-01xx: reserved for fiction
    session_id = f"smoke-{uuid.uuid4()}"
    firestore = firestore_client(args.project, args.database)
    profile = firestore.collection("profiles").document(number)
    profile.set({"name": "Smoke Test", "smoke_session": session_id})
    # A phone agent of its own (numbers identify callers only for agents that say so), removed
    # after, like the profile.
    agent_id = f"smoke-{uuid.uuid4().hex[:12]}"
    agent = firestore.collection("agents").document(agent_id)
    agent.set({"caller_numbers": "phone"})
    failures: list[str] = []
    try:
        answer = requests.get(
            f"{base}/prefetch",
            params={"agent_id": agent_id, "session_id": session_id, "from": number},
            headers=headers,
            timeout=10,
        )
        body = answer.json() if answer.ok else {}
        metadata = body.get("metadata", body)
        if answer.status_code != 200 or metadata.get("smoke_session") != session_id:
            failures.append(f"prefetch: HTTP {answer.status_code}, {json.dumps(body)[:200]}")

        payload = {
            "session_id": session_id,
            "agent_id": "smoke",
            "ts": time.time(),
            "duration": 1.0,
            "chat": json.dumps([{"role": "user", "content": "smoke test"}]),
            "cost_breakdown": [],
            "voip": {"from": number, "to": "+15550100000"},
            "metadata": {"smoke": True},
        }
        stored = requests.post(f"{base}/end-of-call", json=payload, headers=headers, timeout=30)
        if stored.status_code != 200:
            failures.append(f"end-of-call: HTTP {stored.status_code}, {stored.text[:200]}")
        elif stored.json().get("status") != "inserted":
            failures.append(f"end-of-call: {stored.json()} (BigQuery did not take it at once)")

        client = bigquery_client(args.project)
        sql = f"SELECT session_id FROM `{args.project}.{args.dataset}.call_events` WHERE session_id = @id"
        config = bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("id", "STRING", session_id)]
        )
        deadline = time.monotonic() + args.timeout
        while not list(client.query(sql, job_config=config).result()):
            if time.monotonic() > deadline:
                failures.append(f"bigquery: no row for {session_id} after {args.timeout:.0f}s")
                break
            time.sleep(3)
    finally:
        profile.delete()
        agent.delete()

    if failures:
        print("FAIL\n  " + "\n  ".join(failures))
        return 1
    print(f"PASS: prefetch answered the test profile; session {session_id} is in BigQuery")
    return 0


if __name__ == "__main__":
    toolkit.run("smoke", main)

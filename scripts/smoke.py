"""Smoke test of a deployed service: both webhooks with a test profile, and the BigQuery row.

    uv run python scripts/smoke.py --url https://millis-webhooks-xyz.a.run.app \\
        --token TOKEN --project my-project [--dataset millis] [--database "(default)"]

Creates a profile for a fictitious number (555-01xx range) and a phone agent
(`caller_numbers: phone`), calls the prefetch webhook and checks the profile comes back, posts an end-of-call payload and polls BigQuery until the row
arrives, then deletes the profile and the agent. Prints PASS or FAIL; exit code 0 only on PASS. Uses your
Application Default Credentials for Firestore and BigQuery (or the emulators named by
FIRESTORE_EMULATOR_HOST and BIGQUERY_EMULATOR_HOST, as in its test).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--url", required=True, help="service URL (terraform output service_url)")
    parser.add_argument("--token", required=True, help="webhook token")
    parser.add_argument("--project", required=True)
    parser.add_argument("--dataset", default="millis")
    parser.add_argument("--database", default="(default)")
    parser.add_argument("--timeout", type=float, default=90, help="seconds to wait for the row")
    args = parser.parse_args(argv)

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
    sys.exit(main())

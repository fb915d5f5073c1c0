"""Demo profiles and agent defaults, seeded by `scripts/dev` and used by the tests."""

from __future__ import annotations

import functools
import json
import uuid
from datetime import UTC, datetime
from typing import Any

DEMO_AGENT_ID = "demo-agent"

DEMO_AGENTS: dict[str, dict[str, Any]] = {
    DEMO_AGENT_ID: {
        "company": "Acme Dental",
        "opening_hours": "Mon-Fri 9:00-17:00",
        "extra_prompt": "You work for {company}. Opening hours: {opening_hours}.",
        "response_format": "current",
        # A phone agent: Millis's from/to identify the caller (docs/profiles.md, Caller identity).
        "caller_numbers": "phone",
    },
    "demo-agent-original": {
        "company": "Acme Dental",
        "response_format": "original",
        "caller_numbers": "phone",
    },
}

DEMO_PROFILES: dict[str, dict[str, Any]] = {
    "+15551234567": {
        "name": "John Doe",
        "account_balance": "$100",
        "tier": "premium",
        "extra_prompt": "The caller is {name}, a {tier} customer. Greet them by name.",
    },
    "+447700900123": {
        "name": "Jane Smith",
        "language": "en-GB",
        "next_appointment": "2026-12-01 10:30",
        "extra_prompt": "The caller is {name}; their next appointment is {next_appointment}.",
    },
    "+33612345678": {"name": "Marie Curie", "agents": ["another-agent"]},
}


def seed(firestore_client: Any, profiles: str = "profiles", agents: str = "agents") -> None:
    batch = firestore_client.batch()
    for agent_id, fields in DEMO_AGENTS.items():
        batch.set(firestore_client.collection(agents).document(agent_id), fields)
    for number, fields in DEMO_PROFILES.items():
        batch.set(firestore_client.collection(profiles).document(number), fields)
    batch.commit()


def demo_end_of_call(
    session_id: str, agent_id: str = DEMO_AGENT_ID, messages: int = 20
) -> dict[str, Any]:
    """A current-format end-of-call payload with a transcript of `messages` messages."""
    import json
    import time

    chat = [
        {"role": "assistant" if i % 2 else "user", "content": f"Message {i} of a realistic call."}
        for i in range(messages)
    ]
    return {
        "session_id": session_id,
        "call_id": f"call-{session_id}",
        "agent_id": agent_id,
        "chat": json.dumps(chat),
        "ts": time.time() - 120,
        "duration": 95.4,
        "chars_used": 812,
        "agent_config": {"prompt": "You are Ava.", "tools": [{"headers": {"X-Key": "secret"}}]},
        "cost_breakdown": [
            {"type": "llm", "credit": 0.0043, "provider": "openai"},
            {"type": "tts", "credit": 0.012, "provider": "elevenlabs"},
        ],
        "voip": {"provider": "twilio", "from": "+15551234567", "to": "+15550001111"},
        "metadata": {"campaign": "winter"},
        "call_status": "user-ended",
    }


@functools.cache
def _redactor() -> Any:
    from service.config import Settings
    from service.end_of_call.redaction import Redactor

    return Redactor.from_settings(Settings(google_cloud_project="demo-millis"))


def demo_row() -> dict[str, Any]:
    """A new demo call as the service stores it: what the benchmarks' direct inserts send."""
    from service.end_of_call.normalise import normalise_call, parse_payload

    raw = demo_end_of_call(uuid.uuid4().hex)
    return normalise_call(
        raw,
        parse_payload(raw),
        received_at=datetime.now(UTC),
        source="webhook",
        redactor=_redactor(),
        store_agent_config=True,
    )


def demo_end_of_call_requests(count: int) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """`count` end-of-call webhooks for new demo calls, as the benchmarks' load generator sends
    them: (method, path, body, headers)."""
    headers = {"Content-Type": "application/json"}
    return [
        ("POST", "/end-of-call", json.dumps(demo_end_of_call(uuid.uuid4().hex)).encode(), headers)
        for _ in range(count)
    ]

"""Demo profiles and agent defaults, seeded by `scripts/dev` and used by the tests."""

from __future__ import annotations

from typing import Any

DEMO_AGENT_ID = "demo-agent"

DEMO_AGENTS: dict[str, dict[str, Any]] = {
    DEMO_AGENT_ID: {
        "company": "Acme Dental",
        "opening_hours": "Mon-Fri 9:00-17:00",
        "extra_prompt": "You work for {company}. Opening hours: {opening_hours}.",
        "response_format": "current",
    },
    "demo-agent-original": {"company": "Acme Dental", "response_format": "original"},
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

"""Realistic Millis end-of-call payloads in both formats (shapes from ../shared/spec)."""

from __future__ import annotations

import json
from typing import Any

AGENT_CONFIG: dict[str, Any] = {
    "prompt": "You are Ava, the receptionist of Acme Dental. Never reveal internal notes.",
    "voice": {"provider": "elevenlabs", "voice_id": "21m00Tcm4TlvDq8ikWAM"},
    "llm": {
        "model": "gpt-4o-mini",
        "temperature": 0.4,
        "max_tokens": 300,
        "api_key": "sk-live-llm-123",
    },
    "tools": [
        {
            "name": "book_appointment",
            "description": "Books an appointment",
            "webhook": "https://crm.example.com/api/book?api_key=crm-secret-456&source=millis",
            "headers": {"Authorization": "Bearer crm-bearer-789", "X-Tenant": "acme"},
            "params": [{"name": "date", "type": "string", "required": True}],
        }
    ],
    "extra_prompt_webhook": {
        "url": "https://hooks.example.com/prefetch?token=prefetch-token-abc",
        "headers": {"X-Webhook-Token": "prefetch-header-def"},
    },
    "session_data_webhook": "https://hooks.example.com/end-of-call?token=eoc-token-ghi",
    "keywords": ["Acme", "dental"],
}
SECRETS = [
    "sk-live-llm-123",
    "crm-secret-456",
    "crm-bearer-789",
    "prefetch-token-abc",
    "prefetch-header-def",
    "eoc-token-ghi",
]

CHAT = [
    {"role": "assistant", "content": "Hello, Acme Dental, how can I help?"},
    {"role": "user", "content": "I'd like to book a cleaning — next Tuesday?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "book_appointment", "arguments": '{"date": "2026-12-01"}'},
            }
        ],
    },
    {
        "role": "tool",
        "content": '{"ok": true}',
        "tool_call_id": "call_1",
        "name": "book_appointment",
    },
    {"role": "assistant", "content": "Booked for Tuesday at 10:30."},
]


def original_payload(session_id: str = "xyz789", **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "chat": [{"role": "user", "content": "Hello"}],
        "ts": "2024-08-06T12:00:00Z",
        "duration": 300,
        "agent_config": {},
        "agent_id": "abc123",
        "chars_used": 500,
        "session_id": session_id,
        "cost_breakdown": [
            {"type": "stt", "credit": 123, "provider": "elevenlabs"},
            {"type": "llm", "credit": 12, "provider": "openai"},
        ],
        "voip": {"from": "+1234567890", "to": "+0987654321"},
        "metadata": {"name": "John"},
    }
    payload.update(overrides)
    return payload


def current_payload(session_id: str = "sess-current-1", **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "session_id": session_id,
        "call_id": "call-42",
        "agent_id": "agent-ava",
        "chat": json.dumps(CHAT),
        "ts": 1729840680.886249,
        "duration": 95.4,
        "chars_used": 812,
        "agent_config": AGENT_CONFIG,
        "cost_breakdown": [
            {"type": "millis", "credit": 0.0095, "provider": "millis"},
            {"type": "llm", "credit": 0.0043, "provider": "openai"},
            {"type": "tts", "credit": 0.012, "provider": "elevenlabs"},
            {"type": "stt", "credit": 0.002, "provider": "deepgram"},
        ],
        "voip": {"provider": "twilio", "from": "+15551234567", "to": "+15550001111"},
        "metadata": {"crm_id": "C-1001", "campaign": "winter"},
        "function_calls": [{"name": "book_appointment", "params": {"date": "2026-12-01"}}],
        "recording": {"recording_url": "https://recordings.example.com/sess-current-1.wav"},
        "call_status": "user-ended",
        "error_message": None,
        "sentiment": "positive",
    }
    payload.update(overrides)
    return payload


def stored_row(session_id: str, *, store_agent_config: bool = True) -> dict[str, Any]:
    """The current-format payload of `session_id` as the service stores it, received now."""
    from datetime import UTC, datetime

    from service.end_of_call.normalise import normalise_call, parse_payload
    from service.end_of_call.redaction import Redactor

    raw = current_payload(session_id)
    return normalise_call(
        raw,
        parse_payload(raw),
        received_at=datetime.now(UTC),
        source="webhook",
        redactor=Redactor(["token"]),
        store_agent_config=store_agent_config,
    )

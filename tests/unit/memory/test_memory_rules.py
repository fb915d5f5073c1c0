"""Caller memory rules without I/O: settings, contributions, merging, what the prefetch shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.memory.record import Contribution, bounded, call_time, contribution, merged
from service.memory.serve import ago, readable, served_memory
from service.memory.settings import memory_problems, memory_settings

MOMENT = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)


def test_memory_is_off_unless_enabled_and_every_setting_is_right() -> None:
    assert memory_settings("a", None) is None
    assert memory_settings("a", {}) is None
    assert memory_settings("a", {"memory": {"enabled": "true"}}) is None
    assert memory_settings("a", {"memory": {"enabled": True, "calls": 21}}) is None
    assert memory_settings("a", {"memory": {"enabled": True}, "disabled": True}) is None
    settings = memory_settings("a", {"memory": {"enabled": True}})
    assert settings is not None and (settings.calls, settings.scope) == (5, "agent:a")
    grouped = memory_settings("a", {"memory": {"enabled": True, "group": "desk"}})
    assert grouped is not None and grouped.scope == "group:desk"
    assert memory_problems({"memory": None}) == ["memory must be a map"]
    assert memory_problems({"memory": {"metadata_keys": ["ok", "not ok"]}}) == [
        "memory.metadata_keys must be a list of at most 20 field names"
    ]


def test_a_contribution_keeps_only_the_named_values_bounded() -> None:
    settings = memory_settings(
        "a",
        {
            "memory": {
                "enabled": True,
                "metadata_keys": ["topic"],
                "tool_params": {"save_note": ["note"]},
            }
        },
    )
    assert settings is not None
    row = {
        "session_id": "s",
        "agent_id": "a",
        "started_at": "2026-12-05T09:30:00+00:00",
        "call_status": "ended",
        "duration_seconds": 12,
        "metadata": '{"topic": "billing", "secret": "not kept"}',
        "function_calls": [
            {"name": "save_note", "params": '{"note": "first", "x": 1}'},
            {"name": "save_note", "params": {"note": "second"}},
            {"name": "other", "params": '{"note": "not kept"}'},
        ],
    }
    call = contribution(row, settings)
    assert (call.metadata, call.tools) == ({"topic": "billing"}, {"save_note": {"note": "second"}})
    assert call.call_at == MOMENT and call.duration_seconds == 12.0
    assert bounded("x" * 600) == "x" * 500
    assert bounded(2**70) == str(2**70)
    assert bounded({"a": [[1]]}) == '{"a": [[1]]}'


def test_a_call_is_dated_by_ts_even_outside_the_streaming_window() -> None:
    row = {"started_at": MOMENT.isoformat(), "ts_out_of_range": True, "ts_reported": "1700000000"}
    assert call_time(row) == datetime.fromtimestamp(1_700_000_000, UTC)
    row["ts_reported"] = "2001-01-01T00:00:00Z"
    assert call_time(row) == datetime(2001, 1, 1, tzinfo=UTC)
    row["ts_reported"] = "not a time"
    assert call_time(row) == MOMENT


def test_merging_replaces_a_session_and_keeps_the_latest_calls() -> None:
    def call(session: str, hours: int, topic: str) -> Contribution:
        return Contribution(
            session, MOMENT + timedelta(hours=hours), "a", "ended", 1.0, {"topic": topic}
        )

    expires = MOMENT + timedelta(days=1)
    memory = merged({}, call("s2", 2, "two"), 2, False, expires)
    memory = merged(memory, call("s1", 1, "one"), 2, False, expires)
    memory = merged(memory, call("s2", 2, "two, corrected"), 2, True, expires)
    assert memory["calls"] == 2
    assert [entry["session_id"] for entry in memory["recent"]] == ["s1", "s2"]
    assert memory["metadata"] == {"topic": "two, corrected"}
    memory = merged(memory, call("s0", 0, "zero"), 2, False, expires)  # older than both
    assert memory["calls"] == 3 and memory["first_call_at"] == MOMENT
    assert [entry["session_id"] for entry in memory["recent"]] == ["s1", "s2"]
    assert memory["last_session_id"] == "s2"


def test_the_prefetch_shows_a_readable_last_call_and_never_an_empty_memory() -> None:
    assert served_memory(None, MOMENT) is None
    assert served_memory({"calls": 0}, MOMENT) is None
    document = {"calls": 2, "last_call_at": "2026-12-05T09:30:00+00:00", "recent": [{}]}
    served = served_memory(document, MOMENT + timedelta(days=3, hours=2))
    assert served == {
        "calls": 2,
        "last_call_at": "2026-12-05T09:30:00+00:00",
        "last_call": "Saturday 5 December 2026, 09:30 UTC",
        "last_call_ago": "3 days ago",
    }
    assert readable(MOMENT) == "Saturday 5 December 2026, 09:30 UTC"
    assert [
        ago(MOMENT, MOMENT + delta)
        for delta in (
            timedelta(seconds=30),
            timedelta(minutes=1, seconds=40),
            timedelta(hours=1),
            timedelta(hours=2),
            timedelta(hours=35),
            timedelta(days=1, hours=13),
        )
    ] == ["just now", "2 minutes ago", "60 minutes ago", "2 hours ago", "35 hours ago", "1 day ago"]

"""scripts/report.py on the BigQuery emulator: the numbers it plots are the views' numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from report import load, write

from tests.conftest import PROJECT, query
from tests.integration.end_of_call.test_end_of_call import post
from tests.payloads import original_payload


def flat(series: dict[Any, dict[str, float]]) -> dict[tuple[Any, str], float]:
    return {(day, name): value for day, values in series.items() for name, value in values.items()}


def test_report_numbers_match_the_views_and_the_files_are_self_contained(
    make_client: Any, bigquery_client: Any, dataset: str, tmp_path: Path
) -> None:
    client = make_client(bigquery_dataset=dataset)
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    calls = [
        ("a-1", "agent-a", 0, [("llm", "openai", 1.5), ("tts", "elevenlabs", 0.5)]),
        ("a-2", "agent-a", 1, [("llm", "openai", 2.0)]),
        ("b-1", "agent-b", 1, [("stt", "deepgram", 0.25), ("llm", None, 1.0)]),
        ("old", "agent-b", 40, [("llm", "openai", 9.0)]),  # outside the range
    ]
    for session_id, agent, days_ago, costs in calls:
        breakdown = [{"type": t, "provider": p, "credit": c} for t, p, c in costs]
        body = original_payload(
            session_id,
            agent_id=agent,
            ts=(today - timedelta(days=days_ago)).isoformat(),
            cost_breakdown=breakdown,
        )
        assert post(client, body).status_code == 200
    start, end = (today - timedelta(days=7)).date(), today.date()

    report = load(bigquery_client, dataset, start, end, None)
    daily = query(
        bigquery_client,
        f"SELECT call_date, agent_id, total_credit FROM `{PROJECT}.{dataset}.cost_daily_by_agent` "
        f"WHERE call_date BETWEEN '{start}' AND '{end}'",
    )
    assert {(r["call_date"], r["agent_id"]): r["total_credit"] for r in daily} == {
        (day, agent): credit
        for day, agents in report.by_agent.items()
        for agent, credit in agents.items()
    }
    assert report.by_agent[today.date()] == {"agent-a": 2.0}
    providers = query(
        bigquery_client,
        f"SELECT call_date, provider, SUM(credit) AS credit "
        f"FROM `{PROJECT}.{dataset}.cost_by_provider` "
        f"WHERE call_date BETWEEN '{start}' AND '{end}' GROUP BY 1, 2",
    )
    assert {(r["call_date"], r["provider"] or "(none)"): r["credit"] for r in providers} == {
        (day, name): credit
        for day, names in report.by_provider.items()
        for name, credit in names.items()
    }
    yesterday = (today - timedelta(days=1)).date()
    assert report.by_provider[yesterday] == {"openai": 2.0, "deepgram": 0.25, "(none)": 1.0}

    only_b = load(bigquery_client, dataset, start, end, "agent-b")
    assert only_b.by_agent == {yesterday: {"agent-b": 1.25}}

    # Calls and minutes per day from the same table function; every day of the range is drawn.
    assert report.calls == {today.date(): 1, yesterday: 2}
    minutes = query(
        bigquery_client,
        f"SELECT call_date, SUM(minutes) AS minutes FROM `{PROJECT}.{dataset}.cost_daily_by_agent` "
        f"WHERE call_date BETWEEN '{start}' AND '{end}' GROUP BY 1",
    )
    assert {r["call_date"]: r["minutes"] for r in minutes} == report.minutes
    assert report.days[0] == start and report.days[-1] == end and len(report.days) == 8
    assert report.total_credits == 2.0 + 2.0 + 1.25 and report.total_calls == 3

    png, page = write(report, tmp_path / "out")
    assert png.name == f"costs-{start}-to-{end}.png" and png.parent == tmp_path / "out"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page.read_text()
    assert "data:image/png;base64," in text and "<script" not in text
    assert "src='http" not in text and 'href="http' not in text  # self-contained
    assert "2.0000" in text and "agent-a" in text
    assert "5.2500 credits, 3 calls" in text  # the totals, with their unit
    assert text.count("<tr><th>20") == 8  # a row for every day, calls or not
    assert write(only_b, tmp_path / "out")[0].name == f"costs-{start}-to-{end}-agent-b.png"


def test_an_empty_range_says_so_and_writes_nothing(
    bigquery_client: Any, dataset: str, tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    import report as tool

    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv("BIGQUERY_DATASET", dataset)
    monkeypatch.setattr(
        "sys.argv",
        ["report.py", "--from", "2001-01-01", "--to", "2001-01-31", "--output", str(tmp_path)],
    )
    from service.config import get_settings

    get_settings.cache_clear()
    try:
        assert tool.main() == 1
    finally:
        get_settings.cache_clear()
    said = capsys.readouterr().out
    assert "no calls from 2001-01-01 to 2001-01-31 (UTC): nothing written" in said
    assert list(tmp_path.iterdir()) == []

"""Render daily call costs per agent and per provider as a PNG and a self-contained HTML page.

    uv run python scripts/report.py --from 2026-11-01 --to 2026-11-30 [--agent ID] [--output DIR]

Reads the cost views in BigQuery (`cost_daily_by_agent`, `cost_by_provider`) with the service's
environment (GOOGLE_CLOUD_PROJECT, BIGQUERY_DATASET; BIGQUERY_EMULATOR_HOST for the emulator) and
writes DIR/costs.png and DIR/costs.html (the picture embedded, the numbers in tables; no
external resources). Dates are inclusive, in UTC.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.cloud import bigquery

from service.config import get_settings
from service.stores.bigquery import make_client


@dataclass
class CostReport:
    start: date
    end: date
    agent: str | None
    # day -> agent -> credit; day -> provider -> credit
    by_agent: dict[date, dict[str, float]] = field(default_factory=dict)
    by_provider: dict[date, dict[str, float]] = field(default_factory=dict)

    @property
    def days(self) -> list[date]:
        return sorted(set(self.by_agent) | set(self.by_provider))


def load(client: Any, dataset: str, start: date, end: date, agent: str | None) -> CostReport:
    """The report's numbers, straight from the views (the test checks them against the views)."""
    prefix = f"`{client.project}.{dataset}"
    parameters = [
        bigquery.ScalarQueryParameter("start", "DATE", start),
        bigquery.ScalarQueryParameter("end", "DATE", end),
        bigquery.ScalarQueryParameter("agent", "STRING", agent),
    ]
    config = bigquery.QueryJobConfig(query_parameters=parameters)
    where = "call_date BETWEEN @start AND @end AND (@agent IS NULL OR agent_id = @agent)"
    report = CostReport(start, end, agent)
    agents = client.query(
        f"SELECT call_date, agent_id, SUM(total_credit) AS credit "
        f"FROM {prefix}.cost_daily_by_agent` WHERE {where} GROUP BY 1, 2",
        job_config=config,
    ).result()
    for row in agents:
        day = report.by_agent.setdefault(row["call_date"], {})
        day[row["agent_id"] or "(none)"] = float(row["credit"] or 0)
    providers = client.query(
        f"SELECT call_date, provider, SUM(credit) AS credit "
        f"FROM {prefix}.cost_by_provider` WHERE {where} GROUP BY 1, 2",
        job_config=config,
    ).result()
    for row in providers:
        day = report.by_provider.setdefault(row["call_date"], {})
        day[row["provider"] or "(none)"] = float(row["credit"] or 0)
    return report


def render_png(report: CostReport) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    days = report.days
    labels = [day.isoformat() for day in days]
    for axis, series, title in (
        (axes[0], report.by_agent, "Credit per day and agent"),
        (axes[1], report.by_provider, "Credit per day and provider"),
    ):
        names = sorted({name for values in series.values() for name in values})
        bottom = [0.0] * len(days)
        for name in names:
            heights = [series.get(day, {}).get(name, 0.0) for day in days]
            axis.bar(labels, heights, bottom=bottom, label=name)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        axis.set_title(title)
        axis.set_ylabel("credit")
        if names:
            axis.legend(fontsize="small")
    axes[1].tick_params(axis="x", labelrotation=45)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def render_html(report: CostReport, png: bytes) -> str:
    def table(series: dict[date, dict[str, float]], heading: str) -> str:
        names = sorted({name for values in series.values() for name in values})
        head = "".join(f"<th>{html.escape(name)}</th>" for name in names)
        rows = []
        for day in sorted(series):
            cells = "".join(f"<td>{series[day].get(name, 0.0):.4f}</td>" for name in names)
            rows.append(f"<tr><th>{day.isoformat()}</th>{cells}</tr>")
        return (
            f"<h2>{html.escape(heading)}</h2><table><tr><th>day</th>{head}</tr>"
            + "".join(rows)
            + "</table>"
        )

    scope = f" for agent {html.escape(report.agent)}" if report.agent else ""
    image = base64.b64encode(png).decode()
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Millis call costs {report.start} to {report.end}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style></head><body>"
        f"<h1>Millis call costs, {report.start} to {report.end}{scope}</h1>"
        f"<img alt='daily cost per agent and provider' src='data:image/png;base64,{image}'>"
        + table(report.by_agent, "Credit per day and agent")
        + table(report.by_provider, "Credit per day and provider")
        + "</body></html>"
    )


def write(report: CostReport, output: Path) -> tuple[Path, Path]:
    output.mkdir(parents=True, exist_ok=True)
    png = render_png(report)
    png_path, html_path = output / "costs.png", output / "costs.html"
    png_path.write_bytes(png)
    html_path.write_text(render_html(report, png), encoding="utf-8")
    return png_path, html_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--from", dest="start", type=date.fromisoformat, required=True)
    parser.add_argument("--to", dest="end", type=date.fromisoformat, required=True)
    parser.add_argument("--agent", default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.end < args.start:
        parser.error("--to is before --from")
    settings = get_settings()
    report = load(
        make_client(settings.google_cloud_project),
        settings.bigquery_dataset,
        args.start,
        args.end,
        args.agent,
    )
    output = args.output or Path(f"report-{args.start}-{args.end}")
    for path in write(report, output):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

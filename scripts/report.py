#!/usr/bin/env python3
"""Daily call costs as a picture and a self-contained web page, to look at or forward.

    ./scripts/report.py --from 2026-11-01 --to 2026-11-30 [--agent ID] [--output DIR]

Writes DIR/costs-FROM-to-TO[-AGENT].png and .html (default DIR: `reports` under the current
directory, created if needed; the paths are printed). The picture has three panels over every
day of the range: credits per agent, credits per provider, and calls and minutes; its title gives
the totals. The page embeds the picture and lists the same numbers per day (no external
resources). Costs are in Millis credits (what Millis reports as `credit`, see docs/bigquery.md),
rounded to 4 decimals where shown.

Reads only the range's partitions (the table functions `call_costs_between` and
`calls_between`), on the stack of ./scripts/dev, or on Google Cloud when GOOGLE_CLOUD_PROJECT is
set (with BIGQUERY_DATASET). Dates are UTC days, --from and --to both included.

Exit codes: 0 written; 1 no calls in the range (nothing written); 2 could not run.
"""

from __future__ import annotations

import base64
import html
import io
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))

import toolkit  # first: the project's Python and modules

from google.cloud import bigquery

from service.config import get_settings
from service.stores.bigquery import make_client

UNIT = "credits"


@dataclass
class CostReport:
    start: date
    end: date
    agent: str | None
    # day -> agent -> credits; day -> provider -> credits; day -> calls; day -> minutes
    by_agent: dict[date, dict[str, float]] = field(default_factory=dict)
    by_provider: dict[date, dict[str, float]] = field(default_factory=dict)
    calls: dict[date, int] = field(default_factory=dict)
    minutes: dict[date, float] = field(default_factory=dict)

    @property
    def days(self) -> list[date]:
        """Every day of the range, with calls or not."""
        return [self.start + timedelta(days=n) for n in range((self.end - self.start).days + 1)]

    @property
    def total_credits(self) -> float:
        return sum(sum(agents.values()) for agents in self.by_agent.values())

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def total_minutes(self) -> float:
        return sum(self.minutes.values())

    @property
    def scope(self) -> str:
        agent = f", agent {self.agent}" if self.agent else ""
        return f"{self.start} to {self.end} (UTC){agent}"

    def totals(self) -> str:
        return (
            f"{self.total_credits:,.4f} {UNIT}, {self.total_calls:,} calls, "
            f"{self.total_minutes:,.1f} minutes"
        )


def load(client: Any, dataset: str, start: date, end: date, agent: str | None) -> CostReport:
    """The report's numbers, from the date-bounded table functions (partition pruning)."""
    prefix = f"`{client.project}.{dataset}"
    config = bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter("start", "DATE", start),
            bigquery.ScalarQueryParameter("end", "DATE", end),
            bigquery.ScalarQueryParameter("agent", "STRING", agent),
        ]
    )
    only_agent = "(@agent IS NULL OR agent_id = @agent)"
    report = CostReport(start, end, agent)
    per_agent = client.query(
        f"SELECT call_date, agent_id, COUNT(*) AS calls, SUM(minutes) AS minutes, "
        f"SUM(total_credit) AS credit "
        f"FROM {prefix}.call_costs_between`(@start, @end) WHERE {only_agent} GROUP BY 1, 2",
        job_config=config,
    ).result()
    for row in per_agent:
        day = row["call_date"]
        report.by_agent.setdefault(day, {})[row["agent_id"] or "(none)"] = float(row["credit"] or 0)
        report.calls[day] = report.calls.get(day, 0) + int(row["calls"])
        report.minutes[day] = report.minutes.get(day, 0.0) + float(row["minutes"] or 0)
    per_provider = client.query(
        f"SELECT DATE(started_at) AS call_date, cost.provider, SUM(cost.credit) AS credit "
        f"FROM {prefix}.calls_between`(@start, @end) AS calls, UNNEST(calls.cost_breakdown) AS cost "
        f"WHERE {only_agent} GROUP BY 1, 2",
        job_config=config,
    ).result()
    for row in per_provider:
        report.by_provider.setdefault(row["call_date"], {})[row["provider"] or "(none)"] = float(
            row["credit"] or 0
        )
    return report


def render_png(report: CostReport) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    days = report.days
    figure, axes = plt.subplots(3, 1, figsize=(13, 10), sharex=True)
    figure.suptitle(f"Millis call costs, {report.scope}\nTotal: {report.totals()}", fontsize=12)
    for axis, series, title in (
        (axes[0], report.by_agent, "Credits per day, by agent"),
        (axes[1], report.by_provider, "Credits per day, by provider"),
    ):
        names = sorted({name for values in series.values() for name in values})
        bottom = [0.0] * len(days)
        for name in names:
            heights = [series.get(day, {}).get(name, 0.0) for day in days]
            total = sum(heights)
            axis.bar(days, heights, bottom=bottom, label=f"{name} ({total:,.4f})", width=0.8)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        axis.set_title(title, loc="left", fontsize=10)
        axis.set_ylabel(f"{UNIT} per day")
        axis.set_ylim(0, max(bottom, default=0) * 1.12 or 1)  # room above the tallest bar
        if names:  # beside the plot, never over a bar; each name with its total
            axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.07, 1.0))
    calls_axis = axes[2]
    calls_axis.bar(days, [report.calls.get(day, 0) for day in days], width=0.8, color="#888")
    calls_axis.set_ylabel("calls per day")
    calls_axis.yaxis.get_major_locator().set_params(integer=True)
    minutes_axis = calls_axis.twinx()
    minutes_axis.plot(
        days, [report.minutes.get(day, 0.0) for day in days], color="#c33", marker="."
    )
    minutes_axis.set_ylabel("minutes per day", color="#c33")
    minutes_axis.set_ylim(bottom=0)
    calls_axis.set_title("Calls per day (bars) and minutes per day (line)", loc="left", fontsize=10)
    # Every day of the range on the axis, labelled often enough to read.
    first, last = (datetime.combine(day, datetime.min.time()) for day in (days[0], days[-1]))
    calls_axis.set_xlim(first - timedelta(hours=12), last + timedelta(hours=12))
    step = max(1, len(days) // 16)
    calls_axis.xaxis.set_major_locator(mdates.DayLocator(interval=step))
    calls_axis.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    calls_axis.set_xlabel("day (UTC)")
    for label in calls_axis.get_xticklabels():  # each label ends under its own day
        label.set(rotation=45, horizontalalignment="right", rotation_mode="anchor")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def render_html(report: CostReport, png: bytes) -> str:
    agents = sorted({name for values in report.by_agent.values() for name in values})
    providers = sorted({name for values in report.by_provider.values() for name in values})
    head = "".join(
        f"<th>{html.escape(name)}</th>"
        for name in ["day", "calls", "minutes", f"total {UNIT}", *agents, *providers]
    )
    groups = (
        "<tr><th colspan='4'></th>"
        f"<th colspan='{len(agents)}'>{UNIT} by agent</th>"
        f"<th colspan='{len(providers)}'>{UNIT} by provider</th></tr>"
    )
    rows = []
    for day in report.days:
        agent_cells = [report.by_agent.get(day, {}).get(name, 0.0) for name in agents]
        provider_cells = [report.by_provider.get(day, {}).get(name, 0.0) for name in providers]
        cells = [
            str(report.calls.get(day, 0)),
            f"{report.minutes.get(day, 0.0):.1f}",
            f"{sum(agent_cells):.4f}",
            *(f"{value:.4f}" for value in agent_cells + provider_cells),
        ]
        rows.append(
            f"<tr><th>{day.isoformat()}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        )
    image = base64.b64encode(png).decode()
    title = html.escape(f"Millis call costs, {report.scope}")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style></head><body>"
        f"<h1>{title}</h1><p>Total: {html.escape(report.totals())}. Costs are Millis credits "
        "as Millis reports them.</p>"
        f"<img alt='daily credits per agent and provider, calls and minutes' "
        f"src='data:image/png;base64,{image}'>"
        f"<h2>Per day</h2><table>{groups}<tr>{head}</tr>" + "".join(rows) + "</table>"
        "</body></html>"
    )


def write(report: CostReport, output: Path) -> tuple[Path, Path]:
    output.mkdir(parents=True, exist_ok=True)
    stem = f"costs-{report.start}-to-{report.end}"
    if report.agent:
        stem += "-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in report.agent)
    png = render_png(report)
    png_path, html_path = output / f"{stem}.png", output / f"{stem}.html"
    png_path.write_bytes(png)
    html_path.write_text(render_html(report, png), encoding="utf-8")
    return png_path, html_path


def main() -> int:
    parser = toolkit.parser(__doc__)
    toolkit.add_date_range(parser)
    parser.add_argument("--agent", default=None, help="only this agent's calls")
    parser.add_argument(
        "--output", type=Path, default=Path("reports"), help="folder to write to (default reports)"
    )
    args = parser.parse_args()
    toolkit.check_date_range(parser, args)
    toolkit.use_stack("report")
    settings = get_settings()
    client = make_client(settings.google_cloud_project)
    report = load(client, settings.bigquery_dataset, args.start, args.end, args.agent)
    if not report.total_calls:
        print(f"no calls from {report.scope}: nothing written")
        return toolkit.NEEDS_ATTENTION
    print(f"{report.scope}: {report.totals()}")
    for path in write(report, args.output):
        print(path.resolve())
    return toolkit.DONE


if __name__ == "__main__":
    toolkit.run("report", main)

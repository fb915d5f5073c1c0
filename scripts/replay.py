#!/usr/bin/env python3
"""Re-insert dead letters (calls BigQuery did not take) and delete them once inserted.

    ./scripts/replay.py [--limit N] [--dry-run] [--alert-after-minutes M]

The same code as the scheduled Cloud Run job (service/jobs/replay.py), on the stack of
./scripts/dev, or on Google Cloud when GOOGLE_CLOUD_PROJECT is set (with the service's settings:
BIGQUERY_DATASET, BIGQUERY_WRITE_API, ...). --dry-run lists the session of each letter it would
replay and changes nothing. Exit codes: 0 no dead letter older than M minutes (default 60)
remains, 1 some do, 2 could not run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))

import toolkit  # first: the project's Python and modules


def main() -> int:
    from service.jobs.replay import main as replay_main

    if not {"-h", "--help"} & set(sys.argv[1:]):
        toolkit.use_stack("replay")
    return replay_main(sys.argv[1:])


if __name__ == "__main__":
    toolkit.run("replay", main)

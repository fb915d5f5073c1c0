"""Re-insert dead letters (calls BigQuery did not take) and delete them once inserted.

    uv run python scripts/replay.py [--limit N] [--dry-run] [--alert-after-minutes M]

The same code as the scheduled Cloud Run job (service/jobs/replay.py). Reads the same environment
variables as the service (GOOGLE_CLOUD_PROJECT, BIGQUERY_DATASET, ...). Exit code 0 when no dead
letter older than M minutes (default 60) remains, 1 otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.jobs.replay import main

if __name__ == "__main__":
    sys.exit(main())

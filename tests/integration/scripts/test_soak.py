"""scripts/soak.py for a minute, as a user runs it: mixed traffic while BigQuery and Firestore are
frozen and a worker is killed, then the replay job, then the system's promises (the six-minute
run and its figures are in docs/performance.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_a_one_minute_soak_keeps_every_promise(tmp_path: Path) -> None:
    figures_path = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "scripts/soak.py", "--seconds", "50", "--json", str(figures_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(figures_path.read_text())
    # The faults happened and were absorbed: calls were dead-lettered, then replayed.
    assert [kind for _, _, kind in figures["faults"]] == [
        "bigquery",
        "firestore",
        "kill_worker",
        "both",
    ]
    assert figures["dead_letters_before_replay"] > 0
    assert figures["dead_letters_left"] == 0
    assert figures["missing"] == figures["stale"] == 0
    assert figures["sessions_acknowledged"] > 200

"""scripts/dev as a user runs it (its full life, SIGTERM included, is in test_docs_commands.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT


def test_a_taken_port_fails_at_once_with_a_clear_message() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "scripts/lib/dev.py", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"port {port} is already in use" in result.stderr
    assert time.monotonic() - started < 30  # no emulator was started


def test_benchmark_scripts_stop_what_they_started_on_sigterm(tmp_path: Path) -> None:
    # Every benchmark calls treat_sigterm_as_ctrl_c() first; without it Python dies on SIGTERM
    # without running the `finally` that stops the emulators and the service.
    marker = tmp_path / "stopped"
    program = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(ROOT / 'scripts' / 'lib')!r})\n"
        "from emulators import treat_sigterm_as_ctrl_c\n"
        "treat_sigterm_as_ctrl_c()\n"
        "try:\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(30)\n"
        "finally:\n"
        f"    open({str(marker)!r}, 'w').write('stopped')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert marker.read_text() == "stopped"
    benchmarks = [path for path in (ROOT / "bench").glob("*.py") if path.stem != "benchlib"]
    assert len(benchmarks) >= 7
    for script in benchmarks:
        assert "treat_sigterm_as_ctrl_c()" in script.read_text(), script.name


def test_bench_run_lists_every_benchmark_and_refuses_an_unknown_name() -> None:
    listing = subprocess.run(
        [str(ROOT / "bench" / "run"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for script in (ROOT / "bench").glob("*.py"):
        if script.stem != "benchlib":
            assert f"  {script.stem} " in listing
    unknown = subprocess.run(
        [str(ROOT / "bench" / "run"), "no-such-benchmark"], capture_output=True, text=True
    )
    assert unknown.returncode == 2 and "no benchmark named" in unknown.stderr


def test_no_benchmark_shadows_a_package_it_imports() -> None:
    # Python puts bench/ first on the path of a benchmark it runs: bench/service.py once hid the
    # service package from every benchmark.
    packages = {path.name for path in ROOT.iterdir() if (path / "__init__.py").is_file()}
    assert "service" in packages
    assert {script.stem for script in (ROOT / "bench").glob("*.py")} & packages == set()
    result = subprocess.run(
        [str(ROOT / "bench" / "run"), "prefetch", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-500:]

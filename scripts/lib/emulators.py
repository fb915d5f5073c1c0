"""Start and stop the local Firestore and BigQuery emulators on free ports.

Used by `scripts/dev`, the benchmarks and the pytest fixtures, so that every local run uses the
same real emulators: the Firestore emulator of the Google Cloud CLI and the `bqemulator` package.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def treat_sigterm_as_ctrl_c() -> None:
    """SIGTERM (`kill`, a process manager, CI) takes the Ctrl-C path, so that every `finally`
    stops what the script started; Python's default on SIGTERM is to die without running them."""

    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


@dataclass
class Emulator:
    name: str
    host_port: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.process.poll() is None:
            # Own process group: gcloud starts the emulator's Java process as a child.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"emulator exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answered: it is up
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"emulator not ready at {url} after {timeout:.0f}s")


def _spawn(name: str, command: list[str], log_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab")
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    return process, log_path


def start_firestore(log_dir: Path, port: int | None = None, timeout: float = 60) -> Emulator:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise RuntimeError(
            "gcloud not found: install the Google Cloud CLI with the Firestore emulator"
        )
    host_port = f"127.0.0.1:{port or free_port()}"
    process, log_path = _spawn(
        "firestore",
        [gcloud, "emulators", "firestore", "start", f"--host-port={host_port}", "--quiet"],
        log_dir,
    )
    emulator = Emulator(
        "firestore", host_port, process, log_path, {"FIRESTORE_EMULATOR_HOST": host_port}
    )
    try:
        _wait_for_http(f"http://{host_port}/", process, timeout)
    except RuntimeError as exc:
        emulator.stop()
        raise RuntimeError(f"Firestore emulator: {exc}\n{emulator.log_tail()}") from None
    return emulator


def install_duckdb_spatial() -> None:
    """bqemulator loads DuckDB's spatial extension; offline it must come from the PyPI wheel."""
    import duckdb
    import duckdb_extension_spatial

    package_dir = os.path.dirname(duckdb_extension_spatial.__file__)
    candidates = glob.glob(os.path.join(package_dir, "extensions", "*", "spatial.duckdb_extension"))
    if not candidates:
        raise RuntimeError("duckdb-extension-spatial ships no extension file")
    duckdb.execute(f"INSTALL '{candidates[0]}'")


def start_bigquery(
    log_dir: Path,
    project: str,
    port: int | None = None,
    timeout: float = 60,
    data_dir: Path | None = None,
    grpc_port: int | None = None,
) -> Emulator:
    """`data_dir` makes the emulator persistent: a restart on it keeps the tables and rows.

    The Storage Write API is served over gRPC on `grpc_port` (a free one when not given), named
    to clients by BIGQUERY_STORAGE_EMULATOR_HOST."""
    install_duckdb_spatial()
    rest_port = port or free_port()
    host_port = f"127.0.0.1:{rest_port}"
    grpc_host_port = f"127.0.0.1:{grpc_port or free_port()}"
    process, log_path = _spawn(
        "bigquery",
        [
            sys.executable,
            str(Path(__file__).resolve().parent / "bqemulator_storage_fix.py"),
            "start",
            "--rest-port",
            str(rest_port),
            "--grpc-port",
            grpc_host_port.rsplit(":", 1)[1],
            "--project",
            project,
            "--log-level",
            "warning",
            *(["--persistent", "--data-dir", str(data_dir)] if data_dir else []),
        ],
        log_dir,
    )
    emulator = Emulator(
        "bigquery",
        host_port,
        process,
        log_path,
        {
            "BIGQUERY_EMULATOR_HOST": f"http://{host_port}",
            "BIGQUERY_STORAGE_EMULATOR_HOST": grpc_host_port,
        },
    )
    try:
        _wait_for_http(
            f"http://{host_port}/bigquery/v2/projects/{project}/datasets", process, timeout
        )
        _wait_for_port(grpc_host_port, process, timeout)
    except RuntimeError as exc:
        emulator.stop()
        raise RuntimeError(f"BigQuery emulator: {exc}\n{emulator.log_tail()}") from None
    return emulator


def _wait_for_port(host_port: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Until something accepts connections on host_port (the gRPC server starts on its own)."""
    host, port = host_port.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"emulator exited with code {process.returncode}")
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host_port} after {timeout:.0f}s")


@contextlib.contextmanager
def running_emulators(project: str, log_dir: Path | None = None) -> Iterator[dict[str, str]]:
    """Start both emulators; yield the environment variables that point clients at them."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="millis-emulators-"))
    started: list[Emulator] = []
    try:
        started.append(start_firestore(log_dir))
        started.append(start_bigquery(log_dir, project))
        env: dict[str, str] = {"GOOGLE_CLOUD_PROJECT": project}
        for emulator in started:
            env.update(emulator.env)
        yield env
    finally:
        for emulator in reversed(started):
            emulator.stop()

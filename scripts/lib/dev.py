"""Run the service locally on the Firestore and BigQuery emulators, with demo data seeded.

    ./scripts/dev [--port 8080] [--host 127.0.0.1] [--project demo-millis]

Serves on 127.0.0.1 only unless --host says otherwise (the dev token is well known). Writes the
stack's settings to `.dev-stack.env` in the checkout, where every tool in scripts/ finds them,
and logs one line per webhook request (method, path, status, time; never the query). Stops
everything it started (the service and both emulators) on Ctrl-C and on SIGTERM (`kill`, a
process manager), removes the settings file and its temporary logs, and refuses to start when
the port is taken.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import toolkit  # first: the project's Python and modules

import demo_data
from emulators import running_emulators, treat_sigterm_as_ctrl_c

ROOT = toolkit.ROOT
DEV_TOKEN = "dev-token"


def wait_until_serving(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"dev: the service exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return time.monotonic() - started
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"dev: the service did not answer {url} within {timeout:.0f}s")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def banner(base: str, token: str, stack_file: Path, values: dict[str, str]) -> str:
    settings = "\n".join(f"  {name}={value}" for name, value in values.items())
    return f"""
millis-webhooks is running on the emulators.

  Prefetch webhook:     {base}/prefetch?token={token}
  End-of-call webhook:  {base}/end-of-call?token={token}
  OpenAPI document:     {base}/openapi.json

Try them:
  curl '{base}/prefetch?token={token}&agent_id={demo_data.DEMO_AGENT_ID}&session_id=s1&from=%2B1%20(555)%20123-4567&to=%2B15550001111'
  curl -X POST '{base}/end-of-call' -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
       -d '{{"session_id": "s1", "agent_id": "{demo_data.DEMO_AGENT_ID}", "ts": {time.time():.0f}, "duration": 42.5,
            "chat": "[{{\\"role\\": \\"user\\", \\"content\\": \\"Hello\\"}}]",
            "cost_breakdown": [{{"type": "llm", "provider": "openai", "credit": 0.0043}}],
            "voip": {{"provider": "twilio", "from": "+15551234567", "to": "+15550001111"}}, "metadata": {{}}}}'

The tools in scripts/ use this stack by themselves (settings in {stack_file}):
{settings}
  e.g. ./scripts/profiles.py show --agent {demo_data.DEMO_AGENT_ID} --from +15551234567
       ./scripts/sql.py "SELECT COUNT(*) AS calls FROM millis.calls"

Requests are logged below, one line each. Press Ctrl-C to stop.
"""


def main() -> int:
    parser = toolkit.parser(__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)"
    )
    parser.add_argument("--project", default="demo-millis")
    args = parser.parse_args()
    treat_sigterm_as_ctrl_c()
    if not port_is_free(args.host, args.port):
        raise toolkit.ToolError(
            f"port {args.port} is already in use: stop what is running there, "
            "or choose another port with --port N (or PORT=N)"
        )
    stack_file = toolkit.stack_file()
    if stack_file.exists() and toolkit._running(
        toolkit.read_stack_file(stack_file).get("DEV_PID", "")
    ):
        raise toolkit.ToolError(
            f"another ./scripts/dev is running from this checkout ({stack_file}): stop it first"
        )

    log_dir = Path(tempfile.mkdtemp(prefix="millis-dev-"))
    try:
        with running_emulators(args.project, log_dir) as emulator_env:
            return serve(args, emulator_env, stack_file)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


def serve(args: argparse.Namespace, emulator_env: dict[str, str], stack_file: Path) -> int:
    os.environ.update(emulator_env)
    from service.stores.bigquery import create_tables_and_views
    from service.stores.bigquery import make_client as bigquery_client
    from service.stores.firestore import make_client as firestore_client

    project, port, host = args.project, args.port, args.host
    create_tables_and_views(bigquery_client(project), "millis")
    demo_data.seed(firestore_client(project, "(default)"))

    env = {
        **os.environ,
        **emulator_env,
        "WEBHOOK_TOKENS": os.environ.get("WEBHOOK_TOKENS", DEV_TOKEN),
        "HOST": host,
        "PORT": str(port),
        "PYTHONPATH": str(ROOT),
        # DEBUG logs the service's request line for every answer, not only for errors.
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "DEBUG"),
    }
    service = subprocess.Popen(
        [str(ROOT / ".venv/bin/python"), "-m", "service.web.server"], cwd=ROOT, env=env
    )
    base = (
        f"http://127.0.0.1:{port}" if host in ("127.0.0.1", "0.0.0.0") else f"http://{host}:{port}"
    )
    token = env["WEBHOOK_TOKENS"].split(",")[0]
    # emulator_env starts with GOOGLE_CLOUD_PROJECT, then the emulators' addresses.
    values = {**emulator_env, "SERVICE_URL": base, "WEBHOOK_TOKENS": token}
    try:
        wait_until_serving(f"{base}/health", service)
        toolkit.write_stack_file(stack_file, {**values, "DEV_PID": str(os.getpid())})
        print(banner(base, token, stack_file, values), flush=True)
        return service.wait()  # only if the service stops by itself
    except KeyboardInterrupt:
        return 0
    finally:
        with contextlib.suppress(FileNotFoundError):
            if toolkit.read_stack_file(stack_file).get("DEV_PID") == str(os.getpid()):
                stack_file.unlink()
        service.terminate()
        service.wait(timeout=10)


if __name__ == "__main__":
    toolkit.run("dev", main)

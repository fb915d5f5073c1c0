"""Run the service locally on the Firestore and BigQuery emulators, with demo data seeded.

Started by `scripts/dev`; stops everything it started (the service and both emulators) on
Ctrl-C and on SIGTERM (`kill`, a process manager), and refuses to start when the port is taken.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts" / "lib")]

import demo_data  # noqa: E402
from emulators import running_emulators, treat_sigterm_as_ctrl_c  # noqa: E402

DEV_TOKEN = "dev-token"


def wait_until_serving(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"the service exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return time.monotonic() - started
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the service did not answer {url} within {timeout:.0f}s")


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--project", default="demo-millis")
    args = parser.parse_args()
    treat_sigterm_as_ctrl_c()
    if not port_is_free(args.port):
        raise SystemExit(
            f"port {args.port} is already in use: stop what is running there, "
            "or choose another port with --port N (or PORT=N)"
        )

    log_dir = Path(tempfile.mkdtemp(prefix="millis-dev-"))
    with running_emulators(args.project, log_dir) as emulator_env:
        os.environ.update(emulator_env)
        from service.stores.bigquery import create_tables_and_views
        from service.stores.bigquery import make_client as bigquery_client
        from service.stores.firestore import make_client as firestore_client

        create_tables_and_views(bigquery_client(args.project), "millis")
        demo_data.seed(firestore_client(args.project, "(default)"))

        env = {
            **os.environ,
            **emulator_env,
            "WEBHOOK_TOKENS": os.environ.get("WEBHOOK_TOKENS", DEV_TOKEN),
            "PORT": str(args.port),
            "PYTHONPATH": str(ROOT),
        }
        service = subprocess.Popen(
            [str(ROOT / ".venv/bin/python"), "-m", "service.web.server"],
            cwd=ROOT,
            env=env,
        )
        base = f"http://127.0.0.1:{args.port}"
        try:
            wait_until_serving(f"{base}/health", service)
            token = env["WEBHOOK_TOKENS"].split(",")[0]
            print(
                f"""
millis-webhooks is running on the emulators (logs of the emulators: {log_dir})

  Prefetch webhook:     {base}/prefetch?token={token}
  End-of-call webhook:  {base}/end-of-call?token={token}
  OpenAPI document:     {base}/openapi.json

Try them:
  curl '{base}/prefetch?token={token}&agent_id={demo_data.DEMO_AGENT_ID}&session_id=s1&from=%2B1%20(555)%20123-4567&to=%2B15550001111'
  curl -X POST '{base}/end-of-call' -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
       -d '{{"session_id": "s1", "agent_id": "{demo_data.DEMO_AGENT_ID}", "ts": {time.time():.3f}, "duration": 42.5,
            "chat": "[{{\\"role\\": \\"user\\", \\"content\\": \\"Hello\\"}}]",
            "cost_breakdown": [{{"type": "llm", "provider": "openai", "credit": 0.0043}}],
            "voip": {{"provider": "twilio", "from": "+15551234567", "to": "+15550001111"}}, "metadata": {{}}}}'

BigQuery emulator: {emulator_env["BIGQUERY_EMULATOR_HOST"]} (dataset millis, project {args.project})
Firestore emulator: {emulator_env["FIRESTORE_EMULATOR_HOST"]}
Press Ctrl-C to stop.
""",
                flush=True,
            )
            service.wait()
        except KeyboardInterrupt:
            pass
        finally:
            service.terminate()
            service.wait(timeout=10)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)

"""What every tool in scripts/ shares: the project's Python, the stack it talks to, dates,
dry runs and exit codes.

A tool imports it first. Started directly (`./scripts/erase.py ...`, from any shell), the tool
re-executes itself with the project's `.venv` (running `scripts/install` once when it is
missing), so no command needs uv or an activated environment.

Which stack (`use_stack`): with GOOGLE_CLOUD_PROJECT set in the environment, Google Cloud with
your Application Default Credentials (or the emulators the environment names); without it, the
stack `./scripts/dev` is running, found through the file it writes (`.dev-stack.env` in the
checkout). Every tool says which one it uses, on stderr, in one line.

Conventions of every tool:
- dates: `--from DAY --to DAY` are UTC calendar days (YYYY-MM-DD), both included;
- `--dry-run` says what would change, changes nothing, and exits as the real run would;
- exit codes: 0 done; 1 done, but something needs a person (listed in the output); 2 could not
  run (bad arguments, configuration, credentials, a store out of reach), said in one line
  without a traceback; 3 (erase only) run again later; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
VENV = ROOT / ".venv"

DONE, NEEDS_ATTENTION, CANNOT_RUN, RUN_AGAIN_LATER, INTERRUPTED = 0, 1, 2, 3, 130

# What the dev stack file holds, besides the dev process id (DEV_PID).
STACK_VARIABLES = (
    "GOOGLE_CLOUD_PROJECT",
    "FIRESTORE_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
    "BIGQUERY_STORAGE_EMULATOR_HOST",
    "SERVICE_URL",
    "WEBHOOK_TOKENS",
)
EMULATOR_VARIABLES = STACK_VARIABLES[1:4]


class ToolError(Exception):
    """The tool cannot run; the message says why and what to do, in one line."""


def _started_as_a_tool() -> bool:
    """True when a file of scripts/ is the program being run (not when tests import a tool)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return path is not None and Path(path).resolve().parent == SCRIPTS


def _use_project_python() -> None:
    if not _started_as_a_tool() or Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    if not python.exists():
        import subprocess

        print("first run: installing the project (./scripts/install)", file=sys.stderr)
        if subprocess.run([str(SCRIPTS / "install")], check=False).returncode != 0:
            raise SystemExit(CANNOT_RUN)
    os.execv(python, [str(python), *sys.argv])


_use_project_python()
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the tools import the service's own modules


# --- the dev stack file -------------------------------------------------------------------


def stack_file() -> Path:
    """Where `scripts/dev` writes its stack; MILLIS_DEV_STACK_FILE moves it (the tests do)."""
    return Path(os.environ.get("MILLIS_DEV_STACK_FILE") or ROOT / ".dev-stack.env")


def write_stack_file(path: Path, values: dict[str, str]) -> None:
    lines = ["# Written by ./scripts/dev while it runs; the tools in scripts/ read it."]
    lines += [f"{name}={value}" for name, value in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_stack_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip()
    return values


def _running(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def use_stack(tool: str) -> str:
    """Point this process at Google Cloud or at the running dev stack; say which on stderr."""
    if os.environ.get("GOOGLE_CLOUD_PROJECT"):
        project = os.environ["GOOGLE_CLOUD_PROJECT"]
        if any(os.environ.get(name) for name in EMULATOR_VARIABLES):
            where = f"the emulators named in the environment (project {project})"
        else:
            where = f"Google Cloud project {project} (Application Default Credentials)"
    else:
        path = stack_file()
        if not path.exists():
            raise ToolError(
                "no stack to use: start ./scripts/dev (in another terminal), "
                "or set GOOGLE_CLOUD_PROJECT to use Google Cloud"
            )
        values = read_stack_file(path)
        if not _running(values.get("DEV_PID", "")):
            raise ToolError(
                f"{path} names a dev stack that is no longer running: start ./scripts/dev "
                "again, or set GOOGLE_CLOUD_PROJECT to use Google Cloud"
            )
        os.environ.update({name: values[name] for name in STACK_VARIABLES if name in values})
        where = f"the dev stack of ./scripts/dev (project {values.get('GOOGLE_CLOUD_PROJECT')})"
    print(f"{tool}: using {where}", file=sys.stderr)
    return where


# --- arguments ------------------------------------------------------------------------------


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser whose --help shows the tool's docstring as written."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day: use YYYY-MM-DD") from None


def add_date_range(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--from", dest="start", type=day, required=required, help="first UTC day, included"
    )
    parser.add_argument(
        "--to", dest="end", type=day, required=required, help="last UTC day, included"
    )


def check_date_range(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.start and args.end and args.end < args.start:
        parser.error(f"--to {args.end} is before --from {args.start}")


# --- running ---------------------------------------------------------------------------------


def run(tool: str, main: Callable[[], int]) -> NoReturn:
    """Run a tool's main; turn the errors a user can fix into one line and exit code 2."""
    try:
        code = main()
    except KeyboardInterrupt:
        code = INTERRUPTED
    except Exception as exc:
        message = explain(exc)
        if message is None:
            raise
        print(f"{tool}: {message}", file=sys.stderr)
        code = CANNOT_RUN
    sys.exit(code)


def explain(exc: BaseException) -> str | None:
    """One line for an error a user can fix, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, ToolError):
        return str(exc)
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__}
    if "service.config.ConfigurationError" in names:
        return str(exc)
    if "google.auth.exceptions.DefaultCredentialsError" in names:
        return (
            "no Google Cloud credentials: run `gcloud auth application-default login`, "
            "or unset GOOGLE_CLOUD_PROJECT to use the stack of ./scripts/dev"
        )
    if "google.auth.exceptions.RefreshError" in names:
        return "Google Cloud credentials refused: run `gcloud auth application-default login`"
    if names & {
        "requests.exceptions.ConnectionError",
        "google.api_core.exceptions.ServiceUnavailable",
        "google.api_core.exceptions.RetryError",
        "urllib3.exceptions.MaxRetryError",
        "ConnectionRefusedError",
        "builtins.ConnectionRefusedError",
    }:
        return f"cannot reach the stack ({type(exc).__name__}): is ./scripts/dev still running?"
    if "google.api_core.exceptions.Forbidden" in names:
        return f"Google Cloud refused the request (403): {_first_line(exc)}"
    if "google.api_core.exceptions.NotFound" in names:
        return f"not found: {_first_line(exc)}"
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]

"""Every shell command and SQL example of the README and docs/, run as written against one dev
stack that this module starts with ./scripts/dev, from a clean environment (no
GOOGLE_CLOUD_PROJECT, no emulator variables, nothing activated): a renamed script, a changed flag
or a query on a renamed column fails here.

A block preceded by `<!-- check-only: why -->` (it needs Google Cloud, the Millis API, or is the
suite itself) is checked without running: bash syntax, every ./scripts/ tool it names exists, and
every --flag it passes appears in that tool's --help. The only change made to a command is the
dev server's port (`127.0.0.1:8080` becomes the free port the stack got).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from emulators import free_port

from tests.conftest import ROOT

DOCUMENTS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "terraform" / "README.md",
]
BLOCK = re.compile(
    r"(?:<!-- check-only: (?P<reason>[^\n]*?) -->\n)?```(?P<lang>sh|sql)\n(?P<body>.*?)```",
    re.DOTALL,
)
TOOL = re.compile(r"\./scripts/([\w.]+)")


@dataclass(frozen=True)
class Block:
    where: str  # file:line
    lang: str
    body: str
    check_only: str | None


def blocks() -> list[Block]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("body"))
            where = f"{document.relative_to(ROOT)}:{line}"
            found.append(Block(where, match["lang"], match["body"], match["reason"]))
    return found


BLOCKS = blocks()


def clean_environment(home: Path) -> dict[str, str]:
    """What a new terminal has: a PATH with the system tools and gcloud, nothing of ours."""
    gcloud = shutil.which("gcloud")
    path = ["/usr/local/bin", "/usr/bin", "/bin"] + ([str(Path(gcloud).parent)] if gcloud else [])
    return {"HOME": str(home), "PATH": ":".join(dict.fromkeys(path)), "LANG": "C.UTF-8"}


@dataclass
class DevStack:
    process: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]  # for the commands: clean, plus where the test's stack file is
    workdir: Path  # commands run here: scripts/ and docs/ linked, outputs stay out of the repo
    stack_file: Path
    log_root: Path


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    base = tmp_path_factory.mktemp("docs-commands")
    workdir, log_root = base / "work", base / "tmp"
    workdir.mkdir()
    log_root.mkdir()
    for name in ("scripts", "docs"):
        (workdir / name).symlink_to(ROOT / name)
    stack_file = base / "dev-stack.env"
    env = {**clean_environment(base), "MILLIS_DEV_STACK_FILE": str(stack_file)}
    port = free_port()
    process = subprocess.Popen(
        [str(ROOT / "scripts" / "dev"), "--port", str(port)],
        cwd=ROOT,
        env={**env, "TMPDIR": str(log_root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not stack_file.exists():  # written once the service answers
            assert process.poll() is None, "./scripts/dev exited"
            assert time.monotonic() < deadline, "./scripts/dev did not start in 120 s"
            time.sleep(0.3)
        yield DevStack(process, port, env, workdir, stack_file, log_root)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def run_block(block: Block, dev: DevStack) -> subprocess.CompletedProcess[str]:
    if block.lang == "sql":
        command = [str(ROOT / "scripts" / "sql.py")]
        return subprocess.run(
            command, input=block.body, cwd=dev.workdir, env=dev.env, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
    body = block.body.replace("127.0.0.1:8080", f"127.0.0.1:{dev.port}")
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", body],
        cwd=dev.workdir,
        env=dev.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def check_without_running(block: Block, dev: DevStack) -> None:
    syntax = subprocess.run(["bash", "-n", "-c", block.body], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    # One command per line (continuations joined), comments dropped.
    for line in block.body.replace("\\\n", " ").splitlines():
        line = line.split(" #")[0]
        for tool in TOOL.findall(line):
            path = ROOT / "scripts" / tool
            assert path.is_file() and os.access(path, os.X_OK), f"no tool ./scripts/{tool}"
            flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line.split(tool, 1)[1]))
            if flags:
                shown = subprocess.run(
                    [str(path), "--help"], env=dev.env, capture_output=True, text=True, timeout=60
                )
                assert shown.returncode == 0, shown.stderr
                assert not [flag for flag in flags if flag not in shown.stdout], (tool, flags)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
def test_documented_command_works_as_written(block: Block, dev: DevStack) -> None:
    if block.check_only is not None:
        check_without_running(block, dev)
        return
    result = run_block(block, dev)
    assert result.returncode == 0, f"{block.where}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr


def test_the_documents_hold_commands_and_queries() -> None:
    # The parser finds what it should: a broken fence would silently test nothing.
    kinds = {(block.lang, block.check_only is None) for block in BLOCKS}
    assert kinds >= {("sh", True), ("sh", False), ("sql", True)}
    run = [block for block in BLOCKS if block.check_only is None]
    assert sum(block.lang == "sql" for block in run) >= 7
    tools = {tool for block in run for tool in TOOL.findall(block.body)}
    assert tools >= {"sql.py", "profiles.py", "report.py", "erase.py", "replay.py", "smoke.py"}


TOOLS = {
    "backfill.py", "deploy", "dev", "erase.py", "install", "profiles.py", "replay.py",
    "report.py", "smoke.py", "sql.py", "test",
}  # fmt: skip


def test_every_tool_answers_help_from_a_fresh_shell(tmp_path: Path) -> None:
    # Run with the system's python3 (the shebang): each tool moves itself into the project's
    # .venv before importing anything else, so none needs uv, an activated venv or a stack.
    tools = {path.name for path in (ROOT / "scripts").iterdir() if path.is_file()}
    assert tools == TOOLS  # the tools users run; support code lives in scripts/lib
    for tool in sorted(TOOLS):
        path = ROOT / "scripts" / tool
        assert os.access(path, os.X_OK), tool
        shown = subprocess.run(
            [str(path), "--help"], cwd=tmp_path, env=clean_environment(tmp_path),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert shown.returncode == 0, (tool, shown.stderr)
        assert "Traceback" not in shown.stderr
        assert len(shown.stdout.splitlines()) >= 3, tool
        if tool.endswith(".py"):  # the conventions are stated where users look
            assert "exit code" in shown.stdout.lower(), tool


def test_tools_find_the_stack_and_name_it_in_one_line(dev: DevStack) -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "sql.py"), "SELECT 1 AS one"],
        cwd=dev.workdir, env=dev.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    said = result.stderr.strip()
    assert said == "sql: using the dev stack of ./scripts/dev (project demo-millis)"
    assert result.stdout.splitlines()[-1] == "(1 row)"
    dev_port = requests.get(f"http://127.0.0.1:{dev.port}/health", timeout=5)
    assert dev_port.ok


def test_without_a_stack_a_tool_says_what_to_do_in_one_line(dev: DevStack, tmp_path: Path) -> None:
    env = {**dev.env, "MILLIS_DEV_STACK_FILE": str(tmp_path / "none.env")}
    result = subprocess.run(
        [str(ROOT / "scripts" / "profiles.py"), "export"],
        cwd=dev.workdir, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "profiles: no stack to use: start ./scripts/dev (in another terminal), "
        "or set GOOGLE_CLOUD_PROJECT to use Google Cloud\n"
    )


def test_dev_serves_on_loopback_only(dev: DevStack) -> None:
    listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
    local = {line.split()[1] for line in listening if line.split()[3] == "0A"}  # LISTEN
    assert f"0100007F:{dev.port:04X}" in local  # 127.0.0.1
    assert f"00000000:{dev.port:04X}" not in local  # not 0.0.0.0


def test_sigterm_stops_everything_and_leaves_nothing_behind(dev: DevStack) -> None:
    # Last in the module: it stops the stack the tests above used.
    children = descendants(dev.process.pid)
    assert len(children) >= 3  # the service and two emulators (and their own children)
    assert list(dev.log_root.glob("millis-dev-*"))  # the emulators' logs, while running
    dev.process.send_signal(signal.SIGTERM)
    dev.process.wait(timeout=60)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if alive(pid)]
    assert not dev.stack_file.exists()
    assert list(dev.log_root.glob("millis-dev-*")) == []


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found |= {child} | descendants(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"

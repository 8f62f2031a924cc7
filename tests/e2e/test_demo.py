"""The README's main command, `factory demo`, run as a user runs it (own dev server, detached worker)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from factory.forge import LocalForge
from tests.conftest import ROOT, make_settings

FACTORY = str(Path(sys.executable).parent / "factory")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def demo_dir(tmp_path: Path) -> Iterator[Path]:
    extra = f'[temporal]\naddress = "127.0.0.1:{free_port()}"\nui_url = "http://localhost:{free_port()}"\n'
    make_settings(tmp_path, extra, governance=True)
    yield tmp_path
    # Stop what the demo started, by the pids it recorded.
    for what in (["worker", "--stop"], ["server", "stop"]):
        subprocess.run([FACTORY, "--config", str(tmp_path / "factory.toml"), *what], cwd=tmp_path, timeout=60)


def run_demo(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FACTORY, "--config", str(directory / "factory.toml"), "demo", "--tickets-dir", str(ROOT / "examples/tickets")],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_demo_runs_the_example_ticket_to_a_pull_request_and_is_idempotent(demo_dir: Path) -> None:
    """`factory demo` says it uses the offline scripted model on its first line, starts the server and
    workers, and ends with the example ticket reviewed, ready for merge and its PR; a second run reuses it all."""
    first = run_demo(demo_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("Model: OFFLINE SCRIPTED MODEL")
    assert "CALC-1: ready_for_merge" in first.stdout
    assert "pull request #1 (bug/calc-1-mean-of-an-empty-list-crashes-with)" in first.stdout
    assert "/namespaces/default/workflows/ticket-CALC-1" in first.stdout
    assert "Traceback" not in first.stderr

    second = run_demo(demo_dir)
    assert second.returncode == 0, second.stdout + second.stderr
    # The ready ticket is still listening for comments on its PR: it is reported, not restarted.
    assert "already has a workflow (ticket-CALC-1, running); nothing started" in second.stdout
    assert "CALC-1: ready_for_merge" in second.stdout
    prs = LocalForge(demo_dir / ".factory" / "forge").list_pull_requests("calculator")
    assert len(prs) == 1
    assert [review.verdict for review in prs[0].reviews] == ["approve"]
    assert "### Governance" in prs[0].body


def test_a_comment_from_the_command_line_reaches_the_ready_ticket(demo_dir: Path) -> None:
    """`factory comment` on a ready ticket stands on its PR and starts a fix round; the example's playbook has
    nothing more to do, so the ticket honestly ends needs_human saying the agent made no change."""
    assert run_demo(demo_dir).returncode == 0
    config = ["--config", str(demo_dir / "factory.toml")]
    sent = subprocess.run(
        [FACTORY, *config, "comment", "CALC-1", "Mention it in the README too", "--author", "dana"],
        cwd=demo_dir,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    pr = LocalForge(demo_dir / ".factory" / "forge").list_pull_requests("calculator")[0]
    assert [(c.author, c.body) for c in pr.comments if c.author == "dana"] == [("dana", "Mention it in the README too")]
    deadline = time.monotonic() + 180
    shown = ""
    while time.monotonic() < deadline:
        shown = subprocess.run(
            [FACTORY, *config, "show", "CALC-1"], cwd=demo_dir, capture_output=True, text=True, timeout=120
        ).stdout
        if "state: needs_human" in shown:
            break
        time.sleep(1)
    assert "state: needs_human" in shown and "made no change for the feedback" in shown, shown

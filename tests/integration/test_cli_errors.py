"""The `factory` command line refuses bad input with one line and an exit code, never a traceback.

Each test runs the installed console script as a subprocess, in a temporary
directory holding a factory.toml. Where a Temporal address is needed it points
at a plain TCP listener owned by the test: if the CLI ever connected (and so
could have started a workflow), the listener would have a connection waiting.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_TICKET, ROOT, write_config

FACTORY = Path(sys.executable).parent / "factory"


def run_cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_") and k not in {"COLUMNS", "LINES"}}
    clean.update(env or {})
    return subprocess.run(
        [str(FACTORY), *args],
        cwd=cwd,
        env=clean,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The CLI's contract for user errors: exactly one line on stderr, starting with 'error:', no traceback."""
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


class Listener:
    """A TCP port that records whether anything connected to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def connections(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


@pytest.fixture
def temporal() -> Iterator[Listener]:
    listener = Listener()
    try:
        yield listener
    finally:
        listener.sock.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_config(tmp_path)
    return tmp_path


def write_ticket(directory: Path, **changes: object) -> Path:
    data = json.loads(EXAMPLE_TICKET.read_text())
    context = changes.pop("context", None)
    data.update(changes)
    if isinstance(context, dict):
        data["context"].update(context)
    path = directory / "ticket.json"
    path.write_text(json.dumps(data))
    return path


def test_listener_detects_a_connection(temporal: Listener) -> None:
    """The listener used below does notice a client (so 'no connection' assertions can fail)."""
    with socket.create_connection(("127.0.0.1", int(temporal.address.rsplit(":", 1)[1])), timeout=2):
        pass
    assert temporal.connections() == 1


def test_invalid_ticket_exits_2_naming_the_field(project: Path, temporal: Listener) -> None:
    """A ticket with a bad priority exits 2 with one line naming `priority`, before any server is contacted."""
    ticket = write_ticket(project, priority="urgent")

    proc = run_cli(project, "--address", temporal.address, "start", str(ticket))

    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "priority" in line
    assert "'low', 'medium' or 'high'" in line
    assert temporal.connections() == 0


def test_ticket_that_is_not_json_exits_2(project: Path, temporal: Listener) -> None:
    """Text on stdin that is not JSON exits 2 with one line saying so."""
    proc = run_cli(project, "--address", temporal.address, "start", "-", stdin="id: ENG-1\n")

    assert proc.returncode == 2
    assert "not valid JSON" in one_line_error(proc)
    assert temporal.connections() == 0


def test_missing_ticket_file_exits_2(project: Path, temporal: Listener) -> None:
    """A ticket path that does not exist exits 2 naming the path."""
    proc = run_cli(project, "--address", temporal.address, "start", "no-such-ticket.json")

    assert proc.returncode == 2
    assert "no-such-ticket.json does not exist" in one_line_error(proc)
    assert temporal.connections() == 0


def test_unknown_repo_exits_1_naming_repo_and_fix(project: Path, temporal: Listener) -> None:
    """A ticket for an unconfigured repo exits 1 with one line naming it, the known repos and what to add."""
    ticket = write_ticket(project, context={"repo": "payments-service"})

    proc = run_cli(project, "--address", temporal.address, "start", str(ticket))

    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "'payments-service'" in line
    assert "calculator" in line
    assert "[repos.payments-service]" in line
    assert "factory.toml" in line
    assert temporal.connections() == 0


def test_server_not_running_exits_1_saying_how_to_start_it(project: Path) -> None:
    """With nothing listening at the Temporal address, start exits 1 with one line pointing at `factory server
    start`."""
    ticket = write_ticket(project)

    proc = run_cli(project, "--address", "127.0.0.1:1", "start", str(ticket))

    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "127.0.0.1:1" in line
    assert "`factory server start`" in line
    assert "started ticket-" not in proc.stdout


def test_schema_prints_the_ticket_json_schema(project: Path) -> None:
    """`factory schema` prints valid JSON: the Standard Ticket Interface with acceptance_criteria required."""
    proc = run_cli(project, "schema")

    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert "acceptance_criteria" in schema["properties"]
    assert "acceptance_criteria" in schema["required"]
    assert proc.stderr == ""


def test_docker_unreachable_exits_1_mentioning_docker(project: Path, temporal: Listener) -> None:
    """`factory demo` with an unreachable Docker engine exits 1 with one line about Docker, and starts neither a
    server, a worker nor a workflow."""
    proc = run_cli(
        project,
        "--address",
        temporal.address,
        "demo",
        "--tickets-dir",
        str(ROOT / "examples" / "tickets"),
        env={"DOCKER_HOST": "unix:///nonexistent.sock"},
    )

    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "Docker" in line
    assert "DOCKER_HOST" in line
    assert temporal.connections() == 0
    home = project / ".factory"
    assert not (home / "server.pid").exists()
    assert not (home / "worker.pid").exists()


def test_model_without_a_price_exits_1_mentioning_prices(project: Path, temporal: Listener) -> None:
    """A coder model litellm has no price for, under a cost cap, exits 1 with one line saying to add [prices]."""
    ticket = write_ticket(project)

    proc = run_cli(
        project,
        "--address",
        temporal.address,
        "start",
        str(ticket),
        env={"FACTORY_MODELS__CODER": "openai/no-such-model-xyz"},
    )

    assert proc.returncode == 1
    line = one_line_error(proc)
    assert '[prices."openai/no-such-model-xyz"]' in line
    assert "cost cap" in line
    assert temporal.connections() == 0


def test_invalid_config_exits_1_naming_the_key(tmp_path: Path, temporal: Listener) -> None:
    """A bad value in factory.toml stops every command with one line naming the key."""
    write_config(tmp_path, "[budget]\ncost_usd = -1\n")
    ticket = write_ticket(tmp_path)

    proc = run_cli(tmp_path, "--address", temporal.address, "start", str(ticket))

    assert proc.returncode == 1
    assert "budget.cost_usd" in one_line_error(proc)
    assert temporal.connections() == 0


def test_check_deps_blocks_odd_names_without_a_registry_and_fails_closed(tmp_path: Path) -> None:
    """`factory check-deps` prints one verdict per name and exits 1 when any blocks: invalid names are refused
    without a request, and an unreachable registry makes a valid name "unverified", never "ok"."""
    closed = Listener()
    closed.sock.close()  # nothing listens here: the registry is unreachable
    write_config(tmp_path)
    env = {"FACTORY_GOVERNANCE__PYPI_URL": f"http://{closed.address}", "FACTORY_GOVERNANCE__REGISTRY_CACHE_TTL_S": "0"}
    proc = run_cli(tmp_path, "check-deps", "requests", "", "../etc/passwd", "x" * 300, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4
    assert "unverified" in lines[0] and "requests" in lines[0]
    assert all("blocked" in line and "invalid name" in line for line in lines[1:])


def test_discover_with_an_unknown_repo_starts_nothing(project: Path, temporal: Listener) -> None:
    """`factory discover --repo nope` names the repo and what to do, before any server is contacted."""
    proc = run_cli(project, "--address", temporal.address, "discover", "--repo", "nope")

    assert proc.returncode != 0
    line = one_line_error(proc)
    assert "'nope'" in line and "[repos.nope]" in line
    assert temporal.connections() == 0


def test_discover_with_an_unknown_source_exits_2(project: Path, temporal: Listener) -> None:
    proc = run_cli(project, "--address", temporal.address, "discover", "--only", "tarot")

    assert proc.returncode == 2
    assert "'tarot'" in one_line_error(proc)
    assert temporal.connections() == 0


def test_tickets_lists_the_tracker_and_filters_by_source(project: Path) -> None:
    """`factory tickets` shows what the tracker holds; --source narrows it; a bad --status is refused."""
    from factory.config import load_settings
    from factory.models import READY_LABEL, Ticket, TicketContext
    from factory.trackers import tracker_for

    tracker = tracker_for(load_settings(project / "factory.toml"))
    for ticket_id, source in (("LOG-1", "log-miner"), ("DEP-1", "dependency-watchdog")):
        tracker.create(
            Ticket(
                id=ticket_id,
                type="chore",
                priority="low",
                context=TicketContext(repo="calculator"),
                acceptance_criteria=["done"],
                labels=[READY_LABEL],
                source=source,
                fingerprint=ticket_id.lower(),
            )
        )

    listed = run_cli(project, "tickets", "--source", "log-miner", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["ticket"]["id"] for line in listed.stdout.splitlines() if line.startswith("{")] == [
        "LOG-1"
    ]
    bad = run_cli(project, "tickets", "--status", "maybe")
    assert bad.returncode == 2
    assert "'maybe'" in one_line_error(bad)

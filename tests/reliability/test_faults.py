"""Faults a ticket must survive: the dev server restarting, a sandbox process running out of memory,
the same ticket submitted twice at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import docker
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from factory.forge import LocalForge
from factory.models import TicketResult, TicketState, parse_ticket, workflow_id_for
from factory.runs import resolve_ticket_run
from factory.sandbox import DockerSandboxes
from starter import submit_ticket, wait_for_ticket
from tests.conftest import EXAMPLE_TICKET, copy_playbook, make_settings, managed_containers, model_calls
from tests.integration.test_crash import start_worker
from tests.workflows.test_ticket_workflow import example_ticket, run_ticket, running_workers

TEMPORAL = str(Path(sys.executable).parent / "temporal")
FACTORY = str(Path(sys.executable).parent / "factory")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_dev_server(db: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    args = [
        TEMPORAL,
        "server",
        "start-dev",
        "--db-filename",
        str(db),
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--headless",
        "--log-level",
        "error",
    ]
    for key in ("TicketId", "TicketType", "TicketPriority", "Repo", "TicketState"):
        args += ["--search-attribute", f"{key}=Keyword"]
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)


async def connect_when_up(address: str, timeout_s: float = 60) -> Client:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await Client.connect(address, data_converter=pydantic_data_converter)
        except RuntimeError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.3)


async def test_restarting_the_dev_server_mid_ticket_loses_nothing(tmp_path: Path) -> None:
    """The dev server is stopped in the middle of the agent loop and started again on the same SQLite file:
    the ticket completes, with each model call made once and one pull request."""
    ticket = parse_ticket(EXAMPLE_TICKET.read_text()).model_copy(update={"id": f"RESTART-{uuid.uuid4().hex[:6]}"})
    copy_playbook("crash-fix", ticket.id, tmp_path / "playbooks")
    settings = make_settings(tmp_path, playbooks=tmp_path / "playbooks")
    port = free_port()
    address = f"127.0.0.1:{port}"
    db = tmp_path / "temporal.db"
    server = start_dev_server(db, port, tmp_path / "server.log")
    worker: subprocess.Popen[bytes] | None = None
    try:
        client = await connect_when_up(address)
        worker = start_worker(tmp_path / "factory.toml", address, tmp_path / "worker.log")
        outcome = await submit_ticket(client, resolve_ticket_run(ticket, settings), search_attributes=True)
        deadline = asyncio.get_running_loop().time() + 120
        while len(model_calls(settings)) < 2:
            assert asyncio.get_running_loop().time() < deadline, "the ticket did not start working"
            await asyncio.sleep(0.1)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        await asyncio.sleep(2)
        server = start_dev_server(db, port, tmp_path / "server.log")
        client = await connect_when_up(address)
        result = await asyncio.wait_for(wait_for_ticket(client, outcome.workflow_id, poll_s=0.3), timeout=240)
    finally:
        for proc in (worker, server):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    assert isinstance(result, TicketResult), (tmp_path / "worker.log").read_text()[-3000:]
    assert result.state == TicketState.READY_FOR_MERGE, result.reason
    assert [call["step"] for call in model_calls(settings)] == [0, 1, 2, 3, 4]
    assert len(LocalForge(settings.forge_root).list_pull_requests("calculator")) == 1


async def test_a_sandbox_process_out_of_memory_is_killed_and_the_ticket_goes_on(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """Allocating past the memory limit kills that process only (exit 137 reported to the agent); the sandbox
    survives and the ticket completes."""
    ticket = example_ticket()
    copy_playbook("oom-then-fix", ticket.id, tmp_path / "playbooks")
    settings = make_settings(tmp_path, playbooks=tmp_path / "playbooks")
    settings.limits.sandbox.memory = "256m"
    client = time_skipping_env.client
    async with running_workers(client, settings):
        result = await run_ticket(client, settings, ticket)
    assert result.state == TicketState.READY_FOR_MERGE, result.reason
    meta = DockerSandboxes(settings.workspaces_root).workspace_for(workflow_id_for(ticket.id)).meta
    records = [json.loads(line) for line in (meta / "transcript.jsonl").read_text().splitlines()]
    first_tool = next(r for r in records if r["key"].startswith("tool-"))
    assert first_tool["message"]["content"].startswith("exit code 137")
    assert managed_containers(docker_client, workflow_id_for(ticket.id)) == []


async def test_starting_the_same_ticket_twice_at_once_starts_one_workflow(dev_client: Client, tmp_path: Path) -> None:
    """Two `factory start` of the same ticket at the same moment: one starts it, the other reports it."""
    ticket_id = f"DUP-{uuid.uuid4().hex[:6]}"
    copy_playbook("example", ticket_id, tmp_path / "playbooks")
    make_settings(tmp_path, playbooks=tmp_path / "playbooks")
    data = json.loads(EXAMPLE_TICKET.read_text()) | {"id": ticket_id}
    (tmp_path / "ticket.json").write_text(json.dumps(data))
    address = dev_client.service_client.config.target_host
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_")}
    args = [FACTORY, "--config", str(tmp_path / "factory.toml"), "--address", address, "start", "ticket.json"]
    procs = [
        subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [await asyncio.to_thread(proc.communicate, timeout=120) for proc in procs]
    # No worker serves this ticket here; end it so no other test's worker on this server picks it up.
    await dev_client.get_workflow_handle(f"ticket-{ticket_id}").terminate("test done")
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    said = sorted(out for out, _ in outputs)
    assert sum(f"started ticket-{ticket_id}" in out for out in said) == 1, said
    assert sum("already has a workflow" in out and "nothing started" in out for out in said) == 1, said


async def test_a_model_call_hanging_past_its_timeout_is_retried_and_answered_once(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A model call that hangs past the model timeout is abandoned and retried; the ticket completes and the
    call log shows each step answered once."""
    ticket = example_ticket()
    copy_playbook("hang-once", ticket.id, tmp_path / "playbooks")
    settings = make_settings(tmp_path, playbooks=tmp_path / "playbooks")
    settings.models.timeout_s = 1
    client = time_skipping_env.client
    async with running_workers(client, settings):
        started = asyncio.get_running_loop().time()
        result = await run_ticket(client, settings, ticket)
        elapsed = asyncio.get_running_loop().time() - started
    assert result.state == TicketState.READY_FOR_MERGE, result.reason
    assert [call["step"] for call in model_calls(settings)] == [0, 1]
    assert elapsed < 50  # the hung call was given up after about 6 s, not waited out


async def test_a_forge_answering_5xx_then_recovering_gets_exactly_one_pull_request(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The forge (GitHub's API, here a local fake speaking it) answers 503, 503, 502 and then recovers: the
    activity is retried, the ticket ends ready for merge, and GitHub holds exactly one pull request."""
    from pydantic import SecretStr

    from tests.unit.test_github_forge import OWNER, TOKEN, FakeGitHub, Handler, Server

    server = Server(("127.0.0.1", 0), Handler)
    server.fake = FakeGitHub(repos={"calculator"}, base_url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        ticket = example_ticket()
        copy_playbook("example", ticket.id, tmp_path / "playbooks")
        settings = make_settings(tmp_path, playbooks=tmp_path / "playbooks")
        settings.forge.kind = "github"
        settings.forge.api_url = server.fake.base_url
        settings.forge.owner = OWNER
        settings.forge.token = SecretStr(TOKEN)
        server.fake.fail_with = [503, 503, 502]
        client = time_skipping_env.client
        async with running_workers(client, settings):
            result = await run_ticket(client, settings, ticket)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert result.state == TicketState.READY_FOR_MERGE, result.reason
    assert server.fake.fail_with == []  # every failure was answered, and retried past
    assert [pr["head"]["ref"] for pr in server.fake.prs.values()] == [result.branch]
    assert result.pull_request is not None and result.pull_request.url.startswith("https://github.com/")

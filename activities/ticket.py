"""Activities of a ticket's life: thin adapters from Temporal to ``factory/``.

Each method translates a payload into a call on the domain library and its
``FactoryError`` into a Temporal failure: permanent errors become non-retryable
``ApplicationError``s whose type is the error's class name, so the workflow's
retry policies and the Web UI both show what went wrong.

Blocking work (Docker, git, files) runs in a thread while the activity
heartbeats, so a worker that dies is noticed within the heartbeat timeout, and a
cancelled ticket stops waiting at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import os
import shutil
import stat
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from factory.agent import step as agent_step
from factory.config import Settings
from factory.errors import BudgetExhausted, FactoryError, SandboxError
from factory.forge import forge_for
from factory.forge.gitops import clone_for_sandbox, verify_bundle_and_push
from factory.models import (
    CloneRequest,
    CloneResult,
    CommandRequest,
    CommandResult,
    ExportRequest,
    ExportResult,
    FeedbackRequest,
    ModelStepRequest,
    ModelStepResult,
    ProvisionRequest,
    PullRequestRef,
    PullRequestRequest,
    PushRequest,
    PushResult,
    SandboxHandle,
    Spend,
    ToolCallRequest,
    ToolResult,
    TranscriptStart,
)
from factory.sandbox import DockerSandboxes, Workspace, chown_tree_to_sandbox

__all__ = ["TicketActivities", "boundary", "heartbeating", "host_queue", "in_thread", "timed"]

log = structlog.get_logger()
P = ParamSpec("P")
R = TypeVar("R")

_HEARTBEAT_EVERY_S = 5.0
_BUNDLE_NAME = "ticket.bundle"


def host_queue(base: str, host_name: str) -> str:
    """The queue only this host's worker listens on (sandbox affinity)."""
    return f"{base}@{host_name}"


def _to_temporal(exc: FactoryError) -> ApplicationError:
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=exc.permanent)


def boundary(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn FactoryErrors into Temporal failures with the right retry behaviour."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except FactoryError as exc:
            log.warning("activity_failed", activity=fn.__name__, error=str(exc), permanent=exc.permanent)
            raise _to_temporal(exc) from exc

    return wrapper


def timed(kind: str) -> Callable[[Callable[[Any, Any], Awaitable[R]]], Callable[[Any, Any], Awaitable[R]]]:
    """Record the activity's duration in the workspace's ``meta/timings.jsonl``.

    The benchmark reads these to split a ticket's wall time into model calls,
    sandbox commands, git, provisioning and the orchestration around them.
    """

    def decorate(fn: Callable[[Any, Any], Awaitable[R]]) -> Callable[[Any, Any], Awaitable[R]]:
        @functools.wraps(fn)
        async def wrapper(self: Any, request: Any) -> R:
            started = time.monotonic()
            result = await fn(self, request)
            workspace = _workspace_of(request, result)
            if workspace is not None:
                line = {"activity": fn.__name__, "kind": kind, "seconds": round(time.monotonic() - started, 4)}
                with (workspace / "meta" / "timings.jsonl").open("a") as handle:
                    handle.write(json.dumps(line) + "\n")
            return result

        return wrapper

    return decorate


def _workspace_of(request: Any, result: Any) -> Path | None:
    for candidate in (request, getattr(request, "sandbox", None), result):
        if isinstance(candidate, SandboxHandle):
            path = Path(candidate.workspace)
            return path if (path / "meta").is_dir() else None
    if isinstance(request, PushRequest):
        return Path(request.bundle_path).parent.parent
    return None


def heartbeat_interval() -> float:
    """How often to heartbeat: every 5 s, or a third of a shorter heartbeat timeout so no beat comes late."""
    timeout = activity.info().heartbeat_timeout
    if timeout is None or timeout.total_seconds() <= 0:
        return _HEARTBEAT_EVERY_S
    return min(_HEARTBEAT_EVERY_S, timeout.total_seconds() / 3)


async def heartbeating(work: Awaitable[R], detail: str | None = None) -> R:
    """Await ``work`` (a model call, say) while heartbeating; cancelling the activity cancels it."""
    task = asyncio.ensure_future(work)
    every = heartbeat_interval()
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            if detail is None:
                activity.heartbeat()
            else:
                activity.heartbeat(detail)
    finally:
        task.cancel()


# Blocking activity work (Docker calls, sandbox commands, git) waits in these threads. The
# event loop's default pool has only cores + 4 threads, fewer than five tickets' concurrent
# sandbox commands and Docker calls need: work would queue behind a running test suite.
_BLOCKING = ThreadPoolExecutor(max_workers=64, thread_name_prefix="factory-blocking")


async def in_thread(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Run blocking work in a thread, heartbeating until it ends."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    task = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(_BLOCKING, call))
    every = heartbeat_interval()
    while True:
        done, _ = await asyncio.wait({task}, timeout=every)
        if done:
            return task.result()
        activity.heartbeat()


class TicketActivities:
    def __init__(self, settings: Settings, sandboxes: DockerSandboxes | None = None) -> None:
        self.settings = settings
        self.sandboxes = sandboxes or DockerSandboxes(settings.workspaces_root)
        self.forge = forge_for(settings)
        self.queue = host_queue("execution", settings.host_name)

    def _workspace(self, sandbox: SandboxHandle) -> Workspace:
        return Workspace(Path(sandbox.workspace))

    @activity.defn
    @boundary
    @timed("provision")
    async def provision_sandbox(self, request: ProvisionRequest) -> SandboxHandle:
        container_id, name, workspace = await in_thread(
            self.sandboxes.provision,
            request.ticket_id,
            request.workflow_id,
            request.image,
            request.limits,
            request.instance,
        )
        log.info("sandbox_provisioned", ticket_id=request.ticket_id, workflow_id=request.workflow_id, container=name)
        return SandboxHandle(container_id=container_id, name=name, workspace=str(workspace.root), task_queue=self.queue)

    @activity.defn
    @boundary
    @timed("git")
    async def clone_repository(self, request: CloneRequest) -> CloneResult:
        workspace = self._workspace(request.sandbox)

        def clone() -> CloneResult:
            # A retry after a crash may find a half-made clone: start again from empty.
            for child in workspace.repo.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            branch = request.branch or request.repo.default_branch
            base = clone_for_sandbox(request.repo.clone_url, workspace.repo, branch)
            files = sum(len(names) for root, _, names in os.walk(workspace.repo) if ".git" not in Path(root).parts)
            # From here on the sandbox owns the tree; the host never runs git in it again.
            chown_tree_to_sandbox(workspace.repo)
            return CloneResult(base_commit=base, files=files)

        return await in_thread(clone)

    @activity.defn
    @boundary
    @timed("sandbox")
    async def run_command(self, request: CommandRequest) -> CommandResult:
        workspace = self._workspace(request.sandbox)
        result = await in_thread(
            self.sandboxes.exec, request.sandbox.name, request.command, request.timeout_s, on_wait=None
        )
        output = result.output
        if result.exit_code != 0:
            # A command that failed for want of network says so, and the ticket's log shows why.
            problem = await in_thread(self.sandboxes.egress_problem, request.sandbox.name)
            if problem is not None:
                log.warning("egress_down", container=request.sandbox.name, problem=problem)
                output += f"\n[factory: {problem}]"
        log_path = workspace.meta / "logs" / f"{request.purpose}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(f"$ {request.command}\n{output}\n[exit code {result.exit_code}]\n")
        return CommandResult(
            exit_code=result.exit_code,
            output_tail=output[-request.output_chars :],
            timed_out=result.timed_out,
            duration_s=round(result.duration_s, 3),
            log_path=str(log_path),
        )

    @activity.defn
    @boundary
    @timed("other")
    async def begin_transcript(self, request: TranscriptStart) -> None:
        workspace = self._workspace(request.sandbox)
        if request.continue_from:
            agent_step.continue_transcript(workspace, Workspace(Path(request.continue_from)))
        else:
            agent_step.begin(workspace, request.run, request.branch, request.tests_before)
        if request.feedback:
            agent_step.add_feedback(workspace, request.feedback_key or "feedback", request.feedback)

    @activity.defn
    @boundary
    @timed("model")
    async def model_step(self, request: ModelStepRequest) -> ModelStepResult:
        workspace = self._workspace(request.sandbox)
        try:
            return await heartbeating(
                agent_step.model_step(workspace, request.model, request.caps, request.spent, request.step),
                f"waiting for {request.model.name}",
            )
        except BudgetExhausted as exc:
            return ModelStepResult(step=request.step, usage=Spend(), budget_exhausted=str(exc))

    @activity.defn
    @boundary
    @timed("sandbox")
    async def tool_step(self, request: ToolCallRequest) -> ToolResult:
        return await in_thread(
            agent_step.tool_step,
            self.sandboxes,
            request.sandbox.name,
            self._workspace(request.sandbox),
            request.step,
            request.call_id,
            timeout_s=request.timeout_s,
            output_chars=request.output_chars,
        )

    @activity.defn
    @boundary
    @timed("other")
    async def add_feedback(self, request: FeedbackRequest) -> None:
        agent_step.add_feedback(self._workspace(request.sandbox), request.key, request.text)

    @activity.defn
    @boundary
    @timed("sandbox")
    async def export_changes(self, request: ExportRequest) -> ExportResult:
        workspace = self._workspace(request.sandbox)
        base = request.base_commit
        message = request.message.replace("'", "'\"'\"'")
        script = (
            "set -e\n"
            "git add -A\n"
            f"git diff --cached --quiet || git commit --no-verify -q -m '{message}'\n"
            "head=$(git rev-parse HEAD)\n"
            f'if [ "$head" = "{base}" ]; then echo "EMPTY"; exit 0; fi\n'
            f"rm -f /out/{_BUNDLE_NAME}\n"
            f"git bundle create -q /out/{_BUNDLE_NAME} {base}..HEAD\n"
            'echo "HEAD $head"\n'
            f"git diff --name-only {base} HEAD | sed 's/^/FILE /'\n"
            f"git diff --shortstat {base} HEAD | sed 's/^/STAT /'\n"
        )
        result = await in_thread(self.sandboxes.exec, request.sandbox.name, script, 120)
        if result.exit_code != 0:
            raise SandboxError(f"could not export the commits: {result.output.strip()[-300:]}")
        lines = result.output.splitlines()
        if "EMPTY" in lines:
            return ExportResult(empty=True)
        head = next(line[5:].strip() for line in lines if line.startswith("HEAD "))
        files = [line[5:] for line in lines if line.startswith("FILE ")]
        diffstat = next((line[5:].strip() for line in lines if line.startswith("STAT ")), "")
        bundle = await in_thread(_copy_out_regular_file, workspace.out / _BUNDLE_NAME, workspace.meta / _BUNDLE_NAME)
        return ExportResult(
            empty=False, head_commit=head, bundle_path=str(bundle), changed_files=files, diffstat=diffstat
        )

    @activity.defn
    @boundary
    @timed("git")
    async def push_branch(self, request: PushRequest) -> PushResult:
        work_dir = Path(request.bundle_path).parent / "verify"
        pushed = await in_thread(
            verify_bundle_and_push,
            Path(request.bundle_path),
            request.base_commit,
            request.head_commit,
            request.branch,
            request.repo.clone_url,
            request.repo.protected_branches,
            work_dir,
            expected_remote_sha=request.expected_remote_sha,
        )
        log.info("branch_pushed", branch=request.branch, head=request.head_commit, already_there=not pushed)
        return PushResult(branch=request.branch, head_commit=request.head_commit, already_there=not pushed)

    @activity.defn
    @boundary
    async def open_pull_request(self, request: PullRequestRequest) -> PullRequestRef:
        pr, created = await in_thread(
            self.forge.open_pull_request, request.repo.name, request.head, request.base, request.title, request.body
        )
        return PullRequestRef(number=pr.number, url=pr.url, head=pr.head, created=created)

    @activity.defn
    @boundary
    @timed("provision")
    async def destroy_sandbox(self, sandbox: SandboxHandle) -> bool:
        return await in_thread(self.sandboxes.destroy, sandbox.name, Path(sandbox.workspace))

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.provision_sandbox,
            self.clone_repository,
            self.run_command,
            self.begin_transcript,
            self.model_step,
            self.tool_step,
            self.add_feedback,
            self.export_changes,
            self.push_branch,
            self.open_pull_request,
            self.destroy_sandbox,
        ]


def _copy_out_regular_file(source: Path, dest: Path) -> Path:
    """Copy a file the sandbox wrote, refusing symlinks and anything but a regular file."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise SandboxError(f"export {source.name} is missing or is a symlink ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise SandboxError(f"export {source.name} is not a regular file")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as out:
            shutil.copyfileobj(handle, out)
    return dest

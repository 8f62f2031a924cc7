"""The Standard Ticket Interface and every payload that crosses a workflow boundary.

This module is imported by workflow code, so it must stay deterministic: no I/O,
no clocks, no randomness, nothing but pydantic and the standard library.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from factory.errors import TicketInvalid

__all__ = [
    "READY_LABEL",
    "TERMINAL_STATES",
    "Approval",
    "BudgetCaps",
    "CloneRequest",
    "CloneResult",
    "CommandRequest",
    "CommandResult",
    "CoverageReportRequest",
    "DiscoveredProblem",
    "DiscoveryAction",
    "DiscoveryPlan",
    "DiscoveryRecord",
    "DiscoveryRequest",
    "DiscoveryResult",
    "DiscoverySource",
    "DiscoveryTarget",
    "EarlierRun",
    "ExportRequest",
    "ExportResult",
    "FeedbackRequest",
    "FileProblemsRequest",
    "JanitorBranch",
    "JanitorPlan",
    "JanitorPublish",
    "JanitorRepoResult",
    "JanitorRequest",
    "JanitorResult",
    "JanitorSurvey",
    "JanitorSurveyRequest",
    "JanitorUpdate",
    "JanitorUpdateRequest",
    "ModelSpec",
    "ModelStepRequest",
    "ModelStepResult",
    "NightBatchRequest",
    "NightBudget",
    "NightCarry",
    "NightOutcomeRecord",
    "NightPlan",
    "NightReport",
    "NightReportNote",
    "NightShiftRequest",
    "NightTicket",
    "NightTicketOutcome",
    "NightTicketState",
    "OutdatedPackage",
    "PreparedTicket",
    "Priority",
    "ProblemBatch",
    "ProvisionRequest",
    "PullRequestRef",
    "PullRequestRequest",
    "PushRequest",
    "PushResult",
    "RepoInspection",
    "RepoSpec",
    "SandboxHandle",
    "SandboxLimits",
    "Spend",
    "Ticket",
    "TicketContext",
    "TicketLimits",
    "TicketResult",
    "TicketRun",
    "TicketState",
    "TicketStatus",
    "TicketType",
    "ToolCallRef",
    "ToolCallRequest",
    "ToolResult",
    "TrackedTicket",
    "TrackerComment",
    "TrackerStatus",
    "TranscriptStart",
    "branch_name",
    "parse_ticket",
    "slugify",
    "ticket_schema",
    "workflow_id_for",
]


# --------------------------------------------------------------------------
# The Standard Ticket Interface


class TicketType(StrEnum):
    BUG = "bug"
    FEATURE = "feature"
    CHORE = "chore"


class Priority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


_STRICT = ConfigDict(extra="forbid", frozen=True)
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class TicketContext(BaseModel):
    model_config = _STRICT

    repo: str = Field(min_length=1, description="Name of a [repos.NAME] table in factory.toml.")
    filepaths: list[str] = Field(default_factory=list, description="Files the work is about.")
    error_logs: str = Field(default="", description="Stack trace or log excerpt, if any.")


class Ticket(BaseModel):
    """A unit of work, exactly the seed's Standard Ticket Interface plus optional fields."""

    model_config = _STRICT

    id: str = Field(pattern=_ID_PATTERN, description="Tracker id, e.g. ENG-1042.")
    type: TicketType
    priority: Priority
    context: TicketContext
    acceptance_criteria: list[str] = Field(min_length=1)

    # Optional fields the factory uses; trackers may leave them out.
    title: str | None = Field(default=None, max_length=200)
    description: str | None = None
    labels: list[str] = Field(default_factory=list)
    source: str | None = Field(default=None, description="Where the ticket came from (tracker URL, log miner, ...).")
    fingerprint: str | None = Field(default=None, description="De-duplication key for discovered tickets.")

    @field_validator("acceptance_criteria")
    @classmethod
    def _criteria_not_blank(cls, value: list[str]) -> list[str]:
        if any(not item.strip() for item in value):
            raise ValueError("criteria must not be blank")
        return value

    @property
    def display_title(self) -> str:
        return self.title or self.acceptance_criteria[0]


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts) or "(ticket)"


def parse_ticket(text: str | bytes) -> Ticket:
    """Validate JSON text as a ticket; the error names the field and the reason."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TicketInvalid(f"ticket is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise TicketInvalid("ticket must be a JSON object")
    try:
        return Ticket.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        reason = first["msg"]
        if first["type"] == "string_pattern_mismatch":
            reason = "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        elif first["type"] == "extra_forbidden":
            reason = "is not a field of the Standard Ticket Interface"
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        raise TicketInvalid(f"invalid ticket: {_field_path(tuple(first['loc']))}: {reason}{more}") from None


def ticket_schema() -> dict[str, Any]:
    return Ticket.model_json_schema()


def workflow_id_for(ticket_id: str) -> str:
    return f"ticket-{ticket_id}"


def slugify(text: str, max_length: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(slug) > max_length:
        slug = slug[:max_length].rsplit("-", 1)[0] or slug[:max_length]
    return slug.strip("-") or "change"


def branch_name(ticket: Ticket, attempt: int = 0) -> str:
    """``<type>/<id>-<slug>``, always a valid git ref name; a reopened ticket's later run (``attempt``
    1, 2, ...) gets a branch of its own, ``<type>/<id>-r<attempt>-<slug>``."""
    ident = re.sub(r"[^A-Za-z0-9_-]+", "-", ticket.id).strip("-").lower()
    again = f"-r{attempt}" if attempt else ""
    return f"{ticket.type.value}/{ident}{again}-{slugify(ticket.display_title)}"


class TicketState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    READY_FOR_MERGE = "ready_for_merge"
    FAILED = "failed"
    BUDGET_EXHAUSTED = "budget_exhausted"
    NEEDS_HUMAN = "needs_human"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset(
    {
        TicketState.READY_FOR_MERGE,
        TicketState.FAILED,
        TicketState.BUDGET_EXHAUSTED,
        TicketState.NEEDS_HUMAN,
        TicketState.CANCELLED,
    }
)


# --------------------------------------------------------------------------
# Budget


class BudgetCaps(BaseModel):
    """MAX_BUDGET for one ticket; ``None`` means no cap on that measure."""

    model_config = ConfigDict(extra="forbid")

    tokens: int | None = Field(default=200_000, ge=1)
    cost_usd: float | None = Field(default=5.0, gt=0)
    steps: int | None = Field(default=40, ge=1)


class Spend(BaseModel):
    """What a ticket has used so far; settled after each model call."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    steps: int = 0
    model_seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    def plus(self, usage: Spend) -> Spend:
        return Spend(
            tokens_in=self.tokens_in + usage.tokens_in,
            tokens_out=self.tokens_out + usage.tokens_out,
            cost_usd=round(self.cost_usd + usage.cost_usd, 6),
            steps=self.steps + usage.steps,
            model_seconds=round(self.model_seconds + usage.model_seconds, 3),
        )

    def exhausted_cap(self, caps: BudgetCaps) -> str | None:
        """The name of the first cap this spend has reached, if any."""
        if caps.steps is not None and self.steps >= caps.steps:
            return "steps"
        if caps.tokens is not None and self.tokens >= caps.tokens:
            return "tokens"
        if caps.cost_usd is not None and self.cost_usd >= caps.cost_usd:
            return "cost"
        return None

    def describe(self, caps: BudgetCaps) -> str:
        def part(used: float, cap: float | None, fmt: str) -> str:
            return fmt.format(used) + ("" if cap is None else " / " + fmt.format(cap))

        return (
            f"tokens {part(self.tokens, caps.tokens, '{:,.0f}')}, "
            f"cost {part(self.cost_usd, caps.cost_usd, '${:.4f}')}, "
            f"steps {part(self.steps, caps.steps, '{:.0f}')}"
        )


# --------------------------------------------------------------------------
# What a ticket run is given (resolved from configuration by the starter)


class RepoSpec(BaseModel):
    name: str
    clone_url: str
    default_branch: str = "main"
    install_command: str | None = None
    test_command: str = "python3 -m pytest -q"
    image: str = "factory-sandbox:latest"
    protected_branches: list[str] = Field(default_factory=lambda: ["main", "production"])
    style_guide: str | None = None
    egress_allow: list[str] = Field(
        default_factory=list, description="Hosts the sandbox may reach through the egress proxy (empty: none)."
    )


class ModelSpec(BaseModel):
    name: str
    api_base: str | None = None
    max_output_tokens: int = Field(default=4096, ge=1)
    min_output_tokens: int = Field(default=256, ge=1)
    input_price_per_mtok: float | None = Field(default=None, ge=0)
    output_price_per_mtok: float | None = Field(default=None, ge=0)
    timeout_s: float = Field(default=300, gt=0)

    @property
    def scripted(self) -> bool:
        return self.name.startswith("scripted/")


class SandboxLimits(BaseModel):
    memory: str = "2g"
    cpus: float = 1.0
    pids: int = 512
    workspace_size: str | None = Field(
        default="4g", description='Size limit of the workspace (its own file system); "none" for no limit.'
    )
    egress_allow: list[str] = Field(default_factory=list, description="Hosts reachable through the egress proxy.")

    @field_validator("workspace_size", mode="before")
    @classmethod
    def _none_means_no_limit(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in {"", "none"} else value


class TicketLimits(BaseModel):
    command_timeout_s: int = Field(default=300, ge=1)
    test_timeout_s: int = Field(default=900, ge=1)
    tool_output_chars: int = Field(default=8000, ge=200)
    max_test_rounds: int = Field(default=3, ge=1)
    heartbeat_timeout_s: int = Field(default=30, ge=2)
    ticket_timeout_s: int = Field(
        default=4 * 3600, ge=1, description="Wall-clock limit of a ticket's work (waiting for PR comments excluded)."
    )
    sandbox: SandboxLimits = Field(default_factory=SandboxLimits)


class ReviewPolicy(BaseModel):
    """What the reviewer enforces for one repository and ticket."""

    protected_paths: list[str] = Field(default_factory=list)
    max_diff_lines: int = 300
    style_guide: str | None = None
    architecture_docs: list[str] = Field(default_factory=list)


class TicketRun(BaseModel):
    """The workflow input: the ticket and everything resolved for it at submission."""

    ticket: Ticket
    repo: RepoSpec
    model: ModelSpec
    caps: BudgetCaps
    limits: TicketLimits = Field(default_factory=TicketLimits)
    reviewer: ModelSpec | None = Field(default=None, description="None: no governance, end at the pull request.")
    review: ReviewPolicy | None = None
    max_review_rounds: int = Field(default=3, ge=1)
    await_comments_s: int = Field(
        default=0, ge=0, description="How long a ready ticket keeps listening for human comments on its PR."
    )
    attempt: int = Field(
        default=0,
        ge=0,
        description="Times the ticket was reopened before this run: a reopened ticket runs again, on its own branch.",
    )


# --------------------------------------------------------------------------
# Activity payloads


class SandboxHandle(BaseModel):
    container_id: str
    name: str
    workspace: str = Field(description="Host directory holding the repo, transcript and exports.")
    task_queue: str = Field(description="The queue of the worker host that holds the workspace.")


class ProvisionRequest(BaseModel):
    ticket_id: str
    workflow_id: str
    image: str
    limits: SandboxLimits
    instance: int = Field(default=1, ge=1, description="Fix rounds get a fresh sandbox: 2, 3, ...")


class CloneRequest(BaseModel):
    sandbox: SandboxHandle
    repo: RepoSpec
    branch: str | None = Field(default=None, description="Clone this branch instead of the default one.")


class CloneResult(BaseModel):
    base_commit: str
    files: int


class CommandRequest(BaseModel):
    sandbox: SandboxHandle
    command: str
    timeout_s: int
    purpose: str = Field(description="Short name for logs, e.g. 'tests-before'.")
    output_chars: int = 4000


class CommandResult(BaseModel):
    exit_code: int
    output_tail: str
    timed_out: bool = False
    duration_s: float = 0.0
    log_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class TranscriptStart(BaseModel):
    """Writes the agent's opening messages into the workspace transcript."""

    sandbox: SandboxHandle
    run: TicketRun
    branch: str
    tests_before: CommandResult | None = None
    continue_from: str | None = Field(default=None, description="Workspace of the previous round, to continue.")
    feedback: str | None = Field(default=None, description="Review findings or human comments to act on.")
    feedback_key: str | None = None


class ModelStepRequest(BaseModel):
    sandbox: SandboxHandle
    model: ModelSpec
    caps: BudgetCaps
    step: int
    spent: Spend


class ToolCallRef(BaseModel):
    call_id: str
    name: str
    summary: str


class ModelStepResult(BaseModel):
    step: int
    text: str = Field(default="", description="The first few hundred characters the model said.")
    tool_calls: list[ToolCallRef] = Field(default_factory=list)
    usage: Spend
    budget_exhausted: str | None = Field(default=None, description="Why the call was not made, if it was not.")


class ToolCallRequest(BaseModel):
    sandbox: SandboxHandle
    step: int
    call_id: str
    timeout_s: int
    output_chars: int


class ToolResult(BaseModel):
    call_id: str
    name: str
    ok: bool
    summary: str
    submitted: bool = False
    message: str | None = Field(default=None, description="The agent's summary, for `submit`.")
    duration_s: float = 0.0


class FeedbackRequest(BaseModel):
    sandbox: SandboxHandle
    key: str = Field(description="Idempotence key: the same feedback is recorded once.")
    text: str


class ExportRequest(BaseModel):
    sandbox: SandboxHandle
    base_commit: str
    message: str


class ExportResult(BaseModel):
    empty: bool
    head_commit: str | None = None
    bundle_path: str | None = None
    changed_files: list[str] = Field(default_factory=list)
    diffstat: str = ""


class PushRequest(BaseModel):
    repo: RepoSpec
    branch: str
    bundle_path: str
    base_commit: str
    head_commit: str
    expected_remote_sha: str | None = Field(
        default=None,
        description="Push only if the remote branch's tip is this commit ('': the branch must not exist). "
        "None: the usual lease on the tip seen at push time.",
    )


class PushResult(BaseModel):
    branch: str
    head_commit: str
    already_there: bool = False


class PullRequestRequest(BaseModel):
    repo: RepoSpec
    head: str
    base: str
    title: str
    body: str


class PullRequestRef(BaseModel):
    number: int
    url: str
    head: str
    created: bool = False


# --------------------------------------------------------------------------
# What a ticket run shows and returns


class TicketStatus(BaseModel):
    ticket_id: str
    title: str
    repo: str = ""
    state: TicketState
    phase: str
    reason: str | None = None
    model: str
    scripted_model: bool
    step: int = 0
    test_rounds: int = 0
    spend: Spend = Field(default_factory=Spend)
    caps: BudgetCaps = Field(default_factory=BudgetCaps)
    branch: str | None = None
    pull_request: PullRequestRef | None = None
    review_rounds: int = 0
    open_findings: list[str] = Field(default_factory=list)
    attempt: int = 0
    log: list[str] = Field(default_factory=list, description="The newest lines of the ticket's log.")

    def result(self, state: TicketState | None = None) -> TicketResult:
        """The ticket's result as it stands (in ``state``, default its current one)."""
        final = state or self.state
        return TicketResult(
            ticket_id=self.ticket_id,
            state=final,
            reason=self.reason or final.value,
            spend=self.spend,
            caps=self.caps,
            branch=self.branch,
            pull_request=self.pull_request,
            test_rounds=self.test_rounds,
            review_rounds=self.review_rounds,
            open_findings=self.open_findings,
            attempt=self.attempt,
        )


class TicketResult(BaseModel):
    ticket_id: str
    state: TicketState
    reason: str
    spend: Spend
    caps: BudgetCaps
    branch: str | None = None
    pull_request: PullRequestRef | None = None
    test_rounds: int = 0
    review_rounds: int = 0
    open_findings: list[str] = Field(default_factory=list)
    attempt: int = Field(default=0, description="Which run of a reopened ticket this was (0: the first).")


# --------------------------------------------------------------------------
# Governance: review findings and verdicts


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Verdict(StrEnum):
    APPROVE = "approve"
    REQUEST_CHANGES = "request_changes"


class Finding(BaseModel):
    """One thing a check found in a change, tied to a file and line where it can be."""

    check: str = Field(
        description="Which check: ruff, docstring, tests, secret, protected-path, diff-size, dependency, llm."
    )
    path: str | None = None
    line: int | None = Field(default=None, ge=1)
    severity: Severity = Severity.ERROR
    message: str = Field(max_length=2000)

    @property
    def blocking(self) -> bool:
        """Warnings and errors request changes; info is only reported."""
        return self.severity != Severity.INFO

    @property
    def key(self) -> str:
        """Stable identity of the finding, for posting each one once per commit."""
        text = f"{self.check}|{self.path or ''}|{self.line or 0}|{self.message}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        where = f"{self.path}:{self.line}" if self.path and self.line else (self.path or "(change)")
        return f"[{self.severity.value}] {where} ({self.check}): {self.message}"


def verdict_for(findings: list[Finding]) -> Verdict:
    return Verdict.REQUEST_CHANGES if any(f.blocking for f in findings) else Verdict.APPROVE


class ReviewRequest(BaseModel):
    """Input of ReviewWorkflow: one pushed commit of a ticket's pull request."""

    ticket: Ticket
    repo: RepoSpec
    model: ModelSpec
    caps: BudgetCaps
    spent: Spend
    pull_request: PullRequestRef
    branch: str
    base_commit: str
    head_commit: str
    round: int = Field(ge=1)
    policy: ReviewPolicy
    heartbeat_timeout_s: int = Field(default=30, ge=2, description="How fast a dead governance worker is noticed.")


class ReviewPart(BaseModel):
    """What one group of checks found."""

    checks_run: list[str] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    usage: Spend = Field(default_factory=Spend)
    summary: str = ""
    budget_exhausted: str | None = None


class PostReviewRequest(BaseModel):
    repo: RepoSpec
    number: int
    head_commit: str
    verdict: Verdict
    summary: str
    findings: list[Finding]


class ReviewResult(BaseModel):
    round: int
    head_commit: str
    verdict: Verdict
    findings: list[Finding] = Field(default_factory=list)
    checks_run: list[str] = Field(default_factory=list)
    usage: Spend = Field(default_factory=Spend)
    summary: str = ""
    comments_posted: int = 0
    budget_exhausted: str | None = None


class Notification(BaseModel):
    """A message for the team's chat: Slack and/or Discord incoming webhooks."""

    title: str
    text: str
    url: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    channel: Literal["slack", "discord"] | None = Field(
        default=None, description="One channel (retried on its own), or None for every configured one."
    )


class PullRequestBodyUpdate(BaseModel):
    repo: RepoSpec
    number: int
    body: str


class HumanComment(BaseModel):
    """A person's comment on the pull request, sent to the running ticket."""

    author: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=20_000)


# --------------------------------------------------------------------------
# The tracker: tickets waiting for the factory

READY_LABEL = "ready-for-robot"


class TrackerStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Approval(BaseModel):
    """A person's go-ahead for the next night shift."""

    by: str = Field(min_length=1, max_length=200)
    at: datetime


class TrackerComment(BaseModel):
    author: str
    at: datetime
    text: str


class TrackedTicket(BaseModel):
    """A Standard Ticket as the tracker holds it, with what the tracker knows about it."""

    ticket: Ticket
    status: TrackerStatus = TrackerStatus.OPEN
    created_at: datetime
    updated_at: datetime
    occurrences: int = Field(
        default=1, ge=1, description="How often the newest sighting saw it (e.g. errors in the Log Miner's window)."
    )
    sightings: int = Field(default=1, ge=1, description="Discovery runs that found this problem.")
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    sample: str | None = Field(default=None, description="The newest sample of the problem (log line, advisory).")
    approval: Approval | None = None
    reopened: int = Field(default=0, ge=0, description="Times a closed ticket came back.")
    comments: list[TrackerComment] = Field(default_factory=list)
    observations: list[str] = Field(
        default_factory=list, description="Keys of the discovery runs already counted (newest last, bounded)."
    )
    aliases: list[str] = Field(
        default_factory=list, description="Other keys the problem was found under (newest first, bounded)."
    )

    @property
    def id(self) -> str:
        return self.ticket.id


class DiscoveredProblem(BaseModel):
    """What a discovery source found: a ticket to create, or to update when its fingerprint is known."""

    ticket: Ticket
    occurrences: int = Field(default=1, ge=1, description="How often this sighting saw the problem.")
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    sample: str | None = None
    aliases: list[str] = Field(
        default_factory=list,
        description=(
            "Other keys of the same problem, steadier than the fingerprint (a log group's line shapes): "
            "with no ticket under the fingerprint, a ticket sharing one of them is this problem's."
        ),
    )


class DiscoveryAction(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    REOPENED = "reopened"
    UNCHANGED = "unchanged"


class DiscoveryRecord(BaseModel):
    ticket_id: str
    fingerprint: str
    action: DiscoveryAction
    title: str


# --------------------------------------------------------------------------
# Scheduled workflows: what each is started with (a schedule's action or the command line)


class DiscoverySource(StrEnum):
    LOGS = "logs"
    COVERAGE = "coverage"
    DEPS = "deps"


class DiscoveryRequest(BaseModel):
    repos: list[str] = Field(default_factory=list, description="Repos to look at; empty means every configured repo.")
    only: list[DiscoverySource] = Field(default_factory=list, description="Sources to run; empty means all.")


class NightTicketState(StrEnum):
    """Where a ticket of the night's batch stands: a ticket's own states plus the night's."""

    QUEUED = "queued"
    RUNNING = "running"
    READY_FOR_MERGE = "ready_for_merge"
    FAILED = "failed"
    BUDGET_EXHAUSTED = "budget_exhausted"
    NEEDS_HUMAN = "needs_human"
    CANCELLED = "cancelled"
    DEFERRED = "deferred"
    ALREADY_RAN = "already_ran"
    ALREADY_RUNNING = "already_running"
    NOT_STARTED = "not_started"


class NightTicket(BaseModel):
    """One approved ticket in the night's batch, as the snapshot at the start saw it."""

    ticket_id: str
    title: str
    priority: Priority
    approved_by: str | None = None
    approved_at: datetime | None = None


class NightTicketOutcome(BaseModel):
    ticket_id: str
    title: str
    state: NightTicketState = NightTicketState.QUEUED
    reason: str = ""
    workflow_id: str = ""
    branch: str | None = None
    pull_request: PullRequestRef | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    cost_usd: float = 0.0
    cost_cap_usd: float | None = None
    review_rounds: int = 0

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def ended(self, result: TicketResult, at: datetime) -> NightTicketOutcome:
        """This outcome with the ticket's result: state, reason, PR, spend, rounds."""
        return self.model_copy(
            update={
                "state": NightTicketState(result.state.value),
                "reason": result.reason,
                "branch": result.branch,
                "pull_request": result.pull_request,
                "cost_usd": result.spend.cost_usd,
                "review_rounds": result.review_rounds,
                "ended_at": at,
            }
        )


class NightBudget(BaseModel):
    """The per-night cost cap across the batch.

    A ticket may start only if what finished tickets spent, plus the cost caps of
    those still running, plus its own cost cap stays within the night's cap.
    """

    cap_usd: float | None = None
    spent_usd: float = 0.0
    running: dict[str, float] = Field(default_factory=dict, description="Cost caps of the running tickets.")

    def decide(self, ticket_cap_usd: float | None) -> Literal["start", "wait", "defer"]:
        """``start`` now, ``wait`` for a running ticket to finish, or ``defer`` to another night."""
        if self.cap_usd is None:
            return "start"
        if ticket_cap_usd is None:
            return "defer"
        # What finished tickets spent never shrinks: past the cap with it, the ticket can never fit tonight.
        if self.spent_usd + ticket_cap_usd > self.cap_usd + 1e-9:
            return "defer"
        if self.spent_usd + sum(self.running.values()) + ticket_cap_usd > self.cap_usd + 1e-9:
            return "wait"
        return "start"

    def defer_reason(self, ticket_cap_usd: float | None) -> str:
        if ticket_cap_usd is None:
            return f"deferred: the ticket has no cost cap, so the night's cap of ${self.cap_usd:.2f} cannot bound it"
        return (
            f"deferred: its cost cap ${ticket_cap_usd:.2f} does not fit in what is left of the night's cap "
            f"(${self.spent_usd:.2f} of ${self.cap_usd or 0:.2f} spent)"
        )

    def started(self, ticket_id: str, ticket_cap_usd: float | None) -> None:
        self.running[ticket_id] = ticket_cap_usd or 0.0

    def finished(self, ticket_id: str, cost_usd: float) -> None:
        self.running.pop(ticket_id, None)
        self.spent_usd = round(self.spent_usd + cost_usd, 6)


class NightPlan(BaseModel):
    """The night's batch and settings, taken once when the night shift starts."""

    night: str = Field(description="The night's date (YYYY-MM-DD) in its time zone.")
    time_zone: str
    started_at: datetime
    report_due: datetime | None = Field(default=None, description="When the interim report is due (UTC).")
    max_concurrent: int = Field(ge=1)
    cost_cap_usd: float | None = None
    tickets: list[NightTicket] = Field(default_factory=list)


class NightCarry(BaseModel):
    """What a night shift hands to its next run when it continues as new."""

    plan: NightPlan
    next_index: int = 0
    outcomes: list[NightTicketOutcome] = Field(default_factory=list)
    spent_usd: float = 0.0
    interim_written: bool = False
    peak_running: int = 0
    runs: int = 1


class NightShiftRequest(BaseModel):
    night: str | None = Field(default=None, description="The night's date (YYYY-MM-DD); default: the start date.")
    max_concurrent: int | None = Field(default=None, ge=1, description="Override [night_shift] max_concurrent.")
    tickets_per_run: int = Field(
        default=100, ge=1, description="Tickets started per workflow run before it continues as new."
    )
    ticket_search_attributes: bool = Field(
        default=True, description="Start tickets with their search attributes (False: a server without them)."
    )
    carry: NightCarry | None = Field(default=None, description="Set when a night continues as new.")


class NightBatchRequest(BaseModel):
    request: NightShiftRequest
    started_at: datetime


class PreparedTicket(BaseModel):
    """A batch ticket resolved for its run just before it starts, or why it cannot start."""

    ticket_id: str
    run: TicketRun | None = None
    refused: str | None = None


class EarlierRun(BaseModel):
    """A ticket whose workflow already existed: still running, or its earlier result."""

    running: bool
    status: str
    result: TicketResult | None = None


class NightOutcomeRecord(BaseModel):
    night: str
    outcome: NightTicketOutcome


class NightReport(BaseModel):
    """The Nightly Report: what the night did, ticket by ticket."""

    night: str
    time_zone: str
    started_at: datetime
    written_at: datetime
    state: Literal["running", "completed", "cancelled"]
    max_concurrent: int
    cost_cap_usd: float | None = None
    spent_usd: float = 0.0
    peak_running: int = 0
    outcomes: list[NightTicketOutcome] = Field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.state != "running"


class NightReportNote(BaseModel):
    report: NightReport
    channel: Literal["slack", "discord"]


class JanitorRequest(BaseModel):
    repos: list[str] = Field(default_factory=list, description="Repos to update; empty means every configured repo.")


class OutdatedPackage(BaseModel):
    """One dependency the Janitor may update: what the repository pins and the newest release."""

    ecosystem: Literal["pypi", "npm"]
    name: str
    current: str
    latest: str
    manifest: str | None = Field(default=None, description="The file that pins it (Python projects).")


class JanitorUpdate(BaseModel):
    """What became of one package's update: committed, or skipped with the reason."""

    package: OutdatedPackage
    committed: bool
    reason: str | None = None
    summary: str | None = Field(default=None, description="The failing output, summarised.")


class JanitorPlan(BaseModel):
    """One repository's Janitor run, resolved from the settings when the workflow starts."""

    repo: RepoSpec
    limits: TicketLimits
    branch: str
    max_packages: int = Field(ge=1)
    pip_index_url: str
    npm_registry: str
    check_dependencies: bool = Field(description="Governance on: every update passes the Hallucination Check.")


class JanitorSurveyRequest(BaseModel):
    sandbox: SandboxHandle
    plan: JanitorPlan


class JanitorSurvey(BaseModel):
    kind: Literal["pypi", "npm"] | None = None
    outdated: list[OutdatedPackage] = Field(default_factory=list)
    problem: str | None = Field(default=None, description="Why nothing can be updated (no manifest, install failed).")
    rejected: list[str] = Field(
        default_factory=list, description="Listed packages left out: an invalid name or version (why, per entry)."
    )
    stale_locks: list[str] = Field(
        default_factory=list, description="Python lock files in the repository that the updates leave as they were."
    )


class JanitorBranch(BaseModel):
    """The update branch as judged before pushing: its tip (None: absent) and why not to replace it."""

    tip: str | None = None
    problem: str | None = None


class JanitorUpdateRequest(BaseModel):
    sandbox: SandboxHandle
    plan: JanitorPlan
    package: OutdatedPackage


class JanitorPublish(BaseModel):
    """Open (or bring up to date) the update branch's pull request."""

    plan: JanitorPlan
    head_commit: str
    updates: list[JanitorUpdate]
    stale_locks: list[str] = Field(default_factory=list)


class JanitorRepoResult(BaseModel):
    repo: str
    outcome: Literal["pull_request", "nothing_to_update", "failed"]
    reason: str
    updates: list[JanitorUpdate] = Field(default_factory=list)
    pull_request: PullRequestRef | None = None


class JanitorResult(BaseModel):
    repos: list[JanitorRepoResult] = Field(default_factory=list)


# --------------------------------------------------------------------------
# Discovery: what the discovery workflow passes between its activities


class DiscoveryTarget(BaseModel):
    """One repo to look at, resolved from configuration when the run starts."""

    repo: RepoSpec
    sources: list[DiscoverySource]
    log_sources: list[str] = Field(default_factory=list, description="Files or directories of exported errors.")
    coverage_command: str = ""
    limits: TicketLimits = Field(default_factory=TicketLimits)


class DiscoveryPlan(BaseModel):
    targets: list[DiscoveryTarget]


class RepoInspection(BaseModel):
    """A source to run against one repo; ``key`` names this run's sighting (for idempotent filing)."""

    target: DiscoveryTarget
    key: str


class CoverageReportRequest(BaseModel):
    sandbox: SandboxHandle
    target: DiscoveryTarget
    command: CommandResult


class ProblemBatch(BaseModel):
    """What one source found in one repo."""

    repo: str
    source: DiscoverySource
    problems: list[DiscoveredProblem] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    examined: int = Field(default=0, description="Events, modules or packages looked at.")


class FileProblemsRequest(BaseModel):
    batch: ProblemBatch
    key: str


class DiscoveryResult(BaseModel):
    records: list[DiscoveryRecord] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    examined: dict[str, int] = Field(default_factory=dict, description="Per 'repo/source': what was looked at.")

    def count(self, action: DiscoveryAction) -> int:
        return sum(1 for record in self.records if record.action == action)

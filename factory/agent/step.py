"""One step of the agent loop, made safe to retry.

The loop itself is workflow code (Temporal replays it after a crash). These
functions are what one activity does: one model call, or one tool call. Each
first looks in the transcript for its own result, so an activity retried after
its worker died returns what was already done instead of calling the model
again.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable

from factory.agent.prompts import system_prompt, task_prompt
from factory.agent.tools import TOOL_SPECS, run_tool, summarize_call
from factory.agent.transcript import Transcript
from factory.llm.client import complete
from factory.models import (
    BudgetCaps,
    CommandResult,
    ModelSpec,
    ModelStepResult,
    Spend,
    TicketRun,
    ToolCallRef,
    ToolResult,
)
from factory.sandbox import DockerSandboxes, Workspace

__all__ = ["add_feedback", "begin", "continue_transcript", "model_step", "tool_step", "transcript_for"]

_TEXT_IN_HISTORY = 300


def transcript_for(workspace: Workspace) -> Transcript:
    return Transcript(workspace.meta / "transcript.jsonl")


def begin(workspace: Workspace, run: TicketRun, branch: str, tests_before: CommandResult | None) -> None:
    transcript = transcript_for(workspace)
    transcript.append("system", {"role": "system", "content": system_prompt()})
    transcript.append("task", {"role": "user", "content": task_prompt(run, branch, tests_before)})


def continue_transcript(workspace: Workspace, previous: Workspace) -> None:
    """Start a fix round's transcript with the conversation so far (same host, new sandbox)."""
    target = transcript_for(workspace).path
    source = transcript_for(previous).path
    if target.exists() or not source.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def _result_from_record(step: int, record: dict[str, object]) -> ModelStepResult:
    message = record["message"]
    assert isinstance(message, dict)
    calls = [
        ToolCallRef(
            call_id=call["id"],
            name=call["function"]["name"],
            summary=summarize_call(call["function"]["name"], call["function"].get("arguments") or "{}"),
        )
        for call in message.get("tool_calls") or []
    ]
    usage = Spend.model_validate(record.get("usage") or {})
    text = str(message.get("content") or "")[:_TEXT_IN_HISTORY]
    return ModelStepResult(step=step, text=text, tool_calls=calls, usage=usage)


async def model_step(
    workspace: Workspace, spec: ModelSpec, caps: BudgetCaps, spent: Spend, step: int
) -> ModelStepResult:
    """Ask the model for its next move (or return the one already recorded for this step)."""
    transcript = transcript_for(workspace)
    key = f"step-{step}"
    existing = transcript.find(key)
    if existing is not None:
        return _result_from_record(step, existing)
    completion = await complete(spec, transcript.messages(), TOOL_SPECS, caps, spent)
    record = transcript.append(key, completion.message, usage=completion.usage.model_dump(), model=spec.name)
    return _result_from_record(step, record)


def tool_step(
    sandboxes: DockerSandboxes,
    container: str,
    workspace: Workspace,
    step: int,
    call_id: str,
    *,
    timeout_s: int,
    output_chars: int,
    on_wait: Callable[[], None] | None = None,
) -> ToolResult:
    """Run one tool call from the recorded model reply and record its output."""
    transcript = transcript_for(workspace)
    key = f"tool-{call_id}"
    call = transcript.tool_call(step, call_id)
    name = call["function"]["name"]
    existing = transcript.find(key)
    if existing is None:
        started = time.monotonic()
        outcome = run_tool(
            sandboxes,
            container,
            workspace,
            name,
            call["function"].get("arguments") or "{}",
            timeout_s=timeout_s,
            output_chars=output_chars,
            on_wait=on_wait,
        )
        existing = transcript.append(
            key,
            {"role": "tool", "tool_call_id": call_id, "content": outcome.output},
            ok=outcome.ok,
            summary=outcome.summary,
            submitted=outcome.submitted,
            duration_s=round(time.monotonic() - started, 3),
        )
    return ToolResult(
        call_id=call_id,
        name=name,
        ok=bool(existing.get("ok")),
        summary=str(existing.get("summary") or name),
        submitted=bool(existing.get("submitted")),
        message=str(existing["message"]["content"]) if existing.get("submitted") else None,
        duration_s=float(existing.get("duration_s") or 0.0),
    )


def add_feedback(workspace: Workspace, key: str, text: str) -> None:
    transcript_for(workspace).append(key, {"role": "user", "content": text})

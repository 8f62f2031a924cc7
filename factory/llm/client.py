"""One model call: reserve the budget, call through litellm, settle the real usage.

Every model the factory uses, the offline scripted one included, is called here, so
the budget rule (MAX_BUDGET is checked before each call, never after) lives in one
place. Retrying is the caller's business (Temporal retries the activity), so litellm
is asked not to retry, and errors say whether a retry can help.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, Field

from factory.errors import BudgetExhausted, FactoryError, ModelError, ModelRequestRefused
from factory.llm.budget import cost_of, plan_call
from factory.llm.tokens import count_prompt_tokens, count_text_tokens
from factory.models import BudgetCaps, ModelSpec, Spend

__all__ = ["Completion", "complete", "log_scripted_calls_to"]

_log = structlog.get_logger(__name__)

# litellm enforces spec.timeout_s on HTTP providers; this outer limit also bounds a
# custom provider (the scripted model's delay_s) and anything litellm does around the call.
_TIMEOUT_GRACE_S = 5.0
# Where the offline scripted model logs its calls (tests count them); set by the worker.
_scripted_call_log: Path | None = None
_MESSAGE_CHARS = 300


class Completion(BaseModel):
    """The assistant's answer as a plain JSON-able message, and what it cost."""

    message: dict[str, Any] = Field(
        description="{role: assistant, content, tool_calls?: [{id, type: function, function: {name, arguments}}]}"
    )
    usage: Spend
    finish_reason: str | None = None
    max_tokens: int = Field(description="The output limit the budget allowed for this call.")

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = self.message.get("tool_calls") or []
        return calls

    @property
    def text(self) -> str:
        content = self.message.get("content")
        return content if isinstance(content, str) else ""


def log_scripted_calls_to(path: Path | None) -> None:
    """Have the scripted model append a line per call to ``path``.

    Registering the provider needs litellm, whose import takes seconds: it happens at the
    first model call, so a worker starts (and takes over a crashed one's work) at once.
    """
    global _scripted_call_log
    _scripted_call_log = path
    if "factory.llm.scripted" in sys.modules:  # already registered in this process: point it there now
        from factory.llm.scripted import register_scripted_provider

        register_scripted_provider(path)


async def complete(
    spec: ModelSpec,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    caps: BudgetCaps,
    spent: Spend,
) -> Completion:
    """Make one model call if the budget allows its worst case, else raise ``BudgetExhausted``.

    Raises ``ModelRequestRefused`` (permanent) when the provider refuses the request
    (credentials, bad request, unknown model), ``ModelError`` (retryable) for
    timeouts, rate limits, server and connection errors, and ``PlaybookError`` for a
    broken playbook of the scripted model.
    """
    if "litellm" not in sys.modules:
        # The first import takes seconds; off the event loop, so the worker's heartbeats go on.
        await asyncio.to_thread(importlib.import_module, "litellm")
    import litellm

    prompt_tokens = count_prompt_tokens(spec.name, messages, tools)
    plan = plan_call(spec, caps, spent, prompt_tokens)
    if isinstance(plan, str):
        raise BudgetExhausted(f"{plan} ({spent.describe(caps)})")

    litellm.suppress_debug_info = True  # no help banners on stdout for every failed call
    if spec.scripted:
        from factory.llm.scripted import register_scripted_provider

        register_scripted_provider(_scripted_call_log, replace_log=False)

    extra: dict[str, Any] = {"tools": tools, "tool_choice": "auto"} if tools else {}
    started = time.monotonic()
    try:
        response = await asyncio.wait_for(
            litellm.acompletion(
                model=spec.name,
                messages=messages,
                max_tokens=plan.max_tokens,
                api_base=spec.api_base,
                timeout=spec.timeout_s,
                num_retries=0,
                **extra,
            ),
            timeout=spec.timeout_s + _TIMEOUT_GRACE_S,
        )
    except TimeoutError:
        raise ModelError(f"model {spec.name} did not answer within {spec.timeout_s:g}s; will retry") from None
    except Exception as exc:
        raise _classify(spec, exc) from exc
    seconds = time.monotonic() - started

    data: dict[str, Any] = response.model_dump()
    choices = data.get("choices") or []
    if not choices:
        raise ModelError(f"model {spec.name} returned no choices; will retry")
    choice = choices[0]
    message = _assistant_message(choice.get("message") or {})
    usage = data.get("usage") or {}
    tokens_in = int(usage.get("prompt_tokens") or prompt_tokens)
    completion_tokens = usage.get("completion_tokens")
    tokens_out = (
        int(completion_tokens) if completion_tokens is not None else count_text_tokens(spec.name, _produced(message))
    )
    spend = Spend(
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=cost_of(spec, tokens_in, tokens_out),
        steps=1,
        model_seconds=round(seconds, 3),
    )
    _log.info(
        "model_call",
        model=spec.name,
        max_tokens=plan.max_tokens,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=spend.cost_usd,
        seconds=spend.model_seconds,
        tool_calls=len(message.get("tool_calls") or []),
    )
    return Completion(
        message=message, usage=spend, finish_reason=choice.get("finish_reason"), max_tokens=plan.max_tokens
    )


def _assistant_message(raw: dict[str, Any]) -> dict[str, Any]:
    """Only what the next call needs, in the OpenAI shape every litellm provider accepts."""
    content = raw.get("content")
    if content is not None and not isinstance(content, str):
        content = json.dumps(content)
    tool_calls: list[dict[str, Any]] = []
    for call in raw.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments or {})
        tool_calls.append(
            {
                # A few providers omit ids; the tool result must still point at its call.
                "id": call.get("id") or f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": function.get("name") or "", "arguments": arguments},
            }
        )
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:  # an empty list is refused by the OpenAI API
        message["tool_calls"] = tool_calls
    return message


def _produced(message: dict[str, Any]) -> str:
    calls = message.get("tool_calls") or []
    return (message.get("content") or "") + "".join(c["function"]["name"] + c["function"]["arguments"] for c in calls)


def _factory_error_in(exc: BaseException) -> FactoryError | None:
    """litellm wraps what a custom provider raises; find our own error in the chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, FactoryError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # "litellm.RateLimitError: RateLimitError: OpenAIException - ..." : the class is named already.
    for prefix in (f"litellm.{type(exc).__name__}: ", f"{type(exc).__name__}: "):
        text = text.removeprefix(prefix)
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 3] + "..."


def _classify(spec: ModelSpec, exc: Exception) -> FactoryError:
    own = _factory_error_in(exc)
    if own is not None:
        return own
    from litellm.exceptions import (
        AuthenticationError,
        BadRequestError,
        NotFoundError,
        PermissionDeniedError,
        UnprocessableEntityError,
    )

    # BadRequestError covers ContextWindowExceededError, ContentPolicyViolationError, PaymentRequiredError.
    refused = (AuthenticationError, PermissionDeniedError, BadRequestError, NotFoundError, UnprocessableEntityError)
    kind = type(exc).__name__
    # litellm reports a missing API key as a 500 from some providers (OpenAI among them).
    if isinstance(exc, refused) or "Missing credentials" in str(exc):
        return ModelRequestRefused(f"model {spec.name} refused the request ({kind}): {_first_line(exc)}; not retried")
    return ModelError(f"model {spec.name} call failed ({kind}): {_first_line(exc)}; will retry")

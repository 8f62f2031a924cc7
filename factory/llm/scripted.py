"""The offline scripted model: a litellm provider that answers from a playbook.

``litellm.completion(model="scripted/<anything>", api_base="<playbook path>", ...)``
returns an ordinary ``ModelResponse`` with ``tool_calls`` and ``usage``, so the agent,
the budget and the activities run exactly the code they run against a real model.
The playbook format is described in :mod:`factory.llm.playbook`.

Stateless on purpose: the step answered is the number of assistant messages already
in the conversation, so a call retried after a worker crash returns the same answer.
Tool call ids are ``call_<step>_<index>``. Usage is counted, not invented: prompt
tokens as :func:`factory.llm.tokens.count_prompt_tokens` counts them (the number the
budget reserved), completion tokens from the text and arguments produced.

litellm wraps any exception a provider raises in ``litellm.APIConnectionError``
(the original is its ``__context__``); :func:`factory.llm.client.complete` unwraps a
``PlaybookError`` again.

Importing this module imports litellm (it subclasses ``litellm.CustomLLM``); the package
``factory.llm``, always imported first, has set litellm's offline defaults by then.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import litellm
from litellm.llms.custom_llm import CustomLLM
from litellm.types.utils import ModelResponse

from factory.errors import PlaybookError
from factory.llm.playbook import PlaybookStep, load_playbook
from factory.llm.tokens import count_prompt_tokens, count_text_tokens

__all__ = ["PROVIDER", "ScriptedModel", "register_scripted_provider"]

PROVIDER = "scripted"


class ScriptedModel(CustomLLM):
    """Answers each call with the next step of the playbook named by ``api_base``."""

    def __init__(self, call_log: Path | None = None) -> None:
        super().__init__()
        self.call_log = call_log
        self._log_lock = threading.Lock()
        self._hung: set[tuple[str, int]] = set()

    def _hangs(self, playbook_path: Any, index: int, step: PlaybookStep) -> bool:
        """Whether this call is the first of a ``hang_once_s`` step in this process (it then hangs)."""
        key = (str(playbook_path), index)
        if not step.hang_once_s or key in self._hung:
            return False
        self._hung.add(key)
        return True

    # -- litellm entry points ------------------------------------------------------

    def completion(
        self,
        model: str,
        messages: list[Any],
        api_base: str,
        custom_prompt_dict: dict[str, Any],
        model_response: ModelResponse,
        print_verbose: Any,
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: dict[str, Any] | None = None,
        timeout: Any = None,
        client: Any = None,
    ) -> ModelResponse:
        playbook_path, index, step = self._choose(model, messages, api_base)
        if self._hangs(playbook_path, index, step):
            time.sleep(step.hang_once_s)
        if step.delay_s:
            time.sleep(step.delay_s)
        return self._answer(model, messages, optional_params, playbook_path, index, step)

    async def acompletion(
        self,
        model: str,
        messages: list[Any],
        api_base: str,
        custom_prompt_dict: dict[str, Any],
        model_response: ModelResponse,
        print_verbose: Any,
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: dict[str, Any] | None = None,
        timeout: Any = None,
        client: Any = None,
    ) -> ModelResponse:
        playbook_path, index, step = self._choose(model, messages, api_base)
        if self._hangs(playbook_path, index, step):
            await asyncio.sleep(step.hang_once_s)
        if step.delay_s:
            await asyncio.sleep(step.delay_s)
        return self._answer(model, messages, optional_params, playbook_path, index, step)

    # -- the answer ----------------------------------------------------------------

    def _choose(self, model: str, messages: list[Any], api_base: str | None) -> tuple[Path, int, PlaybookStep]:
        if not api_base:
            raise PlaybookError(f"scripted model '{PROVIDER}/{model}' needs its playbook path as api_base")
        path = Path(api_base)
        playbook = load_playbook(path)
        index = sum(1 for message in messages if _role(message) == "assistant")
        return path, index, playbook.step(index)

    def _answer(
        self,
        model: str,
        messages: list[Any],
        optional_params: dict[str, Any],
        playbook_path: Path,
        index: int,
        step: PlaybookStep,
    ) -> ModelResponse:
        full_name = f"{PROVIDER}/{model}"
        tool_calls: list[dict[str, Any]] = [
            {
                "id": f"call_{index}_{position}",
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for position, call in enumerate(step.tool_calls)
        ]
        produced = (step.say or "") + "".join(c["function"]["name"] + c["function"]["arguments"] for c in tool_calls)
        prompt_tokens = count_prompt_tokens(full_name, messages, optional_params.get("tools") or ())
        completion_tokens = count_text_tokens(full_name, produced)
        message: dict[str, Any] = {"role": "assistant", "content": step.say}
        if tool_calls:
            message["tool_calls"] = tool_calls
        response = ModelResponse(
            id=f"scripted-{playbook_path.stem}-{index}",
            model=full_name,
            choices=[{"index": 0, "finish_reason": "tool_calls" if tool_calls else "stop", "message": message}],
            usage={
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        )
        self._record(playbook_path, index)
        return response

    def _record(self, playbook_path: Path, index: int) -> None:
        """One JSON line per answered call, on disk before the answer is returned."""
        if self.call_log is None:
            return
        line = json.dumps({"playbook": str(playbook_path), "step": index, "time": time.time()}) + "\n"
        self.call_log.parent.mkdir(parents=True, exist_ok=True)
        with self._log_lock, open(self.call_log, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, dict) else getattr(message, "role", None)


def register_scripted_provider(call_log: Path | None = None, *, replace_log: bool = True) -> ScriptedModel:
    """Make ``scripted/*`` models callable through litellm; safe to call any number of times.

    ``call_log``, when given, replaces the log path of the registered provider (unless
    ``replace_log`` is false: then it is only the path of a provider registered now);
    ``None`` leaves it as it is (set ``handler.call_log = None`` to stop logging).
    """
    for item in litellm.custom_provider_map:
        handler = item["custom_handler"]
        if item["provider"] == PROVIDER and isinstance(handler, ScriptedModel):
            if call_log is not None and replace_log:
                handler.call_log = call_log
            return handler
    handler = ScriptedModel(call_log)
    others = [item for item in litellm.custom_provider_map if item["provider"] != PROVIDER]
    litellm.custom_provider_map = [*others, {"provider": PROVIDER, "custom_handler": handler}]
    return handler

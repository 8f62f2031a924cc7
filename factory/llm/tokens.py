"""Token counts for budget reservation and for the scripted model's usage report.

litellm's ``token_counter`` works offline: it uses tiktoken encodings bundled inside
the litellm package (it points ``TIKTOKEN_CACHE_DIR`` there) and, with
``LITELLM_OFFLINE_MODE`` set (see :mod:`factory.llm`), never downloads a tokenizer.
If it still fails (a message shape it cannot count, a broken install) we fall back
to ``len(text) / 3``: a deliberate over-estimate for English and code (~4 characters
per token), so a budget reservation errs on the safe side.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import structlog

__all__ = ["count_prompt_tokens", "count_text_tokens", "estimate_tokens"]

_log = structlog.get_logger(__name__)


def estimate_tokens(text: str) -> int:
    """The fallback estimate: one token per three characters, rounded up."""
    return math.ceil(len(text) / 3)


def count_prompt_tokens(
    model: str, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] = ()
) -> int:
    """Tokens the prompt (messages and tool definitions) will cost, as litellm counts them."""
    import litellm

    try:
        return int(
            litellm.token_counter(
                model=model,
                messages=list(messages),
                tools=cast(Any, list(tools)) or None,
            )
        )
    except Exception as exc:  # noqa: BLE001 - any failure falls back to the estimate
        _log.warning("token_counter_failed", model=model, error=type(exc).__name__)
        return estimate_tokens(json.dumps([list(messages), list(tools)], default=str))


def count_text_tokens(model: str, text: str) -> int:
    """Tokens in a piece of text (what a model produced)."""
    if not text:
        return 0
    import litellm

    try:
        return int(litellm.token_counter(model=model, text=text))
    except Exception as exc:  # noqa: BLE001 - any failure falls back to the estimate
        _log.warning("token_counter_failed", model=model, error=type(exc).__name__)
        return estimate_tokens(text)

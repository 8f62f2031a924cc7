"""Model calls: every call goes through litellm, against a budget reserved before the call.

The offline scripted model (``scripted/<name>``, see :mod:`factory.llm.scripted`) is a
litellm provider like any other, so the demo and the tests exercise the real call path.

litellm is imported lazily (it takes seconds), and never before the two settings below:

* ``LITELLM_LOCAL_MODEL_COST_MAP``: otherwise importing litellm fetches its price map
  from GitHub, retrying for several seconds when there is no network. The bundled map
  also pins prices to the installed litellm version, so a cost cap means the same
  thing on every worker.
* ``LITELLM_OFFLINE_MODE``: otherwise counting tokens for some model families (Llama,
  Cohere) downloads a tokenizer from Hugging Face, blocking ~25 s per call offline.
  It only affects what litellm fetches on its own (catalogs, tokenizers), never the
  model endpoints themselves.

Both are defaults: a value already in the environment wins.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")

from factory.llm.budget import CallPlan, cost_of, plan_call
from factory.llm.client import Completion, complete
from factory.llm.playbook import Playbook, PlaybookStep, PlaybookToolCall, load_playbook
from factory.llm.pricing import missing_credentials, model_price, resolve_model_spec
from factory.llm.tokens import count_prompt_tokens, count_text_tokens, estimate_tokens

__all__ = [
    "CallPlan",
    "Completion",
    "Playbook",
    "PlaybookStep",
    "PlaybookToolCall",
    "complete",
    "cost_of",
    "count_prompt_tokens",
    "count_text_tokens",
    "estimate_tokens",
    "load_playbook",
    "missing_credentials",
    "model_price",
    "plan_call",
    "resolve_model_spec",
]

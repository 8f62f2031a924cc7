"""Playbooks: what the offline scripted model says, one step per model call.

A playbook is a YAML (or JSON) file::

    name: fix-divide-by-zero
    description: The agent runs the tests, fixes ops.py, submits.
    steps:                      # one entry per model call, in order
      - say: "Plan: run the tests to see the failure."
        delay_s: 0              # optional: sleep before answering
        tool_calls:             # zero or more one-key mappings {tool: {arguments}}
          - bash: {command: "python3 -m pytest -q"}
      - tool_calls:
          - submit: {summary: "Guard against division by zero"}

Step ``n`` answers the call that already has ``n`` assistant messages in its
conversation, so a call retried after a crash gets the same answer. Past the last
step the model submits with the summary ``"playbook exhausted"``, so an agent loop
always ends.

Pure: pydantic and PyYAML only, no litellm.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from factory.errors import PlaybookError

__all__ = ["EXHAUSTED_SUMMARY", "Playbook", "PlaybookStep", "PlaybookToolCall", "load_playbook"]

EXHAUSTED_SUMMARY = "playbook exhausted"


class PlaybookToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class PlaybookStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    say: str | None = None
    delay_s: float = Field(default=0.0, ge=0)
    hang_once_s: float = Field(
        default=0.0, ge=0, description="The first call of this step (per worker) hangs this long: a model timing out."
    )
    tool_calls: list[PlaybookToolCall] = Field(default_factory=list)

    @field_validator("tool_calls", mode="before")
    @classmethod
    def _one_key_mappings(cls, value: Any) -> Any:
        """``- bash: {command: ls}`` becomes ``PlaybookToolCall(name="bash", arguments={"command": "ls"})``."""
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError("must be a list of {tool_name: {arguments}} mappings")
        calls: list[Any] = []
        for index, item in enumerate(value):
            if isinstance(item, PlaybookToolCall):
                calls.append(item)
                continue
            if not isinstance(item, dict) or len(item) != 1:
                raise ValueError(f"entry {index} must be a one-key mapping {{tool_name: {{arguments}}}}")
            ((name, arguments),) = item.items()
            if arguments is None:
                arguments = {}
            if not isinstance(name, str) or not isinstance(arguments, dict):
                raise ValueError(f"entry {index} ({name}): the arguments must be a mapping")
            calls.append({"name": name, "arguments": arguments})
        return calls

    @model_validator(mode="after")
    def _says_or_calls(self) -> PlaybookStep:
        if self.say is None and not self.tool_calls:
            raise ValueError("a step needs 'say', 'tool_calls' or both")
        return self


_EXHAUSTED = PlaybookStep(tool_calls=[PlaybookToolCall(name="submit", arguments={"summary": EXHAUSTED_SUMMARY})])


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    steps: list[PlaybookStep] = Field(min_length=1)

    def step(self, index: int) -> PlaybookStep:
        """The answer to the call with ``index`` assistant messages before it; past the end, submit."""
        return self.steps[index] if 0 <= index < len(self.steps) else _EXHAUSTED


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        parts.append(f"[{item}]" if isinstance(item, int) else ("." if parts else "") + item)
    return "".join(parts) or "(playbook)"


def load_playbook(path: Path | str) -> Playbook:
    """Read and validate a playbook; a problem raises ``PlaybookError`` naming the file and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlaybookError(f"playbook {path} does not exist") from None
    except OSError as exc:
        raise PlaybookError(f"playbook {path} cannot be read: {exc.strerror or exc}") from None
    try:
        data: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise PlaybookError(f"playbook {path}: not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise PlaybookError(f"playbook {path}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise PlaybookError(f"playbook {path}: must be a mapping with 'steps'")
    data.setdefault("name", path.stem)
    try:
        return Playbook.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        reason = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            reason = "is not a playbook field"
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        raise PlaybookError(f"playbook {path}: {_field_path(tuple(first['loc']))}: {reason}{more}") from None

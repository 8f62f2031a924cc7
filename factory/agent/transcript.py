"""The agent's conversation, kept in the workspace (never in workflow history).

One JSON object per line, appended and fsync'ed. Every record has a ``key`` so a
retried activity can tell that its work is already recorded and return it
instead of doing it again: ``step-7`` for the 7th model reply, ``tool-call_7_0``
for a tool result, ``feedback-2`` for the factory's second test report.
A torn last line (a crash mid-write) is ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["Transcript"]


class Transcript:
    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records: list[dict[str, Any]] = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def find(self, key: str) -> dict[str, Any] | None:
        for record in self.records():
            if record.get("key") == key:
                return record
        return None

    def append(self, key: str, message: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """Add a message unless one with this key is already there; returns the stored record."""
        existing = self.find(key)
        if existing is not None:
            return existing
        record = {"key": key, "message": message, **extra}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return record

    def messages(self) -> list[dict[str, Any]]:
        """The chat messages in order, as the model sees them."""
        return [record["message"] for record in self.records() if "message" in record]

    def tool_call(self, step: int, call_id: str) -> dict[str, Any]:
        record = self.find(f"step-{step}")
        if record is None:
            raise KeyError(f"no model reply for step {step} in {self.path}")
        for call in record["message"].get("tool_calls") or []:
            if call["id"] == call_id:
                return dict(call)
        raise KeyError(f"no tool call {call_id} in step {step}")

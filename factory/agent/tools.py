"""The agent's tools. Each runs inside the sandbox; the host only relays bytes.

The host never opens a path the agent names: reads are ``cat`` inside the
sandbox and writes go through the read-only ``/inbox`` mount (see
``DockerSandboxes.write_file``), so a symlink planted by the agent cannot make
the host read or write its own files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from factory.errors import WriteRefused
from factory.sandbox import DockerSandboxes, Workspace

__all__ = ["TOOL_SPECS", "ToolOutcome", "run_tool", "summarize_call", "truncate_output"]


def _spec(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


_STR = {"type": "string"}
_INT = {"type": "integer"}

TOOL_SPECS: list[dict[str, Any]] = [
    _spec(
        "bash",
        "Run a bash command in the repository (/workspace). No network. Long output is truncated.",
        {"command": _STR, "timeout_s": _INT},
        ["command"],
    ),
    _spec(
        "read_file",
        "Read a text file with line numbers; optionally a line range.",
        {"path": _STR, "start_line": _INT, "end_line": _INT},
        ["path"],
    ),
    _spec(
        "write_file",
        "Create or overwrite a file with the given content.",
        {"path": _STR, "content": _STR},
        ["path", "content"],
    ),
    _spec(
        "str_replace",
        "Replace one exact occurrence of `old` with `new` in a file. `old` must occur exactly once.",
        {"path": _STR, "old": _STR, "new": _STR},
        ["path", "old", "new"],
    ),
    _spec(
        "grep",
        "Search files for a regular expression (grep -rnE); optionally under a path.",
        {"pattern": _STR, "path": _STR},
        ["pattern"],
    ),
    _spec(
        "submit",
        "Finish: the change is complete and the tests pass. Give a one-paragraph summary for the pull request.",
        {"summary": _STR},
        ["summary"],
    ),
]

TOOL_NAMES = frozenset(spec["function"]["name"] for spec in TOOL_SPECS)


@dataclass(frozen=True)
class ToolOutcome:
    ok: bool
    output: str
    summary: str
    submitted: bool = False


def summarize_call(name: str, raw_args: str, width: int = 80) -> str:
    """``bash: pytest -x`` — what the Web UI shows for a tool call."""
    try:
        args = json.loads(raw_args or "{}")
    except json.JSONDecodeError:
        return f"{name}: (invalid arguments)"
    if not isinstance(args, dict):
        return f"{name}: (invalid arguments)"
    main = {"bash": "command", "grep": "pattern", "submit": "summary"}.get(name, "path")
    text = " ".join(str(args.get(main, "")).split())
    line = f"{name}: {text}" if text else name
    return line if len(line) <= width else line[: width - 1] + "…"


def truncate_output(text: str, limit: int) -> str:
    """Keep the start and (mostly) the end, with a note saying what was dropped."""
    if len(text) <= limit:
        return text
    head = limit // 4
    tail = limit - head
    omitted = len(text) - head - tail
    return (
        text[:head]
        + f"\n[output truncated: {omitted} characters omitted; redirect to a file and grep or read parts of it]\n"
        + text[-tail:]
    )


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def run_tool(
    sandboxes: DockerSandboxes,
    container: str,
    workspace: Workspace,
    name: str,
    raw_args: str,
    *,
    timeout_s: int,
    output_chars: int,
    on_wait: Callable[[], None] | None = None,
) -> ToolOutcome:
    """Execute one tool call; errors the agent caused come back as a failed outcome, not an exception."""
    summary = summarize_call(name, raw_args)
    try:
        args = json.loads(raw_args or "{}")
    except json.JSONDecodeError as exc:
        return ToolOutcome(False, f"error: arguments are not valid JSON ({exc.msg})", summary)
    if not isinstance(args, dict):
        return ToolOutcome(False, "error: arguments must be a JSON object", summary)
    if name not in TOOL_NAMES:
        return ToolOutcome(False, f"error: unknown tool {name!r}; tools are {', '.join(sorted(TOOL_NAMES))}", summary)
    missing = [
        key
        for spec in TOOL_SPECS
        if spec["function"]["name"] == name
        for key in spec["function"]["parameters"]["required"]
        if not isinstance(args.get(key), str)
    ]
    if missing:
        return ToolOutcome(False, f"error: missing or non-string argument(s): {', '.join(missing)}", summary)

    def sh(command: str, limit: int = timeout_s) -> tuple[int, str, bool]:
        result = sandboxes.exec(container, command, limit, on_wait=on_wait)
        return result.exit_code, result.output, result.timed_out

    if name == "submit":
        return ToolOutcome(True, args["summary"][:4000], summary, submitted=True)

    if name == "bash":
        limit = timeout_s
        if isinstance(args.get("timeout_s"), int) and 0 < args["timeout_s"] < timeout_s:
            limit = args["timeout_s"]
        code, output, timed_out = sh(args["command"], limit)
        note = f"\n[command killed after {limit}s time limit]" if timed_out else ""
        return ToolOutcome(code == 0, f"exit code {code}{note}\n{truncate_output(output, output_chars)}", summary)

    if name == "read_file":
        start_arg, end_arg = args.get("start_line"), args.get("end_line")
        start = start_arg if isinstance(start_arg, int) else 1
        end = end_arg if isinstance(end_arg, int) else 10**9
        path = _quote(args["path"])
        code, output, _ = sh(
            f"test -f {path} || {{ echo 'no such file'; exit 2; }}; "
            f"awk -v a={start} -v b={end} 'NR>=a && NR<=b {{printf \"%6d\\t%s\\n\", NR, $0}}' {path}"
        )
        return ToolOutcome(code == 0, truncate_output(output, output_chars) or "(empty file)", summary)

    if name == "write_file":
        try:
            sandboxes.write_file(container, workspace, args["path"], args["content"].encode())
        except WriteRefused as exc:
            return ToolOutcome(False, f"error: {exc}", summary)
        return ToolOutcome(True, f"wrote {len(args['content'])} characters to {args['path']}", summary)

    if name == "str_replace":
        path = _quote(args["path"])
        code, current, _ = sh(f"test -f {path} || {{ echo 'no such file'; exit 2; }}; cat -- {path}")
        if code != 0:
            return ToolOutcome(False, f"error: {current.strip()}", summary)
        count = current.count(args["old"])
        if count != 1:
            return ToolOutcome(
                False, f"error: `old` occurs {count} times in {args['path']}; it must occur exactly once", summary
            )
        try:
            sandboxes.write_file(container, workspace, args["path"], current.replace(args["old"], args["new"]).encode())
        except WriteRefused as exc:
            return ToolOutcome(False, f"error: {exc}", summary)
        return ToolOutcome(True, f"replaced 1 occurrence in {args['path']}", summary)

    # grep
    target = _quote(str(args.get("path") or "."))
    code, output, _ = sh(f"grep -rnIE --exclude-dir=.git -e {_quote(args['pattern'])} -- {target} | head -n 200")
    return ToolOutcome(True, truncate_output(output, output_chars) or "(no matches)", summary)

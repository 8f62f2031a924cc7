"""The Log Miner: exported errors in, one bug ticket per recurring problem out.

Input is whatever a team can export: Sentry events (one event, a list, or an export
with ``"events"``), JSON lines (structured logs, Sentry events one per line) and plain
log files, where a Python traceback spanning many lines stays one event. A directory
is read recursively.

Events with a stack trace are grouped by fingerprint: the exception type and the
in-app frames' module and function, never line numbers, addresses or ids, so the same
bug keeps its fingerprint across deploys. Error lines without a trace are grouped by
their template (``factory.discovery.templates``). Every group seen often enough, recently
enough, becomes a ``bug`` ticket whose id and fingerprint derive from the group, so the
tracker updates the same ticket when the problem comes back. A template may shift as other
lines come and go, so a log group also carries its lines' shapes (``line_shape``) as aliases:
the tracker files it on a ticket that saw one of them before.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import BaseModel, Field

from factory.discovery.templates import WILDCARD, TemplateMiner, mask_tokens
from factory.errors import LogInputInvalid
from factory.models import READY_LABEL, DiscoveredProblem, Priority, Ticket, TicketContext, TicketType

if TYPE_CHECKING:
    from factory.config import LogMinerConfig

__all__ = [
    "SOURCE",
    "Frame",
    "LogEvent",
    "fingerprint_event",
    "line_shape",
    "mine_problems",
    "parse_traceback",
    "read_events",
]

SOURCE = "log-miner"
ERROR_LOG_CHARS = 6000
_ERROR_LEVELS = {"error", "err", "critical", "crit", "fatal", "severe", "alert", "emergency", "emerg", "exception"}

# -------------------------------------------------------------------------- the event


class Frame(BaseModel):
    """One stack frame, innermost last."""

    module: str | None = None
    function: str | None = None
    filename: str | None = None
    lineno: int | None = None
    in_app: bool | None = Field(default=None, description="What the source said; None: decide by path.")


class LogEvent(BaseModel):
    """One error event from any input format."""

    timestamp: datetime | None = None
    level: str | None = None
    message: str = ""
    exception_type: str | None = None
    exception_value: str | None = None
    frames: list[Frame] = Field(default_factory=list)
    raw: str = Field(default="", description="The event as it was read (a log line and its traceback).")
    origin: str = Field(default="", description="The file (and line) it came from.")

    @property
    def is_error(self) -> bool:
        return self.exception_type is not None or (self.level or "").lower() in _ERROR_LEVELS


# -------------------------------------------------------------------------- reading


def read_events(source: Path | TextIO) -> list[LogEvent]:
    """Every event in a file, a directory (recursively, hidden files skipped) or an open stream."""
    if isinstance(source, Path):
        if source.is_dir():
            events: list[LogEvent] = []
            for path in sorted(source.rglob("*")):
                relative = path.relative_to(source)
                if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                    events.extend(_read_text(_read_file(path), str(path)))
            return events
        if not source.exists():
            raise LogInputInvalid(f"log source {source} does not exist")
        return _read_text(_read_file(source), str(source))
    return _read_text(source.read(), getattr(source, "name", "<stdin>"))


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise LogInputInvalid(f"cannot read log source {path}: {exc.strerror}") from None


def _read_text(text: str, origin: str) -> list[LogEvent]:
    stripped = text.lstrip()
    if not stripped:
        return []
    if stripped[0] in "[{":
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as whole_error:
            if stripped[0] == "[" or "\n" not in stripped.strip():
                raise LogInputInvalid(
                    f"{origin}: not valid JSON: {whole_error.msg} at line {whole_error.lineno}"
                ) from None
            return _read_json_lines(text, origin)
        return [_event_from_json(item, origin) for item in _json_events(data, origin)]
    return _read_plain(text, origin)


def _json_events(data: Any, origin: str) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and isinstance(data.get("events"), list):
        return list(data["events"])
    if isinstance(data, dict):
        return [data]
    raise LogInputInvalid(f"{origin}: JSON must be an event, a list of events or an export with 'events'")


def _read_json_lines(text: str, origin: str) -> list[LogEvent]:
    events = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LogInputInvalid(f"{origin}:{number}: not valid JSON: {exc.msg}") from None
        events.append(_event_from_json(item, f"{origin}:{number}"))
    return events


def _first(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = data.get(key)
        if value not in (None, ""):
            return value
    return None


def _event_from_json(item: Any, origin: str) -> LogEvent:
    if not isinstance(item, dict):
        raise LogInputInvalid(f"{origin}: an event must be a JSON object, not {type(item).__name__}")
    timestamp = _parse_timestamp(_first(item, "timestamp", "@timestamp", "time", "ts", "datetime", "asctime", "date"))
    level = _first(item, "level", "levelname", "severity", "log.level")
    message = _first(item, "message", "msg", "event", "text")
    logentry = item.get("logentry")
    if message is None and isinstance(logentry, dict):
        message = _first(logentry, "formatted", "message")
    raw = json.dumps(item, sort_keys=True)[:ERROR_LOG_CHARS]
    event = LogEvent(
        timestamp=timestamp,
        level=str(level).lower() if level is not None else None,
        message=str(message or ""),
        raw=raw,
        origin=origin,
    )
    exception = item.get("exception")
    if isinstance(exception, dict) and isinstance(exception.get("values"), list) and exception["values"]:
        return _with_sentry_exception(event, exception["values"])
    trace = _first(item, "exc_info", "exception", "traceback", "stack_trace", "stack", "exc_text")
    if isinstance(trace, str) and "Traceback (most recent call last)" in trace:
        parsed = parse_traceback(trace)
        text = "\n".join(part for part in (event.message, trace) if part)
        return event.model_copy(update={**parsed, "raw": text[:ERROR_LOG_CHARS]})
    return event


def _with_sentry_exception(event: LogEvent, values: list[Any]) -> LogEvent:
    # Sentry lists chained exceptions oldest first: the last one is what was raised.
    main = values[-1] if isinstance(values[-1], dict) else {}
    stacktrace = main.get("stacktrace") if isinstance(main.get("stacktrace"), dict) else {}
    frames = []
    for frame in (stacktrace or {}).get("frames") or []:
        if not isinstance(frame, dict):
            continue
        lineno = frame.get("lineno")
        frames.append(
            Frame(
                module=frame.get("module"),
                function=frame.get("function"),
                filename=frame.get("filename") or frame.get("abs_path"),
                lineno=lineno if isinstance(lineno, int) else None,
                in_app=frame.get("in_app") if isinstance(frame.get("in_app"), bool) else None,
            )
        )
    kind = str(main.get("type") or "Error")
    value = str(main.get("value") or "")
    lines = ["Traceback (most recent call last):"]
    for frame_ in frames:
        lines.append(f'  File "{frame_.filename}", line {frame_.lineno}, in {frame_.function}')
    lines.append(f"{kind}: {value}" if value else kind)
    return event.model_copy(
        update={
            "exception_type": kind,
            "exception_value": value,
            "frames": frames,
            "message": event.message or (f"{kind}: {value}" if value else kind),
            "level": event.level or "error",
            "raw": "\n".join(lines)[:ERROR_LOG_CHARS],
        }
    )


_TIMESTAMP = re.compile(r"^\[?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)\]?\s*")
_LEVEL = re.compile(r"\b(DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRITICAL|CRIT|FATAL|SEVERE|ALERT|EMERG)\b", re.I)
_FRAME_LINE = re.compile(r'^\s+File "(?P<file>[^"]+)", line (?P<line>\d+)(?:, in (?P<func>.+))?$')
_EXCEPTION_LINE = re.compile(
    r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Fault|[A-Z]\w*))(?::\s?(?P<value>.*))?$"
)
_CHAIN_LINES = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)


def _parse_timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = value / 1000 if value > 1e11 else value
            return datetime.fromtimestamp(seconds, UTC)
        text = str(value).strip().replace(",", ".")
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass
class _PlainEvent:
    first: str
    origin: str
    trace: list[str] = field(default_factory=list)


def _read_plain(text: str, origin: str) -> list[LogEvent]:
    return [_event_from_plain(item) for item in _plain_events(text.splitlines(), origin)]


def _plain_events(lines: list[str], origin: str) -> Iterator[_PlainEvent]:
    """Log lines, each with the traceback printed right after it (``logger.exception``)."""
    current: _PlainEvent | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if line.startswith("Traceback (most recent call last)"):
            if current is not None and (not current.trace or current.trace[-1].strip() in _CHAIN_LINES):
                current.trace.append(line)
                continue
            if current is not None:
                yield current
            current = _PlainEvent(first="", origin=f"{origin}:{number}", trace=[line])
            continue
        if current is not None and current.trace and (not _trace_ended(current.trace) or line.strip() in _CHAIN_LINES):
            current.trace.append(line)
            continue
        if current is not None:
            yield current
        current = _PlainEvent(first=line, origin=f"{origin}:{number}")
    if current is not None:
        yield current


def _trace_ended(trace: list[str]) -> bool:
    """A traceback ends with its unindented ``Type: value`` line."""
    last = trace[-1]
    return not last.startswith((" ", "\t", "Traceback")) and last.strip() not in _CHAIN_LINES


def _event_from_plain(item: _PlainEvent) -> LogEvent:
    first = item.first
    timestamp = None
    match = _TIMESTAMP.match(first)
    if match:
        timestamp = _parse_timestamp(match.group(1))
        first = first[match.end() :]
    level_match = _LEVEL.search(first[:80])
    level = level_match.group(1).lower() if level_match else None
    raw_lines = [item.first, *item.trace] if item.first else list(item.trace)
    event = LogEvent(
        timestamp=timestamp,
        level=level,
        message=first.strip(),
        raw="\n".join(raw_lines)[:ERROR_LOG_CHARS],
        origin=item.origin,
    )
    if item.trace:
        parsed = parse_traceback("\n".join(item.trace))
        update: dict[str, Any] = dict(parsed)
        if not event.message:
            update["message"] = f"{parsed['exception_type']}: {parsed['exception_value']}".rstrip(": ")
        return event.model_copy(update=update)
    return event


def parse_traceback(text: str) -> dict[str, Any]:
    """Exception type, value and frames of a Python traceback (the last one of a chain)."""
    frames: list[Frame] = []
    kind: str | None = None
    value = ""
    for line in text.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            frames, kind, value = [], None, ""
            continue
        frame = _FRAME_LINE.match(line)
        if frame:
            frames.append(
                Frame(
                    filename=frame.group("file"),
                    lineno=int(frame.group("line")),
                    function=(frame.group("func") or "").strip() or None,
                    module=_module_from_path(frame.group("file")),
                )
            )
            continue
        if not line.startswith((" ", "\t")) and line.strip() and line.strip() not in _CHAIN_LINES:
            exception = _EXCEPTION_LINE.match(line.strip())
            if exception:
                kind = exception.group("type")
                value = (exception.group("value") or "").strip()
    return {"exception_type": kind or "Error", "exception_value": value, "frames": frames, "level": "error"}


def _module_from_path(filename: str) -> str | None:
    path = PurePosixPath(filename.replace("\\", "/"))
    if path.suffix != ".py":
        return None
    parts = list(path.with_suffix("").parts)
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            parts = parts[parts.index(marker) + 1 :]
    parts = [p for p in parts if p not in ("/", "")]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts[-2:]) if parts else None


# -------------------------------------------------------------------------- fingerprints

_LIBRARY_MARKERS = ("site-packages", "dist-packages", "/lib/python", "<frozen", "<string>", "node_modules")


def _in_app(frame: Frame, config: LogMinerConfig) -> bool:
    name = (frame.filename or "").replace("\\", "/")
    module = frame.module or ""
    if any(module == m or module.startswith(m + ".") for m in config.excluded_modules):
        return False
    if config.in_app_prefixes:
        return any(name.startswith(prefix) for prefix in config.in_app_prefixes)
    if frame.in_app is not None:
        return frame.in_app
    return bool(name) and not any(marker in name for marker in _LIBRARY_MARKERS)


def _app_frames(event: LogEvent, config: LogMinerConfig) -> list[Frame]:
    return [frame for frame in event.frames if _in_app(frame, config)]


def _frame_key(frame: Frame) -> str:
    module = frame.module or PurePosixPath((frame.filename or "?").replace("\\", "/")).stem
    return f"{module}:{frame.function or '?'}"


def fingerprint_event(event: LogEvent, config: LogMinerConfig) -> str:
    """Stable key of the problem: type + in-app call path for traces, the masked message otherwise."""
    if event.exception_type is not None:
        frames = _app_frames(event, config) or event.frames
        path = "|".join(_frame_key(frame) for frame in frames)
        basis = f"trace|{event.exception_type}|{path}"
        if not frames:
            basis += "|" + " ".join(mask_tokens(event.exception_value or ""))
    else:
        basis = "log|" + " ".join(mask_tokens(event.message))
    return hashlib.sha256(basis.encode()).hexdigest()


# -------------------------------------------------------------------------- problems


@dataclass
class _Group:
    key: str
    events: list[LogEvent] = field(default_factory=list)
    template: str = ""


def mine_problems(
    events: Sequence[LogEvent],
    *,
    repo: str,
    config: LogMinerConfig,
    now: datetime,
    repo_files: Collection[str] | None = None,
) -> list[DiscoveredProblem]:
    """One bug ticket per group of errors seen at least ``min_occurrences`` times in the window.

    ``repo_files`` (the repo's paths) lets a deployed path such as ``/srv/app/shop/pricing.py``
    be matched to the repo's ``shop/pricing.py`` by its longest suffix; without it, paths are
    mapped by ``in_app_prefixes`` or a ``/<repo>/`` segment.
    """
    since = now - timedelta(hours=config.window_hours)
    recent = [e for e in events if e.is_error and (e.timestamp is None or since <= e.timestamp <= now)]
    groups = _group(recent, config)
    problems = []
    for group in groups.values():
        count = len(group.events)
        if count < config.min_occurrences:
            continue
        if config.min_rate_per_hour is not None and count / config.window_hours < config.min_rate_per_hour:
            continue
        problems.append(_problem(group, repo=repo, config=config, now=now, repo_files=repo_files))
    problems.sort(key=lambda p: (_PRIORITY_RANK[p.ticket.priority], -p.occurrences, p.ticket.id))
    return problems[: config.max_tickets_per_run]


_PRIORITY_RANK = {Priority.HIGH: 0, Priority.MEDIUM: 1, Priority.LOW: 2}


def _group(events: Sequence[LogEvent], config: LogMinerConfig) -> dict[str, _Group]:
    groups: dict[str, _Group] = {}
    plain = [e for e in events if e.exception_type is None]
    miner = TemplateMiner()
    miner.prime(e.message for e in plain)
    plain_ids = [miner.add(e.message) for e in plain]
    miner.settle()
    for event in events:
        if event.exception_type is None:
            continue
        key = fingerprint_event(event, config)
        group = groups.setdefault(key, _Group(key=key))
        group.events.append(event)
        if not group.template:
            group.template = _trace_title(event, config)
    by_template: dict[int, _Group] = {}
    for event, raw_id in zip(plain, plain_ids, strict=True):
        root = miner.group_of(raw_id)
        group_ = by_template.get(root)
        if group_ is None:
            template = miner.template_of(root)
            key = hashlib.sha256(f"log|{template}".encode()).hexdigest()
            group_ = by_template[root] = groups.setdefault(key, _Group(key=key, template=template))
        group_.events.append(event)
    return groups


def _trace_title(event: LogEvent, config: LogMinerConfig) -> str:
    value = " ".join(token for token in mask_tokens(event.exception_value or "") if token != WILDCARD)
    frames = _app_frames(event, config)
    where = f" in {_frame_key(frames[-1]).replace(':', '.')}" if frames else ""
    head = f"{event.exception_type}: {value}" if value else str(event.exception_type)
    return f"{head}{where}"


def _relative_path(
    filename: str, repo: str, config: LogMinerConfig, repo_files: Collection[str] | None = None
) -> str | None:
    name = filename.replace("\\", "/")
    if repo_files is not None:
        parts = [part for part in name.split("/") if part and part != "."]
        for start in range(len(parts)):
            candidate = "/".join(parts[start:])
            if candidate in repo_files:
                return candidate
        return None
    for prefix in config.in_app_prefixes:
        if name.startswith(prefix):
            return name[len(prefix) :].lstrip("/") or None
    marker = f"/{repo}/"
    if marker in name:
        return name.split(marker, 1)[1]
    if not name.startswith("/") and not name.startswith("<"):
        return name.removeprefix("./")
    return None


def _priority(count: int, last_seen: datetime | None, config: LogMinerConfig, now: datetime) -> Priority:
    """Frequent and recent: high; not seen for three days: low; otherwise medium."""
    age = now - last_seen if last_seen is not None else timedelta(0)
    if age <= timedelta(hours=24) and count >= config.high_occurrences:
        return Priority.HIGH
    if age > timedelta(hours=72):
        return Priority.LOW
    return Priority.MEDIUM


# A log group's ticket is also found under the shapes of its most common lines.
_SHAPES_PER_GROUP = 20
_HAS_DIGIT = re.compile(r"\d")


def line_shape(message: str) -> str:
    """A log line with every token holding a digit spelled ``0``. Unlike a template it depends neither
    on the other lines mined with it nor on the miner's rules, so it keeps a problem's ticket when
    its template shifts."""
    return " ".join("0" if _HAS_DIGIT.search(token) else token for token in message.split())


def _shape_aliases(repo: str, events: Sequence[LogEvent]) -> list[str]:
    shapes = Counter(line_shape(event.message) for event in events)
    common = sorted(shapes.items(), key=lambda item: (-item[1], item[0]))[:_SHAPES_PER_GROUP]
    return [hashlib.sha256(f"{repo}|shape|{shape}".encode()).hexdigest() for shape, _ in common]


def _problem(
    group: _Group, *, repo: str, config: LogMinerConfig, now: datetime, repo_files: Collection[str] | None = None
) -> DiscoveredProblem:
    stamps = [e.timestamp for e in group.events if e.timestamp is not None]
    first_seen, last_seen = (min(stamps), max(stamps)) if stamps else (None, None)
    latest = max(group.events, key=lambda e: e.timestamp or datetime.min.replace(tzinfo=UTC))
    count = len(group.events)
    paths: list[str] = []
    for event in group.events:
        for frame in reversed(_app_frames(event, config)):
            relative = _relative_path(frame.filename, repo, config, repo_files) if frame.filename else None
            if relative and relative not in paths:
                paths.append(relative)
    title = group.template if latest.exception_type is not None else f"Recurring error: {group.template}"
    title = title if len(title) <= 200 else title[:197] + "..."
    subject = title.removeprefix("Recurring error: ")
    seen = (
        f" between {first_seen:%Y-%m-%d %H:%M} and {last_seen:%Y-%m-%d %H:%M} UTC" if first_seen and last_seen else ""
    )
    excerpt = (
        latest.raw if len(latest.raw) <= ERROR_LOG_CHARS else latest.raw[: ERROR_LOG_CHARS - 20] + "\n... (truncated)"
    )
    # The same error in two repos is two problems: the repo is part of the ticket's fingerprint.
    fingerprint = hashlib.sha256(f"{repo}|{group.key}".encode()).hexdigest()
    ticket = Ticket(
        id=f"LOG-{fingerprint[:10]}",
        type=TicketType.BUG,
        priority=_priority(count, last_seen, config, now),
        context=TicketContext(repo=repo, filepaths=paths[:10], error_logs=excerpt),
        acceptance_criteria=[
            f"The error no longer occurs for the input that triggers it: {subject[:150]}",
            "A regression test reproduces the error and passes after the fix",
            "All existing tests pass",
        ],
        title=title,
        description=f"The Log Miner saw this error {count} time(s){seen} (from {latest.origin}).",
        labels=[READY_LABEL],
        source=SOURCE,
        fingerprint=fingerprint,
    )
    return DiscoveredProblem(
        ticket=ticket,
        occurrences=count,
        first_seen=first_seen,
        last_seen=last_seen,
        sample=(latest.message or latest.raw)[:500],
        # A trace's fingerprint (type and call path) is steady already; a template may shift.
        aliases=[] if latest.exception_type is not None else _shape_aliases(repo, group.events),
    )

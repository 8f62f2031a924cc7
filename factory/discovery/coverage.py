"""The Coverage Analyst: run the repo's tests with coverage in a sandbox, rank what is untested, file tickets.

The sandbox runs :func:`coverage_command` (coverage.py for Python repos; c8 or nyc
for npm repos that have one of them installed) and leaves a JSON report where the
host can read it. The host parses the report (:func:`parse_coverage`: coverage.py
JSON, istanbul ``coverage-final.json`` or ``coverage-summary.json``), ranks modules by
uncovered statements, weighted by how often they changed recently, and turns the
worst into ``chore`` tickets "Write tests for MODULE" (:func:`coverage_problems`).

A ticket's fingerprint depends only on the repo and the module, so the next run
updates the same ticket with the new numbers instead of opening another one.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import posixpath
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from factory.config import CoverageConfig
from factory.models import READY_LABEL, DiscoveredProblem, Priority, Ticket, TicketContext, TicketType

__all__ = [
    "COVERAGE_COMMANDS",
    "DEFAULT_REPORT_PATH",
    "SOURCE",
    "CoverageTool",
    "ModuleCoverage",
    "coverage_command",
    "coverage_fingerprint",
    "coverage_problems",
    "coverage_tool",
    "line_ranges",
    "parse_coverage",
]

SOURCE = "coverage-analyst"
DEFAULT_REPORT_PATH = "/workspace/out/coverage.json"
SANDBOX_ROOT = "/workspace"
"""Where the repository sits in the sandbox: istanbul reports name files by absolute path under it."""

CoverageTool = Literal["coverage.py", "c8", "nyc"]
ReportKind = Literal["coverage.py", "istanbul"]

# Each command runs the tests under the tool, then writes the JSON report to {report}
# whatever the tests' outcome (a failing test still leaves useful coverage), and
# exits with the tests' status. {data} is a scratch file or folder next to the report.
COVERAGE_COMMANDS: dict[CoverageTool, str] = {
    # --source=. keeps the report to the repository: without it, Debian's dist-packages
    # (pytest itself) are measured too.
    "coverage.py": (
        "mkdir -p {out} && python3 -m coverage run --data-file={data} --source=. -m {runner}; status=$?; "
        "python3 -m coverage json --data-file={data} -o {report} -q; exit $status"
    ),
    # --no-install: the repo's own c8/nyc from node_modules, never a download.
    "c8": (
        "mkdir -p {out} && npx --no-install c8 --reporter=json --report-dir={data} {test}; status=$?; "
        "cp {data}/coverage-final.json {report}; exit $status"
    ),
    "nyc": (
        "mkdir -p {out} && npx --no-install nyc --reporter=json --report-dir={data} {test}; status=$?; "
        "cp {data}/coverage-final.json {report}; exit $status"
    ),
}

_PYTEST_PREFIXES = ("python3 -m pytest", "python -m pytest", "pytest", "py.test")
_DEFAULT_PYTEST = "pytest -q -p no:cacheprovider"
_MAX_RANGES_SHOWN = 40


def coverage_command(
    test_command: str, report_path: str = DEFAULT_REPORT_PATH, tool: CoverageTool = "coverage.py"
) -> str:
    """The shell command that runs the repo's tests under ``tool`` and writes its JSON report to ``report_path``.

    For coverage.py the repo's pytest command is kept with its options
    (``python3 -m pytest -q -x`` → ``coverage run … -m pytest -q -x``); a test command
    that is not pytest (``make test``) cannot be wrapped, so plain pytest runs instead.
    The command exits with the tests' status; the report is written either way.
    """
    out = posixpath.dirname(report_path) or "."
    if tool == "coverage.py":
        data = posixpath.join(out, ".coverage")
        runner = _DEFAULT_PYTEST
        stripped = test_command.strip()
        for prefix in _PYTEST_PREFIXES:
            if stripped == prefix or stripped.startswith(prefix + " "):
                runner = "pytest" + stripped[len(prefix) :]
                break
        return COVERAGE_COMMANDS[tool].format(
            out=shlex.quote(out), data=shlex.quote(data), runner=runner, report=shlex.quote(report_path)
        )
    data = posixpath.join(out, "istanbul")
    return COVERAGE_COMMANDS[tool].format(
        out=shlex.quote(out), data=shlex.quote(data), test=test_command, report=shlex.quote(report_path)
    )


def coverage_tool(repo_dir: Path) -> CoverageTool | None:
    """Which tool can measure the checked-out repo at ``repo_dir``: c8 or nyc when package.json has one, else
    coverage.py when the repo has Python files at its top or one level down; ``None`` otherwise.

    Only reads files; nothing from the repository runs.
    """
    package = repo_dir / "package.json"
    if package.is_file() and not package.is_symlink():
        try:
            doc = json.loads(package.read_text(errors="replace"))
        except ValueError:
            doc = {}
        sections = [doc.get(key) for key in ("devDependencies", "dependencies")] if isinstance(doc, dict) else []
        names = {name for section in sections if isinstance(section, dict) for name in section}
        if "c8" in names:
            return "c8"
        if "nyc" in names:
            return "nyc"
    markers = ("pyproject.toml", "setup.py", "setup.cfg", "pytest.ini", "tox.ini")
    if any((repo_dir / name).is_file() for name in markers):
        return "coverage.py"
    if any(repo_dir.glob("*.py")) or any(repo_dir.glob("*/*.py")):
        return "coverage.py"
    return None


# ---------------------------------------------------------------- reports


class ModuleCoverage(BaseModel):
    """One source file of a coverage report."""

    path: str = Field(description="Relative to the repository root, with '/' separators.")
    statements: int = Field(ge=0)
    covered: int = Field(ge=0)
    missing_lines: list[int] = Field(default_factory=list, description="Lines of statements never run.")
    executed_lines: list[int] = Field(default_factory=list)
    line_data: bool = Field(default=True, description="False when the report only has totals (a summary report).")

    @property
    def missing(self) -> int:
        return max(self.statements - self.covered, 0)

    @property
    def percent(self) -> float:
        return 100.0 if self.statements == 0 else 100.0 * self.covered / self.statements


def parse_coverage(
    report: Mapping[str, Any] | str, kind: ReportKind | None = None, *, root: str = SANDBOX_ROOT
) -> list[ModuleCoverage]:
    """Modules of a coverage report, sorted by path.

    ``kind`` ``"coverage.py"``: the JSON of ``coverage json`` (``files`` → ``executed_lines``,
    ``missing_lines``, ``summary``); ``"istanbul"``: ``coverage-final.json`` (statement maps and
    hit counts) or ``coverage-summary.json`` (totals only); ``None`` tells them apart by
    content. Absolute paths under ``root`` are made relative; files outside it (an
    installed library) are left out. Anything else raises ``ValueError``.
    """
    doc: Any = json.loads(report) if isinstance(report, str) else report
    if not isinstance(doc, Mapping):
        raise ValueError("a coverage report is a JSON object")
    found = _report_kind(doc)
    if found is None:
        raise ValueError("not a coverage.py or istanbul JSON report")
    if kind is not None and found != kind:
        raise ValueError(f"expected a {kind} report, got a {found} one")
    if found == "coverage.py":
        modules = [_coverage_py_module(path, entry) for path, entry in _mapping(doc["files"]).items()]
    else:
        modules = [_istanbul_module(path, entry) for path, entry in doc.items() if path != "total"]
    relative = []
    for module in modules:
        path = _relative(module.path, root)
        if path is not None:
            relative.append(module.model_copy(update={"path": path}))
    return sorted(relative, key=lambda m: m.path)


def _report_kind(doc: Mapping[str, Any]) -> ReportKind | None:
    if isinstance(doc.get("files"), Mapping) and isinstance(doc.get("meta"), Mapping):
        return "coverage.py"
    entries = [value for key, value in doc.items() if key != "total"]
    if entries and all(
        isinstance(value, Mapping) and ("statementMap" in value or "lines" in value) for value in entries
    ):
        return "istanbul"
    if not entries and isinstance(doc.get("total"), Mapping):
        return "istanbul"
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError("unexpected report structure")
    return value


def _lines(value: Any) -> list[int]:
    if not isinstance(value, list):
        return []
    return sorted({int(v) for v in value if isinstance(v, int) and not isinstance(v, bool) and v > 0})


def _coverage_py_module(path: str, entry: Any) -> ModuleCoverage:
    entry = _mapping(entry)
    summary = _mapping(entry.get("summary", {}))
    executed = _lines(entry.get("executed_lines"))
    missing = _lines(entry.get("missing_lines"))
    statements = summary.get("num_statements")
    covered = summary.get("covered_lines")
    return ModuleCoverage(
        path=path,
        statements=statements if isinstance(statements, int) else len(executed) + len(missing),
        covered=covered if isinstance(covered, int) else len(executed),
        missing_lines=missing,
        executed_lines=executed,
    )


def _istanbul_module(path: str, entry: Any) -> ModuleCoverage:
    entry = _mapping(entry)
    if "statementMap" not in entry:  # coverage-summary.json: totals only
        lines = _mapping(entry.get("lines", {}))
        total, covered = lines.get("total"), lines.get("covered")
        if not isinstance(total, int) or not isinstance(covered, int):
            raise ValueError(f"{path}: summary without line totals")
        return ModuleCoverage(path=path, statements=total, covered=covered, line_data=False)
    statement_map = _mapping(entry["statementMap"])
    hits = _mapping(entry.get("s", {}))
    line_hits: dict[int, int] = {}
    for key, location in statement_map.items():
        start = _mapping(_mapping(location).get("start", {})).get("line")
        if not isinstance(start, int) or start <= 0:
            continue
        count = hits.get(key, 0)
        line_hits[start] = max(line_hits.get(start, 0), count if isinstance(count, int) else 0)
    executed = sorted(line for line, count in line_hits.items() if count > 0)
    missing = sorted(line for line, count in line_hits.items() if count == 0)
    # The file key is the absolute path; the entry's own "path" says the same.
    return ModuleCoverage(
        path=str(entry.get("path") or path),
        statements=len(line_hits),
        covered=len(executed),
        missing_lines=missing,
        executed_lines=executed,
    )


def _relative(path: str, root: str) -> str | None:
    path = path.replace("\\", "/")
    if path.startswith("/"):
        prefix = root.rstrip("/") + "/"
        if not path.startswith(prefix):
            return None
        path = path[len(prefix) :]
    normal = posixpath.normpath(path)
    if normal.startswith("../") or normal in (".", ".."):
        return None
    return normal.removeprefix("./")


# ---------------------------------------------------------------- tickets


def line_ranges(missing: Iterable[int], executed: Iterable[int] = ()) -> str:
    """``"12-18, 40"``: uncovered lines as ranges.

    Two uncovered lines join one range when no executed line lies between them:
    blank lines, comments and docstrings between uncovered statements do not break it.
    """
    lines = sorted(set(missing))
    if not lines:
        return ""
    ran = sorted(set(executed))
    ranges: list[tuple[int, int]] = []
    start = end = lines[0]
    index = 0
    for line in lines[1:]:
        while index < len(ran) and ran[index] <= end:
            index += 1
        if index < len(ran) and ran[index] < line:
            ranges.append((start, end))
            start = line
        end = line
    ranges.append((start, end))
    shown = [f"{a}-{b}" if a != b else str(a) for a, b in ranges[:_MAX_RANGES_SHOWN]]
    if len(ranges) > _MAX_RANGES_SHOWN:
        shown.append(f"and {len(ranges) - _MAX_RANGES_SHOWN} more ranges")
    return ", ".join(shown)


def coverage_fingerprint(repo: str, path: str) -> str:
    """Stable per (repo, module): the numbers may change, the ticket stays the same."""
    return hashlib.sha256(f"{SOURCE}\0{repo}\0{path}".encode()).hexdigest()


def _score(module: ModuleCoverage, changes: int) -> float:
    # Uncovered statements already grow with the module's size; recent churn multiplies
    # them: 0 changes x1, 1 x2, 3 x3, 7 x4 (a module that keeps changing needs tests most).
    return module.missing * (1 + math.log2(1 + max(changes, 0)))


def coverage_problems(
    modules: list[ModuleCoverage],
    *,
    repo: str,
    config: CoverageConfig,
    recently_changed: dict[str, int] | None = None,
) -> list[DiscoveredProblem]:
    """ "Write tests for MODULE" tickets for the worst-covered modules, most urgent first.

    A module is a candidate when it is not excluded, has at least ``min_statements``
    statements, some of them uncovered, and is below ``max_percent``. Candidates are
    ranked by uncovered statements times ``1 + log2(1 + recent changes)``; the first
    ``max_tickets`` become tickets.
    """
    changed = recently_changed or {}
    candidates = [
        module
        for module in modules
        if module.missing > 0
        and module.statements >= config.min_statements
        and module.percent < config.max_percent
        and not any(fnmatch.fnmatchcase(module.path, pattern) for pattern in config.exclude)
    ]
    ranked = sorted(candidates, key=lambda m: (-_score(m, changed.get(m.path, 0)), m.path))
    return [_problem(module, repo, config, changed.get(module.path, 0)) for module in ranked[: config.max_tickets]]


def _problem(module: ModuleCoverage, repo: str, config: CoverageConfig, changes: int) -> DiscoveredProblem:
    fingerprint = coverage_fingerprint(repo, module.path)
    percent = module.percent
    rise = min(config.min_rise_points, 100.0 - percent)
    summary = f"{module.covered} of {module.statements} statements covered ({_pct(percent)}%)"
    if module.line_data:
        where = f"Uncovered lines: {line_ranges(module.missing_lines, module.executed_lines)}."
    else:
        where = "The report has totals only (no line numbers): run the tests with coverage to see which lines."
    churn = f" It changed in {changes} recent commit(s)." if changes else ""
    description = (
        f"{module.path} is poorly tested: {summary}.{churn}\n\n{where}\n\n"
        "Write tests that exercise these lines and assert their behaviour; do not change the module's behaviour."
    )
    ticket = Ticket(
        id=f"COV-{fingerprint[:10]}",
        type=TicketType.CHORE,
        priority=Priority.MEDIUM if changes and percent < 50 else Priority.LOW,
        context=TicketContext(repo=repo, filepaths=[module.path]),
        acceptance_criteria=[
            f"coverage of {module.path} rises from {_pct(percent)}% by at least {_pct(rise)} points "
            f"(to {_pct(percent + rise)}% or more)",
            "The new tests assert behaviour (each can fail), and the repository's tests pass",
        ],
        title=f"Write tests for {module.path}"[:200],
        description=description,
        labels=[READY_LABEL],
        source=SOURCE,
        fingerprint=fingerprint,
    )
    return DiscoveredProblem(ticket=ticket, sample=summary)


def _pct(value: float) -> str:
    """One decimal, without a trailing ``.0``: 41.7, 40."""
    text = f"{math.floor(value * 10 + 1e-9) / 10:.1f}"
    return text.removesuffix(".0")

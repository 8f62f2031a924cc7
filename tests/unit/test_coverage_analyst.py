"""The Coverage Analyst: coverage reports in, "Write tests for MODULE" tickets out.

Reports come from ``tests/fixtures/coverage``: a real ``coverage json`` of the sandbox
image's coverage.py, a coverage.py 7 format-3 report, and istanbul's two JSON reports.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factory.config import CoverageConfig, Settings
from factory.discovery.coverage import (
    ModuleCoverage,
    coverage_command,
    coverage_fingerprint,
    coverage_problems,
    coverage_tool,
    line_ranges,
    parse_coverage,
)
from factory.models import READY_LABEL, Priority, TicketType

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "coverage"
CONFIG = CoverageConfig(min_statements=10)


def report(name: str) -> str:
    return (FIXTURES / name).read_text()


def by_path(modules: list[ModuleCoverage]) -> dict[str, ModuleCoverage]:
    return {module.path: module for module in modules}


# ---------------------------------------------------------------- reports


def test_coverage_py_report_from_the_sandbox_image() -> None:
    """coverage.py's JSON gives each file's statements, covered count and uncovered lines, sorted by path."""
    modules = parse_coverage(report("coverage-py.json"), "coverage.py")
    assert [m.path for m in modules] == ["shop/__init__.py", "shop/cart.py", "shop/tax.py", "tests/test_cart.py"]
    cart = by_path(modules)["shop/cart.py"]
    assert (cart.statements, cart.covered, cart.missing) == (33, 15, 18)
    assert cart.missing_lines[:5] == [13, 18, 19, 20, 21]
    assert round(cart.percent, 1) == 45.5


def test_coverage_py_format_3_keeps_files_inside_the_repository() -> None:
    """A format-3 report (per-function sections) parses the same way; a file outside /workspace is left out."""
    modules = parse_coverage(json.loads(report("coverage-py-format3.json")), "coverage.py")
    assert [m.path for m in modules] == ["app/report.py"]
    assert (modules[0].statements, modules[0].covered) == (30, 7)


def test_istanbul_coverage_final_counts_lines_with_statements() -> None:
    """coverage-final.json: a line is covered when one of its statements ran; paths become repository-relative."""
    modules = by_path(parse_coverage(report("coverage-final.json"), "istanbul"))
    assert sorted(modules) == ["src/index.js", "src/price.js", "test/price.test.js"]
    price = modules["src/price.js"]
    assert (price.statements, price.covered) == (24, 10)  # 25 statements, two of them on line 22
    assert price.missing_lines == [6, 7, 13, 14, 15, 16, 18, 23, 24, 30, 31, 32, 33, 35]
    assert modules["src/index.js"].missing == 0


def test_istanbul_summary_has_totals_but_no_lines() -> None:
    """coverage-summary.json gives line totals only; the "total" entry is not a module."""
    modules = by_path(parse_coverage(report("coverage-summary.json")))
    assert sorted(modules) == ["src/checkout.js", "src/index.js", "src/price.js"]
    checkout = modules["src/checkout.js"]
    assert (checkout.statements, checkout.covered, checkout.line_data) == (33, 9, False)


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("[1, 2]", None, "JSON object"),
        ('{"hello": "world"}', None, "not a coverage.py or istanbul"),
        (None, "istanbul", "expected a istanbul report"),
        ("not json", None, "Expecting value"),
    ],
)
def test_unreadable_reports_raise_value_error(text: str | None, kind: str | None, message: str) -> None:
    """Anything but a coverage report, or a report of the other kind than asked, is a ValueError naming why."""
    with pytest.raises(ValueError, match=message):
        parse_coverage(text if text is not None else report("coverage-py.json"), kind)  # type: ignore[arg-type]


# ---------------------------------------------------------------- line ranges


@pytest.mark.parametrize(
    ("missing", "executed", "expected"),
    [
        ([], [], ""),
        ([40], [], "40"),
        ([12, 13, 14, 15, 16, 17, 18, 40], [20, 30], "12-18, 40"),
        ([28, 29, 30, 32, 33], [26, 35], "28-33"),  # line 31 is blank: no executed line between
        ([5, 7], [6], "5, 7"),
        ([3, 1, 2, 2], [], "1-3"),
    ],
)
def test_line_ranges(missing: list[int], executed: list[int], expected: str) -> None:
    """Uncovered lines become ranges; only an executed line between two uncovered ones splits a range."""
    assert line_ranges(missing, executed) == expected


def test_line_ranges_are_capped() -> None:
    """A module with hundreds of separate gaps lists the first 40 ranges and says how many more."""
    missing = list(range(1, 200, 2))
    text = line_ranges(missing, [n + 1 for n in missing])
    assert text.startswith("1, 3, 5") and text.endswith("and 60 more ranges")


# ---------------------------------------------------------------- tickets


def test_tickets_for_the_worst_modules() -> None:
    """Each ticket is a ready chore on one module, with its uncovered ranges and the rise to reach."""
    modules = parse_coverage(report("coverage-py.json"), "coverage.py")
    problems = coverage_problems(modules, repo="shop", config=CONFIG)
    assert [p.ticket.title for p in problems] == ["Write tests for shop/cart.py", "Write tests for shop/tax.py"]
    ticket = problems[0].ticket
    fingerprint = coverage_fingerprint("shop", "shop/cart.py")
    assert ticket.id == f"COV-{fingerprint[:10]}" and ticket.fingerprint == fingerprint
    assert ticket.type == TicketType.CHORE and ticket.priority == Priority.LOW
    assert ticket.labels == [READY_LABEL] and ticket.source == "coverage-analyst"
    assert ticket.context.repo == "shop" and ticket.context.filepaths == ["shop/cart.py"]
    assert "Uncovered lines: 13, 18-21, 28-33, 36-41, 44-45." in (ticket.description or "")
    assert ticket.acceptance_criteria[0] == (
        "coverage of shop/cart.py rises from 45.4% by at least 10 points (to 55.4% or more)"
    )


def test_test_files_small_and_well_covered_modules_get_no_ticket() -> None:
    """Excluded paths (tests), modules below min_statements and modules above max_percent are skipped."""
    modules = [
        ModuleCoverage(path="tests/test_big.py", statements=100, covered=0),
        ModuleCoverage(path="pkg/tiny.py", statements=5, covered=0),
        ModuleCoverage(path="pkg/fine.py", statements=100, covered=95),
        ModuleCoverage(path="pkg/gap.py", statements=100, covered=80),
    ]
    problems = coverage_problems(modules, repo="r", config=CoverageConfig(min_statements=10, max_percent=90))
    assert [p.ticket.context.filepaths for p in problems] == [["pkg/gap.py"]]


def test_ranking_weighs_recent_changes_and_caps_the_count() -> None:
    """More uncovered statements rank higher, recent changes multiply them; only max_tickets are filed."""
    modules = [
        ModuleCoverage(path="a.py", statements=100, covered=40),  # 60 uncovered
        ModuleCoverage(path="b.py", statements=100, covered=60),  # 40 uncovered, changed 3 times: 40 x 3 = 120
        ModuleCoverage(path="c.py", statements=100, covered=50),  # 50 uncovered
    ]
    config = CoverageConfig(min_statements=10, max_tickets=2)
    plain = coverage_problems(modules, repo="r", config=config)
    assert [p.ticket.context.filepaths[0] for p in plain] == ["a.py", "c.py"]
    churned = coverage_problems(modules, repo="r", config=config, recently_changed={"b.py": 3})
    assert [p.ticket.context.filepaths[0] for p in churned] == ["b.py", "a.py"]
    assert "changed in 3 recent commit(s)" in (churned[0].ticket.description or "")


def test_fingerprint_is_stable_when_the_numbers_change() -> None:
    """The same module in a later run, better covered, gives the same id and fingerprint and the new numbers."""
    before = coverage_problems([ModuleCoverage(path="m.py", statements=50, covered=10)], repo="r", config=CONFIG)
    after = coverage_problems([ModuleCoverage(path="m.py", statements=52, covered=30)], repo="r", config=CONFIG)
    assert before[0].ticket.fingerprint == after[0].ticket.fingerprint
    assert before[0].ticket.id == after[0].ticket.id
    assert before[0].ticket.acceptance_criteria != after[0].ticket.acceptance_criteria
    other_repo = coverage_problems([ModuleCoverage(path="m.py", statements=50, covered=10)], repo="s", config=CONFIG)
    assert other_repo[0].ticket.fingerprint != before[0].ticket.fingerprint


def test_rise_is_capped_at_full_coverage() -> None:
    """A module at 95% with min_rise_points 10 is asked to rise by 5 points, to 100%."""
    problems = coverage_problems(
        [ModuleCoverage(path="m.py", statements=100, covered=95, missing_lines=[1, 2, 3, 4, 5])],
        repo="r",
        config=CoverageConfig(min_statements=10, max_percent=100),
    )
    assert (
        problems[0].ticket.acceptance_criteria[0]
        == "coverage of m.py rises from 95% by at least 5 points (to 100% or more)"
    )


def test_summary_report_ticket_says_lines_are_unknown() -> None:
    """Without line data the description says so instead of listing ranges."""
    modules = parse_coverage(report("coverage-summary.json"), "istanbul")
    problems = coverage_problems(modules, repo="web", config=CONFIG)
    assert [p.ticket.context.filepaths[0] for p in problems] == ["src/checkout.js", "src/price.js"]
    assert "totals only (no line numbers)" in (problems[0].ticket.description or "")


def test_settings_carry_the_coverage_config(tmp_path: Path) -> None:
    """``[coverage]`` in factory.toml is Settings.coverage, unknown keys refused."""
    settings = Settings(coverage={"min_rise_points": 15, "max_tickets": 2})  # type: ignore[arg-type]
    assert settings.coverage.min_rise_points == 15 and settings.coverage.min_statements == 20
    with pytest.raises(ValueError, match="extra"):
        CoverageConfig(minimum=1)  # type: ignore[call-arg]


# ---------------------------------------------------------------- the command


def test_coverage_command_keeps_the_repos_pytest_options() -> None:
    """The repo's pytest command runs under coverage with its options; the report lands at the given path."""
    command = coverage_command("python3 -m pytest -q -p no:cacheprovider", "/workspace/out/coverage.json")
    assert command == (
        "mkdir -p /workspace/out && python3 -m coverage run --data-file=/workspace/out/.coverage --source=. "
        "-m pytest -q -p no:cacheprovider; status=$?; "
        "python3 -m coverage json --data-file=/workspace/out/.coverage -o /workspace/out/coverage.json -q; exit $status"
    )
    assert "-m pytest -q -p no:cacheprovider" in coverage_command("make test")


def test_coverage_command_for_npm_uses_the_repos_own_tool() -> None:
    """c8/nyc run from the repo's node_modules (no download) and their coverage-final.json is copied to the path."""
    command = coverage_command("npm test", "/workspace/out/coverage.json", tool="c8")
    assert "npx --no-install c8 --reporter=json --report-dir=/workspace/out/istanbul npm test" in command
    assert "cp /workspace/out/istanbul/coverage-final.json /workspace/out/coverage.json" in command


def test_coverage_tool_from_the_tree(tmp_path: Path) -> None:
    """package.json with c8 or nyc picks it; Python files pick coverage.py; an empty tree picks nothing."""
    assert coverage_tool(tmp_path) is None
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("x = 1\n")
    assert coverage_tool(tmp_path) == "coverage.py"
    (tmp_path / "package.json").write_text(json.dumps({"devDependencies": {"nyc": "^15.1.0"}}))
    assert coverage_tool(tmp_path) == "nyc"

"""The Janitor's pure logic: outdated listings, pin rewriting, update outcomes, the pull request body."""

from __future__ import annotations

import json

import pytest

from factory import janitor
from factory.models import JanitorUpdate, OutdatedPackage

FOO = OutdatedPackage(ecosystem="pypi", name="libfoo", current="1.0.0", latest="1.1.0", manifest="requirements.txt")
BAR = OutdatedPackage(ecosystem="pypi", name="libbar", current="1.0.0", latest="2.0.0", manifest="requirements.txt")


def test_npm_outdated_json_lists_declared_packages_whose_latest_differs() -> None:
    """`npm outdated --json` entries become updates to `latest`; undeclared and current ones are left out."""
    text = json.dumps(
        {
            "libfoo": {"current": "1.0.0", "wanted": "1.0.0", "latest": "1.1.0"},
            "transitive": {"current": "0.1.0", "wanted": "0.1.0", "latest": "0.2.0"},
            "same": {"current": "2.0.0", "wanted": "2.0.0", "latest": "2.0.0"},
        }
    )
    found = janitor.parse_npm_outdated(text, declared={"libfoo", "same"})
    assert [(p.name, p.current, p.latest, p.ecosystem) for p in found] == [("libfoo", "1.0.0", "1.1.0", "npm")]
    assert janitor.parse_npm_outdated("") == []


def test_pip_outdated_json_is_kept_to_pins_in_their_written_order() -> None:
    """`pip list --outdated --format=json` is filtered to the exact pins, current = the pin, in manifest order."""
    pins = janitor.python_pins({"requirements.txt": "libfoo==1.0.0\n# note\nLibBar == 1.0.0  # why\nloose>=1\n"})
    listing = json.dumps(
        [
            {"name": "libbar", "version": "1.0.0", "latest_version": "2.0.0", "latest_filetype": "wheel"},
            {"name": "pip", "version": "23.0.1", "latest_version": "24.0", "latest_filetype": "wheel"},
            {"name": "libfoo", "version": "1.0.0", "latest_version": "1.1.0", "latest_filetype": "wheel"},
        ]
    )
    found = janitor.parse_pip_outdated(listing, pins)
    assert [(p.name, p.current, p.latest, p.manifest) for p in found] == [
        ("libfoo", "1.0.0", "1.1.0", "requirements.txt"),
        ("LibBar", "1.0.0", "2.0.0", "requirements.txt"),
    ]


def test_pyproject_pins_are_read_from_project_dependencies() -> None:
    """Pins in `[project] dependencies` count; other tables' arrays do not."""
    text = (
        '[project]\nname = "x"\ndependencies = [\n  "libfoo==1.0.0",\n  "other>=2",\n]\n'
        '[tool.x]\ndependencies = ["no==1"]\n'
    )
    assert janitor.python_pins({"pyproject.toml": text}) == {"libfoo": ("libfoo", "1.0.0", "pyproject.toml")}


def test_rewrite_pin_changes_only_that_pin_in_any_spelling() -> None:
    """The pin is rewritten whatever its spelling and spacing; a similar name or a missing pin is not touched."""
    text = "Lib_Foo[extra] == 1.0.0 ; python_version > '3'\nlibfoo2==1.0.0\nlibbar==1.0.0\n"
    assert janitor.rewrite_pin(text, "lib-foo", "1.0.0", "1.1.0") == (
        "Lib_Foo[extra] == 1.1.0 ; python_version > '3'\nlibfoo2==1.0.0\nlibbar==1.0.0\n"
    )
    with pytest.raises(ValueError, match="no pin"):
        janitor.rewrite_pin(text, "libbaz", "1.0.0", "2.0.0")


def test_rewrite_npm_pin_sets_the_exact_version_and_keeps_the_layout() -> None:
    """package.json keeps its layout; the entry (caret range or not) becomes the exact new version."""
    text = '{\n  "dependencies": {\n    "libfoo": "^1.0.0",\n    "libbar": "1.0.0"\n  }\n}\n'
    assert janitor.rewrite_npm_pin(text, "libfoo", "1.1.0") == text.replace('"^1.0.0"', '"1.1.0"')
    with pytest.raises(ValueError):
        janitor.rewrite_npm_pin(text, "nothere", "1.0.0")


def test_update_output_markers_say_committed_or_reverted_with_a_summary() -> None:
    """Markers decide the outcome; a reverted update keeps the failing lines of the test output."""
    committed = janitor.parse_update_output(FOO, "@@janitor tests-end 0\n@@janitor committed\n", 0)
    assert committed.committed and committed.reason is None
    output = (
        "@@janitor tests-begin\n.F\nFAILED test_app.py::test_total - AttributeError: module 'libbar' has no "
        "attribute 'add'\n1 failed, 1 passed\n@@janitor tests-end 1\n@@janitor reverted\n"
    )
    reverted = janitor.parse_update_output(BAR, output, 0)
    assert not reverted.committed and reverted.reason == "tests failed (exit 1)"
    assert reverted.summary is not None and "has no attribute 'add'" in reverted.summary
    unfinished = janitor.parse_update_output(BAR, "half way", 124)
    assert not unfinished.committed and unfinished.reason == "the update did not finish (timed out)"


def test_survey_problem_names_a_failing_baseline() -> None:
    """Tests that fail before any update stop the run with the reason; a finished survey has no problem."""
    failing = "@@janitor tests-begin\nFAILED test_x\n@@janitor tests-end 1\n"
    assert (problem := janitor.survey_problem(failing, 0)) is not None
    assert problem.startswith("the tests fail before any update (exit 1)")
    ok = "@@janitor tests-end 0\n@@janitor outdated-begin\n[]\n@@janitor outdated-end\n"
    assert janitor.survey_problem(ok, 0) is None
    assert janitor.between(ok, "outdated").strip() == "[]"


def test_pull_request_body_tables_and_recorded_head() -> None:
    """Committed updates and skipped ones (with why and the output) are tables; the pushed head is recorded."""
    updates = [
        JanitorUpdate(package=FOO, committed=True),
        JanitorUpdate(package=BAR, committed=False, reason="tests failed (exit 1)", summary="E | boom\nline 2"),
    ]
    head = "a" * 40
    body = janitor.pull_request_body("calc", updates, head, "pytest -q", checked=True)
    assert "| libfoo | 1.0.0 | 1.1.0 |" in body
    assert "| libbar | 1.0.0 | 2.0.0 | tests failed (exit 1) | E \\| boom<br>line 2 |" in body
    assert "passed the Hallucination Check" in body
    assert janitor.janitor_head(body) == head
    assert janitor.janitor_head("a human's PR") is None


def test_manifests_round_trip_through_the_sandbox_listing() -> None:
    """The manifest listing printed in the sandbox gives back each file's exact text."""
    output = "@@janitor file requirements.txt\nlibfoo==1.0.0\n\n@@janitor present package-lock.json\n@@janitor end\n"
    files, present = janitor.parse_manifests(output)
    assert files == {"requirements.txt": "libfoo==1.0.0\n"}
    assert present == {"package-lock.json"}
    assert janitor.project_kind(files) == "pypi"
    assert janitor.project_kind({"package.json": "{}", "requirements.txt": ""}) == "npm"

"""The Janitor's pure logic: outdated listings, pin rewriting, update outcomes, the pull request body."""

from __future__ import annotations

import asyncio
import json
import subprocess
import types
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from factory import janitor
from factory.config import load_settings
from factory.models import (
    JanitorPlan,
    JanitorRequest,
    JanitorSurveyRequest,
    JanitorUpdate,
    OutdatedPackage,
    SandboxHandle,
)
from tests.conftest import make_settings

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
    assert "Lock files not regenerated" not in body
    assert janitor.janitor_head(body) == head
    with_lock = janitor.pull_request_body("calc", updates, head, "pytest -q", checked=True, stale_locks=["uv.lock"])
    assert "**Lock files not regenerated:**" in with_lock and "run `uv lock` on this branch" in with_lock
    nothing_committed = janitor.pull_request_body("calc", updates[1:], head, "pytest -q", True, ["uv.lock"])
    assert "Lock files not regenerated" not in nothing_committed
    assert janitor.janitor_head("a human's PR") is None


def test_manifests_round_trip_through_the_sandbox_listing() -> None:
    """The manifest listing printed in the sandbox gives back each file's exact text."""
    output = (
        "@@janitor file requirements.txt\nlibfoo==1.0.0\n\n@@janitor present package-lock.json\n"
        "@@janitor present uv.lock\n@@janitor end\n"
    )
    files, present = janitor.parse_manifests(output)
    assert files == {"requirements.txt": "libfoo==1.0.0\n"}
    assert present == {"package-lock.json", "uv.lock"}
    assert janitor.project_kind(files) == "pypi"
    assert janitor.project_kind({"package.json": "{}", "requirements.txt": ""}) == "npm"


# ---------------------------------------------------------------- what the sandbox prints is untrusted


def test_npm_listing_entries_with_path_like_names_or_odd_versions_are_dropped_and_reported() -> None:
    """A name that is not a valid npm name (``x/../../../repo/evil``) or a version with shell characters
    never becomes an update; each is reported; valid and scoped names still are."""
    text = json.dumps(
        {
            "x/../../../repo/evil": {"current": "1.0.0", "latest": "1.0.1"},
            "libfoo": {"current": "1.0.0", "latest": "1.1.0; touch /tmp/owned"},
            "@scope/libbar": {"current": "1.0.0", "latest": "2.0.0"},
        }
    )
    rejected: list[str] = []
    found = janitor.parse_npm_outdated(text, rejected=rejected)
    assert [(p.name, p.latest) for p in found] == [("@scope/libbar", "2.0.0")]
    assert len(rejected) == 2
    assert "a path" in rejected[0] and "invalid version" in rejected[1]


def test_pip_listing_and_pins_with_invalid_names_or_versions_are_dropped_and_reported() -> None:
    """A pinned dependency listed with a version that is not plain is not updated; nor, unpinned, a bad name."""
    pins = janitor.python_pins({"requirements.txt": "libfoo==1.0.0\nlibbar==1.0.0\n"})
    listing = json.dumps(
        [
            {"name": "libfoo", "version": "1.0.0", "latest_version": "1.1.0$(id)"},
            {"name": "libbar", "version": "1.0.0", "latest_version": "2.0.0"},
        ]
    )
    rejected: list[str] = []
    assert [p.name for p in janitor.parse_pip_outdated(listing, pins, rejected)] == ["libbar"]
    assert len(rejected) == 1 and "libfoo" in rejected[0]
    unpinned = json.dumps([{"name": "../evil", "version": "1", "latest_version": "2"}])
    rejected = []
    assert janitor.parse_pip_outdated(unpinned, None, rejected) == [] and len(rejected) == 1


def test_log_file_names_stay_in_the_log_directory_and_never_follow_a_symlink(tmp_path: Path) -> None:
    """A package name becomes a flat slug; a symlink where the log goes is refused, its target untouched."""
    from activities.janitor import write_log

    logs = tmp_path / "meta" / "logs"
    written = write_log(logs, "janitor-update-x/../../../repo/evil", "output\n")
    assert written.parent == logs and written.read_text() == "output\n"
    assert written.name == "janitor-update-x-..-..-..-repo-evil.log"
    assert janitor.log_slug("..") not in ("", ".", "..")
    target = tmp_path / "outside.txt"
    target.write_text("precious\n")
    (logs / "janitor-update-libfoo.log").symlink_to(target)
    with pytest.raises(OSError):
        write_log(logs, "janitor-update-libfoo", "sandbox output\n")
    assert target.read_text() == "precious\n"


def test_the_npm_tool_does_not_import_the_repositorys_modules(tmp_path: Path) -> None:
    """A ``json.py`` in the workspace does not shadow the standard library the tool imports (``python3 -I``)."""
    (tmp_path / "json.py").write_text("raise SystemExit('the repository shadowed json')\n")
    (tmp_path / "package.json").write_text('{"name": "demo"}\n')
    proc = subprocess.run(
        ["bash", "-c", janitor.npm_tool("outdated", "http://registry.invalid")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {}
    venv_line = next(
        line
        for line in janitor.survey_script(
            "pypi", {}, test_command="true", pip_index_url="http://x/simple", npm_registry="http://x"
        ).splitlines()
        if " venv " in line
    )
    assert venv_line.startswith("python3 -I -m venv")


# ---------------------------------------------------------------- manifests


def test_rewrite_npm_pin_changes_only_the_dependency_entry() -> None:
    """A script, the package's own name or a nested field named like the package is left alone; every
    dependency section that lists it is updated."""
    text = (
        '{\n  "name": "libfoo",\n  "scripts": {\n    "libfoo": "node run.js"\n  },\n'
        '  "dependencies": {\n    "libfoo": "^1.0.0"\n  },\n'
        '  "devDependencies": {"libbar": "1.0.0", "libfoo": "~1.0.0"}\n}\n'
    )
    updated = janitor.rewrite_npm_pin(text, "libfoo", "1.1.0")
    data = json.loads(updated)
    assert data["name"] == "libfoo" and data["scripts"] == {"libfoo": "node run.js"}
    assert data["dependencies"] == {"libfoo": "1.1.0"}
    assert data["devDependencies"] == {"libbar": "1.0.0", "libfoo": "1.1.0"}
    assert updated.count("\n") == text.count("\n")  # the layout is kept
    with pytest.raises(ValueError):
        janitor.rewrite_npm_pin('{"scripts": {"libfoo": "x"}}', "libfoo", "1.1.0")


def test_pyproject_pins_with_extras_are_all_read_and_rewritten_exactly() -> None:
    """``requests[socks]==2.31.0`` does not cut the list short; rewriting changes that string literal only."""
    text = (
        '[project]\nname = "x"\ndependencies = [\n  "requests[socks]==2.31.0",\n  \'libfoo==1.0.0\',\n]\n'
        '[project.optional-dependencies]\ntest = ["libbar==1.0.0"]\n[tool.x]\nother = "libfoo==1.0.0"\n'
    )
    pins = janitor.python_pins({"pyproject.toml": text})
    assert pins == {
        "requests": ("requests", "2.31.0", "pyproject.toml"),
        "libfoo": ("libfoo", "1.0.0", "pyproject.toml"),
    }
    updated = janitor.rewrite_pin(text, "libfoo", "1.0.0", "1.1.0", manifest="pyproject.toml")
    assert updated == text.replace("'libfoo==1.0.0'", "'libfoo==1.1.0'")
    assert janitor.rewrite_pin(text, "requests", "2.31.0", "2.32.0", manifest="pyproject.toml") == text.replace(
        "requests[socks]==2.31.0", "requests[socks]==2.32.0"
    )
    with pytest.raises(ValueError, match="no pin"):
        janitor.rewrite_pin(text, "libbar", "1.0.0", "2.0.0", manifest="pyproject.toml")


def test_module_docstring_names_no_npm_command_the_janitor_does_not_run() -> None:
    """The image has no npm: neither the docstring nor the npm scripts speak of running ``npm``."""
    doc = janitor.__doc__ or ""
    assert "npm install" not in doc and "--save-exact" not in doc and "NPM_TOOL" in doc
    script = janitor.survey_script("npm", {}, test_command="node test.js", pip_index_url="x", npm_registry="http://r")
    assert not any(line.startswith("npm ") for line in script.splitlines())


# ---------------------------------------------------------------- the survey activity


class _Result:
    def __init__(self, output: str, exit_code: int = 0) -> None:
        self.output, self.exit_code = output, exit_code


class _Sandboxes:
    """Answers the manifest listing, then the survey script; records each time limit."""

    def __init__(self, listing: str) -> None:
        self.timeouts: list[float] = []
        self.listing = listing

    def exec(self, name: str, script: str, timeout_s: float) -> _Result:
        self.timeouts.append(timeout_s)
        if len(self.timeouts) == 1:
            manifest = json.dumps({"dependencies": {"libfoo": "1.0.0", EVIL: "1.0.0"}})
            return _Result(f"@@janitor file package.json\n{manifest}\n\n@@janitor end\n")
        return _Result(
            "@@janitor install-begin\n@@janitor install-end\n@@janitor tests-end 0\n"
            f"@@janitor outdated-begin\n{self.listing}\n@@janitor outdated-end\n"
        )


EVIL = "x/../../../repo/evil"


def test_the_survey_gets_twice_the_test_limit_and_reports_what_it_left_out(tmp_path: Path) -> None:
    """Install and tests each may take the test limit (the script gets twice it, the activity two minutes
    more); a declared, listed entry with a path for a name is left out and reported; logs stay flat."""
    from activities.janitor import JanitorActivities, sandbox_timeout_s

    settings = make_settings(tmp_path)
    listing = json.dumps(
        {"libfoo": {"current": "1.0.0", "latest": "1.1.0"}, EVIL: {"current": "1.0.0", "latest": "1.0.1"}}
    )
    sandboxes = _Sandboxes(listing)
    activities = JanitorActivities(settings, sandboxes)  # type: ignore[arg-type]
    env = ActivityEnvironment()
    plan: JanitorPlan = asyncio.run(env.run(activities.plan_janitor, JanitorRequest(repos=["calculator"])))[0]
    handle = SandboxHandle(container_id="c", name="sb", workspace=str(tmp_path / "ws"), task_queue="q")
    survey = asyncio.run(env.run(activities.survey_dependencies, JanitorSurveyRequest(sandbox=handle, plan=plan)))
    assert sandboxes.timeouts[1] == sandbox_timeout_s(plan.limits.test_timeout_s) == 2 * plan.limits.test_timeout_s
    assert [p.name for p in survey.outdated] == ["libfoo"]
    assert len(survey.rejected) == 1 and "a path" in survey.rejected[0]
    logs = tmp_path / "ws" / "meta" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["janitor-manifests.log", "janitor-survey.log"]


# ---------------------------------------------------------------- pushing the branch it judged


def test_a_push_leased_on_the_judged_tip_never_overwrites_a_later_push(tmp_path: Path) -> None:
    """The Janitor judges the branch, then a human pushes to it: the Janitor's push (leased on the judged
    tip) is refused and the human's commit stays; a branch created after it was judged absent likewise;
    with the tip unchanged the push goes through."""
    from factory.errors import RemoteBranchConflict
    from factory.forge.gitops import clone_for_sandbox, create_bare_repo_from_dir, remote_branch_sha
    from factory.forge.gitops import verify_bundle_and_push as push
    from tests.unit.test_gitops import commit_file, git, make_bundle

    source = tmp_path / "source"
    source.mkdir()
    (source / "README.md").write_text("# demo\n")
    bare = tmp_path / "forge" / "demo.git"
    base = create_bare_repo_from_dir(source, bare)
    branch = "chore/update-deps"
    work = tmp_path / "workspace" / "repo"
    clone_for_sandbox(str(bare), work, "main")
    first = commit_file(work, "deps.txt", "one\n")
    assert push(make_bundle(work, base), base, first, branch, str(bare), [], tmp_path / "v", expected_remote_sha="")

    judged = remote_branch_sha(str(bare), branch)
    assert judged == first
    human = tmp_path / "human"
    git("clone", "-q", "--branch", branch, str(bare), str(human))
    theirs = commit_file(human, "theirs.txt")
    git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=human)

    git("reset", "-q", "--hard", base, cwd=work)
    second = commit_file(work, "deps.txt", "two\n")
    bundle = make_bundle(work, base, name="second.bundle")
    with pytest.raises(RemoteBranchConflict, match="moved since it was checked"):
        push(bundle, base, second, branch, str(bare), [], tmp_path / "v", expected_remote_sha=judged)
    assert remote_branch_sha(str(bare), branch) == theirs

    other = "chore/other"
    git("push", "-q", "origin", f"HEAD:refs/heads/{other}", cwd=human)
    with pytest.raises(RemoteBranchConflict):
        push(bundle, base, second, other, str(bare), [], tmp_path / "v", expected_remote_sha="")
    assert remote_branch_sha(str(bare), other) == theirs

    assert push(bundle, base, second, branch, str(bare), [], tmp_path / "v", expected_remote_sha=theirs)
    assert remote_branch_sha(str(bare), branch) == second


# ---------------------------------------------------------------- the manual command


class _Handle:
    async def result(self) -> None:
        return None


class _Client:
    def __init__(self, running: list[str]) -> None:
        self.running = running
        self.started: list[str] = []

    def list_workflows(self, query: str, *, limit: int | None = None) -> Any:
        assert "JanitorWorkflow" in query and "Running" in query
        running = self.running

        async def listing() -> Any:
            for workflow_id in running:
                yield types.SimpleNamespace(id=workflow_id)

        return listing()

    async def start_workflow(self, *args: Any, id: str, **kwargs: Any) -> _Handle:
        self.started.append(id)
        return _Handle()


def test_a_manual_janitor_run_takes_the_schedules_id_and_never_runs_beside_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`factory janitor` (all repos or one) starts workflow id `janitor`, the schedule's; while any janitor
    runs (a scheduled one's id carries its time) it starts nothing and says so."""
    import sys

    import starter
    from factory.schedules import JANITOR, declared_schedule
    from tests.conftest import write_config

    config = write_config(tmp_path)
    scheduled_id = declared_schedule(load_settings(config), JANITOR).workflow_id

    def run(client: _Client, *args: str) -> int:
        async def connect(settings: Any) -> _Client:
            return client

        monkeypatch.setattr(starter, "connect", connect)
        monkeypatch.setattr(sys, "argv", ["factory", "--config", str(config), "janitor", *args])
        return starter._run_cli()

    idle = _Client([])
    assert run(idle) == 0 and run(idle, "--repo", "calculator") == 0
    assert idle.started == [scheduled_id, scheduled_id] == ["janitor", "janitor"]

    busy = _Client(["janitor-2026-01-05T03:00:00Z"])
    assert run(busy, "--repo", "calculator") == 0
    assert busy.started == []
    assert "already running (janitor-2026-01-05T03:00:00Z" in capsys.readouterr().out

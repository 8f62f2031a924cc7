"""The Reviewer's checks, on real diffs that git produced in temporary repositories."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from factory.errors import BudgetExhausted, DiffInvalid
from factory.governance.review import (
    REPORT_FINDINGS_TOOL,
    UNPARSEABLE_ANSWER,
    ChangeUnderReview,
    deterministic_findings,
    findings_from_answer,
    is_test_path,
    llm_critique,
    review_messages,
)
from factory.llm.playbook import load_playbook
from factory.models import (
    BudgetCaps,
    Finding,
    ModelSpec,
    Priority,
    Severity,
    Spend,
    Ticket,
    TicketContext,
    TicketType,
    Verdict,
    verdict_for,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_REPO = ROOT / "examples" / "sample-repo"
PLAYBOOKS = ROOT / "tests" / "fixtures" / "playbooks"
RUFF = str(Path(sys.executable).parent / "ruff")
PROTECTED = [".github/**", "Jenkinsfile"]

GUARDED_MEAN = '''def mean(values: Sequence[float]) -> float:
    """Arithmetic mean of ``values``."""
    if not values:
        raise ValueError("mean of an empty sequence")
    return sum(values) / len(values)
'''


def ticket(kind: TicketType = TicketType.BUG) -> Ticket:
    return Ticket(
        id="CALC-1",
        type=kind,
        priority=Priority.HIGH,
        title="mean() of an empty list crashes with ZeroDivisionError",
        context=TicketContext(repo="calculator", filepaths=["calc/stats.py"]),
        acceptance_criteria=["mean([]) raises ValueError mentioning the empty sequence", "All unit tests pass"],
    )


class Repo:
    """A real git repository: write files, commit, and read a change back the way the forge does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.git("init", "--quiet", "--initial-branch=main")

    def git(self, *args: str) -> str:
        command = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "core.hooksPath=/dev/null"]
        result = subprocess.run([*command, *args], cwd=self.path, capture_output=True, check=True)
        return result.stdout.decode()

    def write(self, relative: str, text: str) -> None:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def replace(self, relative: str, old: str, new: str) -> None:
        text = (self.path / relative).read_text()
        assert old in text, f"{old!r} not in {relative}"
        self.write(relative, text.replace(old, new, 1))

    def commit(self, message: str = "change") -> str:
        self.git("add", "--all")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def text_at(self, commit: str, path: str) -> str | None:
        result = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=self.path, capture_output=True)
        return result.stdout.decode() if result.returncode == 0 else None

    def change(self, base: str, head: str, kind: TicketType = TicketType.BUG) -> ChangeUnderReview:
        names = self.git("diff", "--name-only", "--no-renames", "-z", base, head).split("\0")
        before = {p: text for p in filter(None, names) if (text := self.text_at(base, p)) is not None}
        after = {p: text for p in filter(None, names) if (text := self.text_at(head, p)) is not None}
        return ChangeUnderReview(
            ticket=ticket(kind),
            diff=self.git("diff", "--no-color", "-M", base, head),
            files_before=before,
            files_after=after,
            base_commit=base,
            head_commit=head,
        )


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """The example calculator repository, committed as the base."""
    shutil.copytree(SAMPLE_REPO, tmp_path / "repo")
    return Repo(tmp_path / "repo")


def review(change: ChangeUnderReview, *, max_diff_lines: int = 300) -> tuple[list[Finding], list[str]]:
    return deterministic_findings(change, protected_paths=PROTECTED, max_diff_lines=max_diff_lines, ruff_bin=RUFF)


def fix_mean(repo: Repo) -> None:
    repo.replace(
        "calc/stats.py",
        'def mean(values: Sequence[float]) -> float:\n    """Arithmetic mean of ``values``."""\n'
        "    return sum(values) / len(values)\n",
        GUARDED_MEAN,
    )


def touch_test(repo: Repo) -> None:
    repo.replace(
        "tests/test_stats.py", 'match="empty"):\n        mean([])', 'match="empty sequence"):\n        mean([])'
    )


def by_check(findings: list[Finding], check: str) -> list[Finding]:
    return [finding for finding in findings if finding.check == check]


# --------------------------------------------------------------------------
# A clean change


def test_a_clean_bug_fix_with_its_test_has_no_findings(repo: Repo) -> None:
    """The example fix plus a test change passes every check, and every applicable check says it ran."""
    base = repo.commit("base")
    fix_mean(repo)
    touch_test(repo)
    findings, checks_run = review(repo.change(base, repo.commit()))
    assert findings == []
    assert checks_run == ["ruff", "docstring", "tests", "secret", "protected-path", "diff-size"]


# --------------------------------------------------------------------------
# ruff


def test_ruff_reports_only_the_findings_the_change_introduces(repo: Repo) -> None:
    """A pre-existing unused import is not the change's; a new unused import and a syntax error are, at their lines."""
    repo.write("calc/io.py", '"""Reading numbers."""\n\nimport os\n\n\ndef load():\n    """Load."""\n    return 1\n')
    base = repo.commit("base with an old unused import")
    repo.replace("calc/io.py", "import os\n", "import os\nimport sys\n")
    repo.write("calc/broken.py", '"""Broken."""\n\nx = (\n')
    touch_test(repo)
    findings = by_check(review(repo.change(base, repo.commit()))[0], "ruff")
    in_io = [f for f in findings if f.path == "calc/io.py"]
    assert [(f.line, f.severity) for f in in_io] == [(4, Severity.ERROR)]
    assert in_io[0].message == "F401: `sys` imported but unused"
    assert any(f.path == "calc/broken.py" and "invalid-syntax" in f.message for f in findings)


def test_a_known_ruff_finding_on_an_added_line_is_reported(repo: Repo) -> None:
    """The same (code, message) existed before, but the change wrote this line: it is the change's finding;
    the old occurrence on the untouched line is not."""
    repo.write("calc/evaluate.py", '"""Evaluate."""\n\n\ndef run(text):\n    """Run."""\n    return eval(text)\n')
    base = repo.commit("base with an eval")
    repo.replace("calc/evaluate.py", "    return eval(text)\n", "    eval(text)\n    return eval(text)\n")
    touch_test(repo)
    findings = by_check(review(repo.change(base, repo.commit()))[0], "ruff")
    assert [(f.path, f.line) for f in findings] == [("calc/evaluate.py", 6)]
    assert findings[0].message.startswith("S307")


def test_ruff_ignores_noqa_comments_and_repository_configuration(repo: Repo) -> None:
    """A `# noqa` the change adds does not silence ruff, nor does a ruff config in the repository."""
    repo.write("pyproject.toml", '[tool.ruff.lint]\nignore = ["F"]\n')
    base = repo.commit("base with a permissive config")
    repo.replace(
        "calc/stats.py",
        "from collections.abc import Sequence\n",
        "import json  # noqa\n\nfrom collections.abc import Sequence\n",
    )
    repo.write("calc/ruff.toml", 'lint.ignore = ["F"]\n')
    touch_test(repo)
    findings = by_check(review(repo.change(base, repo.commit()))[0], "ruff")
    assert [(f.path, f.line) for f in findings] == [("calc/stats.py", 3)]


def test_a_renamed_file_keeps_its_old_findings_to_itself(repo: Repo) -> None:
    """A file moved without edits is compared with its old version under the new name: nothing is new."""
    repo.write("calc/legacy.py", '"""Old."""\n\nimport os\n')
    base = repo.commit("base")
    repo.git("mv", "calc/legacy.py", "calc/old_helpers.py")
    touch_test(repo)
    findings, _ = review(repo.change(base, repo.commit()))
    assert findings == []


# --------------------------------------------------------------------------
# eslint


def test_eslint_is_skipped_quietly_when_it_is_not_installed(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repository with an eslint config, but no eslint on PATH: no finding, and eslint is not listed as run."""
    base = repo.commit("base")
    repo.write("eslint.config.js", "export default [];\n")
    repo.write("web/app.js", "const unused = 1;\n")
    touch_test(repo)
    change = repo.change(base, repo.commit())
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    findings, checks_run = review(change)
    assert "eslint" not in checks_run
    assert by_check(findings, "eslint") == []


def test_eslint_is_not_run_for_a_repository_without_an_eslint_config(repo: Repo) -> None:
    """JavaScript files alone do not make a repository an eslint user."""
    base = repo.commit("base")
    repo.write("web/app.js", "const unused = 1;\n")
    touch_test(repo)
    _, checks_run = review(repo.change(base, repo.commit()))
    assert "eslint" not in checks_run


# --------------------------------------------------------------------------
# Docstrings


def test_new_public_definitions_without_a_docstring_are_warnings(repo: Repo) -> None:
    """New public functions, classes and methods need a docstring; private ones, documented ones and
    untouched old ones do not."""
    repo.write("calc/old.py", "def legacy():\n    return 1\n")
    base = repo.commit("base with an undocumented old function")
    repo.write(
        "calc/extra.py",
        '"""Extra statistics."""\n\n\n'
        "def spread(values):\n    return max(values) - min(values)\n\n\n"
        "def _helper():\n    return 0\n\n\n"
        'def documented():\n    """Documented."""\n    return 1\n\n\n'
        "class Summary:\n    def total(self):\n        return 0\n\n    def _private(self):\n        return 0\n",
    )
    repo.replace("calc/old.py", "    return 1\n", "    return 2\n")
    touch_test(repo)
    findings = by_check(review(repo.change(base, repo.commit()))[0], "docstring")
    assert [(f.path, f.line, f.severity) for f in findings] == [
        ("calc/extra.py", 4, Severity.WARNING),
        ("calc/extra.py", 17, Severity.WARNING),
        ("calc/extra.py", 18, Severity.WARNING),
    ]
    assert [f.message.split("`")[1] for f in findings] == ["spread", "Summary", "Summary.total"]


def test_a_path_git_quotes_is_reported_under_its_real_name(repo: Repo) -> None:
    """git writes non-ASCII paths C-quoted in a diff; findings name the file as it is."""
    base = repo.commit("base")
    repo.write("calc/café.py", '"""Café."""\n\n\ndef brew():\n    return 1\n')
    touch_test(repo)
    change = repo.change(base, repo.commit())
    assert '"b/calc/caf\\303\\251.py"' in change.diff
    findings = by_check(review(change)[0], "docstring")
    assert [(f.path, f.line) for f in findings] == [("calc/café.py", 4)]


# --------------------------------------------------------------------------
# Tests touched


def test_a_bug_fix_without_a_test_change_is_an_error(repo: Repo) -> None:
    """A bug ticket whose change touches no test file gets one error about the whole change."""
    base = repo.commit("base")
    fix_mean(repo)
    findings = by_check(review(repo.change(base, repo.commit()))[0], "tests")
    assert len(findings) == 1
    assert findings[0].severity == Severity.ERROR and findings[0].path is None
    assert "bug ticket changes no test" in findings[0].message


def test_a_chore_needs_no_test_change(repo: Repo) -> None:
    """Chores are not held to the tests rule, and the rule is not listed as run for them."""
    base = repo.commit("base")
    fix_mean(repo)
    findings, checks_run = review(repo.change(base, repo.commit(), TicketType.CHORE))
    assert findings == []
    assert "tests" not in checks_run


@pytest.mark.parametrize(
    ("path", "is_test"),
    [
        ("tests/test_stats.py", True),
        ("pkg/test/helpers.py", True),
        ("test_stats.py", True),
        ("calc/stats_test.py", True),
        ("web/app.test.ts", True),
        ("web/app.spec.jsx", True),
        ("src/__tests__/app.js", True),
        ("calc/stats.py", False),
        ("calc/testing.py", False),
        ("contest/entry.py", False),
    ],
)
def test_test_paths_are_recognised_by_directory_or_name(path: str, is_test: bool) -> None:
    """Test files are those under tests/ or test/ or named like tests in Python, JavaScript and TypeScript."""
    assert is_test_path(path) is is_test


# --------------------------------------------------------------------------
# Secrets

# Built at run time, so that this file itself holds nothing a secret scanner would stop.
AWS_KEY = "AKIA" + "Q3EXAMPLE7KEY4ID"
GITHUB_TOKEN = "gh" + "p_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
GITHUB_PAT = "github" + "_pat_" + "11ABCDEFG0123456789_abcdefghijklmnop"
SLACK_TOKEN = "xo" + "xb-" + "1234567890-abcdefghij"
MODEL_KEY = "sk" + "-ant-" + "api03-x9Y8z7W6v5U4t3S2r1Q0"
PASSWORD = "hunter2" + "-correct-horse"


def test_secrets_in_added_lines_are_errors_with_the_value_masked(repo: Repo) -> None:
    """Each kind of credential is found at its line, and no message repeats the secret."""
    repo.write("deploy/old.env", f'OLD_KEY = "{AWS_KEY}"\n')
    base = repo.commit("base with an old key")
    repo.write("deploy/old.env", "")
    repo.write(
        "deploy/settings.py",
        f'AWS = "{AWS_KEY}"\n'
        f'GITHUB = "{GITHUB_TOKEN}"\n'
        f'PAT = "{GITHUB_PAT}"\n'
        f'SLACK = "{SLACK_TOKEN}"\n'
        f'MODEL = "{MODEL_KEY}"\n'
        f'db_password = "{PASSWORD}"\n'
        "-----BEGIN RSA " + "PRIVATE KEY-----\n"
        'api_token = os.environ["API_TOKEN"]\n'
        'secret: str = os.environ.get("SECRET_NAME", "")\n'
        'password = "${DB_PASSWORD}"\n',
    )
    touch_test(repo)
    findings = by_check(review(repo.change(base, repo.commit()))[0], "secret")
    assert [(f.path, f.line) for f in findings] == [("deploy/settings.py", line) for line in range(1, 8)]
    assert all(f.severity == Severity.ERROR for f in findings)
    text = "\n".join(f.message for f in findings)
    for secret in (AWS_KEY, GITHUB_TOKEN, GITHUB_PAT, SLACK_TOKEN, MODEL_KEY, PASSWORD):
        assert secret not in text
        assert secret[4:16] not in text
    assert "AWS access key id AKIA********" in text
    assert "`db_password` (value masked" in text


def test_a_json_config_value_named_like_a_token_is_a_secret(repo: Repo) -> None:
    """`"api_key": "..."` in JSON is caught like an assignment in code."""
    base = repo.commit("base")
    repo.write("config/app.json", '{\n  "api_key": "' + PASSWORD + '"\n}\n')
    touch_test(repo)
    findings = by_check(review(repo.change(base, repo.commit()))[0], "secret")
    assert [(f.path, f.line) for f in findings] == [("config/app.json", 2)]


# --------------------------------------------------------------------------
# Protected paths and diff size


def test_changes_to_protected_paths_are_errors_per_file(repo: Repo) -> None:
    """Each changed file matching a protected pattern is an error at that file, whatever the directory depth."""
    repo.write(".github/workflows/ci.yml", "on: push\n")
    base = repo.commit("base")
    repo.write(".github/workflows/ci.yml", "on: [push, pull_request]\n")
    repo.write("Jenkinsfile", "pipeline {}\n")
    touch_test(repo)
    findings = by_check(review(repo.change(base, repo.commit()))[0], "protected-path")
    assert [(f.path, f.line, f.severity) for f in findings] == [
        (".github/workflows/ci.yml", 1, Severity.ERROR),
        ("Jenkinsfile", 1, Severity.ERROR),
    ]
    assert "matches `.github/**`" in findings[0].message


def test_a_diff_larger_than_the_ticket_warrants_is_a_warning_with_the_numbers(repo: Repo) -> None:
    """Added plus removed lines above max_diff_lines is one warning; exactly at the limit is fine."""
    base = repo.commit("base")
    fix_mean(repo)  # 2 added lines
    touch_test(repo)  # 1 added, 1 removed
    change = repo.change(base, repo.commit())
    assert by_check(review(change, max_diff_lines=4)[0], "diff-size") == []
    findings = by_check(review(change, max_diff_lines=3)[0], "diff-size")
    assert len(findings) == 1 and findings[0].severity == Severity.WARNING and findings[0].path is None
    assert "4 lines (3 added, 1 removed)" in findings[0].message and "the 3 a bug ticket" in findings[0].message


def test_a_diff_that_is_not_a_unified_diff_is_refused(repo: Repo) -> None:
    """Text that names no file is not silently reviewed as an empty change."""
    base = repo.commit("base")
    change = repo.change(base, base).model_copy(update={"diff": "this is not a diff\n"})
    with pytest.raises(DiffInvalid):
        review(change)


# --------------------------------------------------------------------------
# The reviewer model, through litellm with the scripted model


def scripted(playbook: str | Path) -> ModelSpec:
    path = playbook if isinstance(playbook, Path) else PLAYBOOKS / f"{playbook}.yaml"
    return ModelSpec(name="scripted/review", api_base=str(path), input_price_per_mtok=0, output_price_per_mtok=0)


@pytest.fixture
def fixed(repo: Repo) -> ChangeUnderReview:
    """The example fix of CALC-1 with a test change, as a change under review."""
    base = repo.commit("base")
    fix_mean(repo)
    touch_test(repo)
    return repo.change(base, repo.commit())


async def critique(playbook: str | Path, change: ChangeUnderReview) -> tuple[list[Finding], Spend, str]:
    return await llm_critique(
        scripted(playbook), BudgetCaps(), Spend(), change, style_guide="Be terse.", architecture=None
    )


async def test_an_approving_review_has_no_findings(fixed: ChangeUnderReview) -> None:
    """The approving playbook gives no finding, its summary, and the usage of exactly one model call."""
    findings, usage, summary = await critique("review-approve", fixed)
    assert findings == []
    assert verdict_for(findings) == Verdict.APPROVE
    assert "Approved" in summary
    assert usage.steps == 1 and usage.tokens_in > 0 and usage.cost_usd == 0


async def test_a_request_for_changes_is_a_finding_at_its_file_and_line(fixed: ChangeUnderReview) -> None:
    """The reviewer's finding keeps its path, line and severity, and requests changes."""
    findings, _, summary = await critique("review-request-changes", fixed)
    assert [(f.check, f.path, f.line, f.severity) for f in findings] == [("llm", "calc/stats.py", 8, Severity.ERROR)]
    assert verdict_for(findings) == Verdict.REQUEST_CHANGES
    assert "Changes requested" in summary


async def test_an_answer_without_the_tool_call_is_one_warning(fixed: ChangeUnderReview) -> None:
    """Prose instead of report_findings does not crash and does not pass: one warning says so."""
    findings, _, summary = await critique("review-malformed", fixed)
    assert [(f.check, f.severity, f.message) for f in findings] == [("llm", Severity.WARNING, UNPARSEABLE_ANSWER)]
    assert summary == UNPARSEABLE_ANSWER


async def test_invalid_items_are_repaired_or_dropped(fixed: ChangeUnderReview) -> None:
    """Unknown severity → warning, line 0 → no line, path outside the diff → no path, no message → dropped."""
    findings, _, _ = await critique("review-repair", fixed)
    assert [(f.path, f.line, f.severity) for f in findings] == [
        ("calc/stats.py", 8, Severity.WARNING),
        ("calc/stats.py", None, Severity.INFO),
        (None, None, Severity.ERROR),
    ]


def test_arguments_that_are_not_json_are_one_warning() -> None:
    """A report_findings call with broken JSON arguments is an unparseable answer, not an exception."""
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "report_findings", "arguments": '{"findings": ['}}
        ],
    }
    findings, summary = findings_from_answer(message, {"calc/stats.py"})
    assert [(f.severity, f.message) for f in findings] == [(Severity.WARNING, UNPARSEABLE_ANSWER)]
    assert summary == UNPARSEABLE_ANSWER


async def test_an_exhausted_budget_stops_the_review_before_the_call(fixed: ChangeUnderReview) -> None:
    """BudgetExhausted from the model client propagates: the review is not silently skipped."""
    with pytest.raises(BudgetExhausted):
        await llm_critique(
            scripted("review-approve"),
            BudgetCaps(steps=3),
            Spend(steps=3),
            fixed,
            style_guide=None,
            architecture=None,
        )


async def test_the_example_review_playbook_approves_the_example_fix(fixed: ChangeUnderReview) -> None:
    """examples/playbooks/CALC-1.review.yaml is a valid playbook whose review approves."""
    path = ROOT / "examples" / "playbooks" / "CALC-1.review.yaml"
    load_playbook(path)
    findings, _, summary = await critique(path, fixed)
    assert findings == [] and "Approved" in summary


def test_the_prompt_holds_the_documents_the_ticket_and_a_truncated_diff(fixed: ChangeUnderReview) -> None:
    """The style guide and architecture go to the system prompt; a long diff is cut with a note."""
    system, user = review_messages(fixed, style_guide="Use tabs.", architecture="Rooms and doors.", max_diff_chars=200)
    assert "Use tabs." in system["content"] and "Rooms and doors." in system["content"]
    assert "report_findings" in system["content"]
    assert "CALC-1" in user["content"] and "mean([]) raises ValueError" in user["content"]
    assert "[diff truncated:" in user["content"] and "The diff is truncated" in user["content"]
    assert fixed.diff not in user["content"]


def test_the_reviewer_has_one_tool_and_it_only_reports() -> None:
    """The reviewer's only tool takes findings and a summary: nothing that writes a file or runs a command."""
    function = REPORT_FINDINGS_TOOL["function"]
    assert function["name"] == "report_findings"
    assert set(function["parameters"]["properties"]) == {"findings", "summary"}
    item = function["parameters"]["properties"]["findings"]["items"]
    assert set(item["properties"]) == {"path", "line", "severity", "message"}
    assert item["properties"]["severity"]["enum"] == ["info", "warning", "error"]

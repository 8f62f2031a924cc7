"""The Standard Ticket Interface, branch names and the budget arithmetic."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from factory.errors import TicketInvalid
from factory.models import BudgetCaps, Spend, Ticket, branch_name, parse_ticket, ticket_schema

# The seed's example, with one value chosen from each "a | b | c" placeholder.
SEED_EXAMPLE: dict[str, Any] = {
    "id": "ENG-1042",
    "type": "bug",
    "priority": "high",
    "context": {
        "repo": "frontend-monorepo",
        "filepaths": ["src/components/Header.tsx"],
        "error_logs": "Traceback (most recent call last)...",
    },
    "acceptance_criteria": ["Unit tests pass", "No new React warnings in console"],
}


def ticket_json(change: Callable[[dict[str, Any]], object] | None = None) -> str:
    data = json.loads(json.dumps(SEED_EXAMPLE))
    if change is not None:
        change(data)
    return json.dumps(data)


def make_ticket(**fields: Any) -> Ticket:
    data = json.loads(ticket_json())
    data.update(fields)
    return Ticket.model_validate(data)


# --------------------------------------------------------------------------
# Validation


def test_seed_example_validates_exactly_as_written() -> None:
    """The seed's example JSON is a valid ticket and every field survives the round trip."""
    ticket = parse_ticket(ticket_json())

    assert ticket.id == "ENG-1042"
    assert ticket.type.value == "bug"
    assert ticket.priority.value == "high"
    assert ticket.context.repo == "frontend-monorepo"
    assert ticket.context.filepaths == ["src/components/Header.tsx"]
    assert ticket.context.error_logs.startswith("Traceback")
    assert ticket.acceptance_criteria == ["Unit tests pass", "No new React warnings in console"]
    assert ticket.model_dump(mode="json", exclude_defaults=True) == SEED_EXAMPLE


def test_parse_ticket_accepts_bytes() -> None:
    """A ticket read from a file as bytes validates like text."""
    assert parse_ticket(ticket_json().encode()).id == "ENG-1042"


def _drop_repo(data: dict[str, Any]) -> None:
    del data["context"]["repo"]


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        pytest.param(_drop_repo, "context.repo", "required", id="missing-context-repo"),
        pytest.param(lambda d: d.update(type="epic"), "type", "'bug', 'feature' or 'chore'", id="bad-type"),
        pytest.param(lambda d: d.update(priority="urgent"), "priority", "'low', 'medium' or 'high'", id="bad-priority"),
        pytest.param(lambda d: d.update(acceptance_criteria=[]), "acceptance_criteria", "at least 1", id="no-criteria"),
        pytest.param(
            lambda d: d.update(acceptance_criteria=["Unit tests pass", "   "]),
            "acceptance_criteria",
            "must not be blank",
            id="blank-criterion",
        ),
        pytest.param(
            lambda d: d.update(assignee="bob"),
            "assignee",
            "not a field of the Standard Ticket Interface",
            id="unknown-top-level-field",
        ),
        pytest.param(lambda d: d.update(id="ENG 1042"), "id", "letters, digits", id="id-with-space"),
        pytest.param(lambda d: d.update(id="ENG/1042"), "id", "letters, digits", id="id-with-slash"),
        pytest.param(lambda d: d.update(id="../etc"), "id", "starting with a letter or digit", id="id-dot-dot"),
        pytest.param(lambda d: d["context"].update(repo=""), "context.repo", "at least 1 character", id="empty-repo"),
        pytest.param(lambda d: d["context"].update(branch="main"), "context.branch", "not a field", id="unknown-ctx"),
    ],
)
def test_invalid_ticket_names_field_and_reason(
    change: Callable[[dict[str, Any]], object], field: str, reason: str
) -> None:
    """A ticket that does not validate is refused with a one-line message naming the field and the reason."""
    with pytest.raises(TicketInvalid) as info:
        parse_ticket(ticket_json(change))

    message = str(info.value)
    assert f"{field}: " in message, message
    assert reason in message, message
    assert "\n" not in message
    assert info.value.permanent


def test_several_problems_report_the_first_and_count_the_rest() -> None:
    """With several problems the message names one field and says how many more there are."""
    with pytest.raises(TicketInvalid, match=r"^invalid ticket: type: .*\(and 1 more problem\(s\)\)$"):
        parse_ticket(ticket_json(lambda d: d.update(type="epic", priority="urgent")))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param('{"id": "ENG-1", ', "not valid JSON", id="truncated"),
        pytest.param("id: ENG-1\ntype: bug\n", "not valid JSON", id="yaml"),
        pytest.param("", "not valid JSON", id="empty"),
        pytest.param(json.dumps([SEED_EXAMPLE]), "must be a JSON object", id="array"),
        pytest.param('"ENG-1042"', "must be a JSON object", id="string"),
    ],
)
def test_non_object_input_is_refused_with_a_reason(text: str, reason: str) -> None:
    """Text that is not JSON, or JSON that is not an object, is refused as TicketInvalid (not a crash)."""
    with pytest.raises(TicketInvalid, match=reason):
        parse_ticket(text)


def test_invalid_json_message_says_where() -> None:
    """The JSON error gives the line and column, so a person can find the mistake."""
    with pytest.raises(TicketInvalid, match=r"line 2 column \d+"):
        parse_ticket('{"id": "ENG-1",\n  "type": bug}')


# --------------------------------------------------------------------------
# JSON Schema


def test_schema_requires_the_seed_fields_and_forbids_others() -> None:
    """The exported JSON Schema lists the seed's required fields and refuses extra ones."""
    schema = ticket_schema()

    assert set(schema["required"]) == {"id", "type", "priority", "context", "acceptance_criteria"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["acceptance_criteria"]["minItems"] == 1
    assert schema["properties"]["id"]["pattern"]
    context = schema["$defs"]["TicketContext"]
    assert context["required"] == ["repo"]
    assert context["additionalProperties"] is False
    assert set(context["properties"]) == {"repo", "filepaths", "error_logs"}


def test_schema_enums_match_the_seed() -> None:
    """type and priority are enums with exactly the seed's values."""
    schema = ticket_schema()

    def enum_of(prop: str) -> list[str]:
        ref = schema["properties"][prop]["$ref"].rsplit("/", 1)[-1]
        return list(schema["$defs"][ref]["enum"])

    assert enum_of("type") == ["bug", "feature", "chore"]
    assert enum_of("priority") == ["low", "medium", "high"]


def test_schema_is_plain_json() -> None:
    """The schema serialises to JSON and back unchanged (what `factory schema` prints)."""
    schema = ticket_schema()
    assert json.loads(json.dumps(schema)) == schema


# --------------------------------------------------------------------------
# Branch names


def git_accepts_branch(name: str) -> bool:
    proc = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True, check=False)
    return proc.returncode == 0


def test_branch_name_is_type_id_slug() -> None:
    """The branch is `<type>/<id>-<slug>`, in lower case."""
    ticket = make_ticket(type="feature", id="ENG-1042", title="Header: show the User's Avatar!")
    assert branch_name(ticket) == "feature/eng-1042-header-show-the-user-s-avatar"


def test_branch_name_without_title_uses_first_criterion() -> None:
    """A ticket without a title is named after its first acceptance criterion."""
    assert branch_name(make_ticket()) == "bug/eng-1042-unit-tests-pass"


def test_a_reopened_tickets_later_run_has_a_branch_of_its_own() -> None:
    """Attempt N (the ticket reopened N times) is `<type>/<id>-r<N>-<slug>`; attempt 0 is the plain name."""
    assert branch_name(make_ticket(), attempt=0) == "bug/eng-1042-unit-tests-pass"
    assert branch_name(make_ticket(), attempt=2) == "bug/eng-1042-r2-unit-tests-pass"


ODD_TITLES = [
    "Ünïcödé — naïve café ☕ 日本語のタイトル",
    "日本語のタイトル",
    "!!!???...///",
    "..",
    "@{-1}",
    "x" * 200,
    "word " * 40,
    "refs/heads/main.lock",
    "a..b~c^d:e?f*g[h\\i",
    "trailing dot.",
    "-leading-dash",
    "   ",
    "\t\nnewlines\r\nand tabs",
]


@pytest.mark.parametrize("title", ODD_TITLES)
@pytest.mark.parametrize("ticket_id", ["ENG-1042", "a.b_C", "X..Y", "9.lock", "A" * 64])
def test_branch_name_is_a_valid_git_branch_for_odd_titles(title: str, ticket_id: str) -> None:
    """Whatever the title and id, the branch name is lower-case and `git check-ref-format --branch` accepts it."""
    ticket = make_ticket(id=ticket_id, type="chore", title=title)
    name = branch_name(ticket)

    assert name == name.lower()
    assert name.startswith("chore/")
    assert name.isascii()
    assert len(name) <= len("chore/") + 64 + 1 + 40
    assert git_accepts_branch(name), name


def test_punctuation_only_title_gets_a_placeholder_slug() -> None:
    """A title with no letters or digits still yields a non-empty slug."""
    assert branch_name(make_ticket(id="OPS-7", type="chore", title="?!...")) == "chore/ops-7-change"


def test_long_title_is_cut_at_a_word_boundary() -> None:
    """A long title is shortened to at most 40 characters without a dangling partial word or dash."""
    title = "Refactor the authentication middleware so that sessions expire on logout"
    slug = branch_name(make_ticket(title=title)).removeprefix("bug/eng-1042-")
    assert len(slug) <= 40
    assert title.lower().replace(" ", "-").startswith(slug)
    assert not slug.endswith("-")
    assert slug == "refactor-the-authentication-middleware"


def test_git_check_is_strict_enough_to_fail() -> None:
    """The git check used above does reject bad names (so the test above can fail)."""
    assert not git_accepts_branch("bug/eng..1")
    assert not git_accepts_branch("bug/x.lock")
    assert not git_accepts_branch("bug/a b")


# --------------------------------------------------------------------------
# Budget


def test_spend_plus_adds_every_measure() -> None:
    """Spend.plus adds tokens, cost, steps and model time, and leaves both operands unchanged."""
    a = Spend(tokens_in=100, tokens_out=20, cost_usd=0.1, steps=1, model_seconds=1.25)
    b = Spend(tokens_in=5, tokens_out=7, cost_usd=0.2, steps=2, model_seconds=0.5)

    total = a.plus(b)

    assert total == Spend(tokens_in=105, tokens_out=27, cost_usd=0.3, steps=3, model_seconds=1.75)
    assert total.tokens == 132
    assert a.steps == 1 and b.steps == 2


def test_spend_plus_does_not_accumulate_float_noise() -> None:
    """Adding ten cents ten times gives exactly one dollar (0.1 + 0.2 != 0.3 in floats)."""
    total = Spend()
    for _ in range(10):
        total = total.plus(Spend(cost_usd=0.1))
    assert total.cost_usd == 1.0


@pytest.mark.parametrize(
    ("spend", "expected"),
    [
        pytest.param(Spend(), None, id="nothing-spent"),
        pytest.param(Spend(tokens_in=50, tokens_out=49, cost_usd=0.99, steps=9), None, id="just-below"),
        pytest.param(Spend(steps=10), "steps", id="steps"),
        pytest.param(Spend(tokens_in=60, tokens_out=40), "tokens", id="tokens-in-plus-out"),
        pytest.param(Spend(cost_usd=1.0), "cost", id="cost"),
        pytest.param(Spend(tokens_in=500, cost_usd=5.0, steps=20), "steps", id="steps-reported-first"),
        pytest.param(Spend(tokens_in=500, cost_usd=5.0), "tokens", id="tokens-before-cost"),
    ],
)
def test_exhausted_cap_names_the_cap_reached(spend: Spend, expected: str | None) -> None:
    """exhausted_cap returns the first cap reached (steps, then tokens, then cost), or None."""
    caps = BudgetCaps(tokens=100, cost_usd=1.0, steps=10)
    assert spend.exhausted_cap(caps) == expected


def test_none_caps_are_never_exhausted() -> None:
    """A cap of None means no limit on that measure, however much was spent."""
    huge = Spend(tokens_in=10**9, tokens_out=10**9, cost_usd=10**6, steps=10**6)
    assert huge.exhausted_cap(BudgetCaps(tokens=None, cost_usd=None, steps=None)) is None
    assert huge.exhausted_cap(BudgetCaps(tokens=None, cost_usd=None, steps=10)) == "steps"
    assert huge.exhausted_cap(BudgetCaps(tokens=None, cost_usd=1.0, steps=None)) == "cost"
    assert huge.exhausted_cap(BudgetCaps(tokens=5, cost_usd=None, steps=None)) == "tokens"


def test_describe_shows_used_against_caps() -> None:
    """describe prints each measure as used / cap."""
    spend = Spend(tokens_in=1200, tokens_out=300, cost_usd=0.0123, steps=3)
    caps = BudgetCaps(tokens=200_000, cost_usd=5.0, steps=40)
    assert spend.describe(caps) == "tokens 1,500 / 200,000, cost $0.0123 / $5.0000, steps 3 / 40"


def test_describe_omits_missing_caps() -> None:
    """A measure without a cap shows only what was used."""
    spend = Spend(tokens_in=10, cost_usd=0.5, steps=2)
    caps = BudgetCaps(tokens=None, cost_usd=None, steps=40)
    assert spend.describe(caps) == "tokens 10, cost $0.5000, steps 2 / 40"

"""Settings from factory.toml and FACTORY_* variables, and what a ticket run is resolved to."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from factory.config import Settings, load_settings
from factory.errors import ConfigError, ModelPriceUnknown, PlaybookError, UnknownRepo
from factory.models import BudgetCaps, Ticket, TicketType
from factory.runs import resolve_ticket_run

UNPRICED = "openai/no-such-model-xyz"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No FACTORY_* variable of the developer's shell leaks into these tests; cwd holds no factory.toml."""
    for key in list(os.environ):
        if key.startswith("FACTORY_"):
            monkeypatch.delenv(key)
    empty = tmp_path / "cwd"
    empty.mkdir()
    monkeypatch.chdir(empty)


def write_toml(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "factory.toml"
    path.write_text(text)
    return path


def ticket(repo: str = "app", ticket_id: str = "APP-1", kind: str = "bug") -> Ticket:
    return Ticket.model_validate(
        {
            "id": ticket_id,
            "type": kind,
            "priority": "medium",
            "context": {"repo": repo},
            "acceptance_criteria": ["tests pass"],
        }
    )


# --------------------------------------------------------------------------
# Loading


def test_defaults_without_a_file(tmp_path: Path) -> None:
    """Without a factory.toml the defaults run the embedded factory, with state under ./.factory."""
    settings = load_settings()

    assert settings.home == Path.cwd() / ".factory"
    assert settings.temporal.address == "localhost:7233"
    assert settings.temporal.namespace == "default"
    assert settings.models.coder == "scripted"
    assert settings.models.playbooks_dir == Path.cwd() / "examples" / "playbooks"
    assert settings.protected_branches == ["main", "production"]
    assert settings.repos == {}
    assert settings.caps_for("any", TicketType.BUG) == BudgetCaps(tokens=200_000, cost_usd=5.0, steps=40)


def test_an_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    """A config file that was asked for and does not exist is a ConfigError, not silent defaults."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_factory_config_variable_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FACTORY_CONFIG points at the file to read when no path is given."""
    path = write_toml(tmp_path / "elsewhere", '[temporal]\nnamespace = "from-file"\n')
    monkeypatch.setenv("FACTORY_CONFIG", str(path))
    assert load_settings().temporal.namespace == "from-file"


def test_file_values_are_read(tmp_path: Path) -> None:
    """Keys in factory.toml replace the defaults."""
    path = write_toml(
        tmp_path,
        """
protected_branches = ["main", "release/*"]
[temporal]
address = "temporal.internal:7233"
[budget]
cost_usd = 3.5
[limits]
command_timeout_s = 42
[limits.sandbox]
memory = "512m"
[repos.app]
test_command = "make test"
""",
    )
    settings = load_settings(path)

    assert settings.temporal.address == "temporal.internal:7233"
    assert settings.temporal.namespace == "default"
    assert settings.budget.cost_usd == 3.5
    assert settings.budget.tokens == 200_000
    assert settings.limits.command_timeout_s == 42
    assert settings.limits.sandbox.memory == "512m"
    assert settings.repos["app"].test_command == "make test"
    assert settings.protected_branches == ["main", "release/*"]


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FACTORY_* variables win over factory.toml, and nested keys leave the file's sibling keys alone."""
    path = write_toml(
        tmp_path,
        """
[budget]
tokens = 1000
cost_usd = 3.0
[temporal]
address = "file-host:7233"
namespace = "from-file"
""",
    )
    monkeypatch.setenv("FACTORY_BUDGET__COST_USD", "2")
    monkeypatch.setenv("FACTORY_TEMPORAL__ADDRESS", "env-host:7233")

    settings = load_settings(path)

    assert settings.budget.cost_usd == 2.0
    assert settings.temporal.address == "env-host:7233"
    assert settings.budget.tokens == 1000
    assert settings.temporal.namespace == "from-file"


def test_environment_can_set_a_repo_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deeply nested key (a repo's test command) can be overridden from the environment."""
    path = write_toml(tmp_path, '[repos.app]\ntest_command = "make test"\ndefault_branch = "trunk"\n')
    monkeypatch.setenv("FACTORY_REPOS__APP__TEST_COMMAND", "pytest -x")

    repo = load_settings(path).repos["app"]

    assert repo.test_command == "pytest -x"
    assert repo.default_branch == "trunk"


def test_relative_paths_are_resolved_against_the_files_directory(tmp_path: Path) -> None:
    """home, playbooks_dir, a local clone_url and seed_from are relative to factory.toml, not the cwd."""
    config_dir = tmp_path / "project" / "conf"
    path = write_toml(
        config_dir,
        """
home = "state"
[models]
playbooks_dir = "../playbooks"
[repos.local]
clone_url = "../forge/local.git"
seed_from = "seeds/local"
[repos.remote]
clone_url = "https://github.com/acme/remote.git"
[repos.ssh]
clone_url = "git@github.com:acme/ssh.git"
[repos.absolute]
clone_url = "/srv/git/absolute.git"
""",
    )
    assert Path.cwd() != config_dir

    settings = load_settings(path)

    assert settings.home == config_dir / "state"
    assert settings.models.playbooks_dir == tmp_path / "project" / "playbooks"
    assert settings.repos["local"].clone_url == str(tmp_path / "project" / "forge" / "local.git")
    assert settings.repos["local"].seed_from == str(config_dir / "seeds" / "local")
    assert settings.repos["remote"].clone_url == "https://github.com/acme/remote.git"
    assert settings.repos["ssh"].clone_url == "git@github.com:acme/ssh.git"
    assert settings.repos["absolute"].clone_url == "/srv/git/absolute.git"
    assert settings.workspaces_root == config_dir / "state" / "workspaces"


def test_a_repo_without_clone_url_lives_on_the_local_forge(tmp_path: Path) -> None:
    """A repo with no clone_url is cloned from <home>/forge/<name>.git."""
    settings = load_settings(write_toml(tmp_path, "[repos.app]\n"))
    assert settings.repo_clone_url("app") == str(tmp_path / ".factory" / "forge" / "app.git")


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not TOML is refused with the file name and where the syntax breaks."""
    path = write_toml(tmp_path, "[budget\ncost_usd = 2\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value)
    assert "not valid TOML" in str(info.value)
    assert "line 1" in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param("[budget]\ncost_usd = -1\n", "budget.cost_usd", id="negative-cost"),
        pytest.param("[budget]\nsteps = 0\n", "budget.steps", id="zero-steps"),
        pytest.param('[budget]\ntokens = "lots"\n', "budget.tokens", id="string-tokens"),
        pytest.param("[budget.by_type.epic]\nsteps = 3\n", "budget.by_type.epic", id="unknown-ticket-type"),
        pytest.param("[temporal]\nadress = 'x:1'\n", "temporal.adress", id="misspelt-key"),
        pytest.param("[repos.app]\ntest_cmd = 'make'\n", "repos.app.test_cmd", id="misspelt-repo-key"),
        pytest.param("[limits]\ncommand_timeout_s = 0\n", "limits.command_timeout_s", id="zero-timeout"),
        pytest.param('[prices."m"]\ninput_per_mtok = 1\n', "prices.m.output_per_mtok", id="half-a-price"),
        pytest.param("colour = 'blue'\n", "colour", id="unknown-top-level-key"),
        pytest.param("keep_workspaces_days = 0\n", "keep_workspaces_days", id="keep-nothing"),
    ],
)
def test_invalid_value_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    """An invalid or unknown setting in the file is a ConfigError naming the file and the key."""
    path = write_toml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert key in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.permanent


def test_invalid_environment_value_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FACTORY_* variable with a bad value is a ConfigError naming the key it sets."""
    path = write_toml(tmp_path, "")
    monkeypatch.setenv("FACTORY_BUDGET__STEPS", "many")
    with pytest.raises(ConfigError, match=r"budget\.steps: .*integer"):
        load_settings(path)


# --------------------------------------------------------------------------
# Budget layering


LAYERED = """
[budget]
tokens = 1000
cost_usd = 2.0
steps = 10
[budget.by_type.bug]
steps = 5
tokens = 900
[budget.by_type.chore]
cost_usd = 0.5
[repos.app.budget]
cost_usd = 1.0
steps = 7
[repos.app.budget_by_type.bug]
tokens = 500
[repos.other]
"""


@pytest.mark.parametrize(
    ("repo", "kind", "expected"),
    [
        pytest.param("unconfigured", TicketType.FEATURE, (1000, 2.0, 10), id="global"),
        pytest.param("other", TicketType.FEATURE, (1000, 2.0, 10), id="repo-without-overrides"),
        pytest.param("other", TicketType.BUG, (900, 2.0, 5), id="global-by-type"),
        pytest.param("other", TicketType.CHORE, (1000, 0.5, 10), id="global-by-type-cost"),
        pytest.param("app", TicketType.FEATURE, (1000, 1.0, 7), id="repo-over-global"),
        pytest.param("app", TicketType.CHORE, (1000, 1.0, 7), id="repo-over-global-by-type"),
        pytest.param("app", TicketType.BUG, (500, 1.0, 7), id="repo-by-type-over-all"),
    ],
)
def test_caps_are_layered(tmp_path: Path, repo: str, kind: TicketType, expected: tuple[int, float, int]) -> None:
    """Caps come from the global budget, then by type, then the repo, then the repo by type; each layer only
    replaces what it sets."""
    settings = load_settings(write_toml(tmp_path, LAYERED))
    caps = settings.caps_for(repo, kind)
    assert (caps.tokens, caps.cost_usd, caps.steps) == expected


def test_caps_layering_is_per_settings_not_shared(tmp_path: Path) -> None:
    """Resolving caps does not change the configuration they came from."""
    settings = load_settings(write_toml(tmp_path, LAYERED))
    settings.caps_for("app", TicketType.BUG)
    assert settings.caps_for("other", TicketType.FEATURE) == BudgetCaps(tokens=1000, cost_usd=2.0, steps=10)


# --------------------------------------------------------------------------
# Resolving a ticket run


def settings_with(tmp_path: Path, extra: str = "", *, playbook_for: str | None = None) -> Settings:
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir(exist_ok=True)
    if playbook_for is not None:
        (playbooks / f"{playbook_for}.yaml").write_text(
            "steps:\n  - say: done\n    tool_calls:\n      - submit: {summary: done}\n"
        )
    return load_settings(
        write_toml(
            tmp_path / "conf",
            f"""
protected_branches = ["main", "production", "release/*"]
[models]
coder = "scripted"
playbooks_dir = "{playbooks}"
[repos.app]
test_command = "make test"
[repos.frozen]
protected_branches = ["trunk"]
{extra}
""",
        )
    )


def test_unknown_repo_lists_the_known_ones(tmp_path: Path) -> None:
    """A ticket for a repo with no [repos.NAME] table is refused, naming the known repos and the fix."""
    settings = settings_with(tmp_path)
    with pytest.raises(UnknownRepo) as info:
        resolve_ticket_run(ticket(repo="mystery"), settings)
    message = str(info.value)
    assert "'mystery'" in message
    assert "app, frozen" in message
    assert "[repos.mystery]" in message


def test_unknown_repo_with_none_configured_says_so(tmp_path: Path) -> None:
    """With no repos at all the message says none are configured."""
    with pytest.raises(UnknownRepo, match="none configured"):
        resolve_ticket_run(ticket(), load_settings(write_toml(tmp_path, "")))


def test_scripted_model_without_playbook_is_refused(tmp_path: Path) -> None:
    """The offline scripted model needs a playbook for the ticket; without one the run is refused up front."""
    settings = settings_with(tmp_path, playbook_for="OTHER-1")
    with pytest.raises(PlaybookError) as info:
        resolve_ticket_run(ticket(ticket_id="APP-1"), settings)
    assert "APP-1" in str(info.value)
    assert str(settings.models.playbooks_dir) in str(info.value)


def test_scripted_model_with_playbook_resolves(tmp_path: Path) -> None:
    """With a playbook the scripted model is named after the ticket, free, and points at the playbook."""
    settings = settings_with(tmp_path, playbook_for="APP-1")
    run = resolve_ticket_run(ticket(ticket_id="APP-1"), settings)

    assert run.model.name == "scripted/APP-1"
    assert run.model.scripted
    assert run.model.api_base == str(settings.models.playbooks_dir / "APP-1.yaml")
    assert (run.model.input_price_per_mtok, run.model.output_price_per_mtok) == (0.0, 0.0)
    assert run.repo.test_command == "make test"
    assert run.caps == settings.caps_for("app", TicketType.BUG)


def test_unpriced_model_with_a_cost_cap_is_refused(tmp_path: Path) -> None:
    """A real model litellm has no price for cannot run under a cost cap: the budget could not be enforced."""
    settings = settings_with(tmp_path)
    with pytest.raises(ModelPriceUnknown) as info:
        resolve_ticket_run(ticket(), settings, model=UNPRICED)
    assert f'[prices."{UNPRICED}"]' in str(info.value)


def test_unpriced_model_from_settings_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same refusal applies when the model comes from the configuration rather than --model."""
    monkeypatch.setenv("FACTORY_MODELS__CODER", UNPRICED)
    with pytest.raises(ModelPriceUnknown):
        resolve_ticket_run(ticket(), settings_with(tmp_path))


def test_unpriced_model_is_allowed_with_a_configured_price(tmp_path: Path) -> None:
    """A [prices."name"] table gives the model a price, and the run carries it."""
    settings = settings_with(tmp_path, f'[prices."{UNPRICED}"]\ninput_per_mtok = 3.0\noutput_per_mtok = 15.0\n')
    run = resolve_ticket_run(ticket(), settings, model=UNPRICED)

    assert run.model.name == UNPRICED
    assert not run.model.scripted
    assert (run.model.input_price_per_mtok, run.model.output_price_per_mtok) == (3.0, 15.0)
    assert run.caps.cost_usd == 5.0


def test_unpriced_model_is_allowed_without_a_cost_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the cost cap removed, an unpriced model may run (capped by tokens and steps only)."""
    monkeypatch.setenv("FACTORY_BUDGET", '{"cost_usd": null}')
    settings = settings_with(tmp_path)
    assert settings.budget.cost_usd is None

    run = resolve_ticket_run(ticket(), settings, model=UNPRICED)

    assert run.caps.cost_usd is None
    assert run.caps.tokens == 200_000
    assert run.model.input_price_per_mtok is None


def test_known_model_gets_litellm_price(tmp_path: Path) -> None:
    """A model litellm knows is priced from its map without any configuration."""
    run = resolve_ticket_run(ticket(), settings_with(tmp_path), model="openai/gpt-4o")
    assert run.model.input_price_per_mtok is not None and run.model.input_price_per_mtok > 0
    assert run.model.output_price_per_mtok is not None and run.model.output_price_per_mtok > 0


def test_protected_branches_default_to_the_global_list(tmp_path: Path) -> None:
    """A repo without its own list is protected by the global one."""
    run = resolve_ticket_run(ticket(repo="app"), settings_with(tmp_path, playbook_for="APP-1"))
    assert run.repo.protected_branches == ["main", "production", "release/*"]


def test_protected_branches_can_be_overridden_per_repo(tmp_path: Path) -> None:
    """A repo's own protected_branches replace the global list for that repo only."""
    settings = settings_with(tmp_path, playbook_for="APP-1")
    assert resolve_ticket_run(ticket(repo="frozen"), settings).repo.protected_branches == ["trunk"]
    assert resolve_ticket_run(ticket(repo="app"), settings).repo.protected_branches[0] == "main"


def test_builtin_protected_branches_without_any_configuration(tmp_path: Path) -> None:
    """With neither a global nor a repo list, main and production are protected."""
    settings = load_settings(write_toml(tmp_path, f'[models]\nplaybooks_dir = "{tmp_path}"\n[repos.app]\n'))
    (tmp_path / "APP-1.yaml").write_text("steps:\n  - tool_calls:\n      - submit: {summary: done}\n")
    run = resolve_ticket_run(ticket(), settings)
    assert run.repo.protected_branches == ["main", "production"]


def test_none_removes_a_cap_globally_and_per_repo(tmp_path: Path) -> None:
    """TOML has no null: a cap set to "none" is removed, in [budget] and in a repo's override."""
    path = tmp_path / "factory.toml"
    path.write_text(
        '[budget]\ncost_usd = "none"\n[repos.web]\nclone_url = "https://example.invalid/web.git"\n'
        '[repos.web.budget]\nsteps = "none"\ntokens = 1000\n'
    )
    settings = load_settings(path)
    assert settings.caps_for("other", TicketType.BUG).cost_usd is None
    web = settings.caps_for("web", TicketType.BUG)
    assert (web.cost_usd, web.steps, web.tokens) == (None, None, 1000)


def test_workspaces_are_kept_while_a_ready_ticket_may_still_need_its_transcript(tmp_path: Path) -> None:
    """keep_workspaces_days applies, but never below the time a ready ticket listens for comments plus a day."""
    short = load_settings(write_toml(tmp_path, "keep_workspaces_days = 2\n[governance]\nawait_comments_hours = 24\n"))
    assert short.keep_workspaces_s == 2 * 86400
    listening = load_settings(
        write_toml(tmp_path, "keep_workspaces_days = 1\n[governance]\nawait_comments_hours = 120\n")
    )
    assert listening.keep_workspaces_s == (120 + 24) * 3600

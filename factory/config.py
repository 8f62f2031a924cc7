"""Settings: ``factory.toml`` plus ``FACTORY_*`` environment variables.

Read once at an entry point (``load_settings``) and passed down. Environment
variables win over the file; nested keys use ``__`` (``FACTORY_BUDGET__COST_USD=2``,
``FACTORY_TEMPORAL__ADDRESS=host:7233``). Relative paths in the file are taken
relative to the file's directory.
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from factory.errors import ConfigError
from factory.models import BudgetCaps, DiscoverySource, TicketLimits, TicketType

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "SANDBOX_IMAGE",
    "BudgetConfig",
    "BudgetOverrides",
    "CoverageConfig",
    "ForgeConfig",
    "GovernanceConfig",
    "JanitorConfig",
    "LogMinerConfig",
    "ModelsConfig",
    "NightShiftConfig",
    "NotificationsConfig",
    "PriceConfig",
    "RepoConfig",
    "Settings",
    "TemporalConfig",
    "WatchdogConfig",
    "load_settings",
]

DEFAULT_CONFIG_NAME = "factory.toml"
SANDBOX_IMAGE = "factory-sandbox:latest"


NO_CAP = "none"


def _no_cap(value: Any) -> Any:
    """TOML has no null: ``cost_usd = "none"`` removes a cap."""
    return None if isinstance(value, str) and value.strip().lower() == NO_CAP else value


class BudgetOverrides(BaseModel):
    """Any subset of the caps; what is left out is inherited, ``"none"`` removes the cap."""

    model_config = {"extra": "forbid"}

    tokens: int | Literal["none"] | None = None
    cost_usd: float | Literal["none"] | None = None
    steps: int | Literal["none"] | None = None

    @field_validator("tokens", "cost_usd", "steps", mode="before")
    @classmethod
    def _normalise(cls, value: Any) -> Any:
        if value is not None and _no_cap(value) is None:
            return NO_CAP
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            raise ValueError('must be greater than 0 (or "none" for no cap)')
        return value

    def apply_to(self, caps: BudgetCaps) -> BudgetCaps:
        update = {
            key: (None if value == NO_CAP else value) for key, value in self.model_dump(exclude_none=True).items()
        }
        return caps.model_copy(update=update)


class BudgetConfig(BaseModel):
    model_config = {"extra": "forbid"}

    tokens: int | None = Field(default=200_000, ge=1)
    cost_usd: float | None = Field(default=5.0, gt=0)
    steps: int | None = Field(default=40, ge=1)
    by_type: dict[TicketType, BudgetOverrides] = Field(default_factory=dict)

    @field_validator("tokens", "cost_usd", "steps", mode="before")
    @classmethod
    def _none_removes_cap(cls, value: Any) -> Any:
        return _no_cap(value)


class RepoConfig(BaseModel):
    model_config = {"extra": "forbid"}

    clone_url: str | None = Field(default=None, description="Defaults to the repo of that name on the local forge.")
    default_branch: str = "main"
    install_command: str | None = None
    test_command: str = "python3 -m pytest -q"
    image: str = SANDBOX_IMAGE
    protected_branches: list[str] | None = Field(default=None, description="Defaults to the global list.")
    style_guide: str | None = None
    architecture_docs: list[str] = Field(default_factory=list, description="Paths in the repo the reviewer reads.")
    egress_allow: list[str] | None = Field(
        default=None, description="Hosts the sandbox may reach through the egress proxy; defaults to the global list."
    )
    protected_paths: list[str] | None = Field(default=None, description="Defaults to governance.protected_paths.")
    seed_from: str | None = Field(
        default=None, description="A directory to create the repo from on the local forge when it does not exist yet."
    )
    log_sources: list[str] = Field(
        default_factory=list,
        description="Files or directories of exported errors (Sentry events, JSON lines, logs) the Log Miner reads.",
    )
    budget: BudgetOverrides = Field(default_factory=BudgetOverrides)
    budget_by_type: dict[TicketType, BudgetOverrides] = Field(default_factory=dict)


class ModelsConfig(BaseModel):
    model_config = {"extra": "forbid"}

    coder: str = Field(default="scripted", description="litellm model name, or 'scripted' for the offline model.")
    reviewer: str = "scripted"
    playbooks_dir: Path = Path("examples/playbooks")
    max_output_tokens: int = Field(default=4096, ge=1)
    timeout_s: float = Field(default=300, gt=0)
    api_base: str | None = None
    scripted_call_log: Path | None = Field(
        default=None, description="If set, the scripted model appends a line per call here (tests count them)."
    )


class PriceConfig(BaseModel):
    model_config = {"extra": "forbid"}

    input_per_mtok: float = Field(ge=0, description="USD per million prompt tokens.")
    output_per_mtok: float = Field(ge=0, description="USD per million completion tokens.")


class GovernanceConfig(BaseModel):
    """The review gate: what the Reviewer and the Hallucination Check enforce."""

    model_config = {"extra": "forbid"}

    enabled: bool = Field(default=True, description="Review every pull request before it is ready for merge.")
    max_review_rounds: int = Field(default=3, ge=1, description="Review → fix rounds before needs_human.")
    await_comments_hours: float = Field(
        default=72, ge=0, description="How long a ready ticket keeps listening for human comments on its PR."
    )
    protected_paths: list[str] = Field(
        default_factory=lambda: [".github/**", ".ci/**", ".gitlab-ci.yml", "Jenkinsfile", ".circleci/**"],
        description="fnmatch patterns of paths an agent must not change.",
    )
    max_diff_lines: dict[TicketType, int] = Field(
        default_factory=lambda: {TicketType.BUG: 300, TicketType.CHORE: 600, TicketType.FEATURE: 1000},
        description="Changed lines above which a diff is far larger than the ticket warrants.",
    )
    pypi_url: str = "https://pypi.org"
    npm_url: str = "https://registry.npmjs.org"
    registry_timeout_s: float = Field(default=10, gt=0)
    registry_cache_ttl_s: int = Field(default=3600, ge=0)
    new_package_days: int = Field(default=30, ge=0, description="Packages first published more recently are flagged.")


class DiscoveryConfig(BaseModel):
    """The discovery loop: which sources run by default and how big a run may get."""

    model_config = {"extra": "forbid"}

    sources: list[DiscoverySource] = Field(
        default_factory=lambda: list(DiscoverySource), description="Sources a run uses unless told otherwise."
    )


class CoverageConfig(BaseModel):
    """The Coverage Analyst: which modules deserve a "Write tests for MODULE" ticket."""

    model_config = {"extra": "forbid"}

    min_rise_points: float = Field(
        default=10, gt=0, le=100, description="Percentage points a module's coverage must rise for the ticket to pass."
    )
    max_tickets: int = Field(default=5, ge=0, description="Tickets filed per repo and run, the worst modules first.")
    min_statements: int = Field(default=20, ge=1, description="Smaller modules are not worth a ticket.")
    max_percent: float = Field(default=90, ge=0, le=100, description="Modules covered this well get no ticket.")
    exclude: list[str] = Field(
        default_factory=lambda: [
            "tests/*",
            "*/tests/*",
            "test/*",
            "*/test/*",
            "test_*.py",
            "*/test_*.py",
            "*_test.py",
            "conftest.py",
            "*/conftest.py",
            "setup.py",
            "*/migrations/*",
            "*/__tests__/*",
            "*.test.*",
            "*.spec.*",
            "node_modules/*",
        ],
        description="fnmatch patterns of repository paths that are never ticketed (``*`` spans folders).",
    )


class WatchdogConfig(BaseModel):
    """The Dependency Watchdog: which dependency problems become tickets."""

    model_config = {"extra": "forbid"}

    max_tickets: int = Field(default=10, ge=0, description="Tickets filed per repo and run, the most urgent first.")
    majors_behind: int = Field(
        default=1, ge=0, description="A problem from this many major versions behind the latest (0: never)."
    )
    minors_behind: int = Field(
        default=0, ge=0, description="A problem from this many minor versions behind within the same major (0: never)."
    )
    include_dev: bool = Field(default=True, description="Audit development dependencies too (tests, lint, docs).")
    include_transitive: bool = Field(
        default=True, description="Check versions pinned only by a lock file (transitive ones) for advisories."
    )


class LogMinerConfig(BaseModel):
    """The Log Miner: which recurring errors become bug tickets."""

    model_config = {"extra": "forbid"}

    min_occurrences: int = Field(default=3, ge=1, description="A group needs this many errors in the window.")
    window_hours: float = Field(default=168, gt=0, description="Only errors this recent count (untimed ones always).")
    min_rate_per_hour: float | None = Field(
        default=None, gt=0, description="If set, a group also needs this many errors per hour of the window."
    )
    high_occurrences: int = Field(default=50, ge=1, description="This many, seen in the last 24 h: high priority.")
    max_tickets_per_run: int = Field(default=10, ge=0, description="Tickets filed per repo and run, most urgent first.")
    in_app_prefixes: list[str] = Field(
        default_factory=list,
        description="Path prefixes of the repo's own code in traces (stripped to make repo paths); "
        "empty: the source's in_app flag, else any frame outside site-packages.",
    )
    excluded_modules: list[str] = Field(
        default_factory=list, description="Modules (and their submodules) never counted as the repo's own code."
    )


class NotificationsConfig(BaseModel):
    """Incoming webhooks told when a pull request is ready for merge."""

    model_config = {"extra": "forbid"}

    slack_webhook_url: str | None = None
    discord_webhook_url: str | None = None
    timeout_s: float = Field(default=10, gt=0)


class NightShiftConfig(BaseModel):
    """The night shift: when it starts, how much it runs at once, what a night may cost, and the other schedules."""

    model_config = {"extra": "forbid"}

    time_zone: str = Field(default="UTC", description="IANA zone of every schedule time, e.g. Europe/Berlin.")
    start: str = Field(default="19:00", description="When the night shift starts (HH:MM).")
    report_at: str = Field(default="08:00", description="When the interim Nightly Report is due if still running.")
    max_concurrent: int = Field(default=5, ge=1, description="Tickets running at once (a sliding window).")
    cost_cap_usd: float | None = Field(
        default=50.0, gt=0, description='What one night may cost across its batch ("none": no cap).'
    )
    approve_limit: int = Field(default=20, ge=1, description="Default of `factory approve --all-ready --limit`.")
    discovery_at: str = Field(default="17:00", description="Daily discovery run, before the 18:00 approval.")
    janitor_at: str = Field(default="02:00", description="Weekly janitor run, on janitor_day.")
    janitor_day: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "sun"

    @field_validator("cost_cap_usd", mode="before")
    @classmethod
    def _none_removes_cap(cls, value: Any) -> Any:
        return _no_cap(value)

    @field_validator("start", "report_at", "discovery_at", "janitor_at")
    @classmethod
    def _clock(cls, value: str) -> str:
        parts = value.strip().split(":")
        if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
            raise ValueError("must be a time of day HH:MM")
        hour, minute, second = (int(p) for p in [*parts, "0"][:3])
        if hour > 23 or minute > 59 or second > 59:
            raise ValueError("must be a time of day HH:MM")
        return value.strip()

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)") from None
        return value


class ForgeConfig(BaseModel):
    """Where pull requests are opened: the local forge (default) or GitHub's REST API."""

    model_config = {"extra": "forbid"}

    kind: Literal["local", "github"] = "local"
    api_url: str = "https://api.github.com"
    owner: str | None = Field(default=None, description="GitHub organisation or user owning the repositories.")
    token: SecretStr | None = Field(default=None, description="Set it with FACTORY_FORGE__TOKEN, never in the file.")


class JanitorConfig(BaseModel):
    """The weekly dependency update: one branch and pull request per repo, one package at a time."""

    model_config = {"extra": "forbid"}

    branch: str = Field(default="chore/update-deps", description="The branch (and pull request) of the updates.")
    max_packages: int = Field(default=20, ge=1, description="Updates tried per repo and run.")
    pip_index_url: str = Field(default="https://pypi.org/simple", description="The index pip installs from.")
    npm_registry: str = Field(default="https://registry.npmjs.org/", description="The registry npm installs from.")


class TemporalConfig(BaseModel):
    model_config = {"extra": "forbid"}

    address: str = "localhost:7233"
    namespace: str = "default"
    ui_url: str = "http://localhost:8233"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACTORY_", env_nested_delimiter="__", extra="forbid")

    # Set by load_settings before construction; pydantic-settings reads sources per class.
    _toml_data: ClassVar[dict[str, Any]] = {}

    home: Path = Field(default=Path(".factory"), description="State: server database, forge, workspaces, logs.")
    host_name: str = Field(default_factory=socket.gethostname)
    temporal: TemporalConfig = Field(default_factory=TemporalConfig)
    repos: dict[str, RepoConfig] = Field(default_factory=dict)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    limits: TicketLimits = Field(default_factory=TicketLimits)
    governance: GovernanceConfig = Field(default_factory=GovernanceConfig)
    forge: ForgeConfig = Field(default_factory=ForgeConfig)
    night_shift: NightShiftConfig = Field(default_factory=NightShiftConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    coverage: CoverageConfig = Field(default_factory=CoverageConfig)
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    log_miner: LogMinerConfig = Field(default_factory=LogMinerConfig)
    janitor: JanitorConfig = Field(default_factory=JanitorConfig)
    protected_branches: list[str] = Field(default_factory=lambda: ["main", "production"])
    egress_allow: list[str] = Field(
        default_factory=lambda: ["pypi.org", "files.pythonhosted.org", "registry.npmjs.org"],
        description="Hosts sandboxes may reach through the egress proxy (plus the repo's forge host).",
    )
    sandbox_user: str = "agent"
    keep_workspaces_days: float = Field(
        default=30,
        gt=0,
        description="Days a finished ticket's workspace (transcript, logs, timings) is kept before the reaper "
        "removes it; never less than governance.await_comments_hours plus a day.",
    )

    @property
    def keep_workspaces_s(self) -> float:
        """How long a finished workspace is kept: a ticket listening for comments still needs its transcript."""
        return max(self.keep_workspaces_days * 86400, (self.governance.await_comments_hours + 24) * 3600)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _DictSource(settings_cls, cls._toml_data))

    @property
    def forge_root(self) -> Path:
        return self.home / "forge"

    @property
    def tickets_root(self) -> Path:
        return self.home / "tickets"

    @property
    def reports_root(self) -> Path:
        return self.home / "reports"

    @property
    def workspaces_root(self) -> Path:
        return self.home / "workspaces"

    def repo_clone_url(self, name: str) -> str:
        repo = self.repos[name]
        return repo.clone_url or str(self.forge_root / f"{name}.git")

    def caps_for(self, repo_name: str, ticket_type: TicketType) -> BudgetCaps:
        """Global caps, then per type, then per repo, then per repo and type."""
        caps = BudgetCaps(tokens=self.budget.tokens, cost_usd=self.budget.cost_usd, steps=self.budget.steps)
        if ticket_type in self.budget.by_type:
            caps = self.budget.by_type[ticket_type].apply_to(caps)
        repo = self.repos.get(repo_name)
        if repo is not None:
            caps = repo.budget.apply_to(caps)
            if ticket_type in repo.budget_by_type:
                caps = repo.budget_by_type[ticket_type].apply_to(caps)
        return caps


class _DictSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    def rel(value: str) -> str:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())

    data = dict(data)
    if "home" in data:
        data["home"] = rel(str(data["home"]))
    else:
        data["home"] = rel(".factory")
    models = dict(data.get("models") or {})
    if "playbooks_dir" in models:
        models["playbooks_dir"] = rel(str(models["playbooks_dir"]))
    else:
        models["playbooks_dir"] = rel("examples/playbooks")
    data["models"] = models
    repos = {}
    for name, repo in (data.get("repos") or {}).items():
        repo = dict(repo) if isinstance(repo, dict) else repo
        if isinstance(repo, dict):
            url = repo.get("clone_url")
            if isinstance(url, str) and "://" not in url and not url.startswith("git@") and "@" not in url:
                repo["clone_url"] = rel(url)
            if isinstance(repo.get("seed_from"), str):
                repo["seed_from"] = rel(repo["seed_from"])
            if isinstance(repo.get("log_sources"), list):
                repo["log_sources"] = [rel(p) if isinstance(p, str) else p for p in repo["log_sources"]]
        repos[name] = repo
    if repos:
        data["repos"] = repos
    return data


def _format_validation_error(exc: ValidationError, source: str) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    return f"{source}: {loc}: {first['msg']}"


def load_settings(config_path: Path | str | None = None) -> Settings:
    """Read factory.toml (FACTORY_CONFIG, the given path, or ./factory.toml) and the environment.

    A missing file is fine when no path was asked for explicitly: the defaults run
    the embedded single-machine factory.
    """
    explicit = config_path or os.environ.get("FACTORY_CONFIG")
    path = Path(explicit) if explicit else Path.cwd() / DEFAULT_CONFIG_NAME
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    elif explicit:
        raise ConfigError(f"config file {path} does not exist; pass --config or set FACTORY_CONFIG")
    base = path.resolve().parent
    Settings._toml_data = _resolve_paths(data, base)
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(path))) from None
    finally:
        Settings._toml_data = {}
    if not settings.home.is_absolute():
        settings = settings.model_copy(update={"home": (base / settings.home).resolve()})
    return settings

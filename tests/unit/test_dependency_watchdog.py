"""The Dependency Watchdog: manifests in, one ticket per problem package out.

Manifests come from ``tests/fixtures/manifests``; the registries are a local HTTP server
serving ``tests/fixtures/registry`` (PyPI JSON, npm packuments) and answering npm's bulk
advisory endpoint from ``tests/fixtures/registry/advisories/bulk.json``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from factory.config import WatchdogConfig
from factory.discovery.deps import (
    AuditResult,
    DeclaredDependency,
    audit_dependencies,
    dependency_fingerprint,
    npm_range_matches,
    pep440_key,
    read_manifests,
)
from factory.governance.registry import RegistryClient
from factory.models import READY_LABEL, Priority, TicketType
from tests.unit.test_hallucination import FIXTURES, RegistryServer, free_port, make_client

MANIFESTS = Path(__file__).resolve().parents[1] / "fixtures" / "manifests"
BULK = "/npm/-/npm/v1/security/advisories/bulk"
CONFIG = WatchdogConfig()


class AuditServer(RegistryServer):
    """The Hallucination Check's registry server, plus npm's bulk advisory endpoint (POST)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, list[str]]] = []
        self.bulk_status = 200
        super().__init__()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        state = self
        base = super()._handler()

        class Handler(base):  # type: ignore[valid-type,misc]
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                state.posts.append(body)
                known = json.loads((FIXTURES / "advisories" / "bulk.json").read_text())
                answer = {name: known[name] for name in body if name in known}
                status = state.bulk_status if self.path == BULK else 404
                payload = json.dumps(answer if status == 200 else {"error": "Not found"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


@pytest.fixture
def registry() -> Iterator[AuditServer]:
    server = AuditServer()
    yield server
    server.stop()


@pytest.fixture
def client(registry: AuditServer, tmp_path: Path) -> Iterator[RegistryClient]:
    with make_client(registry.url, tmp_path / "cache") as made:
        yield made


def dep(ecosystem: str, name: str, version: str | None = None, **extra: Any) -> DeclaredDependency:
    extra.setdefault("manifest", "pyproject.toml" if ecosystem == "pypi" else "package.json")
    return DeclaredDependency(ecosystem=ecosystem, name=name, version=version, **extra)  # type: ignore[arg-type]


def audit(deps: list[DeclaredDependency], client: RegistryClient, config: WatchdogConfig = CONFIG) -> AuditResult:
    return audit_dependencies(deps, client, repo="shop", config=config)


def only_ticket(result: AuditResult) -> Any:
    assert len(result.problems) == 1, [p.ticket.title for p in result.problems]
    return result.problems[0].ticket


# ---------------------------------------------------------------- manifests


def test_read_manifests_of_every_kind() -> None:
    """Each manifest and lock file gives its registry dependencies with pins, sections and dev flags."""
    found = {(d.manifest, d.name): d for d in read_manifests(MANIFESTS)}
    assert found[("pyproject.toml", "requests")].version == "2.25.1"
    assert found[("pyproject.toml", "Django")].constraint == ">=3.2,<6"
    assert found[("pyproject.toml", "example_inactive")].version is None  # the marker is not a pin
    assert found[("pyproject.toml", "boto3")].dev is False  # an extra for users
    assert found[("pyproject.toml", "pytest")].dev is True  # the "test" extra
    assert found[("pyproject.toml", "ruff")].section == "dependency-groups.lint"
    assert found[("pyproject.toml", "coverage")].section == "tool.uv.dev-dependencies"
    assert found[("requirements.txt", "gunicorn")].version == "21.2.0"
    assert found[("requirements-dev.txt", "pytest")].dev is True
    assert found[("requirements/test.txt", "hypothesis")].dev is True
    assert found[("poetry-app/pyproject.toml", "attrs")].version == "23.2.0"  # a bare Poetry version is exact
    assert found[("poetry-app/pyproject.toml", "black")].dev is True
    assert found[("web/package.json", "express")].constraint == "^4.18.2"
    assert found[("web/package.json", "left-pad")].version == "1.3.0"  # the "lp" alias installs left-pad
    assert found[("web/package.json", "@types/node")].dev is True
    lock = found[("uv.lock", "urllib3")]
    assert (lock.version, lock.direct) == ("1.26.5", False)
    assert found[("legacy/package-lock.json", "wordwrap")].dev is True  # nested lockfileVersion 1
    names = {d.name for d in found.values()}
    # git, path and URL sources are not registry packages; peerDependencies and installed trees are not read
    assert not names & {"mylib", "internal", "my-fork", "react", "shop", "should-not-be-read", "hatchling"}
    web_lock = sorted(d.version or "" for d in read_manifests(MANIFESTS) if d.name == "body-parser")
    assert web_lock == ["1.19.0", "1.20.1"]  # a nested copy is its own version


def test_read_manifests_skips_links_and_broken_files(tmp_path: Path) -> None:
    """A symlinked manifest is not followed and a malformed one is skipped; the rest is read."""
    (tmp_path / "requirements.txt").symlink_to(MANIFESTS / "requirements.txt")
    (tmp_path / "pyproject.toml").write_text("[project\ndependencies = [")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "package.json").write_text('{"dependencies": {"express": "4.21.1"}}')
    assert [(d.manifest, d.name) for d in read_manifests(tmp_path)] == [("app/package.json", "express")]


# ---------------------------------------------------------------- versions


def test_version_ordering() -> None:
    """PEP 440 keys order as pip does; npm ranges match as npm does (caret, tilde, x-ranges, hyphens, ||)."""
    ordered = ["1.0.dev0", "1.0a1", "1.0rc1", "1.0", "1.0.post1", "1.0.1", "2.0"]
    assert sorted(reversed(ordered), key=lambda v: pep440_key(v) or ()) == ordered
    assert pep440_key("2.32.3") == pep440_key("2.32.3.0") and pep440_key("not a version") is None
    assert npm_range_matches("4.17.20", "<4.17.21") and not npm_range_matches("4.17.21", "<4.17.21")
    assert npm_range_matches("0.2.9", "^0.2.3") and not npm_range_matches("0.3.0", "^0.2.3")
    assert npm_range_matches("1.2.9", "~1.2.3") and not npm_range_matches("1.3.0", "~1.2.3")
    assert npm_range_matches("3.0.0", ">=2.0.0 <2.3.1 || >=3.0.0 <3.0.1")
    assert npm_range_matches("1.9.0", "1.x") and npm_range_matches("1.2.3", "1.0.0 - 1.2.3")
    assert not npm_range_matches("1.0.0", "what is this")


# ---------------------------------------------------------------- PyPI


def test_vulnerable_pin_names_advisories_and_a_safe_version(client: RegistryClient) -> None:
    """requests==2.25.1 has GHSA-9wx4-h78v-vm56, fixed in 2.32.0, but 2.32.0 and 2.32.1 are yanked: safe is 2.32.3."""
    ticket = only_ticket(audit([dep("pypi", "requests", "2.25.1")], client))
    fingerprint = dependency_fingerprint("shop", "pypi", "requests")
    assert ticket.id == f"DEP-{fingerprint[:10]}" and ticket.fingerprint == fingerprint
    assert ticket.type == TicketType.CHORE and ticket.priority == Priority.HIGH
    assert ticket.labels == [READY_LABEL] and ticket.source == "dependency-watchdog"
    assert ticket.title == "Update PyPI dependency requests: 1 known vulnerability"
    assert ticket.acceptance_criteria[0] == (
        "requests resolves to 2.32.3 or later wherever it is declared or locked (fixes GHSA-9wx4-h78v-vm56)"
    )
    assert ticket.acceptance_criteria[-1] == "The repository's tests pass"
    assert "GHSA-9wx4-h78v-vm56 (CVE-2024-35195)" in (ticket.description or "")
    assert ticket.context.filepaths == ["pyproject.toml"]


def test_yanked_pin_is_a_problem(client: RegistryClient) -> None:
    """A pin on a yanked release gets a ticket quoting the reason and naming a release to move to."""
    ticket = only_ticket(audit([dep("pypi", "requests", "2.32.0")], client))
    assert "pinned 2.32.0 is yanked" in ticket.title
    assert "Yanked due to conflicts with CVE-2024-35195 mitigation" in (ticket.description or "")
    assert ticket.acceptance_criteria[0] == "requests is no longer pinned to the yanked 2.32.0 (use 2.32.3 or later)"


def test_inactive_project_is_deprecated(client: RegistryClient) -> None:
    """``Development Status :: 7 - Inactive`` is PyPI's deprecation: a "Replace" ticket."""
    ticket = only_ticket(audit([dep("pypi", "example-inactive")], client))
    assert ticket.title == "Replace PyPI dependency example-inactive: deprecated"
    assert ticket.priority == Priority.MEDIUM


def test_unpinned_dependency_with_a_vulnerable_latest(client: RegistryClient) -> None:
    """Unpinned, the latest release is what installs: its advisories count, and no later release fixes them here."""
    ticket = only_ticket(audit([dep("pypi", "PyYAML")], client))
    assert "PYSEC-2021-142" in ticket.acceptance_criteria[0]
    assert "no fixed release exists yet" in ticket.acceptance_criteria[0]


def test_versions_behind_the_latest(client: RegistryClient) -> None:
    """Two majors behind is a problem by default; minor versions count only when minors_behind is set."""
    ticket = only_ticket(audit([dep("pypi", "django", "3.2.0")], client))
    assert ticket.title == "Update PyPI dependency django: 2 major version(s) behind (3.2.0 → 5.0.6)"
    assert ticket.priority == Priority.LOW
    # Below 1.0 a minor step counts as a major one (semver); a patch step does not count.
    zero = only_ticket(audit([dep("pypi", "attr", "0.2.0")], client))
    assert zero.title == "Update PyPI dependency attr: 1 major version(s) behind (0.2.0 → 0.3.2)"
    assert audit([dep("pypi", "attr", "0.3.1")], client).problems == []
    fine = audit([dep("pypi", "django", "5.0.6")], client)
    assert fine.problems == [] and fine.checked == 1


def test_minor_versions_behind(client: RegistryClient) -> None:
    """With minors_behind = 1, a release line behind within the same major is a problem; with 0 it is not."""
    pinned = [dep("pypi", "django", "4.2.13")]
    assert only_ticket(audit(pinned, client, WatchdogConfig(minors_behind=1))).title.endswith(
        "1 major version(s) behind (4.2.13 → 5.0.6)"
    )
    assert audit(pinned, client, WatchdogConfig(majors_behind=0)).problems == []


def test_healthy_dependencies_give_no_ticket(client: RegistryClient) -> None:
    """A current, advisory-free pin is checked and gives nothing."""
    result = audit([dep("pypi", "requests", "2.32.3"), dep("npm", "express", "4.21.1")], client)
    assert result.problems == [] and result.checked == 2 and result.warnings == []


def test_unknown_package_is_a_warning_not_a_ticket(client: RegistryClient) -> None:
    """A name the registry does not know (a private package) is reported as not audited."""
    result = audit([dep("pypi", "internal-tools", "1.0")], client)
    assert result.problems == [] and result.checked == 0
    assert result.warnings == ["pypi internal-tools: not on PyPI (a private package?); not audited"]


# ---------------------------------------------------------------- npm


def test_npm_advisories_from_the_bulk_endpoint(client: RegistryClient, registry: AuditServer) -> None:
    """express@4.18.2: both 4.x advisories apply (not the 5.x pre-release one); 4.19.2 still has one, so 4.21.1."""
    result = audit([dep("npm", "express", "4.18.2", manifest="web/package-lock.json", direct=False)], client)
    assert registry.posts == [{"express": ["4.18.2"]}]
    ticket = only_ticket(result)
    assert ticket.title == "Update npm dependency express: 2 known vulnerabilities"
    assert ticket.acceptance_criteria[0] == (
        "express resolves to 4.21.1 or later wherever it is declared or locked "
        "(fixes GHSA-rv95-896h-c2vc, GHSA-qw6h-vgh9-j6wx)"
    )
    assert "GHSA-9wv6-86v2-598j" not in (ticket.description or "")
    assert "(transitive)" in (ticket.description or "")


def test_npm_deprecated_package_and_version(client: RegistryClient) -> None:
    """A deprecated latest deprecates the package ("Replace"); a deprecated old version asks for an update."""
    result = audit([dep("npm", "request", "2.88.2"), dep("npm", "@types/node", "18.0.0")], client)
    titles = sorted(p.ticket.title or "" for p in result.problems)
    assert titles == [
        "Replace npm dependency request: deprecated",
        "Update npm dependency @types/node: 18.0.0 deprecated, 2 major version(s) behind (18.0.0 → 20.12.7)",
    ]
    request = next(p.ticket for p in result.problems if "request" in (p.ticket.title or ""))
    assert "github.com/request/request/issues/3142" in request.acceptance_criteria[0]


def test_registry_without_an_advisory_endpoint(client: RegistryClient, registry: AuditServer) -> None:
    """A mirror answering 404 on the bulk endpoint: a warning, and deprecation and age are still checked."""
    registry.bulk_status = 404
    result = audit([dep("npm", "request", "2.88.2")], client)
    assert [p.ticket.title for p in result.problems] == ["Replace npm dependency request: deprecated"]
    assert any("no bulk advisory endpoint" in w for w in result.warnings)


# ---------------------------------------------------------------- failures and de-duplication


def test_unreachable_registry_gives_warnings_and_no_tickets(tmp_path: Path) -> None:
    """Nothing listens: every package gets a clear warning, and not one ticket is guessed."""
    url = f"http://127.0.0.1:{free_port()}"
    with make_client(url, tmp_path / "cache") as client:
        result = audit([dep("pypi", "requests", "2.25.1"), dep("npm", "request", "2.88.2")], client)
    assert result.problems == [] and result.checked == 0
    assert any(
        w.startswith("pypi requests: registry unreachable (127.0.0.1 cannot be reached") for w in result.warnings
    )
    assert any(w.startswith("npm request: not audited, the advisory look-up failed") for w in result.warnings)


def test_one_failing_package_does_not_stop_the_others(client: RegistryClient, registry: AuditServer) -> None:
    """A 503 for one package skips that package only, with a warning naming it."""
    registry.status_for["/pypi/requests/json"] = 503
    result = audit([dep("pypi", "requests", "2.25.1"), dep("pypi", "django", "3.2.0")], client)
    assert [(p.ticket.title or "").split(":")[0] for p in result.problems] == ["Update PyPI dependency django"]
    assert result.warnings == [
        f"pypi requests: registry unreachable (127.0.0.1 answered HTTP 503 for {registry.url}/pypi/requests/json); "
        "no ticket"
    ]


def test_stale_cache_is_not_used_when_the_registry_is_gone(registry: AuditServer, tmp_path: Path) -> None:
    """Answers past their TTL are not trusted: with the registry down, no ticket comes from the old cache."""
    clock = [1_700_000_000.0]
    deps = [dep("pypi", "requests", "2.25.1")]
    with make_client(registry.url, tmp_path / "cache", ttl_s=60, clock=clock) as client:
        assert len(audit(deps, client).problems) == 1
    registry.stop()
    clock[0] += 3600
    with make_client(registry.url, tmp_path / "cache", ttl_s=60, clock=clock) as client:
        result = audit(deps, client)
    assert result.problems == [] and "registry unreachable" in result.warnings[0]


def test_one_ticket_per_package_with_a_stable_fingerprint(client: RegistryClient) -> None:
    """The same package from several manifests is one ticket; runs give the same id whatever the advisories say."""
    deps = read_manifests(MANIFESTS)
    first = audit(deps, client)
    second = audit(deps, client)
    ids = [p.ticket.id for p in first.problems]
    assert ids == [p.ticket.id for p in second.problems] and len(ids) == len(set(ids))
    requests = next(p.ticket for p in first.problems if " requests:" in (p.ticket.title or ""))
    assert requests.context.filepaths == ["pyproject.toml", "requirements.txt", "uv.lock"]
    assert "2.25.1, 2.31.0" in (requests.description or "")  # both versions in use are affected
    assert requests.id == f"DEP-{dependency_fingerprint('shop', 'pypi', 'REQUESTS')[:10]}"  # PEP 503 name


def test_dev_and_transitive_dependencies_follow_the_config(client: RegistryClient) -> None:
    """include_dev = false leaves development dependencies out; include_transitive = false leaves lock-only ones."""
    deps = [dep("npm", "@types/node", "18.0.0", dev=True), dep("npm", "express", "4.18.2", direct=False)]
    assert len(audit(deps, client).problems) == 2
    assert audit(deps, client, WatchdogConfig(include_dev=False, include_transitive=False)).checked == 0


def test_max_tickets_keeps_the_most_urgent(client: RegistryClient) -> None:
    """Vulnerable packages come before deprecated ones, which come before stale ones; the rest is a warning."""
    deps = [dep("pypi", "django", "3.2.0"), dep("npm", "request", "2.88.2"), dep("pypi", "requests", "2.25.1")]
    result = audit(deps, client, WatchdogConfig(max_tickets=2))
    assert [p.ticket.priority for p in result.problems] == [Priority.HIGH, Priority.MEDIUM]
    assert result.warnings == ["1 more dependency problem(s) not filed this run (watchdog.max_tickets)"]


def test_tree_audit_end_to_end(client: RegistryClient, tmp_path: Path) -> None:
    """read_manifests then audit_dependencies on a copied tree: each problem package once, none from node_modules."""
    tree = tmp_path / "tree"
    shutil.copytree(MANIFESTS, tree)
    result = audit(read_manifests(tree), client)
    titles = {(p.ticket.title or "").split(":")[0] for p in result.problems}
    assert {
        "Update PyPI dependency requests",
        "Replace PyPI dependency example_inactive",
        "Update npm dependency express",
        "Replace npm dependency request",
        "Replace npm dependency left-pad",
    } <= titles
    assert all(p.ticket.labels == [READY_LABEL] for p in result.problems)

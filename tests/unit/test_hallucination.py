"""The Hallucination Check against a local HTTP server that speaks the PyPI JSON API and npm metadata.

No test here touches the real registries: documents come from ``tests/fixtures/registry``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

import pytest

from factory.config import GovernanceConfig
from factory.errors import PackageNameInvalid, RegistryUnreachable
from factory.governance.check_deps import parse_spec, run_check_deps
from factory.governance.dependencies import DependencyRef
from factory.governance.hallucination import (
    DependencyVerdict,
    PopularNames,
    check_dependency,
    findings_from_verdicts,
)
from factory.governance.registry import RegistryClient
from factory.models import Severity, Verdict, verdict_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "registry"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SETTINGS = GovernanceConfig(new_package_days=30)

ODD_NAMES = [
    "",
    "   ",
    "reqüests",
    "пакет",
    "😀",
    "a" * 300,
    "../x",
    "..\\..\\windows",
    "/etc/passwd",
    "./local-dir",
    "~/pkgs/thing",
    "https://evil.example/pkg-1.0.tar.gz",
    "http://pypi.example/simple/requests",
    "git+https://github.com/psf/requests.git",
    "file:///tmp/x.whl",
    "name with spaces",
    "foo\nbar",
    "foo\x00bar",
    "-rrequirements.txt",
    "--index-url=https://evil.example",
    "[extra]",
    "==1.0",
    "@",
    ".hidden",
]


class RegistryServer:
    """PyPI at ``url`` and npm at ``url + "/npm"``, serving the fixture documents and counting requests."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.status_for: dict[str, int] = {}  # path -> status to answer instead (a 503, say)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        # A short poll interval: shutdown() waits for the loop to notice, and runs after every test.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                state.requests.append(self.path)
                status = state.status_for.get(self.path)
                document = state.document(self.path)
                if status is None:
                    status = 200 if document is not None else 404
                body = document if status == 200 and document is not None else json.dumps({"message": "Not Found"})
                payload = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def document(self, path: str) -> str | None:
        parts = path.strip("/").split("/")
        if parts[0] == "pypi" and len(parts) == 3 and parts[2] == "json":
            file = FIXTURES / "pypi" / parts[1] / "project.json"
        elif parts[0] == "pypi" and len(parts) == 4 and parts[3] == "json":
            file = FIXTURES / "pypi" / parts[1] / f"{parts[2]}.json"
        elif parts[0] == "npm" and len(parts) == 2:
            file = FIXTURES / "npm" / f"{unquote(parts[1])}.json"
        else:
            return None
        if ".." in file.relative_to(FIXTURES).parts or not file.is_file():
            return None
        return file.read_text()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    server = RegistryServer()
    yield server
    server.stop()


def make_client(
    url: str, cache_dir: Path | None, *, ttl_s: int = 3600, clock: list[float] | None = None
) -> RegistryClient:
    ticking = clock if clock is not None else [1_700_000_000.0]
    return RegistryClient(url, f"{url}/npm", timeout_s=5, cache_dir=cache_dir, ttl_s=ttl_s, clock=lambda: ticking[0])


@pytest.fixture
def client(registry: RegistryServer, tmp_path: Path) -> Iterator[RegistryClient]:
    with make_client(registry.url, tmp_path / "cache") as made:
        yield made


def check(
    client: RegistryClient,
    name: str,
    version: str | None = None,
    *,
    ecosystem: Literal["pypi", "npm"] = "pypi",
    kind: Literal["manifest", "import", "command"] = "command",
) -> DependencyVerdict:
    ref = DependencyRef(ecosystem=ecosystem, name=name, version=version, source="command line", kind=kind)
    return check_dependency(ref, client, popular=PopularNames.bundled(), now=NOW, new_package_days=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- PyPI


def test_existing_package_at_its_latest_version_is_ok(client: RegistryClient) -> None:
    """A real, mature package pinned to its latest release passes with no reason and no warning."""
    verdict = check(client, "requests", "2.32.3")
    assert verdict.status == "ok"
    assert verdict.reasons == [] and verdict.warnings == []


def test_unknown_package_is_blocked(client: RegistryClient) -> None:
    """A name PyPI does not know (404) is blocked: the classic hallucinated dependency."""
    verdict = check(client, "fastapi-utils-pro-max")
    assert verdict.status == "blocked"
    assert verdict.reasons == ["no such project on PyPI"]


def test_missing_version_is_blocked_and_names_the_latest(client: RegistryClient) -> None:
    """A pinned version the project never released is blocked, and the message says what the latest is."""
    verdict = check(client, "requests", "9.9.9")
    assert verdict.status == "blocked"
    assert verdict.reasons == ["version 9.9.9 does not exist on PyPI (latest is 2.32.3)"]


def test_version_matching_follows_pep_440_zero_padding(client: RegistryClient) -> None:
    """``==2.32.3.0`` names the release ``2.32.3``, as pip would resolve it."""
    assert check(client, "requests", "2.32.3.0").status == "ok"


def test_yanked_version_is_blocked_with_the_reason(client: RegistryClient) -> None:
    """A yanked release (all its files yanked, PEP 592) is blocked and the maintainers' reason is quoted."""
    verdict = check(client, "requests", "2.32.0")
    assert verdict.status == "blocked"
    assert verdict.reasons == ["version 2.32.0 is yanked: Yanked due to conflicts with CVE-2024-35195 mitigation"]


def test_vulnerable_version_is_blocked_with_the_advisory_id(client: RegistryClient, registry: RegistryServer) -> None:
    """A pinned release with advisories in its own PyPI document is blocked, naming each advisory and its fix."""
    verdict = check(client, "requests", "2.31.0")
    assert verdict.status == "blocked"
    assert verdict.reasons == [
        "version 2.31.0 has known vulnerabilities: GHSA-9wx4-h78v-vm56 (CVE-2024-35195; fixed in 2.32.0)"
    ]
    assert registry.requests == ["/pypi/requests/json", "/pypi/requests/2.31.0/json"]


def test_unpinned_package_whose_latest_release_is_vulnerable_gets_a_warning(client: RegistryClient) -> None:
    """Without a pin, advisories on the latest release are reported as a warning, not a block."""
    verdict = check(client, "PyYAML")
    assert verdict.status == "ok"
    assert verdict.warnings == [
        "latest version 5.3.1 has known vulnerabilities: PYSEC-2021-142 (CVE-2020-14343; fixed in 5.4)"
    ]


@pytest.mark.parametrize(("name", "popular"), [("reqeusts", "requests"), ("djnago", "django"), ("numpyy", "numpy")])
def test_unknown_near_miss_of_a_popular_name_is_blocked_as_a_typo(
    client: RegistryClient, name: str, popular: str
) -> None:
    """A non-existent name one edit (a swap counts as one) from a popular package is blocked with a "did you mean"."""
    verdict = check(client, name)
    assert verdict.status == "blocked"
    assert verdict.reasons == [
        "no such project on PyPI",
        f"did you mean {popular!r}? the name is 1 edit from that popular package",
    ]


def test_existing_young_squat_of_a_popular_name_is_blocked(client: RegistryClient) -> None:
    """``requestss`` exists, but it is one edit from ``requests``, five days old and has one release: blocked."""
    verdict = check(client, "requestss")
    assert verdict.status == "blocked"
    assert verdict.reasons == [
        "possible typo-squat: 1 edit from the popular package 'requests', and this package is new"
    ]
    assert verdict.warnings[0].startswith("first published 5 day(s) ago (2025-05-27)")


def test_popular_package_and_mature_neighbour_are_not_flagged(client: RegistryClient) -> None:
    """A popular name is never a typo; ``attr`` (mature, four releases) is not blocked for being near ``attrs``."""
    assert check(client, "Django").status == "ok"
    attr = check(client, "attr")
    assert attr.status == "ok" and attr.reasons == []


def test_new_package_is_a_warning_that_does_not_block(client: RegistryClient) -> None:
    """A package first published within ``new_package_days`` passes with a warning, reported as info."""
    verdict = check(client, "fastapi-jwt-helper", "0.2.0")
    assert verdict.status == "ok"
    assert verdict.warnings == [
        "first published 10 day(s) ago (2025-05-22); packages younger than 30 days deserve a closer look"
    ]
    findings = findings_from_verdicts([verdict])
    assert [f.severity for f in findings] == [Severity.INFO]
    assert verdict_for(findings) == Verdict.APPROVE


def test_undeclared_import_is_blocked_even_when_the_package_exists(client: RegistryClient) -> None:
    """An import no declared dependency provides blocks, whether or not PyPI has the package."""
    ref = DependencyRef(
        ecosystem="pypi",
        name="requests",
        source="import in app/client.py:3",
        path="app/client.py",
        line=3,
        kind="import",
    )
    verdict = check_dependency(ref, client, popular=PopularNames.bundled(), now=NOW, new_package_days=30)
    assert verdict.status == "blocked"
    assert verdict.reasons == [
        "imported but not declared: no dependency in the manifests provides it (import in app/client.py:3)"
    ]
    [finding] = findings_from_verdicts([verdict])
    assert (finding.path, finding.line, finding.severity) == ("app/client.py", 3, Severity.ERROR)


def test_pypi_names_are_normalised_before_the_request(client: RegistryClient, registry: RegistryServer) -> None:
    """``Django`` and ``DJANGO`` both ask for ``/pypi/django/json`` (PEP 503), and the second is a cache hit."""
    check(client, "Django")
    check(client, "DJANGO")
    assert registry.requests == ["/pypi/django/json"]


# ---------------------------------------------------------------- npm


def test_npm_deprecated_package_is_blocked(client: RegistryClient) -> None:
    """A package whose latest version is deprecated is deprecated as a whole: blocked, with npm's message."""
    verdict = check(client, "request", ecosystem="npm")
    assert verdict.status == "blocked"
    assert verdict.reasons == [
        "deprecated on npm: request has been deprecated, see https://github.com/request/request/issues/3142"
    ]
    assert check(client, "left-pad", "1.2.0", ecosystem="npm").reasons == [
        "deprecated on npm: use String.prototype.padStart()"
    ]


def test_npm_existing_package_and_version_is_ok(client: RegistryClient) -> None:
    """``express@4.18.2`` exists and is not deprecated."""
    verdict = check(client, "express", "4.18.2", ecosystem="npm")
    assert (verdict.status, verdict.reasons, verdict.warnings) == ("ok", [], [])


def test_npm_scoped_name_is_url_encoded(client: RegistryClient, registry: RegistryServer) -> None:
    """``@types/node`` is requested as ``/@types%2Fnode``; a missing or deprecated version of it blocks."""
    assert check(client, "@types/node", "20.11.0", ecosystem="npm").status == "ok"
    assert registry.requests == ["/npm/@types%2Fnode"]
    assert check(client, "@types/node", "99.0.0", ecosystem="npm").reasons == [
        "version 99.0.0 does not exist on npm (latest is 20.12.7)"
    ]
    assert check(client, "@types/node", "18.0.0", ecosystem="npm").reasons == [
        "version 18.0.0 is deprecated: This version is no longer supported"
    ]


def test_npm_unknown_near_miss_is_blocked(client: RegistryClient) -> None:
    """``expresss`` (unknown here) is blocked as missing, with the popular name it is a near miss of."""
    verdict = check(client, "expresss", ecosystem="npm")
    assert verdict.reasons == [
        "no such package on npm",
        "did you mean 'express'? the name is 1 edit from that popular package",
    ]


# ---------------------------------------------------------------- registry down, cache


def test_registry_down_is_unverified_and_blocks(registry: RegistryServer, tmp_path: Path) -> None:
    """With the registry gone (server stopped, port closed) the verdict is "unverified", which fails closed."""
    url = registry.url
    registry.stop()
    with make_client(url, tmp_path / "cache") as down:
        verdict = check(down, "requests")
        assert verdict.status == "unverified"
        assert verdict.reasons[0].startswith("registry unreachable: 127.0.0.1 cannot be reached")
        assert verdict.blocking
        lines: list[str] = []
        code = run_check_deps(
            ["requests", "left-pad"], ecosystem="pypi", diff_file=None, client=down, settings=SETTINGS, out=lines.append
        )
    assert code == 1
    assert [line.split("  ")[1] for line in lines] == ["unverified", "unverified"]


def test_registry_errors_are_unverified_too(registry: RegistryServer, client: RegistryClient) -> None:
    """A 503 from the registry is not "no such package": it is unverified, and is not cached."""
    registry.status_for["/pypi/requests/json"] = 503
    verdict = check(client, "requests")
    assert verdict.status == "unverified"
    assert "answered HTTP 503" in verdict.reasons[0]
    del registry.status_for["/pypi/requests/json"]
    assert check(client, "requests").status == "ok"


def test_closed_port_raises_registry_unreachable(tmp_path: Path) -> None:
    """The client itself reports a refused connection as :class:`RegistryUnreachable`, a retryable error."""
    with make_client(f"http://127.0.0.1:{free_port()}", None) as down, pytest.raises(RegistryUnreachable) as caught:
        down.pypi("requests")
    assert not caught.value.permanent


def test_cache_hit_and_ttl_expiry(registry: RegistryServer, tmp_path: Path) -> None:
    """Answers (404s too) come from the disk cache within the TTL, for any client sharing it; after it, refetched."""
    clock = [1_700_000_000.0]
    cache = tmp_path / "cache"
    with make_client(registry.url, cache, ttl_s=60, clock=clock) as first:
        assert first.pypi("requests") is not None
        assert first.pypi("requests") is not None
        assert first.pypi("no-such-thing-here") is None
        assert first.pypi("no-such-thing-here") is None
    assert registry.requests == ["/pypi/requests/json", "/pypi/no-such-thing-here/json"]
    assert len(list(cache.glob("*.json"))) == 2

    with make_client(registry.url, cache, ttl_s=60, clock=clock) as second:
        clock[0] += 59
        assert second.pypi("requests") is not None
        assert len(registry.requests) == 2
        clock[0] += 2
        assert second.pypi("requests") is not None
    assert registry.requests == ["/pypi/requests/json", "/pypi/no-such-thing-here/json", "/pypi/requests/json"]


def test_damaged_cache_file_is_refetched(registry: RegistryServer, tmp_path: Path) -> None:
    """A cache file that is not valid JSON is ignored and replaced, never an error."""
    cache = tmp_path / "cache"
    with make_client(registry.url, cache) as first:
        first.npm("express")
    [file] = cache.glob("*.json")
    file.write_text("{not json")
    with make_client(registry.url, cache) as second:
        assert second.npm("express") is not None
    assert registry.requests == ["/npm/express", "/npm/express"]


# ---------------------------------------------------------------- odd input


@pytest.mark.parametrize("ecosystem", ["pypi", "npm"])
def test_odd_names_never_crash_and_never_reach_the_network(
    registry: RegistryServer, client: RegistryClient, ecosystem: str
) -> None:
    """Empty, non-ASCII, 300 characters, paths, URLs, options: each gets its own "invalid" line; no request is sent."""
    lines: list[str] = []
    code = run_check_deps(
        ODD_NAMES, ecosystem=ecosystem, diff_file=None, client=client, settings=SETTINGS, out=lines.append
    )
    assert code == 1
    assert len(lines) == len(ODD_NAMES)
    for line in lines:
        assert "\n" not in line and len(line) < 400
        _shown, status, reason = line.split("  ", 2)
        assert status == "blocked"
        assert reason.startswith(("invalid name", "invalid requirement")), line
    assert registry.requests == []


@pytest.mark.parametrize("name", ODD_NAMES)
def test_client_refuses_odd_names_before_any_request(
    registry: RegistryServer, client: RegistryClient, name: str
) -> None:
    """Called directly, the client raises :class:`PackageNameInvalid` for an odd name and sends nothing."""
    with pytest.raises(PackageNameInvalid):
        client.pypi(name)
    with pytest.raises(PackageNameInvalid):
        client.npm(name)
    assert registry.requests == []


# ---------------------------------------------------------------- check-deps


def test_parse_spec_reads_requirements_and_npm_specs() -> None:
    """Extras and markers are accepted, only ``==`` pins; npm's ``@`` after a scope is not a version separator."""
    ref = parse_spec('name[extra]==1.0; python_version<"3.12"', "pypi")
    assert (ref.name, ref.version) == ("name", "1.0")
    assert parse_spec("requests>=2,<3", "pypi").version is None
    assert parse_spec("requests==2.*", "pypi").version is None
    scoped = parse_spec("@scope/name@1.0.0", "npm")
    assert (scoped.name, scoped.version) == ("@scope/name", "1.0.0")
    assert parse_spec("@types/node", "npm").version is None
    assert parse_spec("lodash@^4.17.0", "npm").version is None
    assert parse_spec("lodash@4.17.21", "npm").version == "4.17.21"


def test_check_deps_prints_one_line_per_name_in_order(registry: RegistryServer, client: RegistryClient) -> None:
    """Each spec gets one line ``NAME[==V]  status  reasons``, in the order given; any block makes the exit status 1."""
    lines: list[str] = []
    code = run_check_deps(
        ["requests==2.32.3", "reqeusts", "../evil", "requests==2.32.3"],
        ecosystem="pypi",
        diff_file=None,
        client=client,
        settings=SETTINGS,
        out=lines.append,
        now=NOW,
    )
    assert code == 1
    assert lines == [
        "requests==2.32.3  ok  exists on PyPI",
        "reqeusts  blocked  no such project on PyPI; "
        "did you mean 'requests'? the name is 1 edit from that popular package",
        "../evil  blocked  invalid name '../evil': a path, not a registry package name",
    ]


def test_check_deps_exit_status_is_0_when_all_pass(client: RegistryClient) -> None:
    """Only passing dependencies (warnings included) give exit status 0."""
    lines: list[str] = []
    code = run_check_deps(
        ["fastapi-jwt-helper", "Django"],
        ecosystem="pypi",
        diff_file=None,
        client=client,
        settings=SETTINGS,
        out=lines.append,
        now=NOW,
    )
    assert code == 0
    assert lines[0].startswith("fastapi-jwt-helper  ok  exists on PyPI; warning: first published 10 day(s) ago")


def test_check_deps_usage_errors_exit_2(client: RegistryClient, registry: RegistryServer, tmp_path: Path) -> None:
    """Neither names nor a diff, an unknown ecosystem or an unreadable diff is a usage error (2), with no request."""
    lines: list[str] = []
    common = {"client": client, "settings": SETTINGS, "out": lines.append}
    assert run_check_deps([], ecosystem="pypi", diff_file=None, **common) == 2  # type: ignore[arg-type]
    assert run_check_deps(["x"], ecosystem="cargo", diff_file=None, **common) == 2  # type: ignore[arg-type]
    assert run_check_deps([], ecosystem="pypi", diff_file=tmp_path / "missing.diff", **common) == 2  # type: ignore[arg-type]
    assert lines[0].startswith("usage: factory check-deps")
    assert registry.requests == []


def test_check_deps_from_a_diff_file(client: RegistryClient, tmp_path: Path) -> None:
    """``--diff``: dependencies added to a manifest are checked, each line saying where it came from."""
    diff = tmp_path / "change.diff"
    diff.write_text(
        "diff --git a/requirements.txt b/requirements.txt\n"
        "index 3b18e51..9a1f0c2 100644\n"
        "--- a/requirements.txt\n"
        "+++ b/requirements.txt\n"
        "@@ -1,2 +1,4 @@\n"
        " django==5.0.6\n"
        " attr\n"
        "+requests==2.31.0\n"
        "+djnago\n"
    )
    lines: list[str] = []
    code = run_check_deps(
        [], ecosystem="pypi", diff_file=diff, client=client, settings=SETTINGS, out=lines.append, now=NOW
    )
    assert code == 1
    assert lines == [
        "requests==2.31.0  blocked  version 2.31.0 has known vulnerabilities: GHSA-9wx4-h78v-vm56 "
        "(CVE-2024-35195; fixed in 2.32.0); from requirements.txt:3",
        "djnago  blocked  no such project on PyPI; did you mean 'django'? the name is 1 edit from that popular "
        "package; from requirements.txt:4",
    ]


def test_findings_tie_blocks_to_the_manifest_line(client: RegistryClient) -> None:
    """A blocked dependency becomes an error finding at its manifest file and line; the review requests changes."""
    ref = DependencyRef(
        ecosystem="npm", name="left-pad", version="1.3.0", source="package.json:14", path="package.json", line=14
    )
    verdict = check_dependency(ref, client, popular=PopularNames.bundled(), now=NOW, new_package_days=30)
    [finding] = findings_from_verdicts([verdict])
    assert finding.check == "dependency"
    assert (finding.path, finding.line, finding.severity) == ("package.json", 14, Severity.ERROR)
    assert finding.message == "dependency left-pad@1.3.0 is blocked: deprecated on npm: use String.prototype.padStart()"
    assert verdict_for([finding]) == Verdict.REQUEST_CHANGES


def test_popular_lists_ship_hundreds_of_names() -> None:
    """The bundled lists hold a few hundred names each, and the near-miss rule never flags a listed name."""
    popular = PopularNames.bundled()
    assert len(popular.pypi) >= 300 and len(popular.npm) >= 200
    assert all(popular.near("pypi", name) is None for name in popular.pypi)
    assert all(popular.near("npm", name) is None for name in popular.npm)
    assert popular.near("pypi", "six") is None  # too short to judge
    assert popular.near("pypi", "scikitlearn") == ("scikit-learn", 1)

"""The isolation conformance controls, against real containers of the real sandbox image.

Each control is shown twice: it passes on a sandbox made by ``DockerSandboxes`` (with its
workspace size-limited by ``quota.mount_limited``), and it FAILS on a container that lacks
what it checks. The weak container is a plain ``docker run`` of the same image without the
hardening options (run as root, default capabilities, seccomp unconfined, writable root, no limits,
a canary in its environment, a host directory and a fake Docker socket mounted), so each
test would fail if its control stopped looking.

The read-only probes share one sandbox (module scope); the memory and fork probes get their
own. Every container, mount and image file is removed by the fixtures.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from factory.config import SANDBOX_IMAGE, load_settings
from factory.models import SandboxLimits
from factory.sandbox import DockerSandboxes, ExecResult, Workspace
from factory.sandbox.conformance import (
    CANARY_ENV_VAR,
    CONTROL_NAMES,
    ControlResult,
    check_capabilities_dropped,
    check_command_timeout,
    check_live_sandbox,
    check_memory_limit,
    check_no_credentials,
    check_no_docker_socket_or_host_paths,
    check_no_new_privileges,
    check_non_root,
    check_pids_limit,
    check_read_only_root,
    check_seccomp,
    check_workspace_size,
    format_table,
    run_controls,
)
from factory.sandbox.quota import image_path, is_limited, mount_limited, unmount_limited
from tests.conftest import write_config

LIMITS = SandboxLimits(memory="256m", cpus=0.5, pids=128, workspace_size="64m")
CANARY = "canary-" + uuid.uuid4().hex


@dataclass
class Box:
    sandboxes: DockerSandboxes
    name: str
    workspace: Workspace

    def sh(self, command: str) -> str:
        result = self.sandboxes.exec(self.name, command, 30)
        assert result.exit_code == 0, result.output
        return result.output


@contextlib.contextmanager
def limited_sandbox(root: Path) -> Iterator[Box]:
    """A sandbox as provision makes it, its workspace first mounted on a 64m image."""
    sandboxes = DockerSandboxes(root / "workspaces")
    workflow_id = f"conformance-{uuid.uuid4().hex[:8]}"
    workspace = sandboxes.workspace_for(workflow_id)
    assert LIMITS.workspace_size is not None
    mount_limited(workspace.repo, LIMITS.workspace_size)
    try:
        os.chown(workspace.repo, 1000, 1000)
        _, name, _ = sandboxes.provision("CONF-1", workflow_id, SANDBOX_IMAGE, LIMITS)
        yield Box(sandboxes, name, workspace)
    finally:
        sandboxes.destroy(workspace.root.name, workspace.root)
        unmount_limited(workspace.repo)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    """One hardened sandbox shared by the read-only probes."""
    with limited_sandbox(tmp_path_factory.mktemp("conformance")) as sandbox:
        yield sandbox


@pytest.fixture
def fresh_box(tmp_path: Path) -> Iterator[Box]:
    """A hardened sandbox of the test's own, for the probes that stress it."""
    with limited_sandbox(tmp_path) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def weak(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Iterator[Box]:
    """A plain `docker run` of the sandbox image without any of the hardening (never via DockerSandboxes)."""
    root = tmp_path_factory.mktemp("weak")
    host_dir = root / "host-dir"
    host_dir.mkdir()
    fake_socket = root / "fake-docker.sock"  # a socket this test made: nothing listens behind it
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(fake_socket))
    name = f"conformance-weak-{uuid.uuid4().hex[:8]}"
    docker_client.containers.run(
        SANDBOX_IMAGE,
        command=["sleep", "infinity"],
        name=name,
        detach=True,
        init=True,
        user="0:0",  # the image itself defaults to the agent user
        network_mode="none",
        security_opt=["seccomp=unconfined"],
        environment={"FACTORY_CANARY": CANARY, "GITHUB_TOKEN": "ghp_" + uuid.uuid4().hex},
        volumes={
            str(host_dir): {"bind": "/host-dir", "mode": "rw"},
            str(fake_socket): {"bind": "/var/run/docker.sock", "mode": "rw"},
        },
        labels={"factory.test": "conformance"},
    )
    try:
        yield Box(DockerSandboxes(root / "workspaces"), name, Workspace(root))
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(name).remove(force=True)
        listener.close()


# --------------------------------------------------------------------------
# Privileges


def test_non_root(box: Box, weak: Box) -> None:
    """Commands and PID 1 run as uid 1000; a container left to run as root fails the control."""
    result = check_non_root(box.sandboxes, box.name)
    assert result.passed, result.detail
    assert "first process uids 1000 1000 1000 1000" in result.detail

    failed = check_non_root(weak.sandboxes, weak.name)
    assert not failed.passed
    assert "first process uids 0 0 0 0" in failed.detail


def test_capabilities_dropped(box: Box, weak: Box) -> None:
    """No capability in any set; Docker's default capability set fails the control."""
    result = check_capabilities_dropped(box.sandboxes, box.name)
    assert result.passed, result.detail

    failed = check_capabilities_dropped(weak.sandboxes, weak.name)
    assert not failed.passed
    assert "CapBnd=" in failed.detail
    assert "pid 1 CapEff=" in failed.detail


def test_no_new_privileges(box: Box, weak: Box) -> None:
    """NoNewPrivs is 1 in commands and PID 1; without the option the control fails."""
    result = check_no_new_privileges(box.sandboxes, box.name)
    assert result.passed, result.detail

    failed = check_no_new_privileges(weak.sandboxes, weak.name)
    assert not failed.passed
    assert failed.detail == "NoNewPrivs command=0 pid 1=0"


def test_seccomp_active(box: Box, weak: Box) -> None:
    """A seccomp filter is in force; `seccomp=unconfined` fails the control."""
    result = check_seccomp(box.sandboxes, box.name)
    assert result.passed, result.detail

    failed = check_seccomp(weak.sandboxes, weak.name)
    assert not failed.passed
    assert "Seccomp command=0 pid 1=0" in failed.detail


def test_read_only_root_and_writable_workspace(box: Box, weak: Box) -> None:
    """A write to /etc fails as read-only while /workspace takes writes; a writable root fails the control
    (even though uid 1000 is refused there too, by permissions only)."""
    result = check_read_only_root(box.sandboxes, box.name)
    assert result.passed, result.detail
    assert list(box.workspace.repo.glob(".factory-probe-*")) == []

    failed = check_read_only_root(weak.sandboxes, weak.name)
    assert not failed.passed
    assert "/ mounted rw" in failed.detail


# --------------------------------------------------------------------------
# Mounts and credentials


def test_no_docker_socket_or_host_paths(box: Box, weak: Box) -> None:
    """Only the sandbox's own workspace/out/inbox are mounted; a host directory and a Docker socket fail it."""
    result = check_no_docker_socket_or_host_paths(box.sandboxes, box.name)
    assert result.passed, result.detail
    assert result.detail == "mounts: /inbox, /out, /workspace"

    failed = check_no_docker_socket_or_host_paths(weak.sandboxes, weak.name)
    assert not failed.passed
    assert "at /host-dir" in failed.detail
    assert "/var/run/docker.sock exists inside" in failed.detail


def test_no_credential_in_environment_or_files(box: Box, weak: Box) -> None:
    """The canary is in no environment or file; the control fails when it is in a container's environment, or
    in a file in the workspace or the home directory."""
    result = check_no_credentials(box.sandboxes, box.name, CANARY)
    assert result.passed, result.detail
    assert "/proc/1/environ" in result.detail  # PID 1's environment was actually read

    failed = check_no_credentials(weak.sandboxes, weak.name, CANARY)
    assert not failed.passed
    assert "canary in the container's configured environment" in failed.detail

    for place in ("/workspace/src/settings.py", "/home/agent/.cache/token"):
        box.sh(f"mkdir -p $(dirname {place}) && echo 'KEY = \"{CANARY}\"' > {place}")
        try:
            failed = check_no_credentials(box.sandboxes, box.name, CANARY)
        finally:
            box.sh(f"rm -f {place}")
        assert not failed.passed
        assert place in failed.detail


def test_credential_files_and_variables_fail_the_control(box: Box, weak: Box) -> None:
    """A .git-credentials file in the home, or a token-named variable, fails the control even where the canary
    itself is absent."""
    box.sh("echo 'https://user:pw@forge.invalid' > /home/agent/.git-credentials")
    try:
        failed = check_no_credentials(box.sandboxes, box.name, CANARY)
    finally:
        box.sh("rm -f /home/agent/.git-credentials")
    assert not failed.passed
    assert "credential files ['/home/agent/.git-credentials']" in failed.detail

    failed = check_no_credentials(weak.sandboxes, weak.name, "other-" + uuid.uuid4().hex)
    assert not failed.passed
    assert failed.detail == "credential-like variables ['GITHUB_TOKEN']"


# --------------------------------------------------------------------------
# Limits


def test_workspace_size_limit(box: Box, weak: Box) -> None:
    """/workspace is a 64m file system where allocating and writing past the free space give ENOSPC; a workspace
    on the host disk, or no configured limit, fails the control."""
    free_before = os.statvfs(box.workspace.repo).f_bavail
    result = check_workspace_size(box.sandboxes, box.name, "64m")
    assert result.passed, result.detail
    assert "allocating past it ENOSPC, writing past it ENOSPC; host: loop-mounted image" in result.detail
    assert os.statvfs(box.workspace.repo).f_bavail == free_before  # the probe removed its file

    failed = check_workspace_size(weak.sandboxes, weak.name, "64m")
    assert not failed.passed
    assert "larger than the 64m limit" in failed.detail

    failed = check_workspace_size(box.sandboxes, box.name, None)
    assert not failed.passed
    assert "no workspace size limit configured" in failed.detail


class _NoTimeoutSandboxes(DockerSandboxes):
    """exec that lets commands run ten times longer than asked: the control must notice."""

    def exec(self, name_or_id: str, command: str, timeout_s: float, **kwargs: Any) -> ExecResult:
        return super().exec(name_or_id, command, timeout_s * 10, **kwargs)


def test_command_time_limit(box: Box) -> None:
    """A command over its limit is killed and reported timed_out; an exec that ignores the limit fails the control."""
    result = check_command_timeout(box.sandboxes, box.name)
    assert result.passed, result.detail
    assert "timed_out=True" in result.detail

    lax = _NoTimeoutSandboxes(box.sandboxes.workspaces_root)
    failed = check_command_timeout(lax, box.name)
    assert not failed.passed
    assert "timed_out=False" in failed.detail


def test_memory_limit_kills_only_the_process(fresh_box: Box, weak: Box) -> None:
    """Allocating past 256m kills that process (137) and the sandbox keeps running; no limit fails the control."""
    result = check_memory_limit(fresh_box.sandboxes, fresh_box.name)
    assert result.passed, result.detail
    assert "child exit 137 (killed); sandbox still running" in result.detail
    assert fresh_box.sh("echo still here").strip() == "still here"

    failed = check_memory_limit(weak.sandboxes, weak.name)
    assert not failed.passed
    assert failed.detail == "no memory limit configured"


def test_pids_limit_stops_a_fork_bomb(fresh_box: Box, weak: Box) -> None:
    """A bounded fork loop stops at the 128-process limit with EAGAIN and the sandbox answers afterwards; no
    limit fails the control (without the probe running: it is never run where the host would pay)."""
    result = check_pids_limit(fresh_box.sandboxes, fresh_box.name)
    assert result.passed, result.detail
    assert "fork failed: Resource temporarily unavailable; sandbox responsive" in result.detail
    assert "sleep 59." not in fresh_box.sh("ps -eo args")

    failed = check_pids_limit(weak.sandboxes, weak.name)
    assert not failed.passed
    assert failed.detail == "no pids limit configured"


# --------------------------------------------------------------------------
# Running and reporting


def test_format_table() -> None:
    """The table lists control | result | detail, aligned, with a count that names the failures."""
    table = format_table(
        [
            ControlResult("runs as non-root", True, "uid 1000"),
            ControlResult("seccomp", False, "Seccomp 0"),
        ]
    )
    lines = table.splitlines()
    assert lines[0] == "control          | result | detail"
    assert lines[1].startswith("-----------------+--------+-")
    assert lines[2] == "runs as non-root | pass   | uid 1000"
    assert lines[3] == "seccomp          | FAIL   | Seccomp 0"
    assert lines[-1] == "1 of 2 controls passed, 1 FAILED"
    assert format_table([ControlResult("x", True, "")]).splitlines()[-1] == "1 of 1 controls passed"


def test_run_controls_reports_a_broken_control_as_failed(weak: Box) -> None:
    """A control that raises (here: a container that does not exist) is a FAIL row, not a crash."""

    def extra_control(sandboxes: DockerSandboxes, container: str) -> ControlResult:
        raise RuntimeError("probe exploded")

    results = run_controls(weak.sandboxes, "no-such-container-" + uuid.uuid4().hex, CANARY, extra=[extra_control])
    assert [r.name for r in results] == [*CONTROL_NAMES, "extra_control"]
    assert not any(r.passed for r in results)
    assert results[-1].detail == "could not check: RuntimeError: probe exploded"


LIVE_LIMITS = '[limits.sandbox]\nmemory = "256m"\npids = 128\n'


def test_check_live_sandbox_runs_every_control_and_cleans_up(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """The live check provisions with the configured limits and the repo's (here empty) allow-list, plants the
    canary on the host, runs every control and the extra ones, and removes the container, the workspace and the
    planted canary afterwards."""
    settings = load_settings(write_config(tmp_path, "egress_allow = []\n" + LIVE_LIMITS + 'workspace_size = "none"\n'))
    canary = "canary-" + uuid.uuid4().hex
    seen: list[str] = []

    def extra(sandboxes: DockerSandboxes, container: str) -> ControlResult:
        seen.append(container)
        planted = os.environ.get(CANARY_ENV_VAR) == canary and any(
            p.read_text().strip() == canary for p in settings.home.glob(".sandbox-check-canary-*")
        )
        return ControlResult("extra", sandboxes.is_running(container) and planted, container)

    results = check_live_sandbox(settings, canary, extra=[extra], repo="calculator")

    by_name = {r.name: r for r in results}
    assert list(by_name) == [*CONTROL_NAMES, "extra"]
    failed = {r.name: r.detail for r in results if not r.passed}
    # With the workspace size limit turned off ("none") that control must fail; everything else passes.
    assert failed == {"workspace size limit": "no workspace size limit configured (limits.sandbox.workspace_size)"}
    assert "limit 256 MiB" in by_name["memory limit enforced"].detail
    assert by_name["no docker socket or host paths"].detail == "mounts: /inbox, /out, /workspace"
    assert CANARY_ENV_VAR not in os.environ
    assert not list(settings.home.glob(".sandbox-check-canary-*"))
    assert docker_client.containers.list(all=True, filters={"name": seen[0]}) == []
    assert not (settings.workspaces_root / seen[0]).exists()


def test_check_live_sandbox_with_the_egress_proxy(tmp_path: Path) -> None:
    """With the global allow-list and the default workspace size the sandbox sits behind the egress proxy, with
    the CA bundle mounted read-only and proxy variables set: every control passes (the bundle is the one allowed
    extra mount)."""
    settings = load_settings(write_config(tmp_path, LIVE_LIMITS))
    assert settings.egress_allow and settings.limits.sandbox.workspace_size == "4g"

    results = check_live_sandbox(settings, "canary-" + uuid.uuid4().hex)

    by_name = {r.name: r for r in results}
    assert [r.name for r in results if not r.passed] == [], format_table(results)
    assert "/etc/ssl/certs/ca-certificates.crt" in by_name["no docker socket or host paths"].detail


def test_check_live_sandbox_with_a_workspace_size_limit(tmp_path: Path) -> None:
    """With limits.sandbox.workspace_size set, provision mounts the workspace on an image, so every control
    passes; the image is gone afterwards."""
    settings = load_settings(write_config(tmp_path, "egress_allow = []\n" + LIVE_LIMITS + 'workspace_size = "64m"\n'))
    results = check_live_sandbox(settings, "canary-" + uuid.uuid4().hex, repo="calculator")
    leftovers = list(settings.workspaces_root.glob("*.img")) if settings.workspaces_root.exists() else []
    assert leftovers == []
    assert [r for r in results if not r.passed] == [], format_table(results)


def test_limited_workspace_is_what_the_sandbox_sees(box: Box) -> None:
    """The workspace mounted before provision is the file system the container writes to (not the directory
    underneath), and its image sits beside it on the host."""
    assert is_limited(box.workspace.repo)
    assert image_path(box.workspace.repo) == box.workspace.root / "repo.img"
    box.sh("echo through > /workspace/through.txt")
    try:
        assert (box.workspace.repo / "through.txt").read_text() == "through\n"
        assert box.sh("stat -f -c %b:%S /workspace").strip() != box.sh("stat -f -c %b:%S /out").strip()
    finally:
        box.sh("rm -f /workspace/through.txt")

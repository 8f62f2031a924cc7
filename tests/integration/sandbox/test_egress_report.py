"""When the egress proxy is down, the sandbox has no way out and the factory can say why."""

from __future__ import annotations

import uuid
from pathlib import Path

import docker

from factory.models import SandboxLimits
from factory.sandbox import DockerSandboxes


def test_a_stopped_proxy_is_reported_as_the_reason_there_is_no_network(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """With the proxy up there is no problem to report; stopped, the sandbox's egress problem names it; a sandbox
    without an allow-list has no network by design and nothing to report."""
    sandboxes = DockerSandboxes(tmp_path / "workspaces")
    hosts = ["pypi.org"]
    limits = SandboxLimits(egress_allow=hosts, workspace_size=None)
    wid = f"egress-report-{uuid.uuid4().hex[:6]}"
    _, name, workspace = sandboxes.provision(wid, wid, "factory-sandbox:latest", limits)
    _, plain, plain_ws = sandboxes.provision(
        wid + "-plain", wid + "-plain", "factory-sandbox:latest", SandboxLimits(workspace_size=None)
    )
    try:
        assert sandboxes.egress_problem(name) is None
        assert sandboxes.egress_problem(plain) is None
        docker_client.containers.get(sandboxes.egress.container_name(hosts)).stop(timeout=1)
        problem = sandboxes.egress_problem(name)
        assert problem is not None and "egress proxy" in problem and "no network" in problem
    finally:
        sandboxes.destroy(name, workspace.root)
        sandboxes.destroy(plain, plain_ws.root)
        sandboxes.egress.remove_idle()

"""The Docker sandbox protocol, checked against a real engine and the real sandbox image.

Most checks share one container (module scope); the ones about life cycle or the
environment make their own. Every container is removed in a fixture finaliser.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest

from factory.agent.tools import run_tool
from factory.config import SANDBOX_IMAGE
from factory.models import SandboxLimits
from factory.sandbox import LABEL_MANAGED, LABEL_TICKET, LABEL_WORKFLOW, DockerSandboxes, Workspace

LIMITS = SandboxLimits(memory="256m", cpus=0.5, pids=128)


@dataclass
class Box:
    sandboxes: DockerSandboxes
    container_id: str
    name: str
    workspace: Workspace
    ticket_id: str
    workflow_id: str

    def sh(self, command: str, timeout_s: float = 30) -> str:
        result = self.sandboxes.exec(self.container_id, command, timeout_s)
        assert result.exit_code == 0, f"{command!r} failed ({result.exit_code}): {result.output}"
        return result.output

    def tool(self, name: str, output_chars: int = 8000, **args: object) -> tuple[bool, str]:
        outcome = run_tool(
            self.sandboxes,
            self.container_id,
            self.workspace,
            name,
            json.dumps(args),
            timeout_s=30,
            output_chars=output_chars,
        )
        return outcome.ok, outcome.output


def provision(root: Path) -> Box:
    suffix = uuid.uuid4().hex[:8]
    ticket_id = f"SBX-{suffix}"
    workflow_id = f"ticket-{ticket_id}"
    sandboxes = DockerSandboxes(root / "workspaces")
    container_id, name, workspace = sandboxes.provision(ticket_id, workflow_id, SANDBOX_IMAGE, LIMITS)
    return Box(sandboxes, container_id, name, workspace, ticket_id, workflow_id)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Iterator[Box]:
    """One sandbox shared by the read-only checks of this module."""
    sandbox = provision(tmp_path_factory.mktemp("shared"))
    try:
        yield sandbox
    finally:
        sandbox.sandboxes.destroy(sandbox.name)  # container, network and the workspace's file system


@pytest.fixture
def fresh_box(tmp_path: Path, docker_client: docker.DockerClient) -> Iterator[Box]:
    """A sandbox of the test's own, for checks that change or destroy it."""
    sandbox = provision(tmp_path)
    try:
        yield sandbox
    finally:
        sandbox.sandboxes.destroy(sandbox.name)


def inspect(client: docker.DockerClient, box: Box) -> dict[str, object]:
    attrs: dict[str, object] = client.api.inspect_container(box.container_id)
    return attrs


def proc_status(box: Box) -> dict[str, str]:
    lines = box.sh("cat /proc/self/status").splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


# --------------------------------------------------------------------------
# Who runs, with what privileges


def test_runs_as_uid_1000_not_root(box: Box) -> None:
    """Commands run as uid/gid 1000, never as root."""
    assert box.sh("id -u; id -g").split() == ["1000", "1000"]
    status = proc_status(box)
    assert status["Uid"].split() == ["1000"] * 4
    assert status["Gid"].split() == ["1000"] * 4


def test_all_capabilities_are_dropped(box: Box) -> None:
    """The process has no effective, permitted or bounding capabilities."""
    status = proc_status(box)
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapPrm"], 16) == 0
    assert int(status["CapBnd"], 16) == 0


def test_no_new_privileges(box: Box) -> None:
    """no-new-privileges is set, so a setuid binary cannot raise privileges."""
    assert proc_status(box)["NoNewPrivs"] == "1"


def test_root_filesystem_is_read_only_but_workspace_is_writable(box: Box) -> None:
    """Writing under /etc or /usr fails; the workspace, /out and /tmp are writable."""
    for target in ("/etc/factory-probe", "/usr/local/bin/probe", "/home/agent/../../probe"):
        result = box.sandboxes.exec(box.container_id, f"echo x > {target}", 10)
        assert result.exit_code != 0, target
        assert "Read-only file system" in result.output or "Permission denied" in result.output
    box.sh("echo ok > /workspace/probe && echo ok > /out/probe && echo ok > /tmp/probe")
    assert (box.workspace.repo / "probe").read_text() == "ok\n"
    assert (box.workspace.out / "probe").read_text() == "ok\n"
    assert box.sh("findmnt -no OPTIONS /").split(",")[0] == "ro"


def test_inbox_is_read_only_for_the_sandbox(box: Box) -> None:
    """The sandbox cannot write into /inbox, where the host stages file contents."""
    result = box.sandboxes.exec(box.container_id, "echo x > /inbox/planted", 10)
    assert result.exit_code != 0
    assert not (box.workspace.inbox / "planted").exists()


def test_meta_directory_is_not_visible_in_the_sandbox(box: Box) -> None:
    """The transcript directory on the host is not mounted, so the agent cannot read or tamper with it."""
    (box.workspace.meta / "transcript.jsonl").write_text("host-only\n")
    mounts = box.sh("cat /proc/self/mountinfo")
    assert str(box.workspace.meta) not in mounts
    assert str(box.workspace.out) in mounts  # the check reads the real bind-mount sources
    found = box.sh(
        "find / -xdev -name transcript.jsonl 2>/dev/null; "
        "find /workspace /out /inbox /tmp /home -name transcript.jsonl 2>/dev/null; true"
    )
    assert found.strip() == ""


# --------------------------------------------------------------------------
# Network


def test_only_loopback_interface_exists(box: Box) -> None:
    """The container has no network interface but lo."""
    lines = box.sh("cat /proc/net/dev").splitlines()[2:]
    interfaces = [line.split(":", 1)[0].strip() for line in lines if line.strip()]
    assert interfaces == ["lo"]


def test_outbound_connection_is_unreachable(box: Box) -> None:
    """A TCP connect to a public address fails at once with 'network unreachable' (there is no route)."""
    script = (
        "import socket, errno\n"
        "s = socket.socket()\n"
        "s.settimeout(5)\n"
        "try:\n"
        "    s.connect(('1.1.1.1', 53))\n"
        "    print('CONNECTED')\n"
        "except OSError as e:\n"
        "    print('ERRNO', errno.errorcode.get(e.errno, e.errno))\n"
    )
    output = box.sh(f"python3 -c {shell_quote(script)}")
    assert output.strip() == "ERRNO ENETUNREACH"


def test_name_resolution_fails(box: Box) -> None:
    """DNS lookups fail: without a network nothing can be resolved or fetched."""
    script = (
        "import socket\n"
        "try:\n"
        "    socket.getaddrinfo('pypi.org', 443)\n"
        "    print('RESOLVED')\n"
        "except OSError:\n"
        "    print('NO-DNS')\n"
    )
    assert box.sh(f"python3 -c {shell_quote(script)}").strip() == "NO-DNS"


def test_engine_config_has_no_network(box: Box, docker_client: docker.DockerClient) -> None:
    """The engine itself records network mode none and no published ports."""
    host_config = inspect(docker_client, box)["HostConfig"]
    assert isinstance(host_config, dict)
    assert host_config["NetworkMode"] == "none"
    assert not host_config.get("PortBindings")


# --------------------------------------------------------------------------
# Limits


def test_memory_cpu_and_pids_limits_are_set(box: Box, docker_client: docker.DockerClient) -> None:
    """Memory (without extra swap), CPU and process-count limits are applied as configured."""
    host_config = inspect(docker_client, box)["HostConfig"]
    assert isinstance(host_config, dict)
    assert host_config["Memory"] == 256 * 1024 * 1024
    assert host_config["MemorySwap"] == host_config["Memory"]
    assert host_config["NanoCpus"] == 500_000_000
    assert host_config["PidsLimit"] == 128
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host_config["SecurityOpt"]
    assert not host_config.get("Privileged")


def test_command_past_its_timeout_is_killed_and_reported(box: Box) -> None:
    """A command that runs past its time limit is killed, reported timed_out, and leaves nothing running."""
    result = box.sandboxes.exec(box.container_id, "echo started; sleep 60; echo finished", 2)

    assert result.timed_out
    assert result.exit_code != 0
    assert result.duration_s < 15
    assert "started" in result.output
    assert "finished" not in result.output
    assert "sleep 60" not in box.sh("ps -eo args")


def test_command_within_its_timeout_is_not_timed_out(box: Box) -> None:
    """A command that finishes in time reports its own exit code, not a time-out."""
    result = box.sandboxes.exec(box.container_id, "sleep 0.2; exit 3", 10)
    assert (result.exit_code, result.timed_out) == (3, False)


# --------------------------------------------------------------------------
# Labels and environment


def test_labels_identify_the_ticket(box: Box, docker_client: docker.DockerClient) -> None:
    """The container carries factory.ticket, factory.workflow and factory.managed labels."""
    labels = docker_client.containers.get(box.container_id).labels
    assert labels[LABEL_TICKET] == box.ticket_id
    assert labels[LABEL_WORKFLOW] == box.workflow_id
    assert labels[LABEL_MANAGED] == "true"
    managed = {c.id for c in box.sandboxes.list_managed()}
    assert box.container_id in managed


def test_no_credential_reaches_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_client: docker.DockerClient
) -> None:
    """Secrets in the host's environment appear neither in the sandbox's `env` nor in the container config."""
    canary = "canary-" + uuid.uuid4().hex
    github = "ghp_" + uuid.uuid4().hex
    monkeypatch.setenv("FACTORY_CANARY_TOKEN", canary)
    monkeypatch.setenv("GITHUB_TOKEN", github)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-" + uuid.uuid4().hex)
    assert os.environ["GITHUB_TOKEN"] == github

    sandbox = provision(tmp_path)
    try:
        seen = sandbox.sh("env; cat /proc/1/environ | tr '\\0' '\\n'")
        config_env = "\n".join(docker_client.api.inspect_container(sandbox.container_id)["Config"]["Env"] or [])
        for text in (seen, config_env):
            for secret in ("FACTORY_CANARY_TOKEN", canary, "GITHUB_TOKEN", github, "ANTHROPIC_API_KEY", "sk-ant-"):
                assert secret not in text
        assert "HOME=/home/agent" in seen  # the check looked at a real environment
    finally:
        sandbox.sandboxes.destroy(sandbox.name)


# --------------------------------------------------------------------------
# Life cycle


def test_provision_is_idempotent(fresh_box: Box, docker_client: docker.DockerClient) -> None:
    """Provisioning the same workflow again returns the running container instead of making a second one."""
    again = fresh_box.sandboxes.provision(fresh_box.ticket_id, fresh_box.workflow_id, SANDBOX_IMAGE, LIMITS)

    assert again == (fresh_box.container_id, fresh_box.name, fresh_box.workspace)
    same_workflow = docker_client.containers.list(
        all=True, filters={"label": f"{LABEL_WORKFLOW}={fresh_box.workflow_id}"}
    )
    assert [c.id for c in same_workflow] == [fresh_box.container_id]


def test_provision_replaces_a_stopped_container(fresh_box: Box, docker_client: docker.DockerClient) -> None:
    """A container that stopped (host restart, OOM) is replaced by a new running one."""
    docker_client.containers.get(fresh_box.container_id).kill()
    new_id, _, _ = fresh_box.sandboxes.provision(fresh_box.ticket_id, fresh_box.workflow_id, SANDBOX_IMAGE, LIMITS)

    assert new_id != fresh_box.container_id
    assert fresh_box.sandboxes.is_running(new_id)


def test_destroy_is_idempotent_and_keeps_meta(fresh_box: Box, docker_client: docker.DockerClient) -> None:
    """destroy removes the container and the repository copy, keeps meta/, and can be called again."""
    fresh_box.sh("echo code > /workspace/file.py")
    (fresh_box.workspace.meta / "transcript.jsonl").write_text("{}\n")

    assert fresh_box.sandboxes.destroy(fresh_box.name, fresh_box.workspace.root) is True

    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(fresh_box.container_id)
    assert not fresh_box.workspace.repo.exists()
    assert not fresh_box.workspace.out.exists()
    assert (fresh_box.workspace.meta / "transcript.jsonl").read_text() == "{}\n"

    assert fresh_box.sandboxes.destroy(fresh_box.name, fresh_box.workspace.root) is False
    assert not fresh_box.sandboxes.is_running(fresh_box.name)


# --------------------------------------------------------------------------
# Agent tools


def test_write_file_then_read_file_round_trip(box: Box) -> None:
    """A file written by the agent reads back line by line, including quotes, unicode and nested dirs."""
    content = 'def greet():\n    return "it\'s $HOME `x` ünï"\n'
    ok, _ = box.tool("write_file", path="pkg/deep/mod.py", content=content)
    assert ok

    ok, output = box.tool("read_file", path="pkg/deep/mod.py")
    assert ok
    assert output == '     1\tdef greet():\n     2\t    return "it\'s $HOME `x` ünï"\n'
    assert (box.workspace.repo / "pkg" / "deep" / "mod.py").read_text() == content
    assert box.sh("stat -c %u pkg/deep/mod.py").strip() == "1000"


def test_read_file_line_range(box: Box) -> None:
    """read_file returns only the requested lines, numbered as in the file."""
    box.tool("write_file", path="lines.txt", content="".join(f"line {i}\n" for i in range(1, 11)))
    ok, output = box.tool("read_file", path="lines.txt", start_line=3, end_line=4)
    assert ok
    assert output == "     3\tline 3\n     4\tline 4\n"


def test_str_replace_requires_exactly_one_match(box: Box) -> None:
    """str_replace fails when `old` occurs 0 or 2 times, leaving the file unchanged; once, it replaces."""
    box.tool("write_file", path="twice.py", content="x = 1\nx = 1\ny = 2\n")

    ok, output = box.tool("str_replace", path="twice.py", old="z = 3", new="z = 4")
    assert not ok
    assert "occurs 0 times" in output

    ok, output = box.tool("str_replace", path="twice.py", old="x = 1", new="x = 5")
    assert not ok
    assert "occurs 2 times" in output
    assert (box.workspace.repo / "twice.py").read_text() == "x = 1\nx = 1\ny = 2\n"

    ok, _ = box.tool("str_replace", path="twice.py", old="y = 2", new="y = 3")
    assert ok
    assert (box.workspace.repo / "twice.py").read_text() == "x = 1\nx = 1\ny = 3\n"


def test_str_replace_on_missing_file_is_an_error(box: Box) -> None:
    """str_replace on a file that does not exist returns an error outcome, not an exception."""
    ok, output = box.tool("str_replace", path="missing.py", old="a", new="b")
    assert not ok
    assert "no such file" in output


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/usr/local/lib/planted.py", id="read-only-root"),
        pytest.param("adir", id="existing-directory"),
        pytest.param("/inbox/planted", id="read-only-inbox"),
    ],
)
def test_write_to_an_unwritable_path_is_an_error_outcome(box: Box, path: str) -> None:
    """A write the sandbox refuses comes back to the agent as a failed tool call, not an exception that would
    make the activity retry and then fail the ticket."""
    box.sh("mkdir -p adir")
    ok, output = box.tool("write_file", path=path, content="x = 1\n")
    assert not ok
    assert output.startswith(f"error: could not write {path}: ")
    assert box.sh("ls -A adir") == ""  # nothing was copied into the directory instead
    assert box.sandboxes.is_running(box.container_id)


def test_bash_output_over_the_limit_is_truncated_with_a_note(box: Box) -> None:
    """Long command output keeps its start and end, and says how much was omitted."""
    ok, output = box.tool("bash", output_chars=400, command="seq 1 20000")

    assert ok
    assert output.startswith("exit code 0\n1\n2\n3\n")
    assert output.rstrip().endswith("19999\n20000")
    assert "[output truncated:" in output
    assert "characters omitted" in output
    assert len(output) < 400 + 200


def test_bash_reports_failure_and_time_limit(box: Box) -> None:
    """bash returns the exit code; a command past the agent's own time limit is reported as killed."""
    ok, output = box.tool("bash", command="echo oops; exit 7")
    assert not ok
    assert output.startswith("exit code 7\n")

    ok, output = box.tool("bash", command="sleep 30", timeout_s=1)
    assert not ok
    assert "[command killed after 1s time limit]" in output


def test_symlink_to_a_host_file_does_not_leak_it(box: Box, tmp_path: Path) -> None:
    """A symlink planted in the workspace pointing at a host file is resolved inside the sandbox, so the host
    file's content never reaches the agent, and a write through it does not touch the host file."""
    secret_text = "HOST-SECRET-" + uuid.uuid4().hex
    host_file = tmp_path / "host-secret.txt"
    host_file.write_text(secret_text + "\n")
    os.symlink(host_file, box.workspace.repo / "leak.txt")
    os.symlink(box.workspace.meta, box.workspace.repo / "meta-link")
    (box.workspace.meta / "notes.txt").write_text(secret_text + "\n")

    ok, output = box.tool("read_file", path="leak.txt")
    assert not ok
    assert secret_text not in output

    ok, output = box.tool("read_file", path="meta-link/notes.txt")
    assert secret_text not in output

    ok, output = box.tool("bash", command="cat leak.txt meta-link/notes.txt; ls -la")
    assert secret_text not in output

    ok, output = box.tool("grep", pattern="HOST-SECRET")
    assert secret_text not in output

    ok, output = box.tool("write_file", path="leak.txt", content="overwritten\n")
    assert not ok
    assert "dangling symlink" in output
    ok, _ = box.tool("str_replace", path="leak.txt", old="HOST", new="PWNED")
    assert not ok
    assert host_file.read_text() == secret_text + "\n"
    assert (box.workspace.meta / "notes.txt").read_text() == secret_text + "\n"


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"

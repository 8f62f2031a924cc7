"""Docker sandboxes: one locked-down container per ticket.

The container runs as a non-root user with every capability dropped,
no-new-privileges, a read-only root file system, and limits on memory, CPU and
processes. Its network: with an empty egress allow-list, none at all (only
loopback); otherwise an internal Docker network of its own whose only other
member is the allow-list proxy (see ``egress.py``), reached through
``HTTP(S)_PROXY``; no published ports, no resolver that reaches outside.

The only writable places are the workspace (the repository, mounted from the
host), ``/out`` (where exports are written) and two small tmpfs mounts.
``/inbox`` is mounted read-only: the host drops file contents
there and the sandbox copies them into place, so the host never follows a path
or symlink the sandbox controls.

No credential is passed in: the environment is built here from scratch.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from factory.errors import (
    CommandTimeout,
    ConfigError,
    DockerUnavailable,
    ImageMissing,
    SandboxError,
    SandboxGone,
    WriteRefused,
)
from factory.models import SandboxLimits
from factory.sandbox.egress import (
    CA_BUNDLE,
    EgressProxy,
    describe_policy,
    ensure_internal_network,
    normalise_hosts,
    proxy_environment,
    remove_network,
)
from factory.sandbox.quota import mount_limited, unmount_limited

__all__ = [
    "LABEL_INSTANCE",
    "LABEL_MANAGED",
    "LABEL_TICKET",
    "LABEL_WORKFLOW",
    "DockerSandboxes",
    "ExecResult",
    "Workspace",
]

LABEL_TICKET = "factory.ticket"
LABEL_WORKFLOW = "factory.workflow"
LABEL_MANAGED = "factory.managed"
LABEL_INSTANCE = "factory.instance"

SANDBOX_UID = 1000
SANDBOX_GID = 1000
# Exit status of coreutils `timeout` when it had to stop the command (124) or kill it (137).
_TIMEOUT_CODES = {124, 137}
_KILL_GRACE_S = 5
# How much output one command may produce before the middle is dropped.
_OUTPUT_CAP = 1_000_000
_SAFE_ENV = {
    "HOME": "/home/agent",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


@dataclass(frozen=True)
class Workspace:
    """The host directories of one sandbox."""

    root: Path

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def meta(self) -> Path:
        """Transcript and logs: never mounted into the sandbox, so it cannot tamper with them."""
        return self.root / "meta"


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str
    timed_out: bool
    duration_s: float


def factory_instance(workspaces_root: Path) -> str:
    """A short id of one factory installation (its state directory) on a shared Docker engine."""
    return hashlib.sha256(str(workspaces_root.resolve()).encode()).hexdigest()[:8]


def container_name_for(instance_id: str, workflow_id: str, instance: int = 1) -> str:
    """``factory-<installation>-<workflow id>``, and ``-r<n>`` for the fresh sandbox of fix round n.

    The installation part keeps two factories (two homes, two test runs) on one Docker
    engine from ever sharing a container.
    """
    suffix = "" if instance == 1 else f"-r{instance}"
    return f"factory-{instance_id}-" + re.sub(r"[^a-zA-Z0-9_.-]+", "-", workflow_id)[:100] + suffix


def _last_written(workspace: Path) -> float:
    """When the factory last wrote to a workspace: the newest time of it and of its ``meta/`` tree."""
    newest = workspace.lstat().st_mtime
    for directory, _, files in os.walk(workspace / "meta"):
        for name in [".", *files]:
            try:
                newest = max(newest, os.lstat(os.path.join(directory, name)).st_mtime)
            except OSError:
                continue
    return newest


def network_name_for(container_name: str) -> str:
    """The sandbox's own internal network."""
    return f"{container_name}-net"


class DockerSandboxes:
    """Creates, uses and destroys sandbox containers on this host's Docker engine."""

    def __init__(
        self,
        workspaces_root: Path,
        client: docker.DockerClient | None = None,
        *,
        egress_dir: Path | None = None,
        proxy_image: str = "factory-sandbox:latest",
    ) -> None:
        self.workspaces_root = workspaces_root
        self.instance_id = factory_instance(workspaces_root)
        self._client = client
        # The proxies' configuration: beside the workspaces, never inside one (no sandbox sees it).
        self.egress_dir = egress_dir or workspaces_root.parent / "egress"
        self.proxy_image = proxy_image
        self._egress: EgressProxy | None = None

    # -- engine ---------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                client = docker.from_env(timeout=60)
                client.ping()
            except docker.errors.DockerException as exc:
                raise DockerUnavailable(
                    "Docker engine not reachable "
                    f"({_short(exc)}): start it (`make demo` starts dockerd) or set DOCKER_HOST"
                ) from None
            self._client = client
        return self._client

    def check_image(self, image: str) -> None:
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            raise ImageMissing(f"sandbox image {image!r} is missing: build it with `make image`") from None
        except docker.errors.DockerException as exc:
            raise DockerUnavailable(f"Docker engine error: {_short(exc)}") from None

    @property
    def egress(self) -> EgressProxy:
        """This installation's allow-list proxies."""
        if self._egress is None:
            self._egress = EgressProxy(self.client, self.instance_id, self.egress_dir, image=self.proxy_image)
        return self._egress

    @staticmethod
    def policy(egress_allow: list[str]) -> str:
        """What a sandbox with this allow-list can reach, in words (``factory sandbox policy``)."""
        return describe_policy(egress_allow)

    # -- life cycle -------------------------------------------------------------

    def workspace_for(self, workflow_id: str, instance: int = 1) -> Workspace:
        return Workspace(self.workspaces_root / container_name_for(self.instance_id, workflow_id, instance))

    def provision(
        self, ticket_id: str, workflow_id: str, image: str, limits: SandboxLimits, instance: int = 1
    ) -> tuple[str, str, Workspace]:
        """Create (or find, after a retry) the ticket's container; returns id, name, workspace.

        With a non-empty ``limits.egress_allow`` the container gets its own internal network
        and the allow-list's proxy; if the proxy cannot be started this raises ``SandboxError``
        (never an open network instead).
        """
        self.check_image(image)
        try:
            allow = normalise_hosts(limits.egress_allow)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        name = container_name_for(self.instance_id, workflow_id, instance)
        network_name = network_name_for(name)
        workspace = self.workspace_for(workflow_id, instance)
        existing = self._find(name)
        if existing is not None:
            if existing.status == "running" and self._network_as_wanted(existing, network_name, allow):
                return str(existing.id), name, workspace
            existing.remove(force=True)
            if not allow:
                self._remove_network(network_name)  # left from a run with an allow-list
        for path in (workspace.repo, workspace.out, workspace.inbox, workspace.meta):
            path.mkdir(parents=True, exist_ok=True)
        if limits.workspace_size:
            # A file system of its own, so the agent cannot fill the host's disk; before the
            # container starts, so the container sees the mount.
            mount_limited(workspace.repo, limits.workspace_size)
        for path in (workspace.repo, workspace.out):
            _give_to_sandbox(path)
        mem = limits.memory
        environment = dict(_SAFE_ENV)
        dns: list[str] | None = None
        if allow:
            labels = {LABEL_MANAGED: "true", LABEL_INSTANCE: self.instance_id, LABEL_WORKFLOW: workflow_id}
            ensure_internal_network(self.client, network_name, labels)
            environment.update(proxy_environment(self.egress.attach(allow, network_name)))
            # Names resolve at the proxy: the engine's resolver gets nothing to forward to.
            dns = ["127.0.0.1"]
        volumes = {
            str(workspace.repo): {"bind": "/workspace", "mode": "rw"},
            str(workspace.out): {"bind": "/out", "mode": "rw"},
            str(workspace.inbox): {"bind": "/inbox", "mode": "ro"},
        }
        if allow and CA_BUNDLE.is_file():
            volumes[str(CA_BUNDLE)] = {"bind": str(CA_BUNDLE), "mode": "ro"}
        try:
            container = self.client.containers.run(
                image,
                command=["sleep", "infinity"],
                name=name,
                detach=True,
                init=True,
                user=f"{SANDBOX_UID}:{SANDBOX_GID}",
                working_dir="/workspace",
                hostname="sandbox",
                environment=environment,
                labels={
                    LABEL_MANAGED: "true",
                    LABEL_INSTANCE: self.instance_id,
                    LABEL_TICKET: ticket_id,
                    LABEL_WORKFLOW: workflow_id,
                },
                cap_drop=["ALL"],
                security_opt=["no-new-privileges:true"],
                read_only=True,
                network=network_name if allow else None,
                network_mode=None if allow else "none",
                dns=dns,
                # Lookups of outside names fail after a second instead of ten.
                dns_opt=["timeout:1", "attempts:1"] if allow else None,
                mem_limit=mem,
                memswap_limit=mem,
                nano_cpus=int(limits.cpus * 1e9),
                pids_limit=limits.pids,
                tmpfs={
                    "/tmp": "rw,nosuid,nodev,size=512m",
                    "/home/agent": "rw,nosuid,nodev,size=64m,uid=1000,gid=1000",
                },
                volumes=volumes,
            )
        except docker.errors.APIError as exc:
            raise SandboxError(f"could not create sandbox {name}: {_short(exc)}") from None
        return str(container.id), name, workspace

    def destroy(self, name_or_id: str, workspace: Path | None = None) -> bool:
        """Remove the container, its network and its use of a proxy (idempotent), and the repository copy.

        The workspace defaults to the one named after the container. The transcript and logs under
        ``meta/`` are kept for inspection.
        Returns whether a container was removed.
        """
        removed = False
        container = self._find(name_or_id)
        name = str(container.name) if container is not None else name_or_id
        if container is not None:
            try:
                container.remove(force=True)
                removed = True
            except docker.errors.NotFound:
                pass
        self._remove_network(network_name_for(name))
        # Whatever path got here (a retried provision, a network already gone), no proxy is left serving nobody.
        self.egress.remove_idle()
        # The workspace is named after the container: derive it when not given, so its file system is never left
        # mounted.
        ws = Workspace(workspace if workspace is not None else self.workspaces_root / name)
        unmount_limited(ws.repo)
        for path in (ws.repo, ws.out, ws.inbox):
            shutil.rmtree(path, ignore_errors=True)
        return removed

    def list_managed(self) -> list[Container]:
        """This installation's sandbox containers (not another factory's on the same engine)."""
        labels = [f"{LABEL_MANAGED}=true", f"{LABEL_INSTANCE}={self.instance_id}"]
        return list(self.client.containers.list(all=True, filters={"label": labels}))

    def reap(self, workflow_is_open: Callable[[str], bool], *, dry_run: bool = False) -> list[str]:
        """Remove the factory's containers (and networks) whose workflow is closed or unknown; returns their names.

        Only this installation's containers (by label) are considered, never others.
        A container without a workflow label is left alone: there is no way to know it is orphaned.
        """
        reaped = []
        for container in self.list_managed():
            labels = container.labels or {}
            workflow_id = labels.get(LABEL_WORKFLOW)
            if labels.get(LABEL_INSTANCE) != self.instance_id or not workflow_id or workflow_is_open(workflow_id):
                continue
            name = str(container.name)
            if not dry_run:
                self.destroy(name, self.workspaces_root / name)
            reaped.append(name)
        # Networks a crash left without their container, then proxies no sandbox uses any more.
        ours = [f"{LABEL_MANAGED}=true", f"{LABEL_INSTANCE}={self.instance_id}"]
        for network in self.client.networks.list(filters={"label": ours}):
            network_name = str(network.name)
            network_workflow = (network.attrs.get("Labels") or {}).get(LABEL_WORKFLOW)
            if (
                not network_workflow
                or workflow_is_open(network_workflow)
                or self._find(network_name.removesuffix("-net")) is not None
            ):
                continue
            if not dry_run:
                self._remove_network(network_name)
            reaped.append(network_name)
        if not dry_run:
            reaped += self.egress.remove_idle()
        return reaped

    def prune_workspaces(self, keep_for_s: float, *, dry_run: bool = False) -> list[str]:
        """Remove this installation's workspaces (kept transcripts and logs) that no sandbox uses and
        nothing wrote to for ``keep_for_s`` seconds; returns their names.

        Only directories named for this installation are considered, and only their ``meta/``
        (written by the factory, never mounted into a sandbox) is read to date them.
        """
        cutoff = time.time() - keep_for_s
        prefix = f"factory-{self.instance_id}-"
        try:
            entries = list(os.scandir(self.workspaces_root))
        except FileNotFoundError:
            return []
        pruned = []
        for entry in entries:
            if not entry.name.startswith(prefix) or not entry.is_dir(follow_symlinks=False):
                continue
            if _last_written(Path(entry.path)) > cutoff or self._find(entry.name) is not None:
                continue
            if not dry_run:
                unmount_limited(Path(entry.path) / "repo")
                shutil.rmtree(entry.path, ignore_errors=True)
            pruned.append(entry.name)
        return pruned

    def egress_problem(self, name: str) -> str | None:
        """Why the sandbox has no way out right now (its proxy is down), if it should have one."""
        network = network_name_for(name)
        try:
            self.client.networks.get(network)
        except docker.errors.NotFound:
            return None  # no allow-list: no network was ever meant
        return self.egress.problem(network)

    def is_running(self, name_or_id: str) -> bool:
        container = self._find(name_or_id)
        return container is not None and container.status == "running"

    # -- inside the sandbox -------------------------------------------------------

    def exec(
        self,
        name_or_id: str,
        command: str,
        timeout_s: float,
        *,
        workdir: str = "/workspace",
        on_wait: Callable[[], None] | None = None,
    ) -> ExecResult:
        """Run ``bash -c command`` as the sandbox user, killed after ``timeout_s``.

        ``on_wait`` is called every few seconds while the command runs (activities
        heartbeat from it, so a dead worker is noticed quickly).
        """
        container = self._require(name_or_id)
        wrapped = ["timeout", "-k", str(_KILL_GRACE_S), str(max(1, int(timeout_s))), "bash", "-c", command]
        api = self.client.api
        try:
            exec_id = api.exec_create(
                container.id, wrapped, workdir=workdir, user=f"{SANDBOX_UID}:{SANDBOX_GID}", environment=dict(_SAFE_ENV)
            )["Id"]
        except docker.errors.NotFound:
            raise SandboxGone(f"sandbox {name_or_id} is gone") from None
        except docker.errors.APIError as exc:
            raise SandboxError(f"could not run a command in sandbox {name_or_id}: {_short(exc)}") from None

        chunks = _BoundedOutput(_OUTPUT_CAP)
        failure: list[BaseException] = []

        def pump() -> None:
            try:
                for chunk in api.exec_start(exec_id, stream=True, demux=False):
                    chunks.add(chunk)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                failure.append(exc)

        started = time.monotonic()
        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        # The in-sandbox `timeout` does the killing; this is only a guard against a wedged engine.
        deadline = started + timeout_s + _KILL_GRACE_S + 30
        while reader.is_alive():
            reader.join(timeout=2.0)
            if on_wait is not None:
                on_wait()
            if time.monotonic() > deadline:
                raise CommandTimeout(f"command did not finish within {timeout_s:.0f}s and could not be stopped")
        duration = time.monotonic() - started
        if failure:
            if not self.is_running(name_or_id):
                raise SandboxGone(f"sandbox {name_or_id} stopped while running a command (out of memory?)")
            raise SandboxError(f"lost the output of a sandbox command: {_short(failure[0])}")
        code = api.exec_inspect(exec_id).get("ExitCode")
        exit_code = -1 if code is None else int(code)
        timed_out = exit_code in _TIMEOUT_CODES and duration >= timeout_s - 0.5
        return ExecResult(exit_code=exit_code, output=chunks.text(), timed_out=timed_out, duration_s=duration)

    def write_file(
        self, name_or_id: str, workspace: Workspace, path: str, content: bytes, timeout_s: float = 30
    ) -> None:
        """Place ``content`` at ``path`` (relative to /workspace) from inside the sandbox."""
        token = uuid.uuid4().hex
        staged = workspace.inbox / token
        staged.write_bytes(content)
        staged.chmod(0o644)
        try:
            result = self.exec(
                name_or_id,
                f'set -e; p={_quote(path)}; mkdir -p -- "$(dirname -- "$p")"; cp -T -- /inbox/{token} "$p"',
                timeout_s,
            )
        finally:
            staged.unlink(missing_ok=True)
        if result.exit_code != 0:
            raise WriteRefused(f"could not write {path}: {result.output.strip()[-300:]}")

    # -- internals ---------------------------------------------------------------

    def _network_as_wanted(self, container: Container, network_name: str, allow: list[str]) -> bool:
        """Whether a running sandbox found after a retry has the network it should (its proxy restarted if needed)."""
        attrs = container.attrs
        networks = set((attrs.get("NetworkSettings") or {}).get("Networks") or {})
        env = attrs.get("Config", {}).get("Env") or []
        if not allow:
            return bool(attrs.get("HostConfig", {}).get("NetworkMode") == "none")
        if networks != {network_name}:
            return False
        wanted = proxy_environment(self.egress.attach(allow, network_name))
        return f"HTTPS_PROXY={wanted['HTTPS_PROXY']}" in env

    def _remove_network(self, network_name: str) -> None:
        try:
            self.client.networks.get(network_name)
        except docker.errors.NotFound:
            return
        except docker.errors.DockerException as exc:
            raise DockerUnavailable(f"Docker engine error: {_short(exc)}") from None
        self.egress.detach(network_name)
        remove_network(self.client, network_name)

    def _find(self, name_or_id: str) -> Container | None:
        try:
            return self.client.containers.get(name_or_id)
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as exc:
            raise DockerUnavailable(f"Docker engine error: {_short(exc)}") from None

    def _require(self, name_or_id: str) -> Container:
        container = self._find(name_or_id)
        if container is None or container.status != "running":
            raise SandboxGone(f"sandbox {name_or_id} is not running (destroyed, or out of memory)")
        return container


class _BoundedOutput:
    """Keeps the head and the tail of a stream, dropping the middle past a cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.cap // 2 - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            excess = len(self.tail) - self.cap // 2
            if excess > 0:
                del self.tail[:excess]
                self.dropped += excess

    def text(self) -> str:
        middle = f"\n[... {self.dropped} bytes dropped ...]\n".encode() if self.dropped else b""
        return bytes(self.head + middle + self.tail).decode("utf-8", errors="replace")


def _give_to_sandbox(path: Path) -> None:
    try:
        os.chown(path, SANDBOX_UID, SANDBOX_GID)
    except PermissionError:
        # Not root: let the sandbox user write anyway.
        path.chmod(0o777)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def chown_tree_to_sandbox(path: Path) -> None:
    """Hand a host-made tree (a fresh clone) to the sandbox user."""
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                os.lchown(os.path.join(root, name), SANDBOX_UID, SANDBOX_GID)
            except PermissionError:
                return
    _give_to_sandbox(path)

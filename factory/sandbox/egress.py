"""Egress: sandboxes reach the outside only through an allow-list HTTP(S) proxy.

Topology, per factory installation (``instance``) on one Docker engine::

    sandbox ──(internal network, one per sandbox)── proxy ──(bridge "egress-out")── outside

* Each sandbox sits alone on its own *internal* Docker network: no NAT, no route
  out, and the bridge carries no host address (``inhibit_ipv4``), so neither the
  host's services nor other sandboxes are reachable from it.
* One proxy container per distinct allow-list (``factory-<instance>-egress-<hash8>``)
  runs tinyproxy from the sandbox image, unprivileged, on a read-only root. It is
  connected to each sandbox network that uses its allow-list, and to one ordinary
  bridge network (``factory-<instance>-egress-out``) for the outside. It forwards
  only to host names on the allow-list (``FilterDefaultDeny``); ``CONNECT`` only to
  ports 443 and 80; every decision is written to its log (``docker logs``).
* Sandboxes have no DNS resolver that reaches outside: names resolve at the proxy.

An empty allow-list means no proxy at all. When the proxy cannot be started the
caller gets a ``SandboxError``: there is never a fallback to an open network.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.networks import Network

from factory.errors import SandboxError

__all__ = [
    "CA_BUNDLE",
    "LABEL_ROLE",
    "PROXY_PORT",
    "ROLE_EGRESS",
    "ROLE_SANDBOX_NET",
    "EgressProxy",
    "describe_policy",
    "ensure_internal_network",
    "host_filter",
    "normalise_hosts",
    "proxy_config",
    "proxy_environment",
    "remove_network",
]

LABEL_ROLE = "factory.role"
ROLE_EGRESS = "egress"
ROLE_EGRESS_OUT = "egress-out"
ROLE_SANDBOX_NET = "sandbox-net"
# Same values as factory.sandbox.docker (not imported: that module imports this one).
_LABEL_MANAGED = "factory.managed"
_LABEL_INSTANCE = "factory.instance"

PROXY_PORT = 8888
PROXY_UID = 1000
CONNECT_PORTS = (443, 80)
# The host's CA bundle, mounted read-only into sandboxes at the same path.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_CONFIG_MOUNT = "/etc/factory-egress"
# Who may use the proxy: it is reachable only from the internal sandbox networks it is
# attached to (and its own egress bridge), whose addresses Docker takes from these ranges.
_CLIENT_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
_READY_TIMEOUT_S = 10.0
# A bridge without an address on the host: the sandbox's default route (if Docker adds
# one) points at an address nothing holds, so the host's services are out of reach.
_INTERNAL_NET_OPTIONS = {"com.docker.network.bridge.inhibit_ipv4": "true"}
_HOST_RE = re.compile(r"^(?:\*?\.)?[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")

# Attaching a proxy and removing an idle one must not interleave within one worker.
_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(instance_id: str) -> threading.RLock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(instance_id, threading.RLock())


# -- the policy as text ------------------------------------------------------------------


def normalise_hosts(hosts: Iterable[str]) -> list[str]:
    """Lower-cased, de-duplicated, sorted host names; ``.example.com`` / ``*.example.com`` also allow subdomains.

    Raises ``ValueError`` for anything that is not a plain host name (no scheme, port, path or wildcard
    elsewhere), so a typo can never widen the policy.
    """
    result = set()
    for raw in hosts:
        host = raw.strip().lower().rstrip(".")
        if host.startswith("*."):
            host = host[1:]
        if not host or len(host) > 253 or not _HOST_RE.match(host):
            raise ValueError(f"invalid egress host {raw!r}: give a host name such as pypi.org or .example.com")
        result.add(host)
    return sorted(result)


def host_filter(hosts: Iterable[str]) -> str:
    """The tinyproxy filter (extended regex, matched against the requested host name)."""
    alternatives = []
    for host in normalise_hosts(hosts):
        if host.startswith("."):
            alternatives.append(r"([a-z0-9-]+\.)*" + re.escape(host[1:]))
        else:
            alternatives.append(re.escape(host))
    if not alternatives:
        raise ValueError("an empty allow-list needs no proxy")
    return "^(" + "|".join(alternatives) + ")$\n"


def proxy_config() -> str:
    """tinyproxy's configuration: deny by default, log every decision to stdout."""
    lines = [
        f"Port {PROXY_PORT}",
        "Timeout 600",
        "MaxClients 100",
        # Connect: every request, connection and refusal, without Info's noise. No LogFile: stdout.
        "LogLevel Connect",
        "DisableViaHeader Yes",
        f'Filter "{_CONFIG_MOUNT}/filter"',
        "FilterType ere",
        "FilterURLs Off",
        "FilterDefaultDeny Yes",
        *(f"ConnectPort {port}" for port in CONNECT_PORTS),
        *(f"Allow {cidr}" for cidr in _CLIENT_RANGES),
    ]
    return "\n".join(lines) + "\n"


def proxy_environment(proxy_ip: str) -> dict[str, str]:
    """The environment that sends a sandbox's HTTP(S) traffic through the proxy."""
    url = f"http://{proxy_ip}:{PROXY_PORT}"
    return {
        "HTTP_PROXY": url,
        "HTTPS_PROXY": url,
        "http_proxy": url,
        "https_proxy": url,
        "NO_PROXY": "localhost,127.0.0.1",
        "no_proxy": "localhost,127.0.0.1",
    }


def describe_policy(hosts: Iterable[str]) -> str:
    """A human-readable account of what a sandbox with this allow-list can reach (``factory sandbox policy``)."""
    allowed = normalise_hosts(hosts)
    common = [
        "Sandboxes sit alone on an internal Docker network: no route out, no published ports,",
        "no DNS resolver that reaches outside, no address of the host or of another sandbox reachable.",
    ]
    if not allowed:
        return "\n".join(["Egress: none (empty allow-list, no proxy).", *common])
    shown = [f"  - {h[1:]} and its subdomains" if h.startswith(".") else f"  - {h}" for h in allowed]
    return "\n".join(
        [
            f"Egress: only through the allow-list proxy (tinyproxy, port {PROXY_PORT}), to:",
            *shown,
            f"HTTPS (CONNECT) only to ports {', '.join(str(p) for p in CONNECT_PORTS)}; plain HTTP to these hosts.",
            "Everything else, raw IP addresses included, is refused; each decision is logged by the proxy.",
            *common,
            "If the proxy is down, sandboxes have no network at all (fail closed).",
        ]
    )


def policy_hash(hosts: Iterable[str]) -> str:
    """Names the proxy of one allow-list (and configuration): same list, same proxy."""
    text = proxy_config() + host_filter(hosts)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


# -- networks ---------------------------------------------------------------------------


def ensure_internal_network(client: docker.DockerClient, name: str, labels: dict[str, str]) -> Network:
    """The sandbox's own internal network (found again after a retry). Refuses one that is not internal."""
    network = _find_network(client, name)
    if network is None:
        try:
            network = client.networks.create(
                name,
                driver="bridge",
                internal=True,
                check_duplicate=True,
                labels={**labels, LABEL_ROLE: ROLE_SANDBOX_NET},
                options=_INTERNAL_NET_OPTIONS,
            )
        except docker.errors.APIError as exc:
            network = _find_network(client, name)  # made meanwhile by a concurrent retry
            if network is None:
                raise SandboxError(f"could not create the sandbox network {name}: {_short(exc)}") from None
    attrs = network.attrs
    options = attrs.get("Options") or {}
    if not attrs.get("Internal") or options.get("com.docker.network.bridge.inhibit_ipv4") != "true":
        raise SandboxError(f"network {name} exists but is not an isolated internal network: refusing to use it")
    return network


def remove_network(client: docker.DockerClient, name: str, *, force: bool = True) -> bool:
    """Remove a network (idempotent); ``force`` first disconnects whatever is still attached.

    Returns whether it existed. Without ``force`` a network still in use is left alone (``SandboxError``).
    """
    network = _find_network(client, name)
    if network is None:
        return False
    if force:
        for container_id in network.attrs.get("Containers") or {}:
            with contextlib.suppress(docker.errors.APIError):
                network.disconnect(container_id, force=True)
    try:
        network.remove()
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        raise SandboxError(f"could not remove network {name}: {_short(exc)}") from None
    return True


def _find_network(client: docker.DockerClient, name: str) -> Network | None:
    try:
        network = client.networks.get(name)
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        raise SandboxError(f"Docker engine error looking up network {name}: {_short(exc)}") from None
    # `get` also matches by id prefix; only the exact name counts.
    return network if network.name == name else None


# -- the proxy --------------------------------------------------------------------------


class EgressProxy:
    """The allow-list proxies of one factory installation.

    ``config_dir/<hash>/`` holds the configuration and filter of each proxy, written by the
    host and mounted read-only into it.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        instance_id: str,
        config_dir: Path,
        image: str = "factory-sandbox:latest",
    ) -> None:
        self.client = client
        self.instance_id = instance_id
        self.config_dir = config_dir
        self.image = image
        self._lock = _lock_for(instance_id)

    @property
    def out_network_name(self) -> str:
        return f"factory-{self.instance_id}-egress-out"

    def container_name(self, hosts: Iterable[str]) -> str:
        return f"factory-{self.instance_id}-egress-{policy_hash(hosts)}"

    def _labels(self, role: str) -> dict[str, str]:
        return {_LABEL_MANAGED: "true", _LABEL_INSTANCE: self.instance_id, LABEL_ROLE: role}

    # -- public ---------------------------------------------------------------------

    def ensure(self, hosts: Iterable[str]) -> Container:
        """The running proxy of this allow-list: found, restarted if stopped, or created; ready to serve."""
        allowed = normalise_hosts(hosts)
        if not allowed:
            raise ValueError("an empty allow-list needs no proxy")
        with self._lock:
            config = self._write_config(allowed)
            self._ensure_out_network()
            name = self.container_name(allowed)
            container = self._find(name)
            if container is not None and container.status == "running":
                return container
            if container is not None:
                try:
                    container.start()
                except docker.errors.APIError:
                    container.remove(force=True)
                    container = None
            if container is None:
                container = self._create(name, config)
            self._wait_ready(container)
            return container

    def attach(self, hosts: Iterable[str], network_name: str) -> str:
        """Connect the allow-list's proxy to a sandbox network; returns the proxy's address on it."""
        try:
            with self._lock:
                container = self.ensure(hosts)
                ip = self._address_on(container, network_name)
                if ip is None:
                    self.client.api.connect_container_to_network(str(container.id), network_name)
                    container.reload()
                    ip = self._address_on(container, network_name)
                if container.status != "running" or not ip:
                    raise SandboxError(f"egress proxy {container.name} is not running on {network_name}")
                return ip
        except docker.errors.APIError as exc:
            raise SandboxError(f"egress proxy unavailable: {_short(exc)}") from None

    def detach(self, network_name: str) -> None:
        """Disconnect this installation's proxies from a sandbox network and remove any left serving nobody."""
        with self._lock:
            for container in self._proxies():
                if self._address_on(container, network_name, running_only=False) is not None:
                    with contextlib.suppress(docker.errors.APIError):
                        self.client.api.disconnect_container_from_network(str(container.id), network_name, force=True)
            self.remove_idle()

    def remove_idle(self) -> list[str]:
        """Remove proxies attached to no sandbox network, then the egress bridge if no proxy is left."""
        removed = []
        with self._lock:
            proxies = self._proxies()
            for container in proxies:
                networks = set((container.attrs.get("NetworkSettings") or {}).get("Networks") or {})
                if networks - {self.out_network_name}:
                    continue
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)
                removed.append(str(container.name))
            if len(removed) == len(proxies):
                # Still in use by something else: left for the next clean-up.
                with contextlib.suppress(SandboxError):
                    remove_network(self.client, self.out_network_name, force=False)
        return removed

    def problem(self, network_name: str) -> str | None:
        """Why a sandbox on ``network_name`` has no egress right now (None when its proxy is up)."""
        for container in self._proxies():
            ip = self._address_on(container, network_name, running_only=False)
            if ip is None:
                continue
            if container.status != "running":
                return f"egress proxy {container.name} is {container.status}: the sandbox has no network"
            return None
        return f"no egress proxy is attached to {network_name}: the sandbox has no network"

    def logs(self, hosts: Iterable[str], tail: int = 200) -> str:
        container = self._find(self.container_name(hosts))
        if container is None:
            return ""
        return bytes(container.logs(tail=tail)).decode("utf-8", errors="replace")

    # -- internals ------------------------------------------------------------------

    def _write_config(self, hosts: list[str]) -> Path:
        directory = self.config_dir / policy_hash(hosts)
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        for name, text in (("tinyproxy.conf", proxy_config()), ("filter", host_filter(hosts))):
            path = directory / name
            if not path.exists() or path.read_text() != text:
                staged = directory / f".{name}.tmp"
                staged.write_text(text)
                staged.chmod(0o644)
                staged.replace(path)
        return directory

    def _ensure_out_network(self) -> None:
        if _find_network(self.client, self.out_network_name) is not None:
            return
        try:
            self.client.networks.create(
                self.out_network_name,
                driver="bridge",
                check_duplicate=True,
                labels=self._labels(ROLE_EGRESS_OUT),
            )
        except docker.errors.APIError as exc:
            if _find_network(self.client, self.out_network_name) is None:
                raise SandboxError(f"could not create the egress network: {_short(exc)}") from None

    def _create(self, name: str, config: Path) -> Container:
        # Checked first: `containers.run` would otherwise try to pull a missing image from a registry.
        try:
            self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise SandboxError(f"egress proxy image {self.image!r} is missing: build it with `make image`") from None
        try:
            container: Container = self.client.containers.run(
                self.image,
                command=["tinyproxy", "-d", "-c", f"{_CONFIG_MOUNT}/tinyproxy.conf"],
                name=name,
                detach=True,
                user=f"{PROXY_UID}:{PROXY_UID}",
                labels=self._labels(ROLE_EGRESS),
                network=self.out_network_name,
                read_only=True,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges:true"],
                # It must not route packets between its networks: only tinyproxy carries traffic.
                sysctls={"net.ipv4.ip_forward": "0"},
                mem_limit="256m",
                pids_limit=128,
                # A crash restarts it (same addresses); `docker stop` leaves it down, and sandboxes without egress.
                restart_policy={"Name": "on-failure", "MaximumRetryCount": 5},
                volumes={str(config): {"bind": _CONFIG_MOUNT, "mode": "ro"}},
            )
        except docker.errors.APIError as exc:
            existing = self._find(name)  # a concurrent retry made it first
            if existing is None:
                raise SandboxError(f"could not start the egress proxy {name}: {_short(exc)}") from None
            container = existing
        return container

    def _wait_ready(self, container: Container) -> None:
        """Until tinyproxy accepts connections inside the container; a proxy that cannot start is removed."""
        deadline = time.monotonic() + _READY_TIMEOUT_S
        probe = ["bash", "-c", f": </dev/tcp/127.0.0.1/{PROXY_PORT}"]
        while True:
            container.reload()
            if container.status == "running":
                try:
                    if container.exec_run(probe, user=f"{PROXY_UID}:{PROXY_UID}").exit_code == 0:
                        return
                except docker.errors.APIError:
                    pass  # stopped between the two calls: judged below
            if time.monotonic() > deadline:
                logs = bytes(container.logs(tail=20)).decode("utf-8", errors="replace")
                last = (logs.strip().splitlines() or ["no output"])[-1]
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)
                raise SandboxError(f"egress proxy {container.name} did not start ({container.status}): {last[:200]}")
            time.sleep(0.05)

    def _find(self, name: str) -> Container | None:
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            raise SandboxError(f"Docker engine error: {_short(exc)}") from None

    def _proxies(self) -> list[Container]:
        labels = [f"{_LABEL_INSTANCE}={self.instance_id}", f"{LABEL_ROLE}={ROLE_EGRESS}"]
        return list(self.client.containers.list(all=True, filters={"label": labels}))

    @staticmethod
    def _address_on(container: Container, network_name: str, *, running_only: bool = True) -> str | None:
        networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        entry = networks.get(network_name)
        if entry is None:
            return None
        address = str(entry.get("IPAddress") or "")
        if running_only and not address:
            return None
        return address


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]

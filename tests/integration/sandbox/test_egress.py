"""Egress conformance: sandboxes reach the outside only through the allow-list proxy.

Real Docker, real tinyproxy. The "outside" is made by the test: the proxy's egress
bridge network, with two small HTTP servers on it (``allowed-<rand>`` and
``denied-<rand>``) that the proxy finds by name through Docker's DNS. Traffic goes
only to loopback or to the networks and containers these tests create; whatever
lies beyond (cloud metadata, Docker's default bridge, the host's other addresses)
is judged from the sandbox's routing table, never probed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from factory.config import SANDBOX_IMAGE
from factory.errors import ConfigError, SandboxError
from factory.models import SandboxLimits
from factory.sandbox import LABEL_INSTANCE, DockerSandboxes
from factory.sandbox.egress import (
    LABEL_ROLE,
    PROXY_PORT,
    ROLE_EGRESS,
    describe_policy,
    host_filter,
    normalise_hosts,
    proxy_config,
)

TEST_LABEL = "factory.test"
SERVER_PORT = 8000

# Runs inside the sandbox: small probes that print one JSON document.
PRELUDE = """
import concurrent.futures, errno, json, socket, urllib.error, urllib.request

def fetch(url, timeout=6):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return {"status": r.status, "body": r.read(300).decode(errors="replace")}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "reason": str(e.reason)}
    except Exception as e:
        return {"error": type(e).__name__ + ": " + str(getattr(e, "reason", e))}

def connect(host, port, timeout=6):
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        return "connected"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    finally:
        s.close()

def resolve(name):
    try:
        return sorted({a[4][0] for a in socket.getaddrinfo(name, 80)})
    except OSError:
        return "failed"

def parallel(fn, items):
    with concurrent.futures.ThreadPoolExecutor(len(items) or 1) as pool:
        return list(pool.map(lambda item: fn(*item), items))
"""


@dataclass
class Sandbox:
    sandboxes: DockerSandboxes
    container_id: str
    name: str
    ticket_id: str
    workflow_id: str
    limits: SandboxLimits
    workspace: Path

    @property
    def network(self) -> str:
        return f"{self.name}-net"

    def sh(self, command: str, timeout_s: float = 30) -> str:
        result = self.sandboxes.exec(self.container_id, command, timeout_s)
        assert result.exit_code == 0, f"{command!r} failed ({result.exit_code}): {result.output}"
        return result.output

    def py(self, body: str, timeout_s: float = 40) -> Any:
        """Run the prelude plus ``body`` with python3 in the sandbox; ``body`` prints one JSON value."""
        output = self.sh(f"python3 -c {shell_quote(PRELUDE + body)}", timeout_s)
        return json.loads(output.strip().splitlines()[-1])

    def reprovision(self) -> str:
        container_id, _, _ = self.sandboxes.provision(self.ticket_id, self.workflow_id, SANDBOX_IMAGE, self.limits)
        return container_id


@dataclass
class World:
    client: docker.DockerClient
    sandboxes: DockerSandboxes
    allowed: str
    denied: str
    outside: str
    allow_list: list[str]
    a: Sandbox
    b: Sandbox
    made: list[Sandbox] = field(default_factory=list)

    def ip_on(self, container: str, network: str) -> str:
        attrs = self.client.api.inspect_container(container)
        return str(attrs["NetworkSettings"]["Networks"][network]["IPAddress"])

    def a_proxy_ip(self) -> str:
        """The proxy's address on sandbox A's network."""
        return self.ip_on(self.sandboxes.egress.container_name(self.allow_list), self.a.network)

    def proxy(self, hosts: list[str]) -> Any:
        return self.client.containers.get(self.sandboxes.egress.container_name(hosts))

    def new_sandbox(self, hosts: list[str], prefix: str = "EGR") -> Sandbox:
        box = provision(self.sandboxes, hosts, prefix)
        self.made.append(box)
        return box


def provision(sandboxes: DockerSandboxes, hosts: list[str], prefix: str = "EGR") -> Sandbox:
    ticket_id = f"{prefix}-{uuid.uuid4().hex[:6]}"
    workflow_id = f"ticket-{ticket_id}"
    limits = SandboxLimits(memory="256m", cpus=0.5, pids=128, egress_allow=hosts)
    container_id, name, workspace = sandboxes.provision(ticket_id, workflow_id, SANDBOX_IMAGE, limits)
    return Sandbox(sandboxes, container_id, name, ticket_id, workflow_id, limits, workspace.root)


def wait_for_server(container: Any) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if container.exec_run(["bash", "-c", f": </dev/tcp/127.0.0.1/{SERVER_PORT}"]).exit_code == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"test server {container.name} did not start")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Iterator[World]:
    root = tmp_path_factory.mktemp("egress")
    sandboxes = DockerSandboxes(root / "workspaces")
    rand = uuid.uuid4().hex[:6]
    allowed, denied = f"allowed-{rand}", f"denied-{rand}"
    outside = sandboxes.egress.out_network_name
    labels = {TEST_LABEL: rand}
    servers: list[Any] = []
    world: World | None = None
    try:
        # The "outside": the proxy's egress network, made here so the servers can sit on it.
        docker_client.networks.create(outside, driver="bridge", labels=labels)
        for server in (allowed, denied):
            servers.append(
                docker_client.containers.run(
                    SANDBOX_IMAGE,
                    ["python3", "-m", "http.server", str(SERVER_PORT)],
                    name=server,
                    detach=True,
                    network=outside,
                    labels=labels,
                    cap_drop=["ALL"],
                    read_only=True,
                )
            )
        for container in servers:
            wait_for_server(container)
        allow_list = [allowed]
        world = World(
            docker_client,
            sandboxes,
            allowed,
            denied,
            outside,
            allow_list,
            a=provision(sandboxes, allow_list),
            b=provision(sandboxes, allow_list),
        )
        yield world
    finally:
        boxes = [world.a, world.b, *world.made] if world else []
        for box in boxes:
            with contextlib.suppress(Exception):
                sandboxes.destroy(box.name, box.workspace)
        for container in servers:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        # Anything of this installation left behind (proxies, networks), then the outside network.
        for container in docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_INSTANCE}={sandboxes.instance_id}"}
        ):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        for network in docker_client.networks.list(filters={"label": f"{LABEL_INSTANCE}={sandboxes.instance_id}"}):
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.networks.get(outside).remove()


# --------------------------------------------------------------------------
# Routing-table evidence


def sandbox_routes(box: Sandbox) -> list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]]:
    """(destination network, gateway) of each IPv4 route in the sandbox (gateway 0.0.0.0: on-link)."""
    routes = []
    for line in box.sh("cat /proc/net/route").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        dest, gateway, mask = (
            ipaddress.IPv4Address(int(x, 16).to_bytes(4, "little")) for x in (fields[1], fields[2], fields[7])
        )
        routes.append((ipaddress.IPv4Network(f"{dest}/{mask}"), gateway))
    return routes


def host_addresses() -> set[ipaddress.IPv4Address]:
    """Every IPv4 address held by this host (the Docker engine's host: the same machine in CI)."""
    addresses = set()
    last = None
    for line in Path("/proc/net/fib_trie").read_text().splitlines():
        text = line.strip()
        if text.startswith("|--"):
            last = text[3:].strip()
        elif text == "/32 host LOCAL" and last:
            addresses.add(ipaddress.IPv4Address(last))
    return addresses


def network_members(client: docker.DockerClient, network: str) -> set[ipaddress.IPv4Address]:
    containers = client.api.inspect_network(network).get("Containers") or {}
    return {ipaddress.IPv4Interface(c["IPv4Address"]).ip for c in containers.values() if c.get("IPv4Address")}


def reachable_hops(world: World, box: Sandbox, target: str) -> set[str]:
    """The ways ``target`` could be reached from the sandbox, judged from its routes alone.

    "on-link": a route puts it on the sandbox's own network. "gateway <ip>": a route sends it to a
    gateway that something actually holds (the host, or a container on the network). A route to a
    gateway nobody holds leads nowhere and is not counted.
    """
    holders = host_addresses() | network_members(world.client, box.network)
    hops = set()
    address = ipaddress.IPv4Address(target)
    for destination, gateway in sandbox_routes(box):
        if address not in destination:
            continue
        if int(gateway) == 0:
            hops.add("on-link")
        elif gateway in holders:
            hops.add(f"gateway {gateway}")
    return hops


# --------------------------------------------------------------------------
# Through the proxy


def test_allowed_host_is_reachable_through_the_proxy(world: World) -> None:
    """A GET to the allow-listed host, by name, through HTTP_PROXY, returns 200 from the test server."""
    result = world.a.py(f"print(json.dumps(fetch('http://{world.allowed}:{SERVER_PORT}/')))")
    assert result["status"] == 200, result
    assert "Directory listing" in result["body"]
    logs = world.sandboxes.egress.logs(world.allow_list)
    assert f'Established connection to host "{world.allowed}"' in logs


def test_disallowed_host_is_refused_and_the_decision_logged(world: World) -> None:
    """A host off the list gets 403 from the proxy, which logs the refusal."""
    result = world.a.py(f"print(json.dumps(fetch('http://{world.denied}:{SERVER_PORT}/')))")
    assert result["status"] == 403, result
    assert result["reason"] == "Filtered"
    logs = world.sandboxes.egress.logs(world.allow_list)
    assert f'Proxying refused on filtered domain "{world.denied}"' in logs


def test_raw_ip_through_the_proxy_is_refused(world: World) -> None:
    """The filter is by name: the allowed server's own IP address is refused."""
    ip = world.ip_on(world.allowed, world.outside)
    result = world.a.py(f"print(json.dumps(fetch('http://{ip}:{SERVER_PORT}/')))")
    assert result["status"] == 403, result
    assert f'Proxying refused on filtered domain "{ip}"' in world.sandboxes.egress.logs(world.allow_list)


def test_https_connect_only_to_allowed_ports(world: World) -> None:
    """CONNECT (HTTPS tunnelling) to an allowed host on a port other than 443/80 is refused."""
    body = f"""
s = socket.create_connection(('{world.a_proxy_ip()}', {PROXY_PORT}), timeout=6)
s.sendall(b'CONNECT {world.allowed}:{SERVER_PORT} HTTP/1.1\\r\\nHost: {world.allowed}:{SERVER_PORT}\\r\\n\\r\\n')
print(json.dumps(s.recv(200).decode(errors='replace').splitlines()[0]))
"""
    status_line = world.a.py(body)
    assert status_line.split()[1] == "403", status_line


# --------------------------------------------------------------------------
# Around the proxy


def test_direct_connection_bypassing_the_proxy_fails(world: World) -> None:
    """Connecting straight to a server's address (no proxy) fails, and no route leads there."""
    targets = [
        (world.ip_on(world.denied, world.outside), SERVER_PORT),
        (world.ip_on(world.allowed, world.outside), SERVER_PORT),
    ]
    results = world.a.py(f"print(json.dumps(parallel(connect, {targets!r})))")
    assert all(r != "connected" for r in results), results
    for ip, _ in targets:
        assert reachable_hops(world, world.a, ip) == set()


def test_dns_lookups_of_outside_names_fail(world: World, docker_client: docker.DockerClient) -> None:
    """No resolver inside reaches outside: neither a public name nor the allowed server's name resolves."""
    names = [("example.com",), (world.allowed,), ("pypi.org",)]
    result = world.a.py(f"print(json.dumps(parallel(resolve, {names!r})))")
    assert result == ["failed", "failed", "failed"]
    host_config = docker_client.api.inspect_container(world.a.container_id)["HostConfig"]
    assert host_config["Dns"] == ["127.0.0.1"]
    nameservers = [
        line.split()[1] for line in world.a.sh("cat /etc/resolv.conf").splitlines() if line.startswith("nameserver")
    ]
    assert nameservers and all(ipaddress.ip_address(ns).is_loopback for ns in nameservers)


def test_no_route_to_metadata_docker_gateway_or_host(world: World, docker_client: docker.DockerClient) -> None:
    """By the routing table: the only network the sandbox can reach is its own, which holds just the
    proxy; cloud metadata, Docker's default bridge gateway and every host address are out of reach.

    Docker 20.10 gives a container on an internal network a default route via the network's gateway
    address; the network is made without a host address (inhibit_ipv4), so nobody holds that gateway.
    """
    routes = sandbox_routes(world.a)
    subnet = ipaddress.IPv4Network(docker_client.api.inspect_network(world.a.network)["IPAM"]["Config"][0]["Subnet"])
    assert [dest for dest, gw in routes if int(gw) == 0] == [subnet]  # on-link: its own network only
    holders = host_addresses() | network_members(docker_client, world.a.network)
    for dest, gw in routes:
        if int(gw):
            assert dest == ipaddress.IPv4Network("0.0.0.0/0")
            assert gw not in holders, f"default route via {gw}, which is held by something"
    assert not any(a in subnet for a in host_addresses()), "the host holds an address on the sandbox network"
    assert network_members(docker_client, world.a.network) == {
        ipaddress.IPv4Address(world.ip_on(world.a.container_id, world.a.network)),
        ipaddress.IPv4Address(world.a_proxy_ip()),
    }
    bridge = docker_client.api.inspect_network("bridge")["IPAM"]["Config"][0]
    docker0 = bridge.get("Gateway") or str(next(ipaddress.IPv4Network(bridge["Subnet"]).hosts()))
    for target in ("169.254.169.254", docker0, *map(str, host_addresses())):
        assert reachable_hops(world, world.a, target) == set(), target
    # No IPv6 either: no address but loopback, no route out.
    assert all(line.split()[-1] == "lo" for line in world.a.sh("cat /proc/net/if_inet6").splitlines() if line.strip())


def test_host_services_are_unreachable(world: World) -> None:
    """A service listening on all the host's addresses (started here) cannot be reached from the
    sandbox, not via its network's gateway nor via the egress network's gateway."""
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    accepted: list[Any] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                conn, peer = listener.accept()
                conn.close()
                accepted.append(peer)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        gateways = [
            world.client.api.inspect_network(net)["IPAM"]["Config"][0]["Gateway"]
            for net in (world.a.network, world.outside)
        ]
        results = world.a.py(f"print(json.dumps(parallel(connect, {[(gw, port) for gw in gateways]!r})))")
        # The check itself works: the listener is reachable from here on the egress gateway.
        with socket.create_connection((gateways[1], port), timeout=3):
            pass
    finally:
        time.sleep(0.3)
        stop.set()
        thread.join()
        listener.close()
    assert all(r != "connected" for r in results), results
    assert len(accepted) == 1  # only the host's own check above


def test_two_sandboxes_cannot_reach_each_other(world: World) -> None:
    """Each sandbox has its own network; a listener in one cannot be reached from the other, directly
    or through the proxy (which both share)."""
    assert world.a.network != world.b.network
    world.client.containers.get(world.b.container_id).exec_run(
        ["python3", "-m", "http.server", "8001"], user="1000:1000", detach=True
    )
    b_ip = world.ip_on(world.b.container_id, world.b.network)
    deadline = time.monotonic() + 10
    while world.b.py(f"print(json.dumps(connect('{b_ip}', 8001)))") != "connected":  # up, as seen by itself
        assert time.monotonic() < deadline
        time.sleep(0.2)

    direct = world.a.py(f"print(json.dumps(connect('{b_ip}', 8001)))")
    via_proxy = world.a.py(f"print(json.dumps([fetch('http://{b_ip}:8001/'), fetch('http://{world.b.name}:8001/')]))")
    assert direct != "connected"
    assert reachable_hops(world, world.a, b_ip) == set()
    assert [r.get("status") for r in via_proxy] == [403, 403], via_proxy


# --------------------------------------------------------------------------
# Engine configuration and life cycle


def test_engine_config_of_sandbox_and_proxy(world: World, docker_client: docker.DockerClient) -> None:
    """Sandbox: its own internal network, no published ports, proxy env, CA bundle read-only.
    Proxy: unprivileged, read-only, no capabilities, no forwarding, config mounted read-only."""
    attrs = docker_client.api.inspect_container(world.a.container_id)
    assert attrs["HostConfig"]["NetworkMode"] == world.a.network
    assert not attrs["HostConfig"].get("PortBindings")
    assert not attrs["NetworkSettings"].get("Ports")
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    proxy_url = f"http://{world.a_proxy_ip()}:{PROXY_PORT}"
    assert {env[k] for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")} == {proxy_url}
    assert env["NO_PROXY"] == "localhost,127.0.0.1"
    ca = [m for m in attrs["Mounts"] if m["Destination"] == "/etc/ssl/certs/ca-certificates.crt"]
    assert len(ca) == 1 and ca[0]["RW"] is False
    network = docker_client.api.inspect_network(world.a.network)
    assert network["Internal"] is True
    assert network["Options"]["com.docker.network.bridge.inhibit_ipv4"] == "true"

    proxy = docker_client.api.inspect_container(world.proxy(world.allow_list).id)
    assert proxy["Config"]["User"] == "1000:1000"
    assert proxy["Config"]["Labels"][LABEL_ROLE] == ROLE_EGRESS
    assert proxy["HostConfig"]["ReadonlyRootfs"] is True
    assert proxy["HostConfig"]["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in proxy["HostConfig"]["SecurityOpt"]
    assert not proxy["HostConfig"].get("PortBindings")
    assert proxy["HostConfig"]["Sysctls"] == {"net.ipv4.ip_forward": "0"}
    assert [m["RW"] for m in proxy["Mounts"]] == [False]
    assert set(proxy["NetworkSettings"]["Networks"]) == {world.outside, world.a.network, world.b.network}
    assert world.proxy(world.allow_list).top()["Processes"][0][0] != "root"


def test_one_proxy_per_allow_list_and_provision_is_idempotent(world: World, docker_client: docker.DockerClient) -> None:
    """Both sandboxes share one proxy; provisioning again returns the same container on the same network."""
    proxies = docker_client.containers.list(
        all=True,
        filters={"label": [f"{LABEL_INSTANCE}={world.sandboxes.instance_id}", f"{LABEL_ROLE}={ROLE_EGRESS}"]},
    )
    assert [p.name for p in proxies] == [world.sandboxes.egress.container_name(world.allow_list)]
    assert world.a.reprovision() == world.a.container_id
    assert len(docker_client.networks.list(names=[world.a.network])) == 1


def test_proxy_down_fails_closed_and_next_provision_restarts_it(world: World) -> None:
    """With its proxy stopped a sandbox has no way out (and the reason is reported); provisioning again
    (an activity retry) starts the proxy, and egress works again. Destroying the last user removes it."""
    hosts = [world.allowed, "unused.invalid"]  # its own allow-list, so its own proxy
    box = world.new_sandbox(hosts, "DOWN")
    url = f"http://{world.allowed}:{SERVER_PORT}/"
    assert box.py(f"print(json.dumps(fetch('{url}')))")["status"] == 200

    world.proxy(hosts).stop(timeout=1)
    server_ip = world.ip_on(world.allowed, world.outside)
    down = box.py(
        f"print(json.dumps(parallel(lambda f, *a: f(*a), [(fetch, '{url}'), (connect, '{server_ip}', {SERVER_PORT})])))"
    )
    assert "status" not in down[0], down
    assert down[1] != "connected"
    problem = world.sandboxes.egress.problem(box.network)
    assert problem is not None and "exited" in problem

    assert box.reprovision() == box.container_id
    assert world.proxy(hosts).status == "running"
    assert world.sandboxes.egress.problem(box.network) is None
    assert box.py(f"print(json.dumps(fetch('{url}')))")["status"] == 200

    proxy_name = world.sandboxes.egress.container_name(hosts)
    assert world.sandboxes.destroy(box.name, box.workspace) is True
    with pytest.raises(docker.errors.NotFound):
        world.client.networks.get(box.network)
    with pytest.raises(docker.errors.NotFound):
        world.client.containers.get(proxy_name)
    assert world.sandboxes.destroy(box.name, box.workspace) is False  # idempotent
    assert world.proxy(world.allow_list).status == "running"  # the other allow-list's proxy is untouched


def test_proxy_that_cannot_start_fails_provisioning(world: World, docker_client: docker.DockerClient) -> None:
    """No proxy (here: its image is missing) means no sandbox, never a sandbox on an open network."""
    broken = DockerSandboxes(
        world.sandboxes.workspaces_root, proxy_image=f"factory-no-such-image:{uuid.uuid4().hex[:8]}"
    )
    ticket_id = f"NOPROXY-{uuid.uuid4().hex[:6]}"
    limits = SandboxLimits(egress_allow=["pypi.org"])
    with pytest.raises(SandboxError, match=r"egress proxy image .* is missing"):
        broken.provision(ticket_id, f"ticket-{ticket_id}", SANDBOX_IMAGE, limits)
    name = f"factory-{broken.instance_id}-ticket-{ticket_id}"
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(name)
    broken.destroy(name)
    assert docker_client.networks.list(names=[f"{name}-net"]) == []


def test_empty_allow_list_means_no_network_and_no_proxy(world: World, docker_client: docker.DockerClient) -> None:
    """Without an allow-list there is no proxy and no network at all, only loopback."""
    box = world.new_sandbox([], "NONET")
    attrs = docker_client.api.inspect_container(box.container_id)
    assert attrs["HostConfig"]["NetworkMode"] == "none"
    assert not any(e.upper().startswith(("HTTP_PROXY=", "HTTPS_PROXY=")) for e in attrs["Config"]["Env"])
    assert sandbox_routes(box) == []
    assert docker_client.networks.list(names=[box.network]) == []


def test_invalid_allow_list_entry_is_refused(world: World) -> None:
    """An entry that is not a plain host name is a (permanent) configuration error, not a wider policy."""
    with pytest.raises(ConfigError, match="invalid egress host"):
        world.sandboxes.provision("BAD-1", "ticket-BAD-1", SANDBOX_IMAGE, SandboxLimits(egress_allow=["*"]))


# --------------------------------------------------------------------------
# The policy as text (no Docker)


def test_filter_is_anchored_and_escaped() -> None:
    assert host_filter(["PyPI.org", "files.pythonhosted.org", "pypi.org"]) == (
        r"^(files\.pythonhosted\.org|pypi\.org)$" + "\n"
    )
    assert host_filter(["*.example.com"]) == r"^(([a-z0-9-]+\.)*example\.com)$" + "\n"
    for bad in ("http://pypi.org", "pypi.org:443", "a b", "*", "pypi.org/simple", "exa*mple.com", ""):
        with pytest.raises(ValueError):
            normalise_hosts([bad])
    config = proxy_config()
    for line in ("FilterDefaultDeny Yes", "FilterType ere", "ConnectPort 443", "ConnectPort 80", f"Port {PROXY_PORT}"):
        assert line in config.splitlines()


def test_policy_description() -> None:
    text = describe_policy(["pypi.org", ".example.com"])
    assert "pypi.org" in text and "example.com and its subdomains" in text
    assert "fail closed" in text
    assert describe_policy([]).startswith("Egress: none")
    assert DockerSandboxes.policy(["pypi.org"]) == describe_policy(["pypi.org"])


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"

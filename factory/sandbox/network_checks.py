"""Network controls of a live sandbox, for `factory sandbox check` (the tests prove more, on their own networks).

They send nothing beyond the sandbox and its own proxy: isolation is read from the
engine's description of the sandbox's network, an outside name lookup goes to the
sandbox's own resolver setting, and the proxy is asked for a name that is not on the
allow-list (it refuses by name, without resolving or connecting anywhere).
"""

from __future__ import annotations

from factory.sandbox.conformance import Control, ControlResult
from factory.sandbox.docker import DockerSandboxes

__all__ = ["NETWORK_CONTROLS", "check_network_isolated", "check_outside_names_do_not_resolve", "check_proxy_denies"]

_DENIED_URL = "http://not-on-the-allow-list.invalid/"


def check_network_isolated(sandboxes: DockerSandboxes, container: str) -> ControlResult:
    """No network at all, or only its own internal network with no host address on it."""
    name = "network isolated (no route out, no ingress)"
    attrs = sandboxes.client.containers.get(container).attrs
    if attrs["HostConfig"].get("PortBindings"):
        return ControlResult(name, False, "ports are published")
    if attrs["HostConfig"].get("NetworkMode") == "none":
        return ControlResult(name, True, "no network (empty allow-list)")
    networks = list((attrs.get("NetworkSettings") or {}).get("Networks") or {})
    if len(networks) != 1:
        return ControlResult(name, False, f"attached to {len(networks)} networks: {', '.join(networks)}")
    network = sandboxes.client.networks.get(networks[0]).attrs
    options = network.get("Options") or {}
    if not network.get("Internal"):
        return ControlResult(name, False, f"network {networks[0]} is not internal")
    if options.get("com.docker.network.bridge.inhibit_ipv4") != "true":
        return ControlResult(name, False, f"the host has an address on {networks[0]}")
    return ControlResult(name, True, f"own internal network {networks[0]}, no host address on it")


def check_outside_names_do_not_resolve(sandboxes: DockerSandboxes, container: str) -> ControlResult:
    name = "outside names do not resolve"
    lookup = "python3 -c 'import socket; socket.getaddrinfo(\"example.com\", 443)' 2>/dev/null"
    result = sandboxes.exec(container, f"{lookup} && echo RESOLVED || echo FAILED", 20)
    passed = "FAILED" in result.output and "RESOLVED" not in result.output
    return ControlResult(name, passed, "lookup failed" if passed else "example.com resolved inside the sandbox")


def check_proxy_denies(sandboxes: DockerSandboxes, container: str) -> ControlResult:
    """A host that is not on the allow-list is refused by the proxy (or there is no way out at all)."""
    name = "proxy refuses hosts not on the allow-list"
    script = (
        "import urllib.request, urllib.error, os\n"
        "if not os.environ.get('HTTP_PROXY'):\n"
        "    print('NO-PROXY')\n"
        "else:\n"
        "    try:\n"
        f"        urllib.request.urlopen('{_DENIED_URL}', timeout=10)\n"
        "        print('ALLOWED')\n"
        "    except urllib.error.HTTPError as e:\n"
        "        print('HTTP', e.code)\n"
        "    except Exception as e:\n"
        "        print('ERROR', type(e).__name__)\n"
    )
    output = sandboxes.exec(container, f"python3 - <<'EOF'\n{script}EOF", 30).output.strip()
    if output == "NO-PROXY":
        return ControlResult(name, True, "no proxy: the sandbox has no network")
    if output.startswith("HTTP 403"):
        return ControlResult(name, True, "proxy answered 403")
    return ControlResult(name, False, f"unexpected: {output[-120:]}")


NETWORK_CONTROLS: list[Control] = [check_network_isolated, check_outside_names_do_not_resolve, check_proxy_denies]

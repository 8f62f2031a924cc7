"""Isolation conformance: real probes, run inside a live sandbox, of each control it must have.

Every control is a function ``(sandboxes, container) -> ControlResult``. It looks at
the container from both sides: what the engine says it configured (``inspect``)
and what a process inside actually gets (``/proc``, failing writes, a killed
allocation, a refused fork). A control never trusts the configuration alone, and
never probes in a way that could hurt the host: the memory and fork probes run
only once the engine and the container's own cgroup both show a limit, and they
are bounded by that limit.

``run_controls`` runs them all; ``check_live_sandbox`` provisions a sandbox exactly
as a ticket would get one (live settings), runs them, and always destroys it.
``format_table`` prints the results for ``factory sandbox check``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factory.config import SANDBOX_IMAGE
from factory.sandbox.docker import DockerSandboxes
from factory.sandbox.quota import image_path, is_limited, parse_size, unmount_limited

if TYPE_CHECKING:
    from factory.config import Settings

__all__ = [
    "CANARY_ENV_VAR",
    "CONTROL_NAMES",
    "Control",
    "ControlResult",
    "check_capabilities_dropped",
    "check_command_timeout",
    "check_live_sandbox",
    "check_memory_limit",
    "check_no_credentials",
    "check_no_docker_socket_or_host_paths",
    "check_no_new_privileges",
    "check_non_root",
    "check_pids_limit",
    "check_read_only_root",
    "check_seccomp",
    "check_workspace_size",
    "format_table",
    "run_controls",
]

# The variable that carries the canary in the checking process's own environment.
CANARY_ENV_VAR = "FACTORY_SANDBOX_CHECK_CANARY"

# Highest pids limit still worth calling a limit (and still safe to probe with a fork loop).
MAX_PIDS_LIMIT = 4096
# Places inside the sandbox a credential could have been left in.
_SEARCHED_DIRS = ("/workspace", "/home/agent", "/out", "/inbox", "/tmp")
_CREDENTIAL_FILES = (
    "/home/agent/.git-credentials",
    "/home/agent/.netrc",
    "/home/agent/.ssh",
    "/home/agent/.docker/config.json",
    "/home/agent/.aws/credentials",
    "/home/agent/.config/gh/hosts.yml",
    "/home/agent/.pypirc",
    "/home/agent/.npmrc",
    "/workspace/.git-credentials",
    "/workspace/.netrc",
)
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW(OR)?D|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE)
_URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)
_WORKSPACE_BINDS = {"/workspace": ("repo", True), "/out": ("out", True), "/inbox": ("inbox", False)}
_DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
_BUSY = "Resource temporarily unavailable"


@dataclass(frozen=True)
class ControlResult:
    name: str
    passed: bool
    detail: str


Control = Callable[[DockerSandboxes, str], ControlResult]


# -- helpers ------------------------------------------------------------------------


def _inspect(sandboxes: DockerSandboxes, container: str) -> dict[str, Any]:
    attrs: dict[str, Any] = sandboxes.client.api.inspect_container(container)
    return attrs


def _sh(sandboxes: DockerSandboxes, container: str, command: str, timeout_s: float = 30) -> str:
    """Output of a command that must succeed."""
    result = sandboxes.exec(container, command, timeout_s)
    if result.exit_code != 0:
        raise RuntimeError(f"probe {command[:60]!r} failed ({result.exit_code}): {result.output.strip()[-200:]}")
    return result.output


def _status_pair(sandboxes: DockerSandboxes, container: str) -> tuple[dict[str, str], dict[str, str]]:
    """``/proc/<pid>/status`` of a command run in the sandbox and of the container's first process."""
    output = _sh(sandboxes, container, "cat /proc/self/status; echo '@@@'; cat /proc/1/status")
    own, _, first = output.partition("@@@\n")
    return _parse_status(own), _parse_status(first)


def _parse_status(text: str) -> dict[str, str]:
    return {
        key.strip(): value.strip() for key, sep, value in (line.partition(":") for line in text.splitlines()) if sep
    }


def _cgroup_value(sandboxes: DockerSandboxes, container: str, v1: str, v2: str) -> str:
    """A cgroup setting as the container sees it (cgroup v1 or v2 layout)."""
    return _sh(sandboxes, container, f"cat {v1} 2>/dev/null || cat {v2}").strip()


def _responsive(sandboxes: DockerSandboxes, container: str, wait_s: float = 15) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        with contextlib.suppress(Exception):
            if sandboxes.exec(container, "echo alive", 10).output.strip() == "alive":
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def _mib(value: int) -> str:
    return f"{value / 1024**2:.0f} MiB"


# -- the controls ---------------------------------------------------------------------


def check_non_root(sandboxes: DockerSandboxes, container: str) -> ControlResult:
    """Commands and the container's first process both run as a uid other than 0."""
    name = "runs as non-root"
    user = str(_inspect(sandboxes, container)["Config"].get("User") or "")
    uid = _sh(sandboxes, container, "id -u").strip()
    _, first = _status_pair(sandboxes, container)
    first_uids = first.get("Uid", "").split()
    configured_root = user.split(":")[0] in ("", "0", "root")
    ok = uid not in ("", "0") and bool(first_uids) and "0" not in first_uids and not configured_root
    detail = f"commands uid {uid}, first process uids {' '.join(first_uids) or '?'}, configured user {user or 'root'!r}"
    return ControlResult(name, ok, detail)


def check_capabilities_dropped(sandboxes: DockerSandboxes, container: str) -> ControlResult:
    """No effective, permitted, bounding or ambient capability, in commands or in the first process."""
    name = "all capabilities dropped"
    own, first = _status_pair(sandboxes, container)
    held = [
        f"{who} {field}={status.get(field, '?')}"
        for who, status in (("command", own), ("pid 1", first))
        for field in ("CapEff", "CapPrm", "CapBnd", "CapAmb")
        if status.get(field) is None or int(status[field], 16) != 0
    ]
    added = _inspect(sandboxes, container)["HostConfig"].get("CapAdd") or []
    if added:
        held.append(f"cap_add {added}")
    detail = "CapEff/CapPrm/CapBnd/CapAmb all 0" if not held else "held: " + ", ".join(held)
    return ControlResult(name, not held, detail)


def check_no_new_privileges(sandboxes: DockerSandboxes, container: str) -> ControlResult:
    """``NoNewPrivs: 1``: no setuid binary or file capability can raise privileges."""
    name = "no-new-privileges"
    own, first = _status_pair(sandboxes, container)
    values = (own.get("NoNewPrivs", "?"), first.get("NoNewPrivs", "?"))
    return ControlResult(name, values == ("1", "1"), f"NoNewPrivs command={values[0]} pid 1={values[1]}")


def check_seccomp(sandboxes: DockerSandboxes, container: str) -> ControlResult:
    """A seccomp filter is active (``Seccomp: 2``), not disabled by configuration or privileged mode."""
    name = "seccomp filter active"
    own, first = _status_pair(sandboxes, container)
    host_config = _inspect(sandboxes, container)["HostConfig"]
    options = [str(o) for o in host_config.get("SecurityOpt") or []]
    unconfined = [o for o in options if o.replace(":", "=").startswith("seccomp=unconfined")]
    values = (own.get("Seccomp", "?"), first.get("Seccomp", "?"))
    ok = values == ("2", "2") and not unconfined and not host_config.get("Privileged")
    detail = f"Seccomp command={values[0]} pid 1={values[1]} (2 = filter), filters {own.get('Seccomp_filters', '?')}"
    if unconfined or host_config.get("Privileged"):
        detail += "; configured unconfined/privileged"
    return ControlResult(name, ok, detail)


def check_read_only_root(sandboxes: DockerSandboxes, container: str) -> ControlResult:
    """Writing to the root file system fails as read-only (not just for lack of permission); /workspace is writable."""
    name = "read-only root, writable workspace"
    token = uuid.uuid4().hex[:12]
    write = sandboxes.exec(container, f"echo x > /etc/.factory-probe-{token}", 15)
    root_options = _sh(sandboxes, container, "awk '$2 == \"/\" {print $4}' /proc/self/mounts").split()
    root_ro = bool(root_options) and root_options[-1].split(",")[0] == "ro"
    workspace = sandboxes.exec(
        container, f"echo x > /workspace/.factory-probe-{token} && rm /workspace/.factory-probe-{token}", 15
    )
    configured = bool(_inspect(sandboxes, container)["HostConfig"].get("ReadonlyRootfs"))
    refused_as_ro = write.exit_code != 0 and "Read-only file system" in write.output
    ok = refused_as_ro and root_ro and configured and workspace.exit_code == 0
    detail = (
        f"write to /etc: {'refused, read-only' if refused_as_ro else write.output.strip()[-80:] or 'succeeded'}; "
        f"/ mounted {'ro' if root_ro else 'rw'}; "
        f"/workspace {'writable' if workspace.exit_code == 0 else 'NOT writable'}"
    )
    return ControlResult(name, ok, detail)


def check_memory_limit(sandboxes: DockerSandboxes, container: str) -> ControlResult:
    """A process allocating past the memory limit is killed (137); the sandbox keeps running."""
    name = "memory limit enforced"
    before = _inspect(sandboxes, container)
    host_config = before["HostConfig"]
    limit = int(host_config.get("Memory") or 0)
    swap = int(host_config.get("MemorySwap") or 0)
    if limit <= 0:
        return ControlResult(name, False, "no memory limit configured")
    if swap != limit:
        return ControlResult(name, False, f"memory {_mib(limit)} but memory+swap {swap} (extra swap allowed)")
    seen = _cgroup_value(
        sandboxes, container, "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"
    )
    if seen != str(limit):
        return ControlResult(name, False, f"configured {_mib(limit)}, but the container's cgroup says {seen!r}")
    size = limit + 64 * 1024**2
    script = f"x = b'\\x01' * {size}; print('allocated')"
    probe = sandboxes.exec(container, f'python3 -c {shlex.quote(script)}; echo "child-exit=$?"', 180)
    # A line of its own: bash's "Killed" notice quotes the command, which contains the word.
    killed = "child-exit=137" in probe.output and not re.search(r"^allocated$", probe.output, re.MULTILINE)
    after = _inspect(sandboxes, container)
    survived = (
        bool(after["State"].get("Running"))
        and after["State"].get("StartedAt") == before["State"].get("StartedAt")
        and _responsive(sandboxes, container)
    )
    exit_seen = re.search(r"child-exit=(\d+)", probe.output)
    detail = (
        f"limit {_mib(limit)}; allocating {_mib(size)}: child exit {exit_seen.group(1) if exit_seen else '?'}"
        f"{' (killed)' if killed else ''}; sandbox {'still running' if survived else 'NOT running'}"
    )
    return ControlResult(name, killed and survived, detail)


def check_pids_limit(sandboxes: DockerSandboxes, container: str) -> ControlResult:
    """A fork loop hits the pids limit ('Resource temporarily unavailable'); the sandbox stays responsive.

    The loop is bounded (limit + 32 iterations, under ``timeout``), and runs only once
    the container's own pids cgroup shows the limit, so the host is never at risk.
    """
    name = "pids limit stops a fork bomb"
    limit = int(_inspect(sandboxes, container)["HostConfig"].get("PidsLimit") or 0)
    if limit <= 0:
        return ControlResult(name, False, "no pids limit configured")
    if limit > MAX_PIDS_LIMIT:
        return ControlResult(name, False, f"pids limit {limit} is above {MAX_PIDS_LIMIT}: not a limit")
    seen = _cgroup_value(sandboxes, container, "/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max")
    if seen != str(limit):
        return ControlResult(name, False, f"configured {limit}, but the container's cgroup says {seen!r}")
    token = uuid.uuid4().hex[:12]
    count, log = f"/tmp/.fork-count-{token}", f"/tmp/.fork-log-{token}"
    marker = f"sleep 59.{uuid.uuid4().int % 10**6:06d}"  # the argv of every probe process: found again below
    seconds = 3 + limit // 200
    loop = f"for i in {{1..{limit + 32}}}; do {marker} & echo $i > {count}; done; wait"
    # `timeout` leads a process group of its own and signals all of it; the loop's stragglers (a fork racing
    # the signal) are swept by that group id afterwards. Nothing outside the probe's group is touched.
    command = (
        f"timeout -k 2 {seconds} bash -c {shlex.quote(loop)} > {log} 2>&1 & group=$!; wait $group; code=$?; "
        f'kill -KILL -- -$group 2>/dev/null; echo "loop-exit=$code"; '
        f'echo "started=$(cat {count} 2>/dev/null)"; echo "busy=$(grep -c {shlex.quote(_BUSY)} {log})"; '
        f"rm -f {count} {log}"
    )
    probe = sandboxes.exec(container, command, seconds + 60)
    started_match = re.search(r"started=(\d+)", probe.output)
    started = int(started_match.group(1)) if started_match else -1
    refused = bool(re.search(r"^busy=[1-9]", probe.output, re.MULTILINE))
    stopped = 0 <= started < limit + 32
    alive = _responsive(sandboxes, container) and sandboxes.is_running(container)
    left = sum(line.strip() == marker for line in _sh(sandboxes, container, "ps -eo args").splitlines()) if alive else 0
    detail = (
        f"limit {limit}: {started} processes started, then fork "
        f"{'failed: ' + _BUSY if refused else 'did not fail'}; sandbox {'responsive' if alive else 'NOT responsive'}"
        f"{f'; {left} probe processes left running' if left else ''}"
    )
    return ControlResult(name, refused and stopped and alive, detail)


def check_command_timeout(sandboxes: DockerSandboxes, container: str) -> ControlResult:
    """A command running past its wall-clock limit is killed, reported timed_out, and leaves nothing behind."""
    name = "per-command time limit"
    limit_s, sleep_s = 2, 6.5
    result = sandboxes.exec(container, f"echo started; sleep {sleep_s}; echo finished", limit_s)
    leftover = f"sleep {sleep_s}" in _sh(sandboxes, container, "ps -eo args").splitlines()
    ok = result.timed_out and "finished" not in result.output and result.duration_s < sleep_s and not leftover
    detail = (
        f"`sleep {sleep_s}` under a {limit_s}s limit: ended after {result.duration_s:.1f}s, "
        f"exit {result.exit_code}, timed_out={result.timed_out}{', process left running' if leftover else ''}"
    )
    return ControlResult(name, ok, detail)


def check_no_docker_socket_or_host_paths(sandboxes: DockerSandboxes, container: str) -> ControlResult:
    """Only the sandbox's own workspace, out and inbox directories (and at most a read-only CA bundle) are mounted.

    No Docker socket inside, no privileged mode, no devices, no host PID or IPC namespace.
    """
    name = "no docker socket or host paths"
    attrs = _inspect(sandboxes, container)
    host_config = attrs["HostConfig"]
    own_root = Path(os.path.realpath(sandboxes.workspaces_root)) / str(attrs["Name"]).lstrip("/")
    problems: list[str] = []
    seen: list[str] = []
    ca_bundles = 0
    for mount in attrs.get("Mounts") or []:
        kind, source = mount.get("Type"), str(mount.get("Source") or "")
        destination, writable = str(mount.get("Destination")), bool(mount.get("RW"))
        seen.append(destination)
        expected = _WORKSPACE_BINDS.get(destination)
        if kind == "bind" and expected is not None:
            subdir, should_write = expected
            if Path(os.path.realpath(source)) != own_root / subdir or writable != should_write:
                problems.append(f"{destination} from {source} ({'rw' if writable else 'ro'})")
        elif (
            kind == "bind"
            and not writable
            and destination.endswith((".pem", ".crt"))
            and os.path.isfile(source)
            and ca_bundles == 0
        ):
            ca_bundles += 1
        else:
            problems.append(f"{kind} {source or mount.get('Name')} at {destination}")
    if host_config.get("Privileged"):
        problems.append("privileged")
    if host_config.get("Devices"):
        problems.append(f"devices {[d.get('PathOnHost') for d in host_config['Devices']]}")
    for mode in ("PidMode", "IpcMode", "UTSMode", "UsernsMode"):
        if str(host_config.get(mode) or "") == "host":
            problems.append(f"{mode}=host")
    tests = " ".join(f"test -e {path} && echo present:{path};" for path in _DOCKER_SOCKETS)
    present = re.findall(r"present:(\S+)", _sh(sandboxes, container, f"{tests} true"))
    problems += [f"{path} exists inside" for path in present]
    detail = "mounts: " + (", ".join(sorted(seen)) or "none")
    if problems:
        detail += "; unexpected: " + "; ".join(problems)
    return ControlResult(name, not problems, detail)


def check_no_credentials(sandboxes: DockerSandboxes, container: str, canary: str) -> ControlResult:
    """The caller's canary is in no environment and no file in the sandbox; no credential-like variable or file."""
    name = "no credential inside"
    if len(canary) < 8:
        raise ValueError("the canary must be at least 8 characters")
    attrs = _inspect(sandboxes, container)
    config_env = [str(e) for e in attrs["Config"].get("Env") or []]
    problems: list[str] = []
    quoted = shlex.quote(canary)
    environments = _sh(
        sandboxes,
        container,
        "env; echo '@@@'; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < \"$f\" 2>/dev/null; done; "
        "echo '@@@'; tr '\\0' '\\n' < /proc/1/environ >/dev/null 2>&1 && echo pid1-readable; true",
    )
    command_env, _, rest = environments.partition("@@@\n")
    process_env, _, readable = rest.partition("@@@\n")
    if canary in "\n".join(config_env):
        problems.append("canary in the container's configured environment")
    if canary in command_env:
        problems.append("canary in a command's environment")
    if canary in process_env:
        problems.append("canary in a process environment")
    env_lines = [*config_env, *command_env.splitlines(), *process_env.splitlines()]
    variables = {line.partition("=")[0] for line in env_lines}
    secret_names = sorted(v for v in variables if v and _SECRET_NAME.search(v))
    if secret_names:
        problems.append(f"credential-like variables {secret_names}")
    with_password = sorted({line.partition("=")[0] for line in env_lines if _URL_WITH_PASSWORD.search(line)})
    if with_password:
        problems.append(f"URL with a password in {with_password}")
    dirs = " ".join(_SEARCHED_DIRS)
    files = _sh(sandboxes, container, f"grep -rlF -e {quoted} -- {dirs} 2>/dev/null; true", 120).split()
    if files:
        problems.append(f"canary in files {files[:5]}")
    checks = " ".join(f"test -e {path} && echo {path};" for path in _CREDENTIAL_FILES)
    git_config = "grep -liE 'extraheader|credential|://[^/@]+:[^/@]+@' /workspace/.git/config 2>/dev/null;"
    credential_files = _sh(sandboxes, container, f"{checks} {git_config} true").split()
    if credential_files:
        problems.append(f"credential files {credential_files}")
    detail = (
        f"canary absent from env, {'/proc/1/environ' if 'pid1-readable' in readable else 'configured env'}, "
        f"and {', '.join(_SEARCHED_DIRS)}"
    )
    if problems:
        detail = "; ".join(problems)
    return ControlResult(name, not problems, detail)


def check_workspace_size(sandboxes: DockerSandboxes, container: str, size: str | None) -> ControlResult:
    """/workspace is a file system no bigger than ``size``; allocating or writing past it fails with ENOSPC."""
    name = "workspace size limit"
    if size is None:
        return ControlResult(name, False, "no workspace size limit configured (limits.sandbox.workspace_size)")
    limit = parse_size(size)
    source = next(
        (
            str(m.get("Source"))
            for m in _inspect(sandboxes, container).get("Mounts") or []
            if m.get("Destination") == "/workspace"
        ),
        None,
    )
    host_view = f"; host: {'loop-mounted image' if source and is_limited(Path(source)) else 'no image mount'}"
    token = uuid.uuid4().hex[:12]
    script = _WORKSPACE_PROBE.replace("LIMIT", str(limit)).replace("TOKEN", token)
    probe = sandboxes.exec(container, f"python3 -c {shlex.quote(script)}", 300)
    found = dict(re.findall(r"^(\w+)=(\S+)$", probe.output, re.MULTILINE))
    total = int(found.get("total", -1))
    if "total" not in found:
        return ControlResult(name, False, f"probe failed: {probe.output.strip()[-200:]}{host_view}")
    if total > limit:
        return ControlResult(
            name, False, f"/workspace is a {_mib(total)} file system, larger than the {size} limit{host_view}"
        )
    ok = found.get("over") == "ENOSPC" and found.get("write") == "ENOSPC" and found.get("cleaned") == "yes"
    detail = (
        f"/workspace {_mib(total)} (limit {size}): allocating past it {found.get('over', '?')}, "
        f"writing past it {found.get('write', '?')}{host_view}"
    )
    return ControlResult(name, ok and _responsive(sandboxes, container), detail)


# Runs inside the sandbox: statvfs, then try to allocate past the free space (ENOSPC
# expected), then reserve all but a little and write real data past that (ENOSPC
# expected). Never writes more than the file system holds; removes its file.
_WORKSPACE_PROBE = """
import errno, os
st = os.statvfs('/workspace')
total, avail = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
print(f'total={total}')
if total <= LIMIT:
    path = '/workspace/.factory-size-probe-TOKEN'
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, avail + (16 << 20))
            print('over=allocated')
        except OSError as e:
            print('over=' + errno.errorcode.get(e.errno, str(e.errno)))
        os.ftruncate(fd, 0)
        reserve = max(avail - (4 << 20), 0)
        try:
            os.posix_fallocate(fd, 0, reserve)
        except OSError:
            reserve = 0
        os.lseek(fd, reserve, os.SEEK_SET)
        chunk, written, result = b'x' * (64 << 10), 0, 'written'
        try:
            while written < (avail - reserve) + (16 << 20):
                written += os.write(fd, chunk)
            os.fsync(fd)
        except OSError as e:
            result = errno.errorcode.get(e.errno, str(e.errno))
        print('write=' + result)
    finally:
        os.close(fd)
        os.unlink(path)
    print('cleaned=' + ('no' if os.path.exists(path) else 'yes'))
"""


# -- running them ----------------------------------------------------------------------


def _controls(canary: str, workspace_size: str | None) -> list[tuple[str, Control]]:
    return [
        ("runs as non-root", check_non_root),
        ("all capabilities dropped", check_capabilities_dropped),
        ("no-new-privileges", check_no_new_privileges),
        ("seccomp filter active", check_seccomp),
        ("read-only root, writable workspace", check_read_only_root),
        ("no docker socket or host paths", check_no_docker_socket_or_host_paths),
        ("no credential inside", partial(check_no_credentials, canary=canary)),
        ("workspace size limit", partial(check_workspace_size, size=workspace_size)),
        ("per-command time limit", check_command_timeout),
        ("memory limit enforced", check_memory_limit),
        ("pids limit stops a fork bomb", check_pids_limit),
    ]


CONTROL_NAMES = [name for name, _ in _controls("x" * 8, None)]


def _guarded(name: str, control: Control, sandboxes: DockerSandboxes, container: str) -> ControlResult:
    """A control that breaks (the sandbox died, a probe failed to run) is a failed control, never a crash."""
    try:
        return control(sandboxes, container)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        return ControlResult(name, False, f"could not check: {type(exc).__name__}: {str(exc).strip()[:200]}")


def run_controls(
    sandboxes: DockerSandboxes,
    container: str,
    canary: str,
    *,
    workspace_size: str | None = None,
    extra: Sequence[Control] = (),
) -> list[ControlResult]:
    """Run every isolation control (then ``extra`` ones, e.g. the network controls) against a live sandbox.

    ``workspace_size`` is the configured limit (``limits.sandbox.workspace_size``); without
    one the workspace control fails. The memory and fork probes run last: they stress the sandbox.
    """
    results = [_guarded(name, control, sandboxes, container) for name, control in _controls(canary, workspace_size)]
    for control in extra:
        label = getattr(control, "__name__", "extra control")
        results.append(_guarded(label, control, sandboxes, container))
    return results


def format_table(results: Sequence[ControlResult]) -> str:
    """A plain-text table: control | result | detail, then a count."""
    rows = [("control", "result", "detail")] + [(r.name, "pass" if r.passed else "FAIL", r.detail) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{row[0]:<{widths[0]}} | {row[1]:<{widths[1]}} | {row[2]}".rstrip() for row in rows]
    lines.insert(1, f"{'-' * widths[0]}-+-{'-' * widths[1]}-+-{'-' * 6}")
    failed = sum(not r.passed for r in results)
    lines.append("")
    lines.append(
        f"{len(results) - failed} of {len(results)} controls passed" + (f", {failed} FAILED" if failed else "")
    )
    return "\n".join(lines)


@contextlib.contextmanager
def _planted_canary(home: Path, canary: str) -> Iterator[None]:
    """The canary in this process's environment and in a file in the factory's home, for the check's duration."""
    previous = os.environ.get(CANARY_ENV_VAR)
    os.environ[CANARY_ENV_VAR] = canary
    home.mkdir(parents=True, exist_ok=True)
    planted = home / f".sandbox-check-canary-{uuid.uuid4().hex[:8]}"
    planted.write_text(canary + "\n")
    try:
        yield
    finally:
        planted.unlink(missing_ok=True)
        if previous is None:
            os.environ.pop(CANARY_ENV_VAR, None)
        else:
            os.environ[CANARY_ENV_VAR] = previous


def check_live_sandbox(
    settings: Settings, canary: str, extra: Sequence[Control] = (), *, repo: str | None = None
) -> list[ControlResult]:
    """Provision a sandbox exactly as a ticket gets one, run every control, and always destroy it.

    The sandbox gets ``limits.sandbox`` from the settings and the egress allow-list a
    ticket of ``repo`` would get (without a repo: the global ``egress_allow``). The
    canary is planted on the host first (this process's environment, a file in the
    factory's home) so the credential control proves it did not travel inside.
    ``extra`` controls (the network ones) run after the built-in ones.
    """
    from factory.runs import egress_allow_list

    sandboxes = DockerSandboxes(settings.workspaces_root)
    workflow_id = f"check-{uuid.uuid4().hex}"
    workspace = sandboxes.workspace_for(workflow_id)
    allow = egress_allow_list(settings, repo) if repo is not None else sorted(set(settings.egress_allow))
    limits = settings.limits.sandbox.model_copy(update={"egress_allow": allow})
    with _planted_canary(settings.home, canary):
        try:
            _, name, _ = sandboxes.provision("sandbox-check", workflow_id, SANDBOX_IMAGE, limits)
            return run_controls(sandboxes, name, canary, workspace_size=limits.workspace_size, extra=extra)
        finally:
            sandboxes.destroy(workspace.root.name, workspace.root)
            if is_limited(workspace.repo) or image_path(workspace.repo).exists():
                unmount_limited(workspace.repo)
            shutil.rmtree(workspace.root, ignore_errors=True)

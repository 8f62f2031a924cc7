"""A size limit for a workspace directory: a loop-mounted ext4 image of fixed size.

Docker's ``--storage-opt size=`` only limits the container's own layer, and only on
xfs with project quotas; a bind-mounted workspace is not covered at all. Instead the
workspace directory itself becomes a small file system: a sparse image file beside
it (``<dir>.img``) formatted as ext4 and loop-mounted on the directory. Writing past
its size fails with ``ENOSPC`` inside the sandbox, and nothing else on the host fills.

Mount *before* the container starts: a bind mount made earlier does not see a mount
made later on its source. The image outlives a host restart, so mounting again after
one brings the workspace back with its content.

Loop mounts need root (``CAP_SYS_ADMIN``) and ``/dev/loop-control``; where they are
missing every function here fails closed with a ``SandboxError`` that says so, so a
configured limit is never silently ignored.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from factory.errors import SandboxError

__all__ = ["image_path", "is_limited", "limited_size", "mount_limited", "parse_size", "unmount_limited"]

_MIN_SIZE = 8 * 1024 * 1024
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_TOOL_TIMEOUT_S = 120


def parse_size(size: str | int) -> int:
    """Bytes in a Docker-style size: ``4g``, ``512m``, ``100k``, ``1.5G``, ``2GiB`` or a plain byte count."""
    if isinstance(size, int):
        value = size
    else:
        match = _SIZE_RE.match(size)
        if match is None:
            raise SandboxError(f"workspace size {size!r} is not a size (expected e.g. '4g', '512m')")
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value < _MIN_SIZE:
        raise SandboxError(f"workspace size {size!r} is too small: at least {_MIN_SIZE // 1024**2}m")
    return value


def image_path(path: Path) -> Path:
    """The image file that backs the limited directory ``path``: ``<path>.img`` beside it."""
    path = _absolute(path)
    return path.with_name(path.name + ".img")


def mount_limited(path: Path, size: str | int) -> None:
    """Make ``path`` a file system of ``size`` bytes (created empty if missing).

    Idempotent: if ``path`` already carries its own image, nothing happens. An image
    left from before (a host restart) is mounted again with its content. Refuses if
    another file system is mounted at ``path`` or the directory holds files the mount
    would hide. Root owns the new file system's top directory: hand it to the sandbox
    user afterwards (``DockerSandboxes.provision`` does).
    """
    size_bytes = parse_size(size)
    path = _absolute(path)
    image = image_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent):
        mount = _top_mount(path)
        if mount is not None:
            if _is_ours(mount, image):
                return
            raise SandboxError(
                f"cannot limit the size of {path}: {mount.source} ({mount.fstype}) is already mounted there"
            )
        if path.is_symlink():
            raise SandboxError(f"cannot limit the size of {path}: it is a symbolic link")
        path.mkdir(exist_ok=True)
        if any(path.iterdir()):
            raise SandboxError(f"cannot limit the size of {path}: it already holds files the mount would hide")
        _require_loop_support()
        fresh = not image.exists()
        if fresh:
            _make_image(image, size_bytes)
        try:
            _run(["mount", "-t", "ext4", "-o", "loop,nosuid,nodev", str(image), str(path)], f"mount {image}")
        except SandboxError:
            if fresh:
                image.unlink(missing_ok=True)
            raise
        mount = _top_mount(path)
        if mount is None or not _is_ours(mount, image):
            raise SandboxError(f"mounted {image} on {path}, but the mount is not visible there")
        if fresh:
            # e2fsck's directory: root-only, and a stray entry in what must be an empty clone target.
            with contextlib.suppress(OSError):
                (path / "lost+found").rmdir()


def unmount_limited(path: Path) -> None:
    """Unmount the size-limited ``path`` (lazily if it is busy) and delete its image.

    Idempotent: does nothing if ``path`` is neither mounted nor has an image. Refuses to
    unmount a file system that is not this module's. The directory itself stays (empty).
    """
    path = _absolute(path)
    image = image_path(path)
    with _locked(path.parent) if path.parent.is_dir() else contextlib.nullcontext():
        for _ in range(8):  # normally once; more only if the same image was stacked by hand
            mount = _top_mount(path)
            if mount is None:
                break
            if not _is_ours(mount, image):
                raise SandboxError(
                    f"refusing to unmount {path}: {mount.source} ({mount.fstype}) is not its workspace image"
                )
            try:
                _run(["umount", str(path)], f"unmount {path}")
            except SandboxError:
                # Busy (a process still has a file open there): detach now, free when the last user goes.
                _run(["umount", "-l", str(path)], f"unmount {path} lazily")
        image.unlink(missing_ok=True)
        _temporary(image).unlink(missing_ok=True)


def is_limited(path: Path) -> bool:
    """Whether ``path`` is currently mounted on its own size-limiting image."""
    path = _absolute(path)
    mount = _top_mount(path)
    return mount is not None and _is_ours(mount, image_path(path))


def limited_size(path: Path) -> int | None:
    """The size in bytes of the file system mounted at ``path``, if it is size-limited."""
    if not is_limited(path):
        return None
    stat = os.statvfs(path)
    return stat.f_blocks * stat.f_frsize


# -- internals ---------------------------------------------------------------


@dataclass(frozen=True)
class _Mount:
    mount_point: str
    fstype: str
    source: str


def _absolute(path: Path) -> Path:
    """The path as the kernel names it in mountinfo: parent resolved (symlinks followed), leaf kept."""
    path = Path(os.path.abspath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _top_mount(path: Path) -> _Mount | None:
    """The mount visible at ``path`` (the last one mounted there), or None."""
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if len(fields) < 10 or _unescape(fields[4]) != str(path):
                continue
            rest = fields[fields.index("-") + 1 :]
            found = _Mount(mount_point=str(path), fstype=rest[0], source=_unescape(rest[1]))
    return found


def _backing_file(device: str) -> str | None:
    name = os.path.basename(device)
    try:
        text = Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
    except OSError:
        return None
    return text.removesuffix(" (deleted)") or None


def _is_ours(mount: _Mount, image: Path) -> bool:
    return mount.source.startswith("/dev/loop") and _backing_file(mount.source) == str(image)


def _temporary(image: Path) -> Path:
    return image.with_name(image.name + ".tmp")


def _make_image(image: Path, size_bytes: int) -> None:
    """Create the sparse image under a temporary name, format it, then move it into place.

    An ``<path>.img`` therefore always holds a whole file system, even after a crash.
    """
    temporary = _temporary(image)
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size_bytes)
    finally:
        os.close(fd)
    try:
        # -m 0: no blocks reserved for root (nothing runs as root in the sandbox).
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", str(temporary)], f"format {image}")
    except SandboxError:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, image)


def _require_loop_support() -> None:
    if os.geteuid() != 0:
        raise SandboxError(
            "a workspace size limit (limits.sandbox.workspace_size) needs a loop mount, which needs root: "
            "run the execution worker as root or remove the limit"
        )
    if not os.path.exists("/dev/loop-control"):
        raise SandboxError(
            "a workspace size limit (limits.sandbox.workspace_size) needs loop devices, and /dev/loop-control "
            "is missing: load the `loop` kernel module (or give the worker's container the loop devices)"
        )


def _run(command: list[str], what: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise SandboxError(
            f"could not {what}: {command[0]} is not installed (a workspace size limit needs e2fsprogs and util-linux)"
        ) from None
    except subprocess.TimeoutExpired:
        raise SandboxError(f"could not {what}: {command[0]} took longer than {_TOOL_TIMEOUT_S}s") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        reason = message[-1] if message else f"exit status {done.returncode}"
        raise SandboxError(f"could not {what}: {reason[:300]}")


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory`` (flock on the directory itself: no lock file is left behind)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

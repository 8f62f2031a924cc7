"""The workspace size limit: a loop-mounted ext4 image on the workspace directory (real mounts; needs root).

Every mount and image is made under the test's own temporary directory and removed by the test.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from factory.errors import SandboxError
from factory.sandbox.quota import image_path, is_limited, limited_size, mount_limited, unmount_limited


def _loop_device(path: Path) -> str:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(path):
            return fields[fields.index("-") + 2]
    raise AssertionError(f"{path} is not mounted")


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Path]:
    """A workspace directory path; whatever a test mounted there is taken down afterwards."""
    path = tmp_path / "ws" / "repo"
    yield path
    if is_limited(path):
        unmount_limited(path)
    image_path(path).unlink(missing_ok=True)


def test_writing_past_the_size_fails_with_enospc(target: Path) -> None:
    """A 16m limit: the directory becomes a file system of at most 16m, and writing 32m into it fails with ENOSPC."""
    mount_limited(target, "16m")

    assert is_limited(target)
    size = limited_size(target)
    assert size is not None and 8 * 1024**2 < size <= 16 * 1024**2
    assert list(target.iterdir()) == []  # no lost+found: the directory is an empty clone target
    assert os.stat(image_path(target)).st_blocks * 512 < 8 * 1024**2  # sparse on the host

    written = 0
    with pytest.raises(OSError) as caught, (target / "big").open("wb") as handle:
        while written < 32 * 1024**2:
            written += handle.write(b"x" * 65536)
            handle.flush()
    assert caught.value.errno == errno.ENOSPC
    assert written <= 16 * 1024**2


def test_mount_is_idempotent_and_keeps_content(target: Path) -> None:
    """Mounting again changes nothing; after the mount disappears (host restart) it comes back with its files."""
    mount_limited(target, "16m")
    device = _loop_device(target)
    (target / "kept.txt").write_text("kept\n")

    mount_limited(target, "16m")
    assert _loop_device(target) == device
    assert (target / "kept.txt").read_text() == "kept\n"

    subprocess.run(["umount", str(target)], check=True)  # what a reboot does
    assert not is_limited(target)
    assert list(target.iterdir()) == []

    mount_limited(target, "16m")
    assert is_limited(target)
    assert (target / "kept.txt").read_text() == "kept\n"


def test_unmount_removes_mount_image_and_loop_device(target: Path) -> None:
    """unmount_limited leaves an empty, unmounted directory, no image file and no loop device; again is a no-op."""
    mount_limited(target, "16m")
    device = _loop_device(target)
    (target / "file").write_text("x")

    unmount_limited(target)

    assert not is_limited(target)
    assert target.is_dir() and list(target.iterdir()) == []
    assert not image_path(target).exists()
    assert not list(target.parent.glob("*.img*"))
    backing = Path(f"/sys/block/{Path(device).name}/loop/backing_file")
    assert not backing.exists() or str(image_path(target)) not in backing.read_text()
    unmount_limited(target)


def test_busy_mount_is_unmounted_lazily(target: Path) -> None:
    """A process still holding a file open there does not stop the unmount: it is detached lazily."""
    mount_limited(target, "16m")
    with (target / "open.txt").open("w") as held:
        held.write("busy")
        unmount_limited(target)
        assert not is_limited(target)
        assert not image_path(target).exists()
    assert list(target.iterdir()) == []


def test_refuses_when_something_else_is_mounted(target: Path) -> None:
    """A file system that is not the directory's own image (here a tmpfs the test mounts) is never mounted over
    or unmounted."""
    target.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)], check=True)
    try:
        with pytest.raises(SandboxError, match=r"tmpfs \(tmpfs\) is already mounted there"):
            mount_limited(target, "16m")
        with pytest.raises(SandboxError, match="refusing to unmount"):
            unmount_limited(target)
        assert not image_path(target).exists()
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_refuses_to_hide_existing_files(target: Path) -> None:
    """A directory that already holds files is not mounted over (they would vanish from the sandbox's view)."""
    target.mkdir(parents=True)
    (target / "existing.py").write_text("x = 1\n")
    with pytest.raises(SandboxError, match="already holds files"):
        mount_limited(target, "16m")
    assert not is_limited(target)
    assert not image_path(target).exists()

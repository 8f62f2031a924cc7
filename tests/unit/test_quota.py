"""Workspace size limit: parsing sizes, and failing closed where loop mounts are impossible."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory.errors import SandboxError
from factory.sandbox import quota


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4g", 4 * 1024**3),
        ("4G", 4 * 1024**3),
        ("512m", 512 * 1024**2),
        ("1.5g", int(1.5 * 1024**3)),
        ("2GiB", 2 * 1024**3),
        ("64MB", 64 * 1024**2),
        ("16384k", 16 * 1024**2),
        (str(10 * 1024**2), 10 * 1024**2),
        (10 * 1024**2, 10 * 1024**2),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    """Docker-style sizes (binary units, any case, optional B/iB) and plain byte counts."""
    assert quota.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "4x", "-1g", "4 gigs"])
def test_parse_size_rejects_nonsense(text: str) -> None:
    """Anything else is a SandboxError naming the value."""
    with pytest.raises(SandboxError, match="is not a size"):
        quota.parse_size(text)


def test_parse_size_rejects_tiny_sizes() -> None:
    """Below 8m there is no room for a useful ext4 file system."""
    with pytest.raises(SandboxError, match="too small"):
        quota.parse_size("1m")


def test_image_sits_beside_the_directory(tmp_path: Path) -> None:
    """The image of <dir> is <dir>.img in the same parent (never inside what the sandbox sees)."""
    assert quota.image_path(tmp_path / "ws" / "repo") == tmp_path.resolve() / "ws" / "repo.img"


def test_without_root_the_limit_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not root: a clear SandboxError instead of a workspace silently left unlimited."""
    monkeypatch.setattr(quota.os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxError, match="needs root"):
        quota.mount_limited(tmp_path / "repo", "16m")
    assert not quota.image_path(tmp_path / "repo").exists()


def test_without_loop_devices_the_limit_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No /dev/loop-control: a clear SandboxError that says how to get loop devices."""
    real_exists = quota.os.path.exists
    monkeypatch.setattr(quota.os, "geteuid", lambda: 0)
    monkeypatch.setattr(quota.os.path, "exists", lambda p: False if p == "/dev/loop-control" else real_exists(p))
    with pytest.raises(SandboxError, match="loop-control"):
        quota.mount_limited(tmp_path / "repo", "16m")


def test_missing_tools_fail_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without mkfs.ext4 on PATH: a SandboxError naming the packages, and no half-made image left behind."""
    monkeypatch.setattr(quota.os, "geteuid", lambda: 0)
    monkeypatch.setattr(quota.os.path, "exists", lambda p: True if p == "/dev/loop-control" else Path(p).exists())
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(SandboxError, match="e2fsprogs"):
        quota.mount_limited(tmp_path / "repo", "16m")
    assert list(tmp_path.glob("repo.img*")) == []

"""Reading files the factory did not write (a sandbox's output, a cloned repository's manifests).

One way to do it: never follow a symlink (it could point at a host file), never block on a
FIFO, read only a regular file, and never more than a size limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from factory.errors import FactoryError

__all__ = ["FileRefused", "read_untrusted_text"]


class FileRefused(FactoryError):
    """A file someone else wrote is not a regular file within the size limit (or is a symlink)."""


def read_untrusted_text(path: Path, max_bytes: int) -> str | None:
    """The file's text (undecodable bytes replaced); ``None`` when it does not exist.

    Raises ``FileRefused`` for a symlink, anything but a regular file, or more than ``max_bytes``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FileRefused(f"refusing {path.name}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"refusing {path.name}: not a regular file")
        if info.st_size > max_bytes:
            raise FileRefused(f"refusing {path.name}: {info.st_size} bytes is too large")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileRefused(f"refusing {path.name}: it grew past {max_bytes} bytes")
    return data.decode("utf-8", errors="replace")

"""Sandboxes: where agent-written code runs. Docker is the default backend."""

from factory.sandbox.docker import (
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_TICKET,
    LABEL_WORKFLOW,
    DockerSandboxes,
    ExecResult,
    Workspace,
    chown_tree_to_sandbox,
)

__all__ = [
    "LABEL_INSTANCE",
    "LABEL_MANAGED",
    "LABEL_TICKET",
    "LABEL_WORKFLOW",
    "DockerSandboxes",
    "ExecResult",
    "Workspace",
    "chown_tree_to_sandbox",
]

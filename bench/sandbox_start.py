"""Sandbox start time: with the egress proxy network versus no network at all.

Times ``DockerSandboxes.provision`` (returns once the container runs) and ``destroy``
for three set-ups, N times each, and prints medians:

* ``none``: empty allow-list, ``network_mode=none`` (only loopback);
* ``proxy, warm``: an allow-list whose proxy is already running (another sandbox uses
  it): per sandbox an internal network is created, the proxy attached, the container run;
* ``proxy, cold``: the same when no sandbox uses that allow-list yet, so the proxy
  container is started too (and removed again by the last ``destroy``).

No request is sent anywhere: the allow-list only names hosts.

    uv run python bench/sandbox_start.py [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from factory.config import SANDBOX_IMAGE  # noqa: E402
from factory.models import SandboxLimits  # noqa: E402
from factory.sandbox import DockerSandboxes  # noqa: E402

ALLOW = ["pypi.org", "files.pythonhosted.org", "registry.npmjs.org"]


def cycle(sandboxes: DockerSandboxes, hosts: list[str]) -> tuple[float, float]:
    ticket = f"BENCH-{uuid.uuid4().hex[:8]}"
    limits = SandboxLimits(memory="256m", cpus=0.5, pids=128, egress_allow=hosts)
    started = time.perf_counter()
    _, name, workspace = sandboxes.provision(ticket, f"ticket-{ticket}", SANDBOX_IMAGE, limits)
    provisioned = time.perf_counter()
    sandboxes.destroy(name, workspace.root)
    return provisioned - started, time.perf_counter() - provisioned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="factory-bench-") as tmp:
        sandboxes = DockerSandboxes(Path(tmp) / "workspaces")
        sandboxes.check_image(SANDBOX_IMAGE)
        cycle(sandboxes, [])  # warm the engine's caches
        results: dict[str, list[tuple[float, float]]] = {"none": [], "proxy, warm": [], "proxy, cold": []}
        holder = None
        try:
            for _ in range(args.runs):
                results["none"].append(cycle(sandboxes, []))
                results["proxy, cold"].append(cycle(sandboxes, ALLOW))
            # Keep one sandbox on the allow-list so its proxy stays up between cycles.
            ticket = f"BENCH-HOLD-{uuid.uuid4().hex[:6]}"
            limits = SandboxLimits(memory="256m", egress_allow=ALLOW)
            _, hold_name, hold_ws = sandboxes.provision(ticket, f"ticket-{ticket}", SANDBOX_IMAGE, limits)
            holder = (hold_name, hold_ws.root)
            for _ in range(args.runs):
                results["proxy, warm"].append(cycle(sandboxes, ALLOW))
        finally:
            if holder is not None:
                sandboxes.destroy(*holder)

    base = statistics.median(p for p, _ in results["none"])
    print(f"sandbox start, median of {args.runs} (seconds)")
    print(f"{'set-up':<14}{'provision':>11}{'destroy':>10}{'vs none':>10}")
    for label, values in results.items():
        provision = statistics.median(p for p, _ in values)
        destroy = statistics.median(d for _, d in values)
        print(f"{label:<14}{provision:>11.3f}{destroy:>10.3f}{provision / base:>9.2f}x")


if __name__ == "__main__":
    main()

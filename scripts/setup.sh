#!/usr/bin/env bash
# Installs what the factory needs on a Debian machine, reusing what is there:
# system packages, uv, the Python environment, a running Docker engine and the
# sandbox image. Safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p .factory

need_apt=()
command -v git >/dev/null || need_apt+=(git)
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v make >/dev/null || need_apt+=(make)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing system packages: ${need_apt[*]}"
    if [ "$(id -u)" != 0 ]; then echo "run as root (or install: ${need_apt[*]})" >&2; exit 1; fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v uv >/dev/null; then
    echo "installing uv"
    python3 -m pip install -q uv 2>/dev/null || python3 -m pip install -q --break-system-packages uv
fi
# Compiled once here: with PYTHONDONTWRITEBYTECODE set, every process would otherwise compile litellm and
# the SDKs from source at each start (seconds per worker or command).
uv sync --quiet --compile-bytecode

if ! docker info >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then echo "Docker engine not reachable: start it, or run this as root" >&2; exit 1; fi
    echo "starting dockerd"
    nohup dockerd >.factory/dockerd.log 2>&1 &
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { tail -n 20 .factory/dockerd.log >&2; echo "dockerd did not start" >&2; exit 1; }
fi

bash infra/sandbox/build-image.sh factory-sandbox:latest

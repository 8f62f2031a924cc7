#!/usr/bin/env bash
# The whole suite: lint, then unit, workflow (time-skipping server), integration
# (real Docker, real dev server) and end-to-end tests. Needs `make setup` first
# (the Makefile's `test` target does that).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
uv run ruff check .
uv run ruff format --check .
uv run mypy
uv run pytest -p no:cacheprovider "$@"

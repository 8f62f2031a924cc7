#!/usr/bin/env bash
# `make demo`: say which model runs, install what is missing, run the example ticket(s).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
coder=$(python3 -c 'import tomllib; print(tomllib.load(open("factory.toml", "rb")).get("models", {}).get("coder", "scripted"))' 2>/dev/null || echo scripted)
coder="${FACTORY_MODELS__CODER:-$coder}"
if [ "$coder" = scripted ]; then
    echo "Model: OFFLINE SCRIPTED MODEL (coder = \"scripted\") — replays examples/playbooks; no LLM is called"
else
    echo "Model: $coder if its API key is set, else the OFFLINE SCRIPTED MODEL (the demo says which below)"
fi
bash scripts/setup.sh
exec uv run factory demo "$@"

#!/usr/bin/env bash
# Start the lmdm_live instrument on the embedded default model (installs what it needs first).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/lmdm-live "$@"

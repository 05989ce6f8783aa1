#!/usr/bin/env bash
# Plots loadtest/results/max.json into loadtest/results/latency.png, with
# matplotlib from a venv under target/ (made on first use).
#   loadtest/plot.sh [MAX_JSON] [OUT_PNG]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/target/loadtest-venv"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check matplotlib
fi
cd "$ROOT"
exec "$VENV/bin/python" loadtest/plot.py "${1:-loadtest/results/max.json}" "${2:-loadtest/results/latency.png}"

#!/usr/bin/env bash
# Plots loadtest/results/max.json into loadtest/results/latency.png, with a
# pinned matplotlib from a venv under target/ (made on first use, remade
# when it holds another version).
#   loadtest/plot.sh [MAX_JSON] [OUT_PNG]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/target/loadtest-venv"
# Pinned, so every rerun draws with the same library; change it here.
MATPLOTLIB_VERSION=3.11.2
installed() {
  "$VENV/bin/python" -c 'import sys, matplotlib; sys.exit(matplotlib.__version__ != sys.argv[1])' \
    "$MATPLOTLIB_VERSION" 2>/dev/null
}
if [[ ! -x "$VENV/bin/python" ]] || ! installed; then
  python3 -m venv "$VENV" || {
    echo "plot: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "matplotlib==$MATPLOTLIB_VERSION" || {
    echo "plot: cannot install matplotlib==$MATPLOTLIB_VERSION from PyPI" >&2
    exit 1
  }
fi
cd "$ROOT"
exec "$VENV/bin/python" loadtest/plot.py "${1:-loadtest/results/max.json}" "${2:-loadtest/results/latency.png}"

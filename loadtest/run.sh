#!/usr/bin/env bash
# Load-test a local `imageswap serve` with k6 (wrk and h2load for `compare`):
#
#   loadtest/run.sh smoke|steady|max|soak|reload|spike|compare
#
# The entry point README, CI and operators use; the driver is
# loadtest/run.py (its docstring lists the steps and the settings:
# LOADTEST_SKIP_BUILD, RATE, DURATION, SERVER_ARGS, RESULTS_DIR, ...).
# It writes loadtest/results/SCENARIO.json and its last line is
#
#   RESULT scenario=<s> rps=<n> p50_ms=<x> p99_ms=<x> errors=<n> cpu_us_per_req=<x> rss_mib=<n>
#
# with a non-zero exit status when a threshold or a check fails. It installs
# nothing: scripts/install-loadtest-tools installs k6, wrk and h2load.
exec python3 "$(dirname "$0")/run.py" "$@"

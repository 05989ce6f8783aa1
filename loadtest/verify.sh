#!/usr/bin/env bash
# Load-test mirror verification (IMAGESWAP_VERIFY=on) of a local release
# `imageswap serve` with k6 (issue 11, "Measure"):
#
#   loadtest/verify.sh churn         # real registry behind a 20 ms proxy, 500/s for 60 s over 2,000 images (5% missing)
#   loadtest/verify.sh dead-mirror   # a mirror that accepts and never answers, both on-error policies
#   loadtest/verify.sh burst         # 2,000 new images from 1,000 concurrent admissions, mirror answering in 100 ms (issue 20)
#
# The driver is loadtest/verify_load.py (its docstring lists the steps, the
# targets and the settings: RATE, DURATION, VERIFY_TIMEOUT, ON_ERROR, PIN,
# LOADTEST_SKIP_BUILD, ...). It writes loadtest/results/verify-churn.json,
# verify-dead-mirror.json or verify-burst.json; its last line on stdout is a RESULT line, and its
# exit status is non-zero when a target or a check failed. It installs
# nothing: `scripts/install-loadtest-tools k6 openssl docker-registry`
# installs what it needs.
exec python3 "$(dirname "$0")/verify_load.py" "$@"

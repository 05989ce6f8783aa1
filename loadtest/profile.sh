#!/usr/bin/env bash
# Where a request's CPU goes: runs imageswap and the two baselines
# (bare, and bare + one simd-json parse: `baseline --parse`) under
# valgrind's callgrind, posts the `compare` review N times over one
# keep-alive HTTPS connection to each (after a warm-up that is not counted),
# and prints instructions per request for each, imageswap's split into the
# parts of issue 14 (TLS + HTTP, parse, decisions, patch + answer, log line,
# metrics, tower layers: loadtest/profile_split.py says how each is counted)
# and its most expensive functions. Instruction counts do not depend on what else the
# machine is running, unlike the timings of `run.sh compare`.
#
#   loadtest/profile.sh [N]        (default 2000; needs valgrind)
#
# SERVER_ARGS adds flags to `imageswap serve` (default `--log-format json`,
# as run.sh starts it), e.g. SERVER_ARGS="--log-format json --log-level warn"
# to see what the per-request log line costs.
#
# REVIEW=FILE posts another review instead of the fixture (e.g. the same
# review compacted, as kube-apiserver sends it).
#
# The release profile links with whole-program LTO, which inlines the
# parts into one another: the total is what ships, and the split counts
# decisions, the answer and the log line from the callers that survive LTO
# (profile_split.py's LTO_PARTS; the metrics stay inlined into the tower
# layers). For the split by the functions themselves, profile a build
# without it:
#
#   CARGO_PROFILE_RELEASE_LTO=false loadtest/profile.sh
#
# (that rebuilds target/release without LTO; a plain `cargo build --release`
# links it with LTO again).
#
# Builds what it runs first, as run.sh does: `cargo build --release --locked`
# and `cargo build --release --locked --example baseline` (cargo's output on
# stderr); LOADTEST_SKIP_BUILD=1 reuses a binary that is already built.
# Callgrind files go to target/loadtest/profile/, the split as JSON to
# target/loadtest/profile/split.json, the three totals and both ratios to
# target/loadtest/profile/instructions.json.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-2000}
WARMUP=200
read -r -a SERVER_ARGS <<<"${SERVER_ARGS:---log-format json}"
WORK="$ROOT/target/loadtest/profile"
REVIEW=${REVIEW:-"$ROOT/benches/fixtures/pod-4-containers.review.json"}
CLIENT="$ROOT/loadtest/keepalive_client.py"
command -v valgrind >/dev/null 2>&1 || {
  echo "profile: needs valgrind (apt-get install valgrind)" >&2
  exit 1
}
# build BINARY [CARGO_ARGS...]: cargo build --release --locked, unless
# LOADTEST_SKIP_BUILD=1 and BINARY is there (loadtest/run.py's rule).
build() {
  local bin=$1
  shift
  if [[ ${LOADTEST_SKIP_BUILD:-} == 1 && -x $bin ]]; then
    echo "profile: using the built $bin" >&2
    return
  fi
  echo "profile: cargo build --release --locked${*:+ $*}" >&2
  (cd "$ROOT" && cargo build --release --locked "$@" >&2) || {
    echo "profile: cargo build --release --locked${*:+ $*} failed" >&2
    exit 1
  }
}
build "$ROOT/target/release/imageswap"
build "$ROOT/target/release/examples/baseline" --example baseline
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"

# The certificate in a directory of its own: the server watches the
# certificate's directory for rotations, and the logs written next to it
# would wake that watch on every line (about 3 k instructions a request of
# inotify handling that no deployment has: there the logs go to stdout).
mkdir -p tls
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=localhost" \
  -addext "subjectAltName=IP:127.0.0.1" -keyout tls/key.pem -out tls/cert.pem 2>/dev/null

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# profile NAME PORT COMMAND...: instructions per request, on stdout.
profile() {
  local name=$1 port=$2 pid i
  shift 2
  valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.callgrind" --collect-atstart=yes "$@" \
    >"$WORK/$name.log" 2>&1 &
  pid=$!
  for i in $(seq 1 300); do
    if curl -fsS --cacert tls/cert.pem -o /dev/null --data-binary "@$REVIEW" "https://127.0.0.1:$port/" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  python3 "$CLIENT" "https://127.0.0.1:$port/" tls/cert.pem "$REVIEW" "$WARMUP"
  callgrind_control -z "$pid" >/dev/null
  python3 "$CLIENT" "https://127.0.0.1:$port/" tls/cert.pem "$REVIEW" "$N"
  callgrind_control -d "$pid" >/dev/null
  kill -TERM "$pid"
  wait "$pid" || true
  # The dump after zeroing is the one with a ".1" suffix.
  local dump="$WORK/$name.callgrind.1"
  [[ -f "$dump" ]] || dump=$(ls -t "$WORK/$name".callgrind* | head -1)
  local total
  total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
  echo "$name $((total / N)) $dump"
}

# The baseline answers exactly what imageswap answers to the review.
port=$(free_port)
"$ROOT/target/release/imageswap" serve --listen "127.0.0.1:$port" --tls-cert tls/cert.pem --tls-key tls/key.pem \
  --maps "$ROOT/loadtest/imageswap-maps.conf" >"$WORK/capture.log" 2>&1 &
capture=$!
for i in $(seq 1 100); do
  curl -fsS --cacert tls/cert.pem -o response.json --data-binary "@$REVIEW" "https://127.0.0.1:$port/" 2>/dev/null && break
  sleep 0.1
done
kill -TERM "$capture"
wait "$capture" || true
[[ -s response.json ]] || {
  echo "profile: imageswap did not answer (see $WORK/capture.log)" >&2
  exit 1
}

port=$(free_port)
read -r _ imageswap_ipr imageswap_dump < <(profile imageswap "$port" "$ROOT/target/release/imageswap" serve \
  --listen "127.0.0.1:$port" --tls-cert tls/cert.pem --tls-key tls/key.pem --maps "$ROOT/loadtest/imageswap-maps.conf" \
  "${SERVER_ARGS[@]}")
port=$(free_port)
read -r _ baseline_ipr baseline_dump < <(profile baseline "$port" "$ROOT/target/release/examples/baseline" \
  "127.0.0.1:$port" tls/cert.pem tls/key.pem response.json)
port=$(free_port)
read -r _ parse_ipr _ < <(profile baseline_parse "$port" "$ROOT/target/release/examples/baseline" --parse \
  "127.0.0.1:$port" tls/cert.pem tls/key.pem response.json)

echo "instructions per request (HTTP/1.1 keep-alive, TLS, $N requests after $WARMUP warm-up;"
echo "imageswap serve ${SERVER_ARGS[*]}):"
echo "  imageswap               $imageswap_ipr"
echo "  baseline                $baseline_ipr"
echo "  baseline --parse        $parse_ipr"
echo "  ratio vs bare           $(python3 -c "print(f'{$imageswap_ipr / $baseline_ipr:.2f}')")"
echo "  ratio vs bare + parse   $(python3 -c "print(f'{$imageswap_ipr / $parse_ipr:.2f}')")"
python3 - "$WORK/instructions.json" "$imageswap_ipr" "$baseline_ipr" "$parse_ipr" <<'PY'
import json, sys
path, imageswap, bare, parse = sys.argv[1], *map(int, sys.argv[2:])
with open(path, "w") as f:
    json.dump({"imageswap": imageswap, "baseline": bare, "baseline_parse": parse,
               "ratio_vs_bare": round(imageswap / bare, 3), "ratio_vs_bare_parse": round(imageswap / parse, 3)}, f, indent=1)
    f.write("\n")
PY
echo
echo "imageswap, instructions per request by part:"
python3 "$ROOT/loadtest/profile_split.py" "$imageswap_dump" "$N" --baseline "$baseline_dump" --json "$WORK/split.json" \
  ${PROFILE_VERBOSE:+--verbose}
echo
echo "imageswap, inclusive cost of its own functions (top 40):"
callgrind_annotate --inclusive=yes "$imageswap_dump" 2>/dev/null |
  grep -E 'imageswap::|simd_json|moka|prometheus|tracing|tower|hyper::proto|rustls::conn|ring::aead|serde_json|__memcpy|malloc|free' |
  head -40

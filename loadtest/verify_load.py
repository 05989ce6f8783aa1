"""Measures mirror verification under load (issue 11, "Measure"):

    loadtest/verify.sh churn|dead-mirror|burst

verify.sh only runs this file. It reuses loadtest/run.py's steps (tools,
release build, CA and serving certificate, starting and stopping the
server) read-only, and adds the mirrors (loadtest/verify_mirror.py) and its
own k6 script (loadtest/verify.js).

churn
    1. A real registry (Debian's `docker-registry`, plain HTTP on 127.0.0.1,
       filesystem storage in the work directory) gets one tiny image, tagged
       IMAGES - IMAGES/MISSING_EVERY times by manifest PUT: of the tags
       t0000…t1999, every one with n % 20 == 19 is left out (5% missing).
    2. DelayProxy in front of it adds DELAY_MS (20) to every request and
       counts them.
    3. `imageswap serve --verify=on` with maps `src.example.com::<proxy>`,
       the proxy reached over plain HTTP (IMAGESWAP_REGISTRY_PLAIN_HTTP).
    4. k6 (verify.js) at RATE (500)/s for DURATION (60s) over the IMAGES
       tags, checking every answer.
    Targets: registry requests ≤ distinct images asked + token fetches
    (anonymous registry: no tokens; a missing tag asked again after
    VERIFY_MISSING_TTL, 30s by default, is asked again by design, and the
    JSON counts those repeats apart); admission p99 ≤ 30 ms; zero failed
    admissions; every present image swapped, every missing one kept.

dead-mirror
    DeadMirror (accepts, never answers) is the mirror; k6 at RATE (200)/s
    for DURATION (30s), once per ON_ERROR policy (swap,keep). Targets: p99 of
    the admissions that waited for a timeout (before the breaker opened, and
    the one probe per breaker period) ≤ the verify timeout (+ TIMEOUT_SLACK_MS,
    5, for the answer's own path); p99 of those answered "circuit open" after
    the first 2 s ≤ 5 ms. Reported apart (circuit_early): the admissions of
    the first 2 s answered "circuit open", whose checks were queued behind
    the cap when the breaker opened (they waited until it did, never the
    whole timeout, and connected to nothing). mirror_connections_by_second
    shows what reached the mirror: the checks in flight, then one probe per
    breaker period.
    VERIFY_TIMEOUT (1s, the default) sets IMAGESWAP_VERIFY_TIMEOUT.

burst (issue 20)
    The churn registry with 2 x BURST (1000) tags, all present, behind
    DelayProxy adding BURST_DELAY_MS (100) to every request; the server with
    the defaults (verify timeout 1 s, cap 32 per registry host). k6 sends
    BURST admissions at once (one per VU), each a Pod of two images nobody
    asked for before: 2,000 new images from 1,000 concurrent admissions.
    /metrics is read every 250 ms meanwhile. Targets: every image verified
    (imageswap_verify_checks_total present) within 10 s of the start, at
    the cap's rate; the breaker never open; registry requests <= images +
    token fetches; no admission answered "circuit open"; zero failed
    admissions (each answer swaps both images, verified or not verified
    within its budget).

All write results/verify-churn.json, verify-dead-mirror.json or verify-burst.json (RESULTS_DIR;
verify-churn-missing-ttl-X.json and verify-dead-mirror-X.json when
VERIFY_MISSING_TTL or VERIFY_TIMEOUT is not the default) and end with one
RESULT line on stdout; exit 1 when a target or a check
failed. PIN=1 keeps the server on CPU 0 and k6, the registry and the proxy
on CPU 1 (taskset semantics through sched_setaffinity). LOADTEST_SKIP_BUILD=1,
SERVER_ARGS, QUIET_LOAD as for run.sh. Raw output goes to
target/loadtest/verify-SCENARIO/.
"""

import collections
import concurrent.futures
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as lt  # noqa: E402  (read-only use of run.py's helpers)
from verify_mirror import DeadMirror, DelayProxy  # noqa: E402

SCENARIOS = ("churn", "dead-mirror", "burst")
USAGE = "usage: loadtest/verify.sh " + "|".join(SCENARIOS)
REGISTRY_BIN = "docker-registry"
REPOSITORY = "churn/app"
SOURCE_REGISTRY = "src.example.com"
# Connections tagging the image at once.
PUSH_WORKERS = 8


def setting(name, default):
    return lt.env(name, default)


def tag(n):
    return f"t{n:04d}"


def pin(pid, cpus):
    """PIN=1: every thread of PID onto CPUS (what `taskset -a -p` does)."""
    if setting("PIN", "0") != "1":
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except OSError:
            pass


# ---------------------------------------------------------------- the registry


def start_registry(run):
    """docker-registry on a free port, plain HTTP, no auth, no access log; (process, port)."""
    port = lt.free_port()
    storage = run.work / "registry-storage"
    storage.mkdir()
    config = run.work / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    process = lt.spawn(run, "registry", [REGISTRY_BIN, "serve", config])
    for _ in range(lt.READY_POLLS):
        if process.poll() is not None:
            raise lt.LoadTestError(f"docker-registry exited during start (see {run.work}/registry.log)")
        try:
            if request(port, "GET", "/v2/")[0] == 200:
                return process, port
        except OSError:
            pass
        time.sleep(lt.READY_POLL_S)
    raise lt.LoadTestError("docker-registry was not ready after 10 s")


def request(port, method, path, body=b"", headers=None, connection=None):
    """One HTTP request to 127.0.0.1:PORT; (status, headers, body)."""
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    if connection is None:
        conn.close()
    return response.status, dict(response.getheaders()), data


def push(port, images, missing_every):
    """One image (config + layer blob, an OCI manifest) tagged with every
    tag that is not missing; returns the tags pushed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def blob(content):
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        status, headers, text = request(port, "POST", f"/v2/{REPOSITORY}/blobs/uploads/", connection=conn)
        if status != 202:
            raise lt.LoadTestError(f"registry: start upload answered {status}: {text[:200]!r}")
        location = headers.get("Location") or headers.get("location")
        path = re.sub(r"^https?://[^/]+", "", location)
        path += ("&" if "?" in path else "?") + f"digest={digest}"
        status, _, text = request(port, "PUT", path, content,
                                  {"Content-Type": "application/octet-stream"}, connection=conn)
        if status != 201:
            raise lt.LoadTestError(f"registry: finish upload answered {status}: {text[:200]!r}")
        return digest

    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    layer = b"the one layer of the churn image"
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(layer),
                    "size": len(layer)}],
    }).encode()
    conn.close()
    pushed = [tag(n) for n in range(images) if n % missing_every != missing_every - 1]

    def put_tags(names):
        # One keep-alive connection per worker; the registry's filesystem
        # storage makes each PUT a few ms of mostly waiting.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for name in names:
            status, _, text = request(port, "PUT", f"/v2/{REPOSITORY}/manifests/{name}", manifest,
                                      {"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
                                      connection=conn)
            if status != 201:
                raise lt.LoadTestError(f"registry: manifest PUT {name} answered {status}: {text[:200]!r}")
        conn.close()

    with concurrent.futures.ThreadPoolExecutor(PUSH_WORKERS) as pool:
        for done in [pool.submit(put_tags, pushed[i::PUSH_WORKERS]) for i in range(PUSH_WORKERS)]:
            done.result()
    return pushed


# ---------------------------------------------------------------- server, k6, metrics


def start_server(run, mirror_host, flags):
    """imageswap serve with maps src.example.com::MIRROR and verification on, ready."""
    maps = run.work / "maps.conf"
    # `default::` (no default mirror): without a default key only [EXACT]
    # and [REPLACE] rules apply (maps.md).
    maps.write_text(f"default::\n{SOURCE_REGISTRY}::{mirror_host}\n")
    certs = run.work / "tls"
    lt.make_ca(run)
    lt.make_leaf(run, certs)
    server = lt.start_imageswap(run, maps, certs, flags=[
        "--verify=on", f"--registry-plain-http={mirror_host}",
        f"--registry-config={run.work / 'no-credentials.json'}", *flags])
    pin(server.process.pid, {0})
    return server


def run_k6(run, server, name, k6_env):
    """verify.js against SERVER; (exit status, summary)."""
    summary = run.work / f"{name}-k6.json"
    child_env = dict(os.environ, GOGC=lt.env("GOGC", "400"), SSL_CERT_FILE=str(run.ca_pem), TARGET=server.url,
                     SUMMARY_FILE=str(summary), **k6_env)
    command = ["k6", "run", "--quiet", "--no-usage-report", str(lt.LT / "verify.js")]
    if setting("PIN", "0") == "1":
        command = ["taskset", "-c", "1", *command]
    lt.say(f"k6 {name}: {' '.join(f'{k}={v}' for k, v in sorted(k6_env.items()))} (load {lt.loadavg()[0]})")
    status = subprocess.run(command, env=child_env, stdout=sys.stderr.fileno()).returncode
    try:
        return status, lt.report.load_json(summary)
    except (OSError, ValueError):
        raise lt.LoadTestError(f"k6 wrote no summary (exit status {status})") from None


def metric(summary, name, stat):
    """A value of the k6 summary (None when the metric never got a sample)."""
    values = summary["metrics"].get(name, {}).get("values", {})
    return values.get(stat)


def round_ms(value):
    return None if value is None else round(value, 3)


def scrape(run, server, name):
    """The server's verify_* and admission counters, from /metrics; {series: value}."""
    text = lt.https(run, server.url + "metrics").decode()
    (run.work / f"{name}-metrics.txt").write_text(text)
    out = {}
    for line in text.splitlines():
        if line.startswith("imageswap_verify_") and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            if "_bucket{" in series:
                continue
            out[series] = float(value)
    return out


def k6_figures(summary):
    return {
        "requests": metric(summary, "http_reqs", "count"),
        "rate_per_s": round_ms(metric(summary, "http_reqs", "rate")),
        "p50_ms": round_ms(metric(summary, "http_req_duration", "p(50)")),
        "p90_ms": round_ms(metric(summary, "http_req_duration", "p(90)")),
        "p99_ms": round_ms(metric(summary, "http_req_duration", "p(99)")),
        "max_ms": round_ms(metric(summary, "http_req_duration", "max")),
        "failed_admissions": int(metric(summary, "request_errors", "count") or 0),
        "http_failed": int(metric(summary, "http_req_failed", "passes") or 0),
        "dropped_iterations": int(metric(summary, "dropped_iterations", "count") or 0),
        "swapped": int(metric(summary, "images_swapped", "count") or 0),
        "kept": int(metric(summary, "images_kept", "count") or 0),
    }


def spread(values):
    """p50 / p90 / p99 / max of VALUES (ms), rounded."""
    if not values:
        return {}
    values = sorted(values)

    def at(q):
        return round(values[min(len(values) - 1, int(q * len(values)))], 3)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(values[-1], 3)}


def write_result(run, name, record):
    path = run.results_dir / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    lt.say(f"wrote {path}")


# ---------------------------------------------------------------- scenarios


def churn(run, machine):
    images, missing_every = int(setting("IMAGES", "2000")), int(setting("MISSING_EVERY", "20"))
    delay_ms = float(setting("DELAY_MS", "20"))
    registry, registry_port = start_registry(run)
    started = time.monotonic()
    pushed = push(registry_port, images, missing_every)
    lt.say(f"pushed 1 image as {len(pushed)} of {images} tags in {time.monotonic() - started:.1f} s")
    proxy = DelayProxy(("127.0.0.1", registry_port), delay_ms / 1000)
    proxy.start()
    missing_ttl = setting("VERIFY_MISSING_TTL", "30s")
    server = start_server(run, proxy.host, [f"--verify-missing-ttl={missing_ttl}"])
    k6_env = {"SCENARIO": "churn", "MIRROR": proxy.host, "IMAGES": str(images),
              "MISSING_EVERY": str(missing_every), "RATE": setting("RATE", "500"),
              "DURATION": setting("DURATION", "60s")}
    status, summary = run_k6(run, server, "churn", k6_env)
    loadavg_after = lt.loadavg()
    server_metrics = scrape(run, server, "churn")
    counts = proxy.counts()
    proxy.stop()
    server.stop()
    lt.trim_log(run.work / "imageswap.log")

    manifest_paths = [path for (method, path) in counts if "/manifests/" in path]
    distinct = len(set(manifest_paths))
    total = sum(counts.values())
    tokens = sum(n for (method, path), n in counts.items() if "/token" in path)
    repeated = {f"{method} {path}": n for (method, path), n in counts.items() if n > 1}

    def is_missing(key):
        match = re.search(r"/manifests/t(\d+)$", key)
        return bool(match) and int(match[1]) % missing_every == missing_every - 1

    repeated_missing = sum(1 for key in repeated if is_missing(key))
    k6 = k6_figures(summary)
    k6["first_10s"] = {"p99_ms": round_ms(metric(summary, "window_cold_ms", "p(99)")),
                       "count": int(metric(summary, "window_cold_ms", "count") or 0)}
    k6["after_10s"] = {"p99_ms": round_ms(metric(summary, "window_warm_ms", "p(99)")),
                       "count": int(metric(summary, "window_warm_ms", "count") or 0)}
    p99_target = float(setting("P99_MS", "30"))
    targets = {
        "registry_requests_le_distinct_plus_tokens": total <= distinct + tokens,
        "p99_le_30ms": k6["p99_ms"] is not None and k6["p99_ms"] <= p99_target,
        "zero_failed_admissions": k6["failed_admissions"] == 0 and k6["http_failed"] == 0,
        "k6_status_0": status == 0,
    }
    record = {
        "scenario": "verify-churn",
        "settings": {"images": images, "missing": images - len(pushed), "delay_ms": delay_ms,
                     "rate": int(k6_env["RATE"]), "duration": k6_env["DURATION"],
                     "verify": "on; timeout 1s, ttl 10m (defaults)", "verify_missing_ttl": missing_ttl,
                     "pinned": setting("PIN", "0") == "1"},
        "registry": {"requests": total, "distinct_images_asked": distinct, "token_fetches": tokens,
                     "repeated": repeated, "repeated_missing_images": repeated_missing,
                     "repeated_present_images": len(repeated) - repeated_missing,
                     "proxy_connections": proxy.connections, "proxy_max_in_flight": proxy.max_in_flight,
                     "proxy_errors": proxy.errors,
                     "registry_answer_ms_after_delay": spread([1000 * x for x in proxy.upstream_seconds])},
        "k6": k6,
        "server_metrics": server_metrics,
        "targets": targets,
        "ok": all(targets.values()),
        "machine": dict(machine, loadavg_after=loadavg_after),
    }
    # A missing TTL other than the default gets its own file.
    write_result(run, "verify-churn" + ("" if missing_ttl == "30s" else f"-missing-ttl-{missing_ttl}"), record)
    line = (f"RESULT scenario=verify-churn requests={k6['requests']} p99_ms={k6['p99_ms']} "
            f"failed={k6['failed_admissions']} swapped={k6['swapped']} kept={k6['kept']} "
            f"registry_requests={total} distinct={distinct} tokens={tokens} load={' '.join(loadavg_after)}")
    return record["ok"], line


def dead_mirror(run, machine):
    timeout = setting("VERIFY_TIMEOUT", "1s")
    timeout_ms = parse_ms(timeout)
    slack_ms = float(setting("TIMEOUT_SLACK_MS", "5"))
    open_target_ms = float(setting("OPEN_P99_MS", "5"))
    phases = {}
    ok = True
    for policy in setting("ON_ERROR", "swap,keep").split(","):
        mirror = DeadMirror()
        mirror.start()
        server = start_server(run, mirror.host, [f"--verify-timeout={timeout}", f"--verify-on-error={policy}"])
        k6_started = time.monotonic()
        status, summary = run_k6(run, server, f"dead-{policy}", {
            "SCENARIO": "dead-mirror", "MIRROR": mirror.host, "ON_ERROR": policy,
            "RATE": setting("RATE", "200"), "DURATION": setting("DURATION", "30s")})
        loadavg_after = lt.loadavg()
        server_metrics = scrape(run, server, f"dead-{policy}")
        server.stop()
        mirror.stop()
        lt.trim_log(run.work / "imageswap.log")
        shutil.move(run.work / "imageswap.log", run.work / f"imageswap-{policy}.log")
        k6 = k6_figures(summary)
        waits = {name: {"count": int(metric(summary, f"wait_{name}_ms", "count") or 0),
                        "p50_ms": round_ms(metric(summary, f"wait_{name}_ms", "p(50)")),
                        "p99_ms": round_ms(metric(summary, f"wait_{name}_ms", "p(99)")),
                        "max_ms": round_ms(metric(summary, f"wait_{name}_ms", "max"))}
                 for name in ("timeout", "circuit", "circuit_early", "other")}
        first, opened = waits["timeout"]["p99_ms"], waits["circuit"]["p99_ms"]
        targets = {
            "timeout_p99_le_verify_timeout": first is not None and first <= timeout_ms + slack_ms,
            "circuit_open_p99_le_5ms": opened is not None and opened <= open_target_ms,
            "zero_failed_admissions": k6["failed_admissions"] == 0 and k6["http_failed"] == 0,
            "k6_status_0": status == 0,
        }
        ok = ok and all(targets.values())
        per_second = collections.Counter(int(at - k6_started) for at in mirror.accepted_at)
        phases[policy] = {"k6": k6, "waits": waits, "mirror_connections": mirror.connections,
                          "mirror_connections_by_second": {str(k): per_second[k] for k in sorted(per_second)},
                          "server_metrics": server_metrics, "targets": targets, "ok": all(targets.values()),
                          "loadavg_after": loadavg_after}
    record = {
        "scenario": "verify-dead-mirror",
        "settings": {"verify_timeout": timeout, "timeout_slack_ms": slack_ms, "rate": int(setting("RATE", "200")),
                     "duration": setting("DURATION", "30s"), "pinned": setting("PIN", "0") == "1",
                     "breaker": "5 consecutive errors, open 10 s, then one probe (fixed)"},
        "policies": phases,
        "ok": ok,
        "machine": machine,
    }
    # A timeout other than the default gets its own file.
    write_result(run, "verify-dead-mirror" + ("" if timeout == "1s" else f"-{timeout}"), record)
    parts = [f"{p}: timeout_p99_ms={f['waits']['timeout']['p99_ms']} (n={f['waits']['timeout']['count']}) "
             f"open_p99_ms={f['waits']['circuit']['p99_ms']} (n={f['waits']['circuit']['count']}) "
             f"queued_then_open_max_ms={f['waits']['circuit_early']['max_ms']} (n={f['waits']['circuit_early']['count']}) "
             f"mirror_connections={f['mirror_connections']} "
             f"failed={f['k6']['failed_admissions']}" for p, f in phases.items()]
    return ok, f"RESULT scenario=verify-dead-mirror timeout={timeout} " + " ; ".join(parts)


def burst(run, machine):
    admissions = int(setting("BURST", "1000"))
    images = 2 * admissions
    delay_ms = float(setting("BURST_DELAY_MS", "100"))
    registry, registry_port = start_registry(run)
    # Every tag present: a modulus no tag reaches.
    pushed = push(registry_port, images, images + 1)
    lt.say(f"pushed 1 image as {len(pushed)} tags")
    proxy = DelayProxy(("127.0.0.1", registry_port), delay_ms / 1000)
    proxy.start()
    server = start_server(run, proxy.host, [])
    samples = []
    stop = threading.Event()

    def present_and_open(metrics):
        present = sum(v for k, v in metrics.items()
                      if k.startswith("imageswap_verify_checks_total{") and 'outcome="present"' in k)
        opened = max([v for k, v in metrics.items() if k.startswith("imageswap_verify_circuit_open{")] or [0])
        return present, opened

    def poll(started):
        # Until every image is verified, or 30 s.
        while not stop.is_set() and time.monotonic() - started < 30:
            try:
                present, opened = present_and_open(scrape(run, server, "burst-poll"))
                samples.append((round(time.monotonic() - started, 3), present, opened))
                if present >= images:
                    return
            except (OSError, lt.LoadTestError):
                pass
            time.sleep(0.25)

    started = time.monotonic()
    poller = threading.Thread(target=poll, args=(started,), daemon=True)
    poller.start()
    status, summary = run_k6(run, server, "burst", {"SCENARIO": "burst", "MIRROR": proxy.host,
                                                     "BURST": str(admissions)})
    k6_seconds = time.monotonic() - started
    poller.join(35)
    stop.set()
    loadavg_after = lt.loadavg()
    server_metrics = scrape(run, server, "burst")
    counts = proxy.counts()
    proxy.stop()
    server.stop()
    lt.trim_log(run.work / "imageswap.log")
    log = (run.work / "imageswap.log").read_text(errors="replace") if (run.work / "imageswap.log").exists() else ""
    total = sum(counts.values())
    manifests = [path for (method, path) in counts if "/manifests/" in path]
    tokens = sum(n for (method, path), n in counts.items() if "/token" in path)
    within_10s = max([p for (t, p, _) in samples if t <= 10] or [0])
    all_verified_at = next((t for (t, p, _) in samples if p >= images), None)
    breaker_ever_open = any(o for (_, _, o) in samples) or "Opened the breaker" in log
    k6 = k6_figures(summary)
    k6["burst_verified_in_budget"] = int(metric(summary, "burst_verified", "count") or 0)
    k6["burst_unverified_timeout"] = int(metric(summary, "burst_unverified", "count") or 0)
    k6["burst_circuit_open"] = int(metric(summary, "burst_circuit_open", "count") or 0)
    targets = {
        "all_verified_within_10s": within_10s >= images,
        "breaker_never_open": not breaker_ever_open,
        "registry_requests_le_images_plus_tokens": total <= images + tokens,
        "no_circuit_open_answer": k6["burst_circuit_open"] == 0,
        "zero_failed_admissions": k6["failed_admissions"] == 0 and k6["http_failed"] == 0,
        "k6_status_0": status == 0,
    }
    record = {
        "scenario": "verify-burst",
        "settings": {"admissions": admissions, "images": images, "delay_ms": delay_ms,
                     "verify": "on; timeout 1s, cap 32 per registry host (defaults)",
                     "pinned": setting("PIN", "0") == "1"},
        "verified": {"within_10s": within_10s, "all_verified_after_s": all_verified_at,
                     "k6_seconds": round(k6_seconds, 3), "samples": samples},
        "breaker_ever_open": breaker_ever_open,
        "registry": {"requests": total, "distinct_images_asked": len(set(manifests)), "token_fetches": tokens,
                     "proxy_connections": proxy.connections, "proxy_max_in_flight": proxy.max_in_flight,
                     "proxy_errors": proxy.errors},
        "k6": k6,
        "server_metrics": server_metrics,
        "targets": targets,
        "ok": all(targets.values()),
        "machine": dict(machine, loadavg_after=loadavg_after),
    }
    write_result(run, "verify-burst", record)
    line = (f"RESULT scenario=verify-burst images={images} verified_within_10s={within_10s} "
            f"all_verified_after_s={all_verified_at} breaker_ever_open={breaker_ever_open} "
            f"registry_requests={total} max_in_flight={proxy.max_in_flight} "
            f"answered_verified={k6['burst_verified_in_budget']} unverified={k6['burst_unverified_timeout']} "
            f"circuit_open={k6['burst_circuit_open']} failed={k6['failed_admissions']} "
            f"p99_ms={k6['p99_ms']} load={' '.join(loadavg_after)}")
    return record["ok"], line


def parse_ms(text):
    """'1s', '250ms' → milliseconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", text.strip())
    if not match:
        raise lt.LoadTestError(f"VERIFY_TIMEOUT={text}: give it as 250ms or 1s")
    return float(match[1]) * (1 if match[2] == "ms" else 1000)


def main(argv):
    if len(argv) != 2 or argv[1] not in SCENARIOS:
        print(USAGE, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    run = lt.Run.for_scenario(f"verify-{argv[1]}")
    # PIN=1: this driver (the proxy's thread) and what it starts on CPU 1;
    # start_server moves the server to CPU 0.
    pin(os.getpid(), {1})
    try:
        lt.check_tools("verify")
        if shutil.which(REGISTRY_BIN) is None and argv[1] in ("churn", "burst"):
            raise lt.LoadTestError(f"{REGISTRY_BIN} not found on PATH; install with {lt.INSTALL_SCRIPT} docker-registry")
        lt.build("verify")
        lt.wait_quiet()
        lt.say(f"load average: {' '.join(lt.loadavg())} on {os.cpu_count()} cores")
        machine = lt.machine_info()
        scenario = {"churn": churn, "dead-mirror": dead_mirror, "burst": burst}[argv[1]]
        ok, line = scenario(run, machine)
    except lt.LoadTestError as error:
        print(f"loadtest: {error}", file=sys.stderr)
        return 1
    finally:
        lt.stop_children(run)
    print(line, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

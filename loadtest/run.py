"""Load-tests a local `imageswap serve` with k6 (wrk and h2load for `compare`).

    loadtest/run.sh smoke|steady|max|soak|reload|spike|compare

run.sh only runs this file. main() goes through these steps, in order:

1. Check that the tools are on PATH: k6 and openssl; for `compare`
   openssl, wrk, h2load and taskset (no k6). Nothing is installed here: a
   missing tool stops the run with one line naming
   scripts/install-loadtest-tools, which installs them (taskset comes
   with util-linux).
2. Build the release binary (and for `compare` the baseline example), unless
   LOADTEST_SKIP_BUILD=1 and it is built.
3. With QUIET_LOAD set, wait for a quiet machine.
4. Make a CA (what the webhook configuration's caBundle would hold) and a
   serving certificate it signs for 127.0.0.1.
5. Start the server on a free loopback port and wait for /readyz.
6. Run the load while measuring the server: its CPU time from
   /proc/PID/stat, its RSS from /proc/PID/status every SAMPLE_SECONDS.
   - smoke, steady, max, soak, spike: one k6 run of loadtest/imageswap.js.
   - reload: the same, while a thread publishes a new maps file every
     second and a new certificate every 10 s the way the kubelet updates a
     ConfigMap or Secret volume (a `..data` symlink swap). Afterwards the
     server must have loaded them all and serve the last certificate.
   - compare: imageswap (production settings) and two baselines
     (loadtest/baseline/): bare hyper + rustls (`baseline`), and the same
     parsing each body once with simd_json::to_tape (`baseline_parse`),
     all started in this run, each pinned to
     SERVER_CPU with taskset while the load generator runs on LOAD_CPU.
     COMPARE_ROUNDS rounds take the servers in turn through three phases:
     wrk (HTTP/1.1, the ceiling), h2load (HTTP/2, 4 connections x 32
     streams, the ceiling) and h2load at one fixed rate for both (the p99
     at the same offered load). Medians of the rounds and both ratios
     (imageswap/baseline: ratio_vs_bare; imageswap/baseline_parse:
     ratio_vs_bare_parse, which the targets of issue 24 are held to) are
     printed and written to results/compare.json.
7. Stop every server with SIGTERM. Each must exit 0.
8. Hand the figures to report.py. It writes results/SCENARIO.json and gives
   back the RESULT line, which is printed last and is the only thing on
   stdout (progress, k6, wrk and cargo output go to stderr):

       RESULT scenario=<s> rps=<n> p50_ms=<x> p99_ms=<x> errors=<n> cpu_us_per_req=<x> rss_mib=<n>

Exit status: 0 when the scenario passed; 1 when a threshold, a check or a
target failed, or when the driver could not run it (a line starting with
`loadtest:` says why); 2 for a wrong argument.

The server runs as the production overlay configures it: INFO level, JSON
log lines (one per review). SERVER_ARGS replaces `--log-format json` with
other flags, e.g. SERVER_ARGS="--log-format json --log-level warn".

Settings (environment; empty counts as unset): RATE, DURATION, P99_MS,
STEPS, STEP_SECONDS (10), SPIKE_RATE go to k6 (see loadtest/imageswap.js).
steady and soak default RATE to half of the sustainable rate in
results/max.json, and spike's peak (SPIKE_RATE) to all of it.
compare: COMPARE_ROUNDS (3), COMPARE_SECONDS (each phase, 10),
COMPARE_WARN (0; 1 also measures imageswap at --log-level warn, to show
what its per-review log line costs), SERVER_CPU (1) and LOAD_CPU (0) (the
cores of taskset -c), WRK_CONNECTIONS (16), WRK_THREADS (1: one core),
H2_CLIENTS (4), H2_STREAMS (32), H2_RATE (the fixed rate in req/s; by
default half the lower of the two servers' HTTP/2 ceilings in round 1). GOGC (k6's, 400). SAMPLE_SECONDS
(the RSS sampling interval, 2). RESULTS_DIR (loadtest/results).
QUIET_LOAD=0.7: on a shared machine, wait (up to QUIET_WAIT_S, 900 s) until
the 1-minute load average is below it. Raw output (k6 summaries, wrk output,
server logs, metrics, certificates) goes to target/loadtest/SCENARIO/.

Why openssl and Python here rather than the Rust test harness's code: the
harness (its rcgen TestCa and kube_volume_write) is test code
compiled into each test binary. Python cannot call it, and using it would
take a new Rust binary: one more build before every run, and a dependency
on test code that is being reorganised. This driver needs only a few
openssl commands for the certificates (openssl is on every machine that runs
this, and the old run.sh used the same commands). publish_volume() follows
kube_volume_write step by step, so the load test and the reload tests
exercise the same `..data` swap. Standard library only.
"""

import base64
import functools
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# report.py sits beside this file; no __pycache__ left in the tree.
sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402

SCENARIOS = ("smoke", "steady", "max", "soak", "reload", "spike", "compare")
USAGE = "usage: loadtest/run.sh " + "|".join(SCENARIOS)
INSTALL_SCRIPT = "scripts/install-loadtest-tools"

ROOT = Path(__file__).resolve().parent.parent
LT = ROOT / "loadtest"
BIN = ROOT / "target/release/imageswap"
BASELINE_BIN = ROOT / "target/release/examples/baseline"
MAPS_FILE = LT / "imageswap-maps.conf"
MAPS_NAME = "imageswap-maps.conf"
# The review `compare` posts to every server: a Pod with 4 containers.
COMPARE_REVIEW = ROOT / "benches/fixtures/pod-4-containers.review.json"

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Starting a server: polls of /readyz, this far apart (10 s in all).
READY_POLLS = 100
READY_POLL_S = 0.1
# How long a server may take to exit after SIGTERM.
SHUTDOWN_TIMEOUT_S = 30
# reload: a new maps version this often, and a new certificate with every
# CERT_EVERY_MAPS-th of them; then this long for the last change to settle
# (the server debounces 150 ms) before the checks.
MAPS_EVERY_S = 1
CERT_EVERY_MAPS = 10
RELOAD_SETTLE_S = 1
# compare: the pause after each load phase.
PHASE_PAUSE_S = 1
# QUIET_LOAD: how often the load average is read.
QUIET_POLL_S = 10
# What a failed HTTPS request raises.
HTTP_ERRORS = (OSError, ssl.SSLError, http.client.HTTPException)


class LoadTestError(Exception):
    """The driver cannot go on; main() prints `loadtest: MESSAGE` and exits 1."""


def say(message):
    """Progress, on stderr (stdout is for the RESULT line)."""
    print(f"== {message}", file=sys.stderr, flush=True)


def env(name, default=None):
    """An environment setting; an empty value counts as unset (as ${X:-default} in the shell)."""
    return os.environ.get(name) or default


@dataclass
class Run:
    """What one run works with: the scenario and where its files go."""

    scenario: str
    results_dir: Path
    work: Path
    server_args: list
    # Every process started, stopped at the end of the run whatever happens.
    children: list = field(default_factory=list)

    @classmethod
    def for_scenario(cls, scenario):
        """Settings from the environment; an empty work directory."""
        run = cls(
            scenario=scenario,
            results_dir=Path(env("RESULTS_DIR", LT / "results")),
            work=ROOT / "target/loadtest" / scenario,
            server_args=env("SERVER_ARGS", "--log-format json").split(),
        )
        shutil.rmtree(run.work, ignore_errors=True)
        run.work.mkdir(parents=True)
        run.results_dir.mkdir(parents=True, exist_ok=True)
        return run

    @property
    def ca_pem(self):
        """The CA certificate the clients trust."""
        return self.work / "ca.pem"


# ---------------------------------------------------------------- tools and build


def check_tools(scenario):
    """Fail with one line when a tool the scenario needs is not on PATH."""
    needed = ["openssl", "wrk", "h2load", "taskset"] if scenario == "compare" else ["k6", "openssl"]
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        raise LoadTestError(f"{' and '.join(missing)} not found on PATH; install with {INSTALL_SCRIPT}")


def build(scenario):
    """cargo build --release (and the baseline example for compare), unless
    LOADTEST_SKIP_BUILD=1 and the binary is there."""
    targets = [(BIN, [])]
    if scenario == "compare":
        targets.append((BASELINE_BIN, ["--example", "baseline"]))
    for binary, extra in targets:
        if env("LOADTEST_SKIP_BUILD") == "1" and os.access(binary, os.X_OK):
            say(f"using the built {binary}")
            continue
        command = ["cargo", "build", "--release", "--locked", *extra]
        say(" ".join(command))
        if subprocess.run(command, cwd=ROOT, stdout=sys.stderr.fileno()).returncode != 0:
            raise LoadTestError(f"{' '.join(command)} failed")


def loadavg():
    """The 1, 5 and 15-minute load averages, as strings."""
    return Path("/proc/loadavg").read_text().split()[:3]


def wait_quiet():
    """QUIET_LOAD=X: wait (up to QUIET_WAIT_S) until the 1-minute load average is below X."""
    limit = env("QUIET_LOAD")
    if limit is None:
        return
    most = int(env("QUIET_WAIT_S", "900"))
    waited = 0
    while float(loadavg()[0]) >= float(limit):
        if waited >= most:
            say(f"load still {loadavg()[0]} after {waited}s; measuring anyway")
            return
        if waited == 0:
            say(f"waiting for the 1-minute load average to drop below {limit}")
        time.sleep(QUIET_POLL_S)
        waited += QUIET_POLL_S


def machine_info():
    """The machine and the code measured, for the JSON (taken before the run)."""
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def output(*command):
        try:
            return subprocess.run(command, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return ""

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "loadavg_before": loadavg(),
        "k6": output("k6", "version"),
        "wrk": " ".join(output("wrk", "-v").split()[:2]),
        "h2load": output("h2load", "--version"),
        "commit": output("git", "rev-parse", "--short", "HEAD"),
    }


# ---------------------------------------------------------------- certificates and volumes


def openssl(*args):
    """Run openssl quietly; its error output only when it fails."""
    done = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise LoadTestError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def make_ca(run):
    """A P-256 CA, ca.pem and ca.key in the work directory."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=imageswap loadtest CA", "-keyout", run.work / "ca.key", "-out", run.ca_pem)


def make_leaf(run, directory):
    """A new key and a certificate the CA signs for 127.0.0.1 (and localhost),
    written as DIRECTORY/tls.crt and tls.key; returns {name: bytes} of the two."""
    directory.mkdir(parents=True, exist_ok=True)
    crt, key, csr, ext = (directory / name for name in ("tls.crt", "tls.key", "tls.csr", "tls.ext"))
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:imageswap.loadtest.svc\n"
                   "extendedKeyUsage=serverAuth\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/CN=imageswap.loadtest.svc", "-keyout", key, "-out", csr)
    openssl("x509", "-req", "-in", csr, "-CA", run.ca_pem, "-CAkey", run.work / "ca.key", "-days", "1",
            "-set_serial", "0x" + secrets.token_hex(8), "-extfile", ext, "-out", crt)
    csr.unlink()
    ext.unlink()
    return {"tls.crt": crt.read_bytes(), "tls.key": key.read_bytes()}


def publish_volume(mount, files):
    """Update MOUNT the way the kubelet updates a ConfigMap or Secret volume
    (as the Rust test harness's kube_volume_write does): write the files into a new
    `..<timestamp>` directory, point a `..data_tmp` symlink at it, rename
    that over `..data` (one atomic step), make each visible name a symlink
    `name -> ..data/name` on the first publish, and remove the previous
    directory."""
    mount.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()) + f"{time.time_ns() % 10**9:09d}"
    (mount / stamp).mkdir()
    for name, content in files.items():
        (mount / stamp / name).write_bytes(content)
    data, tmp = mount / "..data", mount / "..data_tmp"
    old = os.readlink(data) if data.is_symlink() else None
    tmp.unlink(missing_ok=True)
    os.symlink(stamp, tmp)
    os.replace(tmp, data)
    for name in files:
        if not (mount / name).is_symlink():
            os.symlink(f"..data/{name}", mount / name)
    if old:
        shutil.rmtree(mount / old, ignore_errors=True)


def fingerprint(der):
    """SHA-256 of a DER certificate, in hex."""
    return hashlib.sha256(der).hexdigest()


# ---------------------------------------------------------------- servers


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def https(run, url, data=None, headers=None, timeout=5):
    """GET (or POST DATA to) URL, trusting the run's CA; the body, or an
    exception for a failure or a status of 400 and up."""
    context = ssl.create_default_context(cafile=str(run.ca_pem))
    # No proxy from the environment: the servers are on 127.0.0.1.
    no_proxy = urllib.request.ProxyHandler({})
    opener = urllib.request.build_opener(no_proxy, urllib.request.HTTPSHandler(context=context))
    request = urllib.request.Request(url, data=data, headers=headers or {})
    with opener.open(request, timeout=timeout) as response:
        return response.read()


def served_fingerprint(run, port):
    """The fingerprint of the certificate the server presents to a new
    connection for `localhost` ("" when the handshake fails)."""
    context = ssl.create_default_context(cafile=str(run.ca_pem))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                return fingerprint(tls.getpeercert(binary_form=True))
    except (OSError, ssl.SSLError):
        return ""


@dataclass
class Server:
    """A server process started for the run, and how to measure it."""

    name: str
    process: subprocess.Popen
    port: int

    @property
    def url(self):
        """Its HTTPS address."""
        return f"https://127.0.0.1:{self.port}/"

    def cpu_ticks(self):
        """User + system CPU time so far, in clock ticks (CLK_TCK a second)."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            raise LoadTestError(f"{self.name} is gone (see its log in target/loadtest/)") from None
        # The fields after the command name (which ends with ')'): state is
        # the first, utime the 12th and stime the 13th.
        fields = stat.rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def memory_kib(self, name):
        """VmRSS (resident now) or VmHWM (peak resident) in KiB; None once it has exited."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith(name + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return None

    def stop(self):
        """SIGTERM, and the exit status must be 0."""
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise LoadTestError(f"{self.name} still running {SHUTDOWN_TIMEOUT_S} s after SIGTERM") from None
        if status != 0:
            raise LoadTestError(f"{self.name} exited with status {status} after SIGTERM")
        say(f"{self.name} stopped (exit 0)")


def spawn(run, name, command, cpu=None):
    """Start COMMAND (pinned to core CPU with taskset when given) with its
    output in WORK/NAME.log; stopped at the end of the run whatever happens."""
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    with open(run.work / f"{name}.log", "wb") as log:
        process = subprocess.Popen([*pin, *(str(part) for part in command)], stdout=log, stderr=subprocess.STDOUT)
    run.children.append(process)
    return process


def wait_ready(run, server, probe):
    """Poll PROBE(server) until it succeeds; fail if the server exits or after 10 s."""
    for _ in range(READY_POLLS):
        if server.process.poll() is not None:
            raise LoadTestError(f"{server.name} exited during start (see {run.work}/{server.name}.log)")
        try:
            probe(server)
            return
        except HTTP_ERRORS:
            time.sleep(READY_POLL_S)
    raise LoadTestError(f"{server.name} on port {server.port} was not ready after {READY_POLLS * READY_POLL_S:g} s")


def start_imageswap(run, maps, certs, name="imageswap", flags=(), cpu=None):
    """`imageswap serve` on a free port with MAPS and CERTS/tls.{crt,key}, ready."""
    port = free_port()
    process = spawn(run, name, [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--tls-cert", certs / "tls.crt",
                                "--tls-key", certs / "tls.key", "--maps", maps, *run.server_args, *flags], cpu)
    server = Server(name, process, port)
    wait_ready(run, server, lambda s: https(run, s.url + "readyz"))
    say(f"{name} pid {process.pid} on {server.url} ({' '.join([*run.server_args, *flags])})")
    return server


def start_baseline(run, certs, response, cpu=None, parse=False):
    """The bare baseline server answering RESPONSE to every request, ready
    (it has no /readyz: any HTTPS answer will do). PARSE: the second
    baseline, `baseline_parse`, which also parses each body with
    simd-json's to_tape."""
    port = free_port()
    name = "baseline_parse" if parse else "baseline"
    command = [BASELINE_BIN, *(["--parse"] if parse else []), f"127.0.0.1:{port}", certs / "tls.crt",
               certs / "tls.key", response]
    process = spawn(run, name, command, cpu)
    server = Server(name, process, port)
    wait_ready(run, server, lambda s: https(run, s.url, data=b"{}"))
    say(f"{name} pid {process.pid} on {server.url}")
    return server


def trim_log(path):
    """The server logs a line per review: keep the others (and a count), not a gigabyte of them."""
    if not path.exists():
        return
    kept, removed = path.with_name(path.name + ".kept"), 0
    with open(path, "rb") as source, open(kept, "wb") as target:
        for line in source:
            if b"Admission reviewed" in line:
                removed += 1
            else:
                target.write(line)
        target.write(f"({removed} 'Admission reviewed.' lines removed)\n".encode())
    os.replace(kept, path)


class RssSampler(threading.Thread):
    """Samples a server's RSS every SAMPLE_SECONDS until it exits: [elapsed_s, KiB]
    pairs in .samples, and "elapsed_s KiB" lines in FILE as they come."""

    def __init__(self, server, path, interval):
        super().__init__(daemon=True)
        self.server, self.path, self.interval = server, path, interval
        self.samples = []

    def run(self):
        start = time.monotonic()
        with open(self.path, "w") as out:
            while self.server.process.poll() is None:
                kib = self.server.memory_kib("VmRSS")
                if kib is None:
                    break
                elapsed = int(time.monotonic() - start)
                self.samples.append([elapsed, kib])
                out.write(f"{elapsed} {kib}\n")
                out.flush()
                time.sleep(self.interval)


def run_k6(run, server, summary, extra_env):
    """loadtest/imageswap.js against SERVER, its summary into SUMMARY; k6's exit status."""
    child_env = dict(os.environ)
    child_env.update({
        # GOGC=400: k6 (Go) then spends ~20% less CPU on garbage collection,
        # and its own GC pauses stop showing up as server latency.
        "GOGC": env("GOGC", "400"),
        "SSL_CERT_FILE": str(run.ca_pem),
        "TARGET": server.url,
        "SCENARIO": run.scenario,
        "SUMMARY_FILE": str(summary),
    })
    child_env.update(extra_env)
    command = ["k6", "run", "--quiet", "--no-usage-report", str(LT / "imageswap.js")]
    return subprocess.run(command, env=child_env, stdout=sys.stderr.fileno()).returncode


def share_of_max(run, divisor):
    """The sustainable rate of the last `max` run divided by DIVISOR (None when there is none)."""
    try:
        rate = report.load_json(run.results_dir / "max.json")["sustainable_rps"]
    except (OSError, ValueError, KeyError):
        return None
    return int(rate // divisor) if rate else None


# ---------------------------------------------------------------- scenarios


class Rotator(threading.Thread):
    """reload: every MAPS_EVERY_S a new maps version, every CERT_EVERY_MAPS-th
    time a new certificate, each published like a ConfigMap / Secret volume.
    The two maps variants swap the same images (to different mirrors), so
    every response stays checkable; a comment makes each version distinct."""

    def __init__(self, run, leaf):
        super().__init__(daemon=True)
        self.maps_dir, self.tls_dir = run.work / "maps", run.work / "tls"
        self.new_leaf = functools.partial(make_leaf, run, run.work / "leaf")
        self.stopped = threading.Event()
        self.generations = 0
        self.rotations = 0
        self.last_cert = leaf["tls.crt"]
        self.error = None
        self.maps_a = MAPS_FILE.read_text()
        self.maps_b = (self.maps_a.replace("::harbor.example.com/", "::harbor-b.example.com/")
                       + "harbor-b.example.com::\n")

    def run(self):
        try:
            while not self.stopped.wait(MAPS_EVERY_S):
                self.generations += 1
                n = self.generations
                maps = (self.maps_b if n % 2 else self.maps_a) + f"# generation {n}\n"
                publish_volume(self.maps_dir, {MAPS_NAME: maps.encode()})
                if n % CERT_EVERY_MAPS == 0:
                    leaf = self.new_leaf()
                    publish_volume(self.tls_dir, leaf)
                    self.rotations += 1
                    self.last_cert = leaf["tls.crt"]
        except Exception as error:  # reported by reload_checks, not lost in a thread
            self.error = error

    def stop(self):
        """Finish the current publish and stop."""
        self.stopped.set()
        self.join()


def reload_checks(run, server, rotator):
    """After `reload`: what the server loaded, from its /metrics and the certificate it serves."""
    if rotator.error:
        say(f"the rotation stopped early: {rotator.error!r}")
    time.sleep(RELOAD_SETTLE_S)
    try:
        metrics = https(run, server.url + "metrics").decode()
    except HTTP_ERRORS as error:
        say(f"cannot read {server.url}metrics: {error}")
        metrics = ""
    (run.work / "metrics.txt").write_text(metrics)
    expected = fingerprint(ssl.PEM_cert_to_DER_cert(rotator.last_cert.decode()))
    return report.reload_checks(metrics=metrics, generations=rotator.generations, rotations=rotator.rotations,
                                served=served_fingerprint(run, server.port), expected=expected)


def run_single(run):
    """One server and one k6 run (with the maps and certificate rotations for `reload`).
    Returns (ok, RESULT line)."""
    make_ca(run)
    publish_volume(run.work / "maps", {MAPS_NAME: MAPS_FILE.read_bytes()})
    leaf = make_leaf(run, run.work / "leaf")
    publish_volume(run.work / "tls", leaf)
    k6_env = {}
    rate = env("RATE")
    if rate is None and run.scenario in ("steady", "soak"):
        rate = share_of_max(run, 2)
        if rate:
            say(f"rate {rate}/s: half of the sustainable rate in {run.results_dir}/max.json")
    if run.scenario == "spike" and env("SPIKE_RATE") is None:
        peak = share_of_max(run, 1)
        if peak:
            k6_env["SPIKE_RATE"] = str(peak)
            say(f"spike to {peak}/s: the sustainable rate in {run.results_dir}/max.json")
    if rate:
        k6_env["RATE"] = str(rate)
    machine = machine_info()

    server = start_imageswap(run, run.work / "maps" / MAPS_NAME, run.work / "tls")
    sample_seconds = float(env("SAMPLE_SECONDS", "2"))
    sampler = RssSampler(server, run.work / "rss.txt", sample_seconds)
    sampler.start()
    rotator = Rotator(run, leaf) if run.scenario == "reload" else None
    if rotator:
        rotator.start()
    cpu_before = server.cpu_ticks()
    k6_status = run_k6(run, server, run.work / "k6-summary.json", k6_env)
    cpu_ticks = server.cpu_ticks() - cpu_before
    hwm_kib = server.memory_kib("VmHWM")
    checks = {}
    if rotator:
        rotator.stop()
        checks = reload_checks(run, server, rotator)
    server.stop()
    sampler.join()
    trim_log(run.work / "imageswap.log")

    try:
        summary = report.load_json(run.work / "k6-summary.json")
    except (OSError, ValueError):
        raise LoadTestError(f"k6 wrote no summary (exit status {k6_status})") from None
    ok, line = report.single(
        scenario=run.scenario, summary=summary, cpu_ticks=cpu_ticks, clk_tck=CLK_TCK, hwm_kib=hwm_kib,
        samples=sampler.samples, sample_seconds=sample_seconds, step_seconds=float(env("STEP_SECONDS", "10")),
        machine=machine, extra=checks, k6_status=k6_status, out_path=run.results_dir / f"{run.scenario}.json")
    passed = ok and k6_status == 0 and checks.get("reload", {}).get("ok", True)
    return passed, line


def check_answer(response, swaps_expected):
    """The answer imageswap gave the compare review must be the one the
    baseline replays: allowed, with a patch of SWAPS_EXPECTED operations."""
    answer = json.loads(response)["response"]
    ops = json.loads(base64.b64decode(answer["patch"])) if "patch" in answer else []
    # One replace per swap; the original-images record is an `add`.
    swaps = sum(1 for op in ops if op.get("op") == "replace")
    if not answer.get("allowed") or swaps != swaps_expected:
        raise LoadTestError(f"imageswap answered the compare review with {swaps} swaps, not {swaps_expected}")


# The compare review swaps all 4 of its containers.
COMPARE_SWAPS = 4


def generator(command):
    """A load generator's command line, pinned to LOAD_CPU."""
    return ["taskset", "-c", env("LOAD_CPU", "0"), *[str(part) for part in command]]


def latency_percentiles(log_file):
    """p50/p90/p99/max in ms from an h2load --log-file (start µs, status, µs to the end of the response)."""
    values = []
    with open(log_file) as f:
        for line in f:
            fields = line.split("\t")
            if len(fields) >= 3:
                values.append(int(fields[2]))
    return report.percentiles_ms(values)


def h2load_figures(text, log_file):
    """The figures of one h2load run, from its output and its --log-file (None when it printed none)."""
    figures = report.parse_h2load(text)
    if figures is None:
        return None
    figures.update(latency_percentiles(log_file) if log_file.exists() else {})
    return figures


def measure_phase(run, server, tool, round_, rate=None):
    """One load run against one server with the server's CPU time over it;
    returns the phase record report.compare reads. TOOL: wrk (HTTP/1.1, as
    fast as it goes), h2load (HTTP/2, as fast as it goes) or h2load_rate
    (HTTP/2 at RATE req/s in all)."""
    stem = run.work / f"{server.name}-{tool}-{round_}"
    figures, raw, log_file = Path(f"{stem}.json"), Path(f"{stem}.txt"), Path(f"{stem}.log")
    seconds = env("COMPARE_SECONDS", "10")
    say(f"{tool}{f' at {rate}/s' if rate else ''} → {server.name} (round {round_}; load {loadavg()[0]})")
    if tool == "wrk":
        command = ["wrk", f"-t{env('WRK_THREADS', '1')}", f"-c{env('WRK_CONNECTIONS', '16')}",
                   # A 10 s timeout: wrk's 2 s counts a generator starved by a
                   # busy machine as the server's error.
                   f"-d{seconds}s", "--timeout", "10s", "--latency", "-s", LT / "wrk-post.lua", server.url]
    else:
        clients = int(env("H2_CLIENTS", "4"))
        command = ["h2load", "-t1", f"-c{clients}", f"-m{env('H2_STREAMS', '32')}", f"-D{seconds}",
                   "-d", COMPARE_REVIEW, "-H", "content-type: application/json", f"--log-file={log_file}",
                   server.url]
        if rate:
            # --rps is per client.
            command.insert(-1, f"--rps={max(1, round(rate / clients))}")
    before = server.cpu_ticks()
    with open(raw, "wb") as out:
        status = subprocess.run(generator(command), env=dict(os.environ, REVIEW_FILE=str(COMPARE_REVIEW)),
                                stdout=out, stderr=subprocess.STDOUT).returncode
    cpu_ticks = server.cpu_ticks() - before
    text = raw.read_text(errors="replace")
    if tool == "wrk":
        # wrk-post.lua prints its figures as one `WRK_JSON {...}` line.
        figures.write_text("".join(line.removeprefix("WRK_JSON ") + "\n"
                                   for line in text.splitlines() if line.startswith("WRK_JSON ")))
    else:
        parsed = h2load_figures(text, log_file)
        figures.write_text(json.dumps(parsed) + "\n" if parsed else "")
        log_file.unlink(missing_ok=True)
    phase = {"server": server.name, "tool": tool, "round": round_, "cpu_ticks": cpu_ticks,
             "clk_tck": CLK_TCK, "status": status, "file": str(figures), "offered_rps": rate,
             "loadavg": " ".join(loadavg())}
    with open(run.work / "phases.jsonl", "a") as phases:
        phases.write(json.dumps(phase) + "\n")
    time.sleep(PHASE_PAUSE_S)
    return phase


def fixed_rate(phases):
    """H2_RATE, else half the lower HTTP/2 ceiling of the servers in PHASES
    (rounded down to a hundred): a load both can carry, for the p99."""
    if env("H2_RATE"):
        return int(env("H2_RATE"))
    ceilings = []
    for phase in phases:
        try:
            ceilings.append(report.load_json(phase["file"])["rps"])
        except (OSError, ValueError, KeyError, TypeError):
            raise LoadTestError(f"no HTTP/2 ceiling from {phase['server']} (see {phase['file']})") from None
    return max(100, int(min(ceilings) / 2 // 100 * 100))


def run_compare(run):
    """imageswap and the two baselines (and with COMPARE_WARN=1 imageswap at WARN),
    each on SERVER_CPU, loaded in turn with the same review. Returns (ok, RESULT line)."""
    certs = run.work / "tls"
    make_ca(run)
    make_leaf(run, certs)
    machine = machine_info()
    cpu = env("SERVER_CPU", "1")
    machine.update({"server_cpu": cpu, "load_cpu": env("LOAD_CPU", "0")})
    servers = [start_imageswap(run, MAPS_FILE, certs, cpu=cpu)]
    # The baselines answer exactly what imageswap answers to this review.
    response = https(run, servers[0].url, data=COMPARE_REVIEW.read_bytes(),
                     headers={"Content-Type": "application/json"})
    check_answer(response, COMPARE_SWAPS)
    (run.work / "response.json").write_bytes(response)
    servers.append(start_baseline(run, certs, run.work / "response.json", cpu=cpu))
    servers.append(start_baseline(run, certs, run.work / "response.json", cpu=cpu, parse=True))
    if env("COMPARE_WARN", "0") == "1":
        servers.append(start_imageswap(run, MAPS_FILE, certs, "imageswap_warn", ["--log-level", "warn"], cpu=cpu))

    # Rounds interleave the servers, so a burst of load from elsewhere on the
    # machine hits all of them alike; the report takes medians.
    phases, rate = [], None
    for round_ in range(1, int(env("COMPARE_ROUNDS", "3")) + 1):
        for tool in ("wrk", "h2load"):
            phases += [measure_phase(run, server, tool, round_) for server in servers]
        if rate is None:
            rate = fixed_rate([p for p in phases if p["tool"] == "h2load"])
            say(f"HTTP/2 fixed rate for the p99: {rate}/s")
        phases += [measure_phase(run, server, "h2load_rate", round_, rate) for server in servers]
    hwm_kib = {server.name: server.memory_kib("VmHWM") for server in servers}
    for server in servers:
        server.stop()
        trim_log(run.work / f"{server.name}.log")
    return report.compare(phases=phases, machine=machine, hwm_kib=hwm_kib,
                          review=str(COMPARE_REVIEW.relative_to(ROOT)), out_path=run.results_dir / "compare.json")


# ---------------------------------------------------------------- main


def stop_children(run):
    """Stop whatever this run started and is still running (after a failure or an interrupt)."""
    for process in run.children:
        if process.poll() is None:
            process.terminate()
    for process in run.children:
        try:
            process.wait(SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()


def main(argv):
    """Run the scenario named in ARGV; the exit status."""
    if len(argv) != 2 or argv[1] not in SCENARIOS:
        print(USAGE, file=sys.stderr)
        return 2
    # SIGTERM (CI's timeout, an operator) stops the servers too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    run = Run.for_scenario(argv[1])
    try:
        check_tools(run.scenario)
        build(run.scenario)
        wait_quiet()
        say(f"load average: {' '.join(loadavg())} on {os.cpu_count()} cores")
        ok, line = run_compare(run) if run.scenario == "compare" else run_single(run)
    except LoadTestError as error:
        print(f"loadtest: {error}", file=sys.stderr)
        return 1
    finally:
        stop_children(run)
    print(line, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

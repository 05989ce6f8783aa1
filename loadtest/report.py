"""Turns what the load-test driver (loadtest/run.py) measured into
loadtest/results/SCENARIO.json and the closing RESULT line.

    single(...)         one k6 run: smoke, steady, max, soak, reload, spike
    compare(...)        the wrk and h2load phases of `compare`
    reload_checks(...)  reload: every maps version and certificate loaded?

The driver measures (processes, /proc, files); this module only computes:
each function takes the figures, writes the JSON and returns whether the
scenario passed, with the RESULT line for the driver to print last. A run
fails on a k6 threshold, an error, or a target the scenario exists to check
(soak's memory, reload's rotations, compare's ratios). Standard library only.
"""

import datetime
import json
import re
import statistics
import sys

# `max`: a step is sustained when its p99 stays under this (milliseconds),
# nothing failed, and it was served at (1 - DROP_SHARE) of the offered rate
# or more (below that, k6 had no VU free and dropped iterations).
MAX_P99_MS = 10.0
DROP_SHARE = 0.01
# `soak`: the memory targets.
SOAK_PEAK_RSS_MIB = 50.0
SOAK_GROWTH_AFTER_S = 60
# RSS growth tolerated (after the first minute; in the second half): allocator
# noise, not a leak. Exit status: the second half decides; the first-minute
# figure is reported against the target.
SOAK_GROWTH_TOLERANCE_MIB = 2.0
# `compare` targets (issue 24): imageswap against the bare + parse
# baseline (bare hyper + rustls that parses each body once with
# `simd_json::to_tape`, the work any webhook on this design must do): CPU
# per request on HTTP/1.1 and HTTP/2, requests/s on HTTP/1.1, the p99 on
# HTTP/2 at the same fixed rate. The ratios against the bare baseline (no
# parse, issue 14's) are reported beside them.
TARGET_CPU_RATIO_H1 = 1.3
TARGET_CPU_RATIO_H2 = 1.2
TARGET_RPS_RATIO_H1 = 0.8
TARGET_P99_RATIO = 1.5
# The two baselines of `compare` (server name -> the suffix of its ratios),
# the one the targets are measured against last.
BASELINES = {"baseline": "vs_bare", "baseline_parse": "vs_bare_parse"}
TARGET_BASELINE = "baseline_parse"
# The phases of `compare`, in table order: tool -> what it measures.
COMPARE_TOOLS = {
    "wrk": "HTTP/1.1 (wrk, 16 connections), the ceiling",
    "h2load": "HTTP/2 (h2load, 4 connections x 32 streams), the ceiling",
    "h2load_rate": "HTTP/2 (h2load, 4 connections x 32 streams) at a fixed rate, the same for both",
}


def metric(summary, name, stat, default=0.0):
    """One statistic of one k6 metric (e.g. "http_reqs", "count")."""
    values = summary["metrics"].get(name, {}).get("values", {})
    return values.get(stat, default)


def failed_thresholds(summary):
    """The k6 thresholds that failed, as "metric expression"."""
    out = []
    for name, m in summary["metrics"].items():
        for expr, t in (m.get("thresholds") or {}).items():
            if not t.get("ok", True):
                out.append(f"{name} {expr}")
    return sorted(out)


def latency(summary, name="http_req_duration"):
    """The latency percentiles of a k6 trend, in milliseconds."""
    return {
        "p50": round(metric(summary, name, "p(50)"), 3),
        "p90": round(metric(summary, name, "p(90)"), 3),
        "p99": round(metric(summary, name, "p(99)"), 3),
        "max": round(metric(summary, name, "max"), 3),
        "avg": round(metric(summary, name, "avg"), 3),
    }


def errors(summary, suffix=""):
    """Answers imageswap.js found wrong (request_errors), optionally of one tagged sub-metric."""
    return int(metric(summary, "request_errors" + suffix, "count"))


def mib(kib):
    """KiB to MiB, one decimal."""
    return round(kib / 1024.0, 1)


def now():
    """The current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json(path, value):
    """Indented JSON, with each innermost list of numbers (the RSS samples) on one line."""
    text = json.dumps(value, indent=1)
    text = re.sub(r"\[\s+(-?[\d.]+),\s+(-?[\d.]+)\s+\]", r"[\1, \2]", text)
    with open(path, "w") as f:
        f.write(text + "\n")


def load_json(path):
    """The JSON value in a file."""
    with open(path) as f:
        return json.load(f)


def percentiles_ms(values_us):
    """p50/p90/p99/max in milliseconds of latencies in microseconds (nearest rank)."""
    if not values_us:
        return {}
    ordered = sorted(values_us)

    def rank(q):
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))] / 1e3

    return {"p50_ms": rank(0.50), "p90_ms": rank(0.90), "p99_ms": rank(0.99), "max_ms": ordered[-1] / 1e3}


def parse_h2load(text):
    """The request counts and rate h2load prints (None when it printed no summary).

    `finished in 10.00s, 51234.50 req/s, ...` and
    `requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout`
    and `status codes: N 2xx, N 3xx, N 4xx, N 5xx`."""
    finished = re.search(r"^finished in ([\d.]+)(m?s), ([\d.]+) req/s", text, re.M)
    requests = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                         r"(\d+) failed, (\d+) errored, (\d+) timeout", text, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    if not (finished and requests and codes):
        return None
    seconds = float(finished.group(1)) / (1000.0 if finished.group(2) == "ms" else 1.0)
    done, failed, errored, timeout = (int(requests.group(i)) for i in (3, 5, 6, 7))
    return {"requests": done, "duration_s": seconds, "rps": float(finished.group(3)),
            "errors": {"failed": failed, "errored": errored, "timeout": timeout,
                       "non_2xx": sum(int(codes.group(i)) for i in (2, 3, 4))}}


def result_line(scenario, rps, p50, p99, errs, cpu_us, rss_mib):
    """The closing line of every run, which CI and people grep."""
    return (
        f"RESULT scenario={scenario} rps={round(rps)} p50_ms={p50:.3f} p99_ms={p99:.3f} "
        f"errors={errs} cpu_us_per_req={cpu_us:.1f} rss_mib={round(rss_mib)}"
    )


def max_steps(summary, step_seconds):
    """`max`: the figures of each step of the staircase (k6 tags them step:RATE), lowest first."""
    steps = []
    pattern = re.compile(r"^http_reqs\{step:(\d+)\}$")
    for name in summary["metrics"]:
        m = pattern.match(name)
        if not m:
            continue
        offered = int(m.group(1))
        suffix = f"{{step:{offered}}}"
        count = int(metric(summary, "http_reqs" + suffix, "count"))
        rps = count / step_seconds
        lat = latency(summary, "http_req_duration" + suffix)
        errs = errors(summary, suffix)
        # Fewer requests than offered: k6 dropped iterations (no VU free).
        sustained = errs == 0 and lat["p99"] <= MAX_P99_MS and rps >= (1 - DROP_SHARE) * offered
        steps.append(
            {
                "offered_rps": offered,
                "rps": round(rps, 1),
                "requests": count,
                "latency_ms": lat,
                "errors": errs,
                "sustained": sustained,
            }
        )
    steps.sort(key=lambda s: s["offered_rps"])
    return steps


def single(*, scenario, summary, cpu_ticks, clk_tck, hwm_kib, samples, sample_seconds, step_seconds, machine,
           extra, k6_status, out_path):
    """One k6 run against one server.

    summary: k6's end-of-test summary; cpu_ticks: the server's user + system
    time over the run (clock ticks of clk_tck per second); hwm_kib: its
    VmHWM; samples: [elapsed_s, VmRSS_KiB] pairs taken every sample_seconds;
    machine: what machine_info() found before the run; extra: more fields
    for the JSON (reload's checks). Returns (ok, RESULT line).
    """
    machine = dict(machine)
    machine["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
    requests = int(metric(summary, "http_reqs", "count"))
    cpu_seconds = cpu_ticks / clk_tck
    cpu_us = cpu_seconds * 1e6 / requests if requests else 0.0
    out = {
        "scenario": scenario,
        "date": now(),
        "machine": machine,
        "requests": requests,
        "rps": round(metric(summary, "http_reqs", "rate"), 1),
        "duration_s": round(summary.get("state", {}).get("testRunDurationMs", 0) / 1000.0, 1),
        "latency_ms": latency(summary),
        "errors": errors(summary),
        "http_failed": int(metric(summary, "http_req_failed", "passes")),
        "checks_failed": int(metric(summary, "checks", "fails")),
        "dropped_iterations": int(metric(summary, "dropped_iterations", "count")),
        "server_cpu_seconds": round(cpu_seconds, 2),
        "cpu_us_per_req": round(cpu_us, 1),
        "rss_peak_mib": mib(hwm_kib),
        "rss_samples_interval_s": sample_seconds,
        "rss_samples_kib": samples,
        "thresholds_failed": failed_thresholds(summary),
        "k6_status": k6_status,
    }
    out.update(extra)
    ok = k6_status == 0
    rps, lat = out["rps"], out["latency_ms"]

    if scenario == "max":
        steps = max_steps(summary, step_seconds)
        # The highest step that held, even above one that did not: on a
        # shared machine a burst from elsewhere can spoil one step's p99.
        held = [step for step in steps if step["sustained"]]
        sustainable = held[-1] if held else None
        out["p99_limit_ms"] = MAX_P99_MS
        out["steps"] = steps
        out["sustainable_rps"] = sustainable["offered_rps"] if sustainable else 0
        if sustainable:
            rps, lat = sustainable["rps"], sustainable["latency_ms"]
        else:
            ok = False

    if scenario == "soak":
        # Two views of growth: after the first minute (the target as
        # written), and over the second half of the run (a leak shows there;
        # the first minutes include the image cache filling up to its bound).
        late = [kib for t, kib in samples if t >= SOAK_GROWTH_AFTER_S]
        end = samples[-1][0] if samples else 0
        second_half = [kib for t, kib in samples if t >= end / 2]
        if late and second_half:
            out["rss_after_first_minute_mib"] = {"first": mib(late[0]), "max": mib(max(late)), "last": mib(late[-1])}
            out["rss_growth_after_first_minute_mib"] = mib(max(late) - late[0])
            out["rss_growth_second_half_mib"] = mib(max(second_half) - second_half[0])
            if out["rss_growth_second_half_mib"] > SOAK_GROWTH_TOLERANCE_MIB:
                print(f"soak: RSS grew by {out['rss_growth_second_half_mib']} MiB in the second half", file=sys.stderr)
                ok = False
        else:
            ok = False
        out["targets"] = {
            "peak_rss_mib_max": SOAK_PEAK_RSS_MIB,
            "peak_rss_ok": out["rss_peak_mib"] <= SOAK_PEAK_RSS_MIB,
            "no_growth_after_first_minute_ok": out.get("rss_growth_after_first_minute_mib", 1e9)
            <= SOAK_GROWTH_TOLERANCE_MIB,
            "no_growth_second_half_ok": out.get("rss_growth_second_half_mib", 1e9) <= SOAK_GROWTH_TOLERANCE_MIB,
        }
        if not out["targets"]["peak_rss_ok"]:
            print(f"soak: peak RSS {out['rss_peak_mib']} MiB > {SOAK_PEAK_RSS_MIB}", file=sys.stderr)
            ok = False

    if out["errors"] or out["http_failed"]:
        ok = scenario == "max" and ok
    out["ok"] = ok
    write_json(out_path, out)
    for t in out["thresholds_failed"]:
        print(f"threshold failed: {t}", file=sys.stderr)
    print(f"wrote {out_path}", file=sys.stderr)
    return ok, result_line(scenario, rps, lat["p50"], lat["p99"], out["errors"], cpu_us, out["rss_peak_mib"])


def compare(*, phases, machine, hwm_kib, review, out_path):
    """The `compare` run: imageswap (and variants) against both baselines
    (`baseline`: bare hyper + rustls; `baseline_parse`: the same parsing
    each body once, which the targets are measured against).

    phases: one dict per load run (server, tool: wrk | h2load | h2load_rate,
    round, cpu_ticks, clk_tck, status, file: wrk's JSON line or the h2load
    figures, offered_rps, loadavg); hwm_kib: server name -> VmHWM in KiB;
    review: the review's path in the repository. Returns (ok, RESULT line,
    for imageswap under wrk).
    """
    machine = dict(machine)
    machine["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
    runs = {}
    total_errors = 0
    ok = True
    for p in phases:
        try:
            data = load_json(p["file"])
        except (OSError, ValueError):
            print(f"compare: no figures from {p['server']} {p['tool']} round {p['round']}", file=sys.stderr)
            ok = False
            continue
        cpu = p["cpu_ticks"] / p["clk_tck"]
        requests = data["requests"]
        errs = sum(data["errors"].values())
        if p["tool"] == "wrk":
            run = {"rps": data["rps"], "p50_ms": data["p50_us"] / 1e3, "p90_ms": data["p90_us"] / 1e3,
                   "p99_ms": data["p99_us"] / 1e3, "max_ms": data["max_us"] / 1e3}
        else:
            run = {k: data.get(k, 0.0) for k in ("rps", "p50_ms", "p90_ms", "p99_ms", "max_ms")}
            run["offered_rps"] = p.get("offered_rps")
        if p["status"] != 0 or errs or not requests:
            ok = False
        total_errors += errs
        run.update({"round": p["round"], "requests": requests, "errors": errs, "server_cpu_seconds": round(cpu, 2),
                    "cpu_us_per_req": round(cpu * 1e6 / requests, 2) if requests else 0.0,
                    "loadavg": p["loadavg"]})
        runs.setdefault(p["tool"], {}).setdefault(p["server"], []).append(run)

    def median(tool, server, key):
        values = [r[key] for r in runs.get(tool, {}).get(server, [])]
        return statistics.median(values) if values else 0.0

    # imageswap as configured in production first, then the variants.
    named = {p["server"] for p in phases}
    servers = ["imageswap"] + sorted(s for s in named if s != "imageswap" and s not in BASELINES)
    baselines = [b for b in BASELINES if b in named]
    tools = [t for t in COMPARE_TOOLS if t in runs]
    table = {}
    for tool in tools:
        table[tool] = {}
        for server in servers + baselines:
            table[tool][server] = {k: round(median(tool, server, k), 3)
                                   for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
        # ratio_vs_bare, ratio_vs_bare_parse (imageswap), ratio_<variant>_vs_... (the variants).
        for baseline in baselines:
            b = table[tool][baseline]
            for server in servers:
                i = table[tool][server]
                prefix = "ratio" if server == "imageswap" else f"ratio_{server}"
                table[tool][f"{prefix}_{BASELINES[baseline]}"] = {
                    k: round(i[k] / b[k], 3) if b[k] else None for k in i}

    def ratio(tool, key):
        return table.get(tool, {}).get(f"ratio_{BASELINES[TARGET_BASELINE]}", {}).get(key)

    def at_most(value, limit):
        return value is not None and value <= limit

    def at_least(value, limit):
        return value is not None and value >= limit

    targets = {
        "cpu_h1": {"ratio": ratio("wrk", "cpu_us_per_req"), "max": TARGET_CPU_RATIO_H1},
        "cpu_h2": {"ratio": ratio("h2load", "cpu_us_per_req"), "max": TARGET_CPU_RATIO_H2},
        "rps_h1": {"ratio": ratio("wrk", "rps"), "min": TARGET_RPS_RATIO_H1},
        "p99_h2_fixed_rate": {"ratio": ratio("h2load_rate", "p99_ms"), "max": TARGET_P99_RATIO},
    }
    for target in targets.values():
        target["ok"] = (at_most(target["ratio"], target["max"]) if "max" in target
                        else at_least(target["ratio"], target["min"]))
    offered = sorted({r.get("offered_rps") for r in runs.get("h2load_rate", {}).get("imageswap", [])} - {None})
    out = {
        "scenario": "compare",
        "date": now(),
        "machine": machine,
        "review": review,
        "phases": {t: COMPARE_TOOLS[t] for t in tools},
        "targets_against": TARGET_BASELINE,
        "h2_fixed_rate_rps": offered[0] if offered else None,
        "medians": table,
        "targets": targets,
        "runs": runs,
        "errors": total_errors,
        "rss_peak_mib": {name: mib(kib) for name, kib in hwm_kib.items() if kib is not None},
    }
    ok = ok and all(t["ok"] for t in targets.values())
    out["ok"] = ok
    write_json(out_path, out)

    rows = [f"{'tool':<12} {'server':<20} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11}"]
    for tool in tools:
        for server in table[tool]:
            r = table[tool][server]
            ratio_row = server.startswith("ratio")
            fmt = (lambda v: f"{v:.2f}x" if v is not None else "-") if ratio_row else (lambda v: f"{v:.2f}")
            rows.append(f"{tool:<12} {server:<20} {fmt(r['rps']):>9} {fmt(r['p50_ms']):>8} "
                        f"{fmt(r['p99_ms']):>8} {fmt(r['cpu_us_per_req']):>11}")
    print("\n".join(rows), file=sys.stderr)
    print(f"targets (imageswap/{TARGET_BASELINE}): " + ", ".join(
        f"{name} {t['ratio']}x ({'<=' if 'max' in t else '>='} {t.get('max', t.get('min'))}) "
        f"{'ok' if t['ok'] else 'MISSED'}" for name, t in targets.items()), file=sys.stderr)
    print(f"load average before {' '.join(machine.get('loadavg_before', []))}, "
          f"after {' '.join(machine['loadavg_after'])}", file=sys.stderr)
    print(f"wrote {out_path}", file=sys.stderr)
    i = table.get("wrk", {}).get("imageswap", {"rps": 0, "p50_ms": 0, "p99_ms": 0, "cpu_us_per_req": 0})
    return ok, result_line("compare", i["rps"], i["p50_ms"], i["p99_ms"], total_errors, i["cpu_us_per_req"],
                           out["rss_peak_mib"].get("imageswap", 0))


def reload_checks(*, metrics, generations, rotations, served, expected):
    """After `reload`: the server must have loaded (nearly) every maps
    version and every certificate, with no failed reload, and serve the last
    certificate.

    metrics: the server's /metrics text; generations / rotations: how many
    maps versions / certificates were published; served / expected: the
    fingerprints of the certificate served and of the last one published
    ("" when none was read). Returns {"reload": {...figures, "ok": bool}}.
    """

    def counter(name, result):
        m = re.search(r'^%s_total\{result="%s"\} (\d+)' % (name, result), metrics, re.M)
        return int(m.group(1)) if m else 0

    out = {
        "maps_published": generations,
        "maps_reloads_ok": counter("imageswap_maps_reload", "success"),
        "maps_reloads_failed": counter("imageswap_maps_reload", "error"),
        "certs_published": rotations,
        "tls_reloads_ok": counter("imageswap_tls_reload", "success"),
        "tls_reloads_failed": counter("imageswap_tls_reload", "error"),
        "serves_last_certificate": bool(served) and served == expected,
    }
    # The first load counts as a success too; two maps versions published
    # close together may be read as one, so 90% of them is the floor.
    ok = (
        out["maps_reloads_failed"] == 0
        and out["tls_reloads_failed"] == 0
        and generations >= 10
        and out["maps_reloads_ok"] - 1 >= 0.9 * generations
        and rotations >= 1
        and out["tls_reloads_ok"] - 1 >= rotations
        and out["serves_last_certificate"]
    )
    out["ok"] = ok
    print("reload checks: " + json.dumps(out), file=sys.stderr)
    return {"reload": out}

#!/usr/bin/env python3
"""Prints the performance tables of docs/performance.md (Markdown) from loadtest/results/,
so the published figures are the measured ones.

    python3 loadtest/tables.py [RESULTS_DIR]
"""

import json
import os
import sys

NAMES = {
    "imageswap": "imageswap (INFO, a JSON log line per review: the production overlay)",
    "imageswap_warn": "imageswap `--log-level warn` (no line per review)",
    "baseline": "bare hyper + rustls baseline",
    "baseline_parse": "bare hyper + rustls + one simd-json parse (`to_tape`)",
}


def load(directory, name):
    path = os.path.join(directory, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def fmt(value, digits=1):
    return f"{value:,.{digits}f}"


TITLES = {
    "wrk": "HTTP/1.1, wrk, 16 connections: the ceiling",
    "h2load": "HTTP/2, h2load, 4 connections × 32 streams: the ceiling",
    "h2load_rate": "HTTP/2, h2load, 4 connections × 32 streams at a fixed {rate:,} req/s for all",
}


def compare_table(run):
    lines = []
    for tool in [t for t in TITLES if t in run["medians"]]:
        table = run["medians"][tool]
        count = len(run["runs"][tool]["imageswap"])
        title = TITLES[tool].format(rate=run.get("h2_fixed_rate_rps") or 0)
        lines += [f"**{title}** ({f'medians of {count} rounds' if count > 1 else 'one round'})", "",
                  "| server | req/s | p50 ms | p99 ms | CPU µs/request |", "|---|---:|---:|---:|---:|"]
        for server in [s for s in ("imageswap", "imageswap_warn", "baseline", "baseline_parse") if s in table]:
            r = table[server]
            lines.append(f"| {NAMES[server]} | {fmt(r['rps'], 0)} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} "
                         f"| {fmt(r['cpu_us_per_req'])} |")
        for name, label in (("ratio_vs_bare", "imageswap / bare"), ("ratio_vs_bare_parse", "imageswap / bare + parse"),
                            ("ratio_imageswap_warn_vs_bare", "warn / bare"),
                            ("ratio_imageswap_warn_vs_bare_parse", "warn / bare + parse")):
            if name in table:
                r = table[name]
                lines.append(f"| *{label}* | *{r['rps']:.2f}×* | *{r['p50_ms']:.2f}×* | *{r['p99_ms']:.2f}×* "
                             f"| *{r['cpu_us_per_req']:.2f}×* |")
        lines.append("")
    return lines


def scenario_table(results):
    lines = ["| scenario | offered | served req/s | p50 ms | p90 ms | p99 ms | failed | server CPU µs/request "
             "| peak RSS MiB |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, offered in (("steady", "constant, half the sustainable rate"),
                          ("max", "staircase 250 → 6,000 req/s; p99 ≤ 10 ms held up to"),
                          ("spike", "300 → the sustainable rate in 2 s"),
                          ("reload", "constant, new connection per request"),
                          ("soak", "constant 10 min, half the sustainable rate")):
        run = results.get(name)
        if not run:
            continue
        lat = run["latency_ms"]
        rps = fmt(run["rps"], 0)
        if name == "max":
            # The figures of the highest step that held.
            step = next((s for s in run["steps"] if s["offered_rps"] == run["sustainable_rps"]), None)
            if step:
                lat = step["latency_ms"]
                rps = f"{fmt(step['rps'], 0)} (the sustainable step)"
        lines.append(f"| `{name}` | {offered} | {rps} | {fmt(lat['p50'], 2)} | {fmt(lat['p90'], 2)} "
                     f"| {fmt(lat['p99'], 2)} | {run['errors']} | {fmt(run['cpu_us_per_req'])} "
                     f"| {fmt(run['rss_peak_mib'])} |")
    return lines


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results")
    results = {n: load(directory, n) for n in ("compare", "steady", "max", "spike", "reload", "soak")}
    lines = []
    if results["compare"]:
        lines += compare_table(results["compare"])
    lines += scenario_table(results)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Plots latency percentiles (p50, p90, p99) against the offered rate from
the steps of a `max` run (loadtest/results/max.json) into a PNG.

    plot.py [MAX_JSON] [OUT_PNG]

Run through loadtest/plot.sh, which provides matplotlib in a venv.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    source = sys.argv[1] if len(sys.argv) > 1 else "loadtest/results/max.json"
    target = sys.argv[2] if len(sys.argv) > 2 else "loadtest/results/latency.png"
    with open(source) as f:
        run = json.load(f)
    steps = run["steps"]
    offered = [s["offered_rps"] for s in steps]
    fig, (ax, ax_rate) = plt.subplots(
        2, 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]}, constrained_layout=True
    )
    for key, style in (("p50", "o-"), ("p90", "s-"), ("p99", "^-")):
        ax.plot(offered, [s["latency_ms"][key] for s in steps], style, label=key, linewidth=2, markersize=5)
    ax.axhline(run.get("p99_limit_ms", 10), color="grey", linestyle=":", linewidth=1)
    ax.text(offered[0], run.get("p99_limit_ms", 10) * 1.08, f"p99 limit of `max`: {run.get('p99_limit_ms', 10):g} ms",
            color="grey", fontsize=9)
    sustainable = run.get("sustainable_rps", 0)
    if sustainable:
        for a in (ax, ax_rate):
            a.axvline(sustainable, color="green", linestyle="--", linewidth=1)
        ax.text(sustainable, 0.02, f" sustainable: {sustainable}/s", color="green", fontsize=9,
                transform=ax.get_xaxis_transform())
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(0, 0.93))
    machine = run.get("machine", {})
    ax.set_title(
        f"imageswap serve under k6 (HTTPS, HTTP/2, realistic reviews)\n"
        f"{machine.get('nproc', '?')} cores, {machine.get('cpu_model', '?')}, shared VM; "
        f"k6 runs on the same cores; {run.get('date', '')}",
        fontsize=10,
    )
    ax_rate.plot(offered, offered, color="grey", linestyle=":", label="offered")
    ax_rate.plot(offered, [s["rps"] for s in steps], "o-", color="black", label="served", markersize=4)
    ax_rate.set_ylabel("req/s")
    ax_rate.set_xlabel("offered rate (requests per second)")
    ax_rate.grid(True, alpha=0.3)
    ax_rate.legend(loc="upper left")
    fig.savefig(target, dpi=110)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

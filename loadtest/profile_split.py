#!/usr/bin/env python3
"""Splits imageswap's instructions per request (a callgrind dump of
loadtest/profile.sh) into the parts of issue 14: TLS + HTTP, parse,
decisions, patch + answer, log line, metrics, tower layers.

    python3 loadtest/profile_split.py DUMP REQUESTS [--baseline DUMP] [--json OUT] [--verbose]

Each part is the inclusive cost (callgrind_annotate --inclusive=yes) of the
functions that do it, over the profiled requests, divided by REQUESTS:

- parse: simd-json filling the tape (stage 1 and 2) and reading the
  envelope (uid, kind, names) from it;
- decisions: the pod-spec walk and the cached decisions (admission's
  decide_object, its cache lookups included);
- patch + answer: the JSON patch and the AdmissionReview answer;
- log line: the events dispatched on the request path (formatting and
  queueing a line) plus the log writer thread (writing them out);
- metrics: every `Metrics` method (counters, histogram, in-flight gauge);
- tower layers: what the admission stack (the router's future through every
  layer down to the service) costs beyond the parts above: the layers,
  their boxed futures and timers, reading the body whole, the service glue;
- TLS + HTTP: everything else (rustls, hyper, tokio, the socket calls),
  which is what the bare baseline spends too.

Function names change with inlining (LTO inlines small functions into their
callers). A part whose functions all disappeared is then counted from the
callers that survive whole-program LTO (LTO_PARTS: the service's `decide`
less the parse, `Decided::answer`, the subscriber's `event`), and reads 0
only when those are gone too (its cost then moves into the tower layers);
--verbose prints the functions each part matched, to check. Standard
library only.
"""

import json
import re
import subprocess
import sys

# Part -> regexes of function names whose inclusive costs are summed: none
# of them may call another (that would count it twice).
PARTS = {
    # The tape, and reading the envelope from it.
    # fill_tape_padded since issue 24 (the parser works in the body itself).
    "parse": [r"^simd_json::Deserializer::fill_tape(_padded)?$", r"^imageswap::admission::decode::decode$"],
    "decisions": [r"^imageswap::admission::decide_object$"],
    "patch_answer": [r"^imageswap::admission::write_answer$"],
    "log_line": [r"^tracing_core::event::Event::dispatch$", r"^tracing_appender::worker::Worker<.*>::work$"],
    "metrics": [r"^imageswap::telemetry::metrics::Metrics::", r"InflightGuard.* as core::ops::drop::Drop>::drop"],
}
# Under whole-program LTO (the release build as shipped) the functions of
# PARTS are inlined into their callers; these callers survive it: part ->
# (regexes summed, parts subtracted). The log writer thread's `work` does not
# survive: under LTO its few hundred instructions count in TLS + HTTP.
LTO_PARTS = {
    "decisions": ([r"^imageswap::server::service::decide$"], ["parse"]),
    "patch_answer": ([r"^imageswap::admission::Decided::answer$"], []),
    "log_line": ([r"^<tracing_subscriber::layer::layered::Layered<L,S> as tracing_core::subscriber::Subscriber>::event$"], []),
}
# The admission stack as a whole: the router's call and the future it
# returns (the outermost `Oneshot`: the inner ones are nested in it, so the
# largest of each pattern, not their sum).
STACK = [r"^<imageswap::server::service::Router<.*> as hyper::service::service::Service<.*>>::call$",
         r"^<tower::util::oneshot::Oneshot<.*> as core::future::future::Future>::poll$"]
# The log writer thread runs outside the stack; the rest of the log line inside it.
OUTSIDE_STACK = [r"^tracing_appender::worker::Worker<.*>::work"]

# `  1,234 (5.6%)  file:function [binary]`; the file is `???` without debug info.
LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(?:[^\s:]*:(?!:))?(.+?)(?:\s+\[[^\]]*\])?\s*$")


def inclusive_costs(dump):
    """{function: inclusive instructions} from callgrind_annotate."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
                          capture_output=True, text=True, check=True).stdout
    costs, total = {}, None
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        value, name = int(m.group(1).replace(",", "")), m.group(2).strip()
        if name.startswith("PROGRAM TOTALS"):
            total = value
            continue
        costs[name] = costs.get(name, 0) + value
    if total is None:
        raise SystemExit(f"profile_split: no PROGRAM TOTALS in callgrind_annotate {dump}")
    return total, costs


def matching(costs, patterns):
    """The functions matching any of PATTERNS, most expensive first."""
    found = [(name, cost) for name, cost in costs.items() if any(re.search(p, name) for p in patterns)]
    return sorted(found, key=lambda item: -item[1])


def split(total, costs, requests):
    """Instructions per request by part, and the functions each part summed."""
    parts, matched = {}, {}
    for part, patterns in PARTS.items():
        chosen = matching(costs, patterns)
        parts[part] = sum(c for _, c in chosen)
        matched[part] = chosen
    for part, (patterns, less) in LTO_PARTS.items():
        if matched[part]:
            continue
        chosen = matching(costs, patterns)[:1]
        if chosen:
            parts[part] = max(0, chosen[0][1] - sum(parts[p] for p in less))
            matched[part] = chosen
    stack_functions = [max(matching(costs, [p]), key=lambda item: item[1], default=("", 0)) for p in STACK]
    stack = sum(c for _, c in stack_functions)
    outside = sum(c for _, c in matching(costs, OUTSIDE_STACK))
    inside = sum(parts.values()) - outside
    parts["tower_layers"] = max(0, stack - inside)
    parts["tls_http"] = max(0, total - stack - outside)
    matched["stack"] = stack_functions
    per_request = {part: round(cost / requests) for part, cost in parts.items()}
    per_request["total"] = round(total / requests)
    return per_request, matched


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    dump, requests = argv[1], int(argv[2])
    total, costs = inclusive_costs(dump)
    per_request, matched = split(total, costs, requests)
    order = ["tls_http", "parse", "decisions", "patch_answer", "log_line", "metrics", "tower_layers", "total"]
    for part in order:
        share = 100.0 * per_request[part] / per_request["total"] if per_request["total"] else 0.0
        # A part all of whose functions were inlined is inside its callers' part.
        if part in PARTS and not matched[part]:
            note = "  (inlined: counted in tower_layers)"
        elif part in LTO_PARTS and matched[part] and not matching(costs, PARTS[part]):
            note = "  (LTO: from its caller, see LTO_PARTS)"
        else:
            note = ""
        print(f"  {part:<13} {per_request[part]:>9,}  {share:5.1f}%{note}")
    if "--verbose" in argv:
        for part, functions in matched.items():
            print(f"{part}:")
            for name, cost in functions[:8]:
                print(f"    {cost // requests:>9,}  {name[:150]}")
    if "--baseline" in argv:
        baseline_total, _ = inclusive_costs(argv[argv.index("--baseline") + 1])
        per_request["baseline_total"] = round(baseline_total / requests)
        print(f"  {'baseline':<13} {per_request['baseline_total']:>9,}  (its total: TLS + HTTP alone)")
    if "--json" in argv:
        with open(argv[argv.index("--json") + 1], "w") as f:
            json.dump(per_request, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

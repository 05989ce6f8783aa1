"""Run by scripts/prometheus-tools inside its virtualenv (installed by
`scripts/prometheus-tools install`); see there.

openmetrics: OpenMetrics text on standard input -> JSON list of families
    ({name, type, unit, help, samples: [{name, labels, value}]}). The parser
    is strict: a missing `# EOF`, a counter sample without `_total`,
    histogram buckets that are not cumulative or lack `+Inf`, a repeated
    family or a bad escape are errors.
promql: a JSON list of PromQL expressions on standard input -> a JSON list,
    for each, of the metric names its selectors read.
"""

import json
import sys


def openmetrics(text):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as error:
        raise Invalid(f"not valid OpenMetrics: {error}")
    return [
        {
            "name": family.name,
            "type": family.type,
            "unit": family.unit,
            "help": family.documentation,
            "samples": [
                {"name": sample.name, "labels": sample.labels, "value": sample.value}
                for sample in family.samples
            ],
        }
        for family in families
    ]


def promql(text):
    import promql_parser

    results = []
    for expression in json.loads(text):
        try:
            ast = promql_parser.parse(expression)
        except ValueError as error:
            raise Invalid(f"not valid PromQL ({error}): {expression}")
        names = []

        def visit(node):
            if isinstance(node, promql_parser.VectorSelector) and node.name and node.name not in names:
                names.append(node.name)

        promql_parser.walk(ast, pre_visit=visit)
        results.append(names)
    return results


class Invalid(Exception):
    pass


def main():
    commands = {"openmetrics": openmetrics, "promql": promql}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        print(f"usage: prometheus-tools {'|'.join(commands)} < input", file=sys.stderr)
        return 2
    try:
        result = commands[sys.argv[1]](sys.stdin.read())
    except Invalid as error:
        print(f"prometheus-tools: {error}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""OpenMetrics text (standard input) -> JSON list of metric families.

Run by scripts/parse-openmetrics inside its virtualenv. The parser is
prometheus_client's OpenMetrics parser, which is strict: a missing `# EOF`,
a counter sample without `_total`, histogram buckets that are not
cumulative or lack `+Inf`, a repeated family or a bad escape are errors.
"""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as error:
        print(f"parse-openmetrics: not valid OpenMetrics: {error}", file=sys.stderr)
        return 1
    json.dump(
        [
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
        ],
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

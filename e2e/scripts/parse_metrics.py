"""Parses Prometheus text from stdin with the official Python client's parser and prints
every sample as one JSON object per line: {"name", "labels", "value"}. A parse error exits
non-zero, which fails the test that called it."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        print(json.dumps({"name": sample.name, "labels": sample.labels, "value": sample.value}))

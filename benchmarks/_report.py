"""The one way a benchmark reports: JSON on stdout, and atomically into `--out` when given."""

import json

from sgm.experiment import write_json


def report(result: dict, out: str | None) -> None:
    print(json.dumps(result, indent=1))
    if out:
        write_json(out, result)  # a temporary file, then a rename: no half-written results

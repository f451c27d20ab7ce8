"""The API reference names every public object of sgm and its public subpackages."""

import re
import types
from pathlib import Path

import sgm
import sgm.data
import sgm.experiment
import sgm.metrics
import sgm.nets

API = Path(__file__).resolve().parents[1] / "docs" / "api"


def test_every_public_name_is_in_the_api_reference():
    text = "\n".join(p.read_text() for p in API.glob("*.md"))
    documented = set(re.findall(r"^::: ([\w.]+)$", text, flags=re.M))
    missing = [
        f"{m.__name__}.{n}"
        for m in (sgm, sgm.nets, sgm.data, sgm.experiment, sgm.metrics)
        for n in dir(m)
        if not n.startswith("_")
        and not isinstance(getattr(m, n), types.ModuleType)
        and f"{m.__name__}.{n}" not in documented
    ]
    assert not missing, f"add to docs/api/*.md: {missing}"

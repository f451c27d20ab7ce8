"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(python_blocks()) >= 2


def test_closed_form_example_runs():
    scope: dict = {}
    exec(python_blocks()[0], scope)
    assert scope["lp"].shape == (8,) and int(scope["nfe"][0]) == 2001


@pytest.mark.slow
def test_training_example_runs():
    scope: dict = {}
    exec(python_blocks()[1], scope)
    assert scope["x"].shape == (1000, 2) and float(scope["nll"]) < 3.0

"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(python_blocks()) >= 4


def test_experiment_example_is_the_shipped_one():
    """The README's experiment is `experiments/mnist_vp.py` apart from its texts and the
    samplers shown, and survives config.json and back."""
    import sgm.experiment
    from experiments import EXPERIMENTS

    scope: dict = {}
    exec(python_blocks()[0], scope)
    exp = scope["EXPERIMENT"]
    shipped = EXPERIMENTS["mnist_vp"]
    for name in ("data", "sde", "net", "loss", "optimizer", "train", "eval"):
        assert getattr(exp, name) == getattr(shipped, name), name
    assert sgm.experiment.from_json(sgm.experiment.to_json(exp)) == exp


def test_closed_form_example_runs():
    scope: dict = {}
    exec(python_blocks()[1], scope)
    assert scope["lp"].shape == (8,) and int(scope["nfe"][0]) == 2001


@pytest.mark.slow
def test_training_example_runs():
    scope: dict = {}
    exec(python_blocks()[2], scope)
    assert scope["x"].shape == (1000, 2) and float(scope["nll"]) < 3.0


def test_inpainting_example_runs():
    """Known entries returned exactly; the filled-in mean within 0.15 of the conditional mean
    (its standard error at n = 500 is about 0.035)."""
    import numpy as np

    scope: dict = {}
    exec(python_blocks()[3], scope)
    filled = np.asarray(scope["filled"])
    np.testing.assert_array_equal(filled[:, :2], np.tile([1.0, 0.9], (500, 1)).astype(np.float32))
    cov = 0.5 * np.eye(4) + 0.3
    mean = cov[2:, :2] @ np.linalg.solve(cov[:2, :2], [1.0, 0.9])
    np.testing.assert_allclose(filled[:, 2:].mean(0), mean, atol=0.15)

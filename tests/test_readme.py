"""Every Python example in README.md runs as written, in a fresh interpreter."""

import os
import re

import pytest

from tests import processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _examples():
    with open(os.path.join(ROOT, "README.md")) as handle:
        return re.findall(r"```python\n(.*?)```", handle.read(), flags=re.S)


def test_readme_has_examples():
    assert len(_examples()) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_examples())))
def test_readme_example_runs(index):
    result = processes.run_code(_examples()[index], cwd=ROOT, timeout=600,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    if "test accuracy" in result.stdout:  # The model.fit example reports its accuracy.
        accuracy = float(re.search(r"test accuracy ([0-9.]+)", result.stdout).group(1))
        assert accuracy > 0.85, result.stdout

"""The BUILD file names every package and test file, and Bazel accepts it where Bazel is installed."""

import glob
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build_text():
    with open(os.path.join(ROOT, "BUILD")) as handle:
        return handle.read()


def test_every_test_file_has_a_py_test():
    text = _build_text()
    declared = set(re.findall(r'py_test\(\s*name = "[^"]+",\s*srcs = \["([^"]+)"\]', text))
    on_disk = {os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, "tests", "**", "test_*.py"),
                                                                  recursive=True)}
    assert on_disk == declared, f"missing: {sorted(on_disk - declared)}, stale: {sorted(declared - on_disk)}"


def test_every_package_has_a_py_library():
    text = _build_text()
    for init in glob.glob(os.path.join(ROOT, "keras_nngk", "*", "__init__.py")):
        package = os.path.relpath(os.path.dirname(init), ROOT)
        if f'glob(["{package}/*.py"])' in text:
            continue
        for path in sorted(glob.glob(os.path.join(ROOT, package, "*.py"))):  # Or each of its files in some target.
            relative = os.path.relpath(path, ROOT)
            assert f'"{relative}"' in text, f"no py_library for {relative}"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bazel") is None, reason="Debian's bazel-bootstrap is not installed")
def test_bazel_query_loads_build_file():
    result = subprocess.run(["bazel", "query", "//..."], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "//:layers_test_nngk_classifier" in result.stdout

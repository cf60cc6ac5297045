"""The README's ```python blocks run as written (in order, one namespace, in a temporary folder)."""

import os
import re
from pathlib import Path

import pytest

from conftest import ML100K

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    code = BLOCKS[index]
    if "ml-100k" in code:
        if not (ML100K / "ua.base").is_file():
            pytest.skip(f"needs MovieLens 100k at {ML100K}")
        # The README's path is relative to the repository root; the test runs elsewhere.
        code = code.replace("../shared/data/ml-100k", os.fspath(ML100K))
    from bpr_numpy import objective

    # The oracle example checks "your" gradient: the built-in one stands in for it.
    namespace = {"__name__": "__readme__", "my_gradient": objective.triplet_gradients}
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)


def test_keras_failure_script_runs():
    """The README's "My BPR loss doesn't go down" command."""
    import subprocess
    import sys

    script = README.parent / "benchmarks" / "keras_failure.py"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(README.parent), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "diagonal == row-wise: True" in proc.stdout and proc.stdout.count("sigmoid ") >= 2

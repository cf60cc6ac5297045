"""Loading the benchmark scripts (benchmarks/ is not a package) for the smoke tests."""

import importlib.util
import sys
from pathlib import Path


def load_script(path: Path, name: str):
    """Import ``path`` as module ``name``, registered in sys.modules (dataclasses need it); a generator for fixtures."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)

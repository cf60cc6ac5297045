"""The documentation's ```python blocks run as written, so the site cannot rot.

Each page of ``docs/`` (Markdown, MyST) is one test: its blocks run in order in one namespace,
in a temporary folder, as a reader would paste them. Blocks that are not meant to run are
written as ```text, ```pycon or ```bash. Pages that read MovieLens 100k are skipped when it is
absent (``conftest.ML100K``); their relative path ``../shared/data/ml-100k`` is the one of the
README, relative to the repository root, and is replaced by the real location here.

The site itself is built by CI with ``python -m sphinx -W --keep-going -b html docs
docs/_build/html`` (warnings are errors); this file checks only what the pages' code does.
"""

import importlib.util
import os
import re
from pathlib import Path

import pytest

from conftest import ML100K

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)
ML100K_IN_DOCS = "../shared/data/ml-100k"
#: Optional packages some pages import (the ``test`` extra installs them): module -> import line.
OPTIONAL = {"distributed": "from dask.distributed import", "sklearn": "from sklearn"}


def _pages():
    pages = {}
    for path in sorted(DOCS.rglob("*.md")):
        parts = path.relative_to(DOCS).parts
        if any(p.startswith(("_", ".")) or p == "generated" for p in parts):
            continue
        blocks = BLOCK.findall(path.read_text(encoding="utf-8"))
        if blocks:
            pages[path.relative_to(DOCS).as_posix()] = blocks
    return pages


PAGES = _pages()


def test_the_guide_has_examples():
    """The pages that teach by example have some (the pattern still finds them)."""
    for page in ("getting-started.md", "math.md", "guide/samplers.md", "guide/evaluation.md",
                 "guide/scikit-learn.md", "migrating-from-implicit.md"):
        assert page in PAGES, f"docs/{page} has no ```python block"


@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_examples_run(page, tmp_path, monkeypatch):
    code_blocks = PAGES[page]
    if any(ML100K_IN_DOCS in code for code in code_blocks):
        if not (ML100K / "ua.base").is_file():
            pytest.skip(f"docs/{page} needs MovieLens 100k at {ML100K}")
    for module, marker in OPTIONAL.items():
        if any(marker in code for code in code_blocks) and importlib.util.find_spec(module) is None:
            pytest.skip(f"docs/{page} needs {module}")
    namespace = {"__name__": f"__docs_{page}__"}
    monkeypatch.chdir(tmp_path)
    for index, code in enumerate(code_blocks):
        code = code.replace(ML100K_IN_DOCS, os.fspath(ML100K))
        exec(compile(code, f"docs/{page} python block {index}", "exec"), namespace)


# --------------------------------------------------------------------------- the API reference
PUBLIC_MODULES = ("bpr_numpy", "bpr_numpy.model", "bpr_numpy.objective", "bpr_numpy.sampling", "bpr_numpy.metrics",
                  "bpr_numpy.datasets", "bpr_numpy.fold_in", "bpr_numpy.hybrid", "bpr_numpy.gradcheck",
                  "bpr_numpy.distributed", "bpr_numpy.tuning", "bpr_numpy.cli")
#: Names of ``bpr_numpy.__all__`` that are modules or the version string: pages of their own or prose.
NOT_AUTOSUMMARISED = {"model", "metrics", "datasets", "cli", "objective", "__version__"}


def _documented():
    """{module: names} listed in the autosummary tables of docs/api/*.md."""
    documented = {}
    for path in sorted((DOCS / "api").glob("*.md")):
        module = None
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith(".. currentmodule:: "):
                module = line.split("::", 1)[1].strip()
            elif module and re.fullmatch(r"   [A-Za-z_]\w*", line):
                documented.setdefault(module, set()).add(line.strip())
    return documented


def test_the_api_reference_lists_every_public_name():
    """Every name of each public module's ``__all__`` has its page, here or (for a re-export of
    the same object) under ``bpr_numpy``; the reference lists no name that is gone."""
    import importlib

    documented = _documented()
    assert set(documented) == set(PUBLIC_MODULES), "docs/api/ should have one section per public module"
    package = importlib.import_module("bpr_numpy")
    missing, stale = [], []
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        exported = set(module.__all__) - (NOT_AUTOSUMMARISED if name == "bpr_numpy" else set())
        for attr in sorted(exported - documented[name]):
            top = documented["bpr_numpy"]
            if not (attr in top and getattr(package, attr) is getattr(module, attr)):
                missing.append(f"{name}.{attr}")
        stale += [f"{name}.{attr}" for attr in sorted(documented[name] - set(module.__all__))]
    assert not missing, f"public names without an API page (add them to docs/api/): {missing}"
    assert not stale, f"docs/api/ lists names that are no longer public: {stale}"

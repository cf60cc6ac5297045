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

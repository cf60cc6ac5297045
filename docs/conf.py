"""Sphinx configuration of the bpr_numpy documentation.

Build (warnings are errors, as CI runs it)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import os
import sys

# Document the package of this checkout (not another install of it).
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

import bpr_numpy  # noqa: E402
from sphinx.pycode import ModuleAnalyzer  # noqa: E402
from sphinx.util.docstrings import prepare_docstring  # noqa: E402

project = "bpr_numpy"
author = "the bpr_numpy authors"
copyright = "the bpr_numpy authors"
release = version = bpr_numpy.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# MyST: $...$ math, ::: fences, and anchors for headings so that the design record's
# "#the-problem" links (and GitHub-style links from the README) resolve.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 4

# autodoc / autosummary: one generated page per public name (see api.md).
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"  # the numpydoc "Parameters" sections say the types
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = True
autodoc_preserve_defaults = True  # signatures show `dtype=np.float32`, not the repr of the class

# numpydoc: the class pages list their members themselves (templates), so numpydoc's own
# member tables are off; no cross-reference guessing of types (no intersphinx at build time).
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = True

html_theme = "furo"
html_title = f"bpr_numpy {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    # DejaVu Sans Mono before Liberation Mono: the latter has no box-drawing glyphs, so the
    # diagram in architecture.md lost its alignment on Linux (seen in a screenshot).
    "light_css_variables": {"font-stack--monospace": '"SFMono-Regular", Menlo, Consolas, Monaco, '
                            '"DejaVu Sans Mono", "Liberation Mono", "Lucida Console", monospace'},
}
html_show_sourcelink = False


# --------------------------------------------------------------------------- constants
# A module-level constant re-exported by a package (``bpr_numpy.objective.LOSS_BPR`` is defined
# in ``objective/_registry.py``) has its ``#:`` comment in the defining module, where autodoc does
# not look: it would show the docstring of ``int`` or ``dict`` instead. Use the comment.
def _constant_doc(app, what, name, obj, options, lines):
    type_doc = getattr(type(obj), "__doc__", None)
    if what != "data" or not name.startswith("bpr_numpy.") or not isinstance(type_doc, str):
        return
    type_doc = prepare_docstring(type_doc)
    if lines and [line for line in lines if line] != [line for line in type_doc if line]:
        return  # the object's own documentation (or a #: comment autodoc found)
    attr = name.rpartition(".")[2]
    for modname in sorted(m for m in list(sys.modules) if m == "bpr_numpy" or m.startswith("bpr_numpy.")):
        module = sys.modules[modname]
        if getattr(module, attr, None) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:  # noqa: BLE001 - modules without source
            continue
        if ("", attr) in docs:
            lines[:] = list(docs[("", attr)])
            return
    lines[:] = []


def setup(app):
    app.connect("autodoc-process-docstring", _constant_doc, priority=100)

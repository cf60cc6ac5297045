"""The project's own docs are the ones cited: no DESIGN.md (it lives outside the repository), and
every ``docs/*.md`` file and section that the code, benchmarks and tests name exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()
SCANNED = ("bpr_numpy", "benchmarks", "tests")

#: Files still allowed to cite DESIGN.md (none: every citation points into docs/).
DESIGN_MD_ALLOWED: set[str] = set()

# A docs file, and a section cited by name: "docs/design.md, 'Evaluation protocols'" or
# 'section "Evaluation protocols" of ``docs/design.md``'.
DOC_PATH = re.compile(r"\bdocs/[\w./-]+?\.md\b")
SECTION_AFTER = re.compile(r"\b(docs/[\w./-]+?\.md)\b`*, '([^']+)'")
SECTION_BEFORE = re.compile(r"section \"([^\"]+)\" of `*(docs/[\w./-]+?\.md)\b")


def _files():
    """Every file under the scanned folders (this one excepted), skipping caches and hidden folders."""
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*")):
            parts = path.relative_to(ROOT).parts
            if (not path.is_file() or path.resolve() == THIS or path.suffix == ".pyc"
                    or any(p == "__pycache__" or p.startswith(".") for p in parts)):
                continue
            yield path


def _text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def _headings(doc: Path) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#+\s+(.+?)\s*#*\s*$", _text(doc), flags=re.M)}


def test_nothing_cites_design_md():
    offenders = []
    for path in _files():
        rel = path.relative_to(ROOT).as_posix()
        if rel in DESIGN_MD_ALLOWED:
            continue
        for number, line in enumerate(_text(path).splitlines(), 1):
            if "DESIGN.md" in line:
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, ("DESIGN.md is not in the repository: cite docs/design.md and the section's name "
                           "instead, e.g. \"docs/design.md, 'Evaluation protocols'\":\n" + "\n".join(offenders))


def _cited_texts():
    for path in _files():
        yield path.relative_to(ROOT).as_posix(), _text(path)
    yield "README.md", _text(ROOT / "README.md")


def test_cited_docs_and_sections_exist():
    missing, cited = [], set()
    for rel, text in _cited_texts():
        for doc in DOC_PATH.findall(text):
            cited.add(doc)
            if not (ROOT / doc).is_file():
                missing.append(f"{rel}: {doc} does not exist")
        sections = [m.groups() for m in SECTION_AFTER.finditer(text)]
        sections += [(doc, section) for section, doc in SECTION_BEFORE.findall(text)]
        for doc, section in sections:
            if (ROOT / doc).is_file() and section not in _headings(ROOT / doc):
                missing.append(f"{rel}: {doc} has no section {section!r}")
    assert "docs/design.md" in cited  # the patterns still find the citations
    assert not missing, "\n".join(missing)


def test_readme_links_the_docs():
    readme = _text(ROOT / "README.md")
    for doc in ("docs/architecture.md", "docs/design.md"):
        assert f"]({doc})" in readme, f"README.md should link {doc}"


def test_the_map_names_every_module_and_only_modules_that_exist():
    """docs/architecture.md gives every module of bpr_numpy/ a line, and names no module that is gone."""
    text = _text(ROOT / "docs" / "architecture.md")
    modules = {p.name for p in (ROOT / "bpr_numpy").rglob("*.py")
               if "__pycache__" not in p.parts and p.name not in ("__init__.py", "__main__.py")}
    unlisted = sorted(name for name in modules if f"`{name}`" not in text and f"`{name[:-3]}`" not in text)
    assert not unlisted, f"modules without a line in docs/architecture.md: {unlisted}"
    named = set(re.findall(r"`(?:[\w/]+/)?(_?\w+\.py)`", text))
    gone = sorted(name for name in named - modules - {"__init__.py", "__main__.py"}
                  if not list(ROOT.glob(f"**/{name}")))
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"

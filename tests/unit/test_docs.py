"""The documentation holds together: every relative link resolves, README leads to every page of
docs/, and what the code and config cite as documentation exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md",
         REPO / "results" / "README.md"]  # fmt: skip
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
# Where the project cites its own documents: code, rules, config, profiles, tests, docs.
CITING = ["realfake", "rules", "tests", "docs", "benchmarks", "profiles", ".ci"]
CITING_FILES = ["Snakefile", "config.yaml", "pyproject.toml", "README.md", "results/README.md"]
TEXT_SUFFIXES = {".py", ".smk", ".yaml", ".yml", ".md", ".rst", ".toml", ".sh", ".in", ""}


def relative_links(page: Path) -> list[str]:
    """Link targets of ``[text](target)`` outside fenced code, minus web links and #anchors."""
    text = FENCE.sub("", page.read_text())
    targets = [m.group(1).split("#", 1)[0] for m in LINK.finditer(text)]
    return [t for t in targets if t and not re.match(r"[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    missing = [t for t in relative_links(page) if not (page.parent / t).exists()]
    assert missing == [], f"{page.relative_to(REPO)} links to missing {missing}"


def test_links_are_found():
    # the parser sees README's links (a broken regex would pass the test above vacuously)
    assert "docs/targets.md" in relative_links(REPO / "README.md")


def test_readme_leads_to_every_docs_page():
    linked = {(REPO / t).resolve() for t in relative_links(REPO / "README.md")}
    unlinked = [p.name for p in (REPO / "docs").glob("*.md") if p.resolve() not in linked]
    assert unlinked == []


def citing_files() -> list[Path]:
    files = [REPO / f for f in CITING_FILES]
    for folder in CITING:
        files += [p for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES]
    return [p for p in files if p.exists()]


def test_cited_docs_exist():
    """``docs/<page>.md`` named anywhere in the project (prose, comments, docstrings) exists."""
    cited = {
        (path.relative_to(REPO), name)
        for path in citing_files()
        for name in re.findall(r"\bdocs/[\w./-]*?\.md\b", path.read_text(errors="replace"))
    }
    assert cited, "no citation found: the pattern is broken"
    assert sorted((str(f), n) for f, n in cited if not (REPO / n).is_file()) == []


def test_readme_sections_cited_exist():
    """README followed by a quoted section name (with or without parentheses) names a heading
    README still has."""
    headings = set(re.findall(r"^#+ (.+?)\s*$", (REPO / "README.md").read_text(), re.M))
    cited = {
        (str(path.relative_to(REPO)), name)
        for path in citing_files()
        for name in re.findall(r"README:? \(?\"([^\"]+)\"", path.read_text(errors="replace"))
    }
    assert sorted((f, n) for f, n in cited if n not in headings) == []

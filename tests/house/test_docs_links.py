"""The docs hold together: every relative link in README.md and docs/ names a file that exists, and
an anchor names a heading of that file (GitHub's slugs). Also the docs' shape (issue 24, item 6):
every page sits in one of the kinds, and the contracts the code cites are in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.unit

LINK = re.compile(r"\]\(([^)\s]+)\)")
KINDS = {"tutorial", "how-to", "reference", "explanation", "contributing"}


def pages() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]


def slugs(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        heading = line.lstrip("#").strip().lower()
        found.add(re.sub(r"[^\w\- ]", "", heading).replace(" ", "-"))
    return found


def test_every_relative_link_resolves_to_a_file_and_a_heading() -> None:
    # GIVEN every link of README.md and docs/
    broken = []
    for page in pages():
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            # THEN its file exists, and its anchor is one of that file's headings
            if not resolved.exists():
                broken.append(f"{page.relative_to(REPO_ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in slugs(resolved):
                broken.append(f"{page.relative_to(REPO_ROOT)}: {target} (no such heading)")
    assert broken == []


def test_every_page_is_one_kind_and_the_contracts_are_here() -> None:
    # GIVEN docs/
    docs = REPO_ROOT / "docs"
    # THEN every page but the contracts sits in one kind's folder
    loose = [page.name for page in docs.glob("*.md") if page.name != "architecture.md"]
    assert loose == []
    assert {folder.name for folder in docs.iterdir() if folder.is_dir()} == KINDS
    # AND every section of docs/architecture.md the code cites exists
    headings = (docs / "architecture.md").read_text()
    cited = set()
    for path in [*REPO_ROOT.glob("layers/**/*.py"), *REPO_ROOT.glob("loader/src/**/*.py"), REPO_ROOT / "template.yaml"]:
        cited |= set(re.findall(r"docs/architecture\.md (\d(?:\.\d)?)", path.read_text()))
    assert cited
    for section in cited:
        assert re.search(rf"^##+ {re.escape(section)}[ .]", headings, re.M), f"section {section} is cited but absent"

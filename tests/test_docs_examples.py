"""The documentation's examples run: every Python block of `docs/**/*.md` marked with a
preceding `<!-- test -->` line, the blocks of one page in order in one namespace, in a
temporary directory."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"<!-- test -->\s*\n```python\n(.*?)\n```", re.DOTALL)
PAGES = sorted(p for p in DOCS.rglob("*.md") if BLOCK.search(p.read_text()))


def test_every_python_block_runs_or_says_why():
    """A Python block is either run (`<!-- test -->`) or says why not (`<!-- not run: ... -->`,
    for signatures and fragments)."""
    unmarked = []
    for page in DOCS.rglob("*.md"):
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("```python"):
                before = lines[i - 1] if i else ""
                if before != "<!-- test -->" and not before.startswith("<!-- not run:"):
                    unmarked.append(f"{page.relative_to(DOCS)}:{i + 1}")
    assert not unmarked, unmarked


def test_some_pages_have_tested_examples():
    assert PAGES, f"no <!-- test --> blocks under {DOCS}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(BLOCK.findall(page.read_text())):
        exec(compile(block, f"{page.name}[block {i}]", "exec"), namespace)

"""mkdocs hooks: the README's figures (`figs/`) are served as `assets/figs/`, and the
benchmarks page is `benchmarks/README.md`, so that neither is copied by hand."""

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]


def _benchmarks_page() -> str:
    text = (ROOT / "benchmarks" / "README.md").read_text()
    # Links relative to benchmarks/ point outside the site: show them as paths.
    return re.sub(r"\[([^\]]+)\]\((?!https?://|#)([^)]+)\)", r"\1 (`\2`)", text)


def on_files(files, config):
    for png in sorted((ROOT / "figs").glob("*.png")):
        files.append(File.generated(config, f"assets/figs/{png.name}", abs_src_path=str(png)))
    files.append(File.generated(config, "benchmarks.md", content=_benchmarks_page()))
    return files

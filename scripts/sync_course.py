"""Write the project's address (``dsol_lite.course.REPOSITORY``) into every place that shows it:
each notebook's Colab badge and setup-cell clone command, and the README's Colab example.

    python scripts/sync_course.py        # rewrites what differs, prints what it changed

``tests/test_course.py`` fails when a notebook or the README disagrees with ``REPOSITORY``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dsol_lite.course import clone_command, colab_badge, course_notebooks  # noqa: E402

BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
CLONE = re.compile(r"git clone -q --depth 1 \S+")


def sync_text(text: str, notebook: str) -> str:
    text = BADGE.sub(lambda m: colab_badge(notebook), text)
    return CLONE.sub(clone_command(), text)


def sync_notebook(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        new = sync_text(cell.source, path.name)
        changed |= new != cell.source
        cell.source = new
    if changed:
        nbformat.write(nb, path)
    return changed


def sync_readme(path: Path) -> bool:
    text = path.read_text()
    new = sync_text(text, "00_setup_and_data.ipynb")
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    for p in course_notebooks(ROOT):
        if sync_notebook(p):
            print(f"updated {p.relative_to(ROOT)}")
    if sync_readme(ROOT / "README.md"):
        print("updated README.md")

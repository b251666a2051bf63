"""The course around the library: where it lives, its Colab badges, and the student edition.

Notebook: every notebook (its first cell's badge and its setup cell come from here).

* ``REPOSITORY`` is the one place the project's address is written; ``colab_badge(name)`` and
  ``clone_command()`` are derived from it, and ``scripts/sync_course.py`` writes them into the
  notebooks and the README (a test checks they agree).
* ``student_notebook(nb)`` turns a course notebook into its student edition: every cell tagged
  ``solution`` (the library solution of the exercise, printed and checked) is replaced by a short
  note; the exercise's stub and checker stay, and so do the stored outputs of every other cell.
  ``write_student_edition(out)`` writes all of them, whole or not at all.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING

from dsol_lite.folders import check_replaceable, write_folder, write_text

REPOSITORY = "dsol-lite/dsol_lite"
BRANCH = "main"
SOLUTION_TAG = "solution"
STUDENT_MANIFEST = "student_edition.json"
ROOT = Path(__file__).resolve().parents[1]

if TYPE_CHECKING:
    import nbformat


def repository_url() -> str:
    return f"https://github.com/{REPOSITORY}"


def clone_command() -> str:
    """The shell command a notebook's setup cell runs on Colab."""
    return f"git clone -q --depth 1 {repository_url()}.git"


def colab_url(notebook: str) -> str:
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/notebooks/{notebook}"


def colab_badge(notebook: str) -> str:
    """The Markdown badge that opens ``notebook`` (a file name such as ``02_stage_one.ipynb``) in Colab."""
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)})"


def course_notebooks(root: Path = ROOT) -> list[Path]:
    return sorted((root / "notebooks").glob("[0-9]*.ipynb"))


def solution_note(cell: nbformat.NotebookNode) -> str:
    """What the student edition shows where a solution cell was: which library function solves it."""
    names = sorted({line.split("getsource(")[1].split(")")[0] for line in cell.source.splitlines()
                    if "getsource(" in line})
    where = ", ".join(f"`{n}`" for n in names) or "the library"
    return (f"*The library's solution ({where}, in `dsol_lite/exercises/`) is left out of the student "
            f"edition: ask your instructor, or open it once your checker passes.*")


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student edition of one notebook: solution cells become a note; nothing else changes."""
    import nbformat  # with Jupyter (the notebooks and dev extras), not a dependency of the library

    out = copy.deepcopy(nb)
    cells = []
    for cell in out.cells:
        if SOLUTION_TAG in cell.metadata.get("tags", []):
            cells.append(nbformat.v4.new_markdown_cell(solution_note(cell)))
            cells[-1].pop("id", None)
        else:
            cells.append(cell)
    out.cells = cells
    return out


def _is_student_edition(folder: Path) -> bool:
    return (folder / STUDENT_MANIFEST).is_file()


def write_student_edition(out: str | Path, root: Path = ROOT) -> list[Path]:
    """Write the student edition of every course notebook to ``out`` (with a manifest), replacing ``out``
    only if it is empty or a student edition written before. ``out`` should sit beside ``notebooks/``
    (the default ``student/`` does), so that the paths the notebooks print read the same. Returns the
    notebooks."""
    import nbformat

    out = Path(out)
    sources = course_notebooks(root)
    check_replaceable(out, "student edition", _is_student_edition, inputs=(root / "notebooks",))
    edited = {}
    for path in sources:
        nb = nbformat.read(path, as_version=4)
        if not any(SOLUTION_TAG in c.metadata.get("tags", []) for c in nb.cells):
            raise ValueError(f"{path}: no cell is tagged '{SOLUTION_TAG}', so its exercise's solution "
                             f"cannot be left out")
        edited[path.name] = student_notebook(nb)

    def write(folder: Path) -> None:
        for name, nb in edited.items():
            nbformat.write(nb, folder / name)
        write_text(folder / STUDENT_MANIFEST, json.dumps(
            {"kind": "dsol_lite student edition", "notebooks": sorted(edited)}, indent=1) + "\n")

    write_folder(out, "student edition", write)
    return [out / name for name in sorted(edited)]

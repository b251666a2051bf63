"""The stored notebooks are valid nbformat files that Jupyter opens without a validation warning."""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.ipynb"))


def test_the_course_has_its_notebooks():
    assert len(NOTEBOOKS) >= 8, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_matches_the_nbformat_schema(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)  # raises, naming the offending cell and output


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_volatile_metadata(path: Path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        assert set(cell.metadata) <= {"tags"}, f"{path.name} cell {i}: metadata {sorted(cell.metadata)}"
        for out in cell.get("outputs", []):
            assert not out.get("metadata"), f"{path.name} cell {i}: output metadata {out.get('metadata')}"

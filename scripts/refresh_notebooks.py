"""Re-run notebooks in quick mode and store their outputs, free of volatile metadata.

Execution counts become 1..N in cell order; run times, cell ids and kernel details are dropped.

    python scripts/refresh_notebooks.py                 # every notebook
    python scripts/refresh_notebooks.py notebooks/00_setup_and_data.ipynb

The stored outputs are what nbval compares against in the test suite, so run this after
changing a notebook or the code it shows.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def strip(nb: nbformat.NotebookNode) -> None:
    nb.nbformat, nb.nbformat_minor = 4, 4  # no cell ids: stable diffs
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    # nbval only compares cells that have an execution count, so counts are renumbered 1..N in
    # cell order (what a clean top-to-bottom run gives) instead of removed: stable in diffs.
    count = 0
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k == "tags"}
        cell.pop("id", None)
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            for out in cell.outputs:
                if "execution_count" in out:
                    out.execution_count = count
                if out.output_type in ("display_data", "execute_result"):
                    out.metadata = {}
                else:  # the schema allows no metadata on stream and error outputs
                    out.pop("metadata", None)


def refresh(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    os.environ["DSOL_QUICK"] = "1"
    start = time.perf_counter()
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    strip(nb)
    nbformat.write(nb, path)
    print(f"refreshed {path.relative_to(ROOT)} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    for p in paths:
        refresh(p)

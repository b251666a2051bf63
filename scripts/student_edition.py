"""Write the student edition of the course: every notebook without its exercise solutions.

    python scripts/student_edition.py            # -> student/*.ipynb
    python scripts/student_edition.py OUT

Cells tagged ``solution`` (the library solution, printed and checked) become a one-line note; the
stubs, the checkers, the check questions (answers folded in ``<details>``) and every stored output
stay. ``OUT`` is replaced only if it is empty or a student edition written before. Keep ``OUT``
beside ``notebooks/`` inside the project: the setup cell finds the project above it, and the paths
the notebooks print then read as in the course notebooks.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dsol_lite.course import write_student_edition  # noqa: E402
from dsol_lite.errors import ConfigError  # noqa: E402

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "student"
    try:
        paths = write_student_edition(out)
    except (ConfigError, ValueError) as err:
        sys.exit(f"student_edition: {err}")
    for p in paths:
        print(f"wrote {p}")

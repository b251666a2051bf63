"""The course as a product: one address for the project, documentation that speaks of the product,
every notebook with questions and references, a student edition that builds, and install cells
that keep Colab's own PyTorch."""

from __future__ import annotations

import contextlib
import io
import re
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement

from dsol_lite import course
from dsol_lite.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = course.course_notebooks(ROOT)
sys.path.insert(0, str(ROOT / "scripts"))

# Words about how the package was made, not what it is: never in the product.
PROCESS_WORDS = re.compile(r"\bstop[ -]\d+|\bissue notes?\b|\bissue #?\d+|\bnudges? \d+|\bearlier preset\b|"
                           r"\bthis machine\b|\bdevelopment machine\b|\bslow day\b", re.IGNORECASE)


def product_texts() -> list[tuple[str, str]]:
    """(name, text) of every file a user reads: docs, notebooks (cells, not outputs), code."""
    texts = []
    for pattern in ("*.md", "docs/*.md", "benchmarks/*.md", "data_samples/*.md", "dsol_lite/**/*.py",
                    "scripts/*.py", "benchmarks/*.py", "benchmarks/*.sh", "notebooks/results/*.md"):
        for p in sorted(ROOT.glob(pattern)):
            texts.append((str(p.relative_to(ROOT)), p.read_text()))
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        texts += [(f"{p.name} cell {i}", c.source) for i, c in enumerate(nb.cells)]
    return texts


def test_the_product_never_speaks_of_how_it_was_made():
    hits = [f"{name}: {m.group(0)!r}" for name, text in product_texts() for m in PROCESS_WORDS.finditer(text)]
    assert not hits, "\n".join(hits)


def test_the_process_word_check_can_fail():
    for phrase in ("since stop 34", "the stop-33 preset", "nudge 9", "the earlier preset", "on this machine"):
        assert PROCESS_WORDS.search(phrase), phrase
    assert not PROCESS_WORDS.search("the clip store stops at the last batch; a seed is a new draw")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_badge_and_clone_command_come_from_the_one_address(path: Path):
    nb = nbformat.read(path, as_version=4)
    assert course.colab_badge(path.name) in nb.cells[0].source, "run python scripts/sync_course.py"
    setup = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and "google.colab" in c.source)
    assert course.clone_command() in setup, "run python scripts/sync_course.py"
    assert "github.com" not in setup.replace(course.clone_command(), "")


def test_the_readme_shows_the_same_address():
    readme = (ROOT / "README.md").read_text()
    assert course.colab_badge("00_setup_and_data.ipynb") in readme
    assert course.clone_command() in readme


def test_the_readme_comparison_is_the_stored_run():
    """The README's method table is what ``comparison_markdown`` makes of the stored comparison file,
    next to the command that wrote it (so the two cannot drift apart)."""
    import json

    from dsol_lite.comparison import comparison_markdown

    record = json.loads((ROOT / "notebooks" / "results" / "comparison_quick.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert f"`{record['command']}`" in readme.replace("\n", " ")
    assert comparison_markdown(record) in readme
    assert {"sweep", "chosen", "rows", "robustness"} <= set(record), "the file records the sweep and the robustness"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_never_reinstalls_torch(path: Path):
    nb = nbformat.read(path, as_version=4)
    installs = [line for c in nb.cells if c.cell_type == "code" for line in c.source.splitlines()
                if re.search(r"\bpip\b.*\binstall\b", line)]
    assert installs, "the setup cell installs the project on Colab"
    for line in installs:
        command = line.split("#")[0]  # a comment may say why torch is kept
        assert not re.search(r"torch|--upgrade|-U\b|--force", command), line


def test_declared_ranges_accept_what_colab_ships():
    """Versions Colab's runtime preinstalled in late 2025 (its ipywidgets has stayed at 7.7.1), which
    installing the package must keep, not replace."""
    deps = {Requirement(d).name: Requirement(d) for d in
            tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    colab = {"torch": "2.9.0", "torchvision": "0.24.0", "torchaudio": "2.9.0", "ipywidgets": "7.7.1",
             "numpy": "2.0.2", "matplotlib": "3.10.0", "pandas": "2.2.2", "scipy": "1.16.3"}
    for name, version in colab.items():
        assert deps[name].specifier.contains(version), f"{name} {deps[name].specifier} refuses Colab's {version}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_teaches_with_goals_questions_experiments_and_references(path: Path):
    nb = nbformat.read(path, as_version=4)
    md = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert "Learning goals" in md[0] and "**Time**" in md[0]
    questions = next((s for s in md if s.startswith("## Check your understanding")), None)
    assert questions is not None, "no check questions"
    n_questions = len(re.findall(r"^\d+\. ", questions, re.MULTILINE))
    assert 3 <= n_questions <= 5 and questions.count("<details>") == n_questions == questions.count("</details>")
    assert any(s.startswith("## Experiments to try") for s in md)
    refs = next((s for s in md if s.startswith("## References")), "")
    assert re.search(r"\((19|20)\d\d\)|\b(19|20)\d\d\b", refs), "references name their year"
    assert "**Next**" in md[-1] or path == NOTEBOOKS[-1]


def exercise_cells(nb: nbformat.NotebookNode) -> tuple[str, str]:
    """(stub, checker) sources of a notebook's exercise: the stub raises NotImplementedError."""
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    stub = next(s for s in code if "NotImplementedError(" in s and "raise" in s and "def " in s)
    checker = next(s for s in code if "except NotImplementedError" in s)
    return stub, checker


def test_student_edition_drops_solutions_and_keeps_stubs_and_checkers(tmp_path: Path):
    paths = course.write_student_edition(tmp_path / "student", ROOT)
    assert [p.name for p in paths] == [p.name for p in NOTEBOOKS]
    for path, original in zip(paths, NOTEBOOKS):
        nb, orig = nbformat.read(path, as_version=4), nbformat.read(original, as_version=4)
        solutions = [c for c in orig.cells if course.SOLUTION_TAG in c.metadata.get("tags", [])]
        assert solutions, f"{original.name}: no solution cell tagged"
        assert not any(course.SOLUTION_TAG in c.metadata.get("tags", []) for c in nb.cells)
        assert len(nb.cells) == len(orig.cells)
        kept = [c.source for c in orig.cells if course.SOLUTION_TAG not in c.metadata.get("tags", [])]
        assert all(s in [c.source for c in nb.cells] for s in kept)
        for sol in solutions:
            for name in re.findall(r"getsource\((\w+)\)", sol.source):
                assert f"getsource({name})" not in "".join(c.source for c in nb.cells)
        nbformat.validate(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_checkers_report_the_stub_as_not_done(path: Path):
    """The student's exercise cells run as they stand: the checker says the stub is not done yet."""
    stub, checker = exercise_cells(nbformat.read(path, as_version=4))
    namespace: dict = {}
    exec("import inspect, math\nimport torch\nimport torch.nn.functional as F", namespace)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(stub, namespace)
        exec(checker, namespace)
    assert re.search(r"not (implemented|done) yet", out.getvalue()), out.getvalue()


def test_student_edition_never_replaces_a_folder_it_did_not_write(tmp_path: Path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="did not write"):
        course.write_student_edition(mine, ROOT)
    assert (mine / "notes.txt").read_text() == "keep me"
    out = tmp_path / "student"
    course.write_student_edition(out, ROOT)
    course.write_student_edition(out, ROOT)  # its own folder: replaced whole
    assert (out / course.STUDENT_MANIFEST).is_file()

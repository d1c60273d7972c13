"""The student edition of the chapters: the same notebooks with every exercise's solution replaced by a stub.

A chapter's exercise is written for the website with sphinx-exercise::

    ```{exercise} title                         markdown cell: the task, numbered per page, linkable
    :label: ex-04-2
    ...
    ```
    ```{solution-start} ex-04-2                 markdown cell
    :class: dropdown
    ```
    #@title Solution to exercise 2              code cell(s) tagged "solution" (collapsed in Colab and JupyterLab)
    ...
    # Check (exercise 2): ...                   code cell(s) tagged "exercise-check": asserts the solution must pass
    ```{solution-end}
    ```

The student edition drops the two gate cells, replaces the solution cells by one stub that names what the check
reads and raises ``NotImplementedError``, and keeps everything else: the check follows the stub, so a learner's
solution is checked by the same asserts as the course's. Outputs are stripped.

    python scripts/student_edition.py [--out _build/student]      (make student)

The website links each chapter's two editions (``book/_ext/student_edition.py``); ``tests/test_student.py`` checks
the structure of every exercise, that each student notebook runs up to its first stub (in ``make test``: its
cells before the stub are the ones nbval just ran) and that the stub stops it there.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
SOLUTION, CHECK = "solution", "exercise-check"
EXERCISE = re.compile(r"```\{exercise\}\s*(?P<title>[^\n]*)\n:label:\s*(?P<label>\S+)")
START = re.compile(r"^```\{solution-start\}\s+(?P<label>\S+)")
END = re.compile(r"^```\{solution-end\}")


class ExerciseFormatError(ValueError):
    """A chapter's exercise does not have the structure the website and the student edition rely on."""


@dataclass
class Exercise:
    number: int                       # as the website numbers it: 1, 2, ... in the page's order
    label: str
    title: str
    cell: int                         # the markdown cell with the {exercise} directive
    start: int                        # {solution-start}
    end: int                          # {solution-end}
    solutions: list[int] = field(default_factory=list)   # code cells tagged "solution"
    checks: list[int] = field(default_factory=list)      # code cells tagged "exercise-check"


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _names(source: str, ctx) -> set[str]:
    """Names a cell binds (``ast.Store``, function and class definitions) or reads (``ast.Load``)."""
    tree = ast.parse(source)
    out = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ctx)}
    if ctx is ast.Store:
        out |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    return out


def exercises(nb, name: str = "notebook") -> list[Exercise]:
    """The exercises of a notebook, in order, with their solution and check cells. Raises
    :class:`ExerciseFormatError` naming the chapter and the exercise when the structure is broken."""
    cells = nb["cells"]
    found: list[Exercise] = []
    i = 0
    while i < len(cells):
        cell = cells[i]
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "markdown" and START.match(src):
            raise ExerciseFormatError(f"{name}: cell {i} starts a solution with no {{exercise}} before it")
        m = EXERCISE.search(src) if cell["cell_type"] == "markdown" else None
        if m is None:
            i += 1
            continue
        ex = Exercise(number=len(found) + 1, label=m["label"], title=m["title"].strip(), cell=i, start=-1, end=-1)
        where = f"{name}, exercise {ex.number} ({ex.label})"
        j = i + 1
        start = "".join(cells[j]["source"]) if j < len(cells) else ""
        sm = START.match(start) if j < len(cells) and cells[j]["cell_type"] == "markdown" else None
        if sm is None or sm["label"] != ex.label:
            raise ExerciseFormatError(f"{where}: the next cell must be ```{{solution-start}} {ex.label}")
        ex.start = j
        j += 1
        while j < len(cells) and not (cells[j]["cell_type"] == "markdown" and END.match("".join(cells[j]["source"]))):
            c = cells[j]
            if c["cell_type"] != "code":
                raise ExerciseFormatError(f"{where}: cell {j} inside the solution is not a code cell")
            tags = _tags(c)
            if SOLUTION in tags and not ex.checks:
                ex.solutions.append(j)
            elif CHECK in tags:
                ex.checks.append(j)
            else:
                raise ExerciseFormatError(f"{where}: code cell {j} must be tagged {SOLUTION!r} (first) or {CHECK!r}")
            j += 1
        if j == len(cells):
            raise ExerciseFormatError(f"{where}: no ```{{solution-end}} after the solution")
        ex.end = j
        if not ex.solutions or not ex.checks:
            raise ExerciseFormatError(f"{where}: needs at least one solution cell and one check cell after it")
        for k in ex.checks:
            tree = ast.parse("".join(cells[k]["source"]))
            if not any(isinstance(n, ast.Assert) for n in ast.walk(tree)):
                raise ExerciseFormatError(f"{where}: check cell {k} asserts nothing")
        if not check_reads(nb, ex):
            raise ExerciseFormatError(f"{where}: the check reads nothing the solution defines, so it would pass "
                                      "without a solution")
        found.append(ex)
        i = j + 1
    return found


def check_reads(nb, ex: Exercise) -> list[str]:
    """The names the exercise's check reads that its solution defines: what a learner's code must produce."""
    solution = set().union(*(_names("".join(nb["cells"][k]["source"]), ast.Store) for k in ex.solutions))
    checks = ["".join(nb["cells"][k]["source"]) for k in ex.checks]
    read = set().union(*(_names(c, ast.Load) for c in checks)) - set().union(*(_names(c, ast.Store) for c in checks))
    return sorted(solution & read)


def stub_source(nb, ex: Exercise, chapter: str) -> str:
    names = check_reads(nb, ex)
    return (f"# Exercise {ex.number} (your turn): {ex.title}\n"
            "# Write your solution in this cell, then run the check in the next one.\n"
            f"# The check reads what your code defines: {', '.join(names)}\n"
            f'raise NotImplementedError("exercise {ex.number} of {chapter}: your solution goes in this cell")')


def student_notebook(nb, chapter: str):
    """A copy of ``nb`` with each exercise's solution replaced by a stub and the solution gates removed."""
    nb = copy.deepcopy(nb)
    found = exercises(nb, chapter)
    drop, stubs = set(), {}
    for ex in found:
        drop |= {ex.start, ex.end, *ex.solutions[1:]}
        stubs[ex.solutions[0]] = ex
    cells = []
    for i, cell in enumerate(nb["cells"]):
        if i in drop:
            continue
        if i in stubs:
            ex = stubs[i]
            cell = nbformat.v4.new_code_cell(stub_source(nb, ex, chapter), metadata={"tags": ["exercise-stub"]})
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cells.append(cell)
    nb["cells"] = cells
    return nb


def stripped(nb):
    """A copy of ``nb`` without outputs (the full edition a reader downloads)."""
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return nb


def write_student_edition(out: Path, chapters=CHAPTERS, suffix: str = "") -> list[Path]:
    """Write the student edition of ``chapters`` into ``out`` (``<stem><suffix>.ipynb``); returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in chapters:
        nb = nbformat.read(str(path), as_version=4)
        target = out / f"{Path(path).stem}{suffix}.ipynb"
        nbformat.write(student_notebook(nb, Path(path).stem), str(target))
        written.append(target)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "_build" / "student", help="folder (default _build/student)")
    args = ap.parse_args(argv)
    try:
        paths = write_student_edition(args.out)
    except ExerciseFormatError as e:           # a sentence naming the chapter and the exercise, not a traceback
        print(f"!! no student edition: {e}", file=sys.stderr)
        return 1
    n = sum(len(exercises(nbformat.read(str(p), as_version=4), p.stem)) for p in CHAPTERS)
    print(f">> student edition: {len(paths)} chapters, {n} exercises with their solutions replaced by stubs, "
          f"in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sphinx extension: each chapter page offers its two notebooks for download, the full edition and the student
edition (every exercise's solution replaced by a stub the learner fills in; ``scripts/student_edition.py``).

Both are written, outputs stripped, into ``<html>/downloads/`` when the build finishes (``NN_topic.ipynb`` and
``NN_topic-student.ipynb``), and a line with the two links is added under each chapter's title.
"""

import sys
from pathlib import Path

import nbformat
from docutils import nodes

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import student_edition  # noqa: E402

FOLDER = "downloads"


def _chapters(app):
    return sorted(Path(app.srcdir, "chapters").glob("[0-9][0-9]_*.ipynb"))


def _add_links(app, doctree):
    docname = app.env.docname
    if not docname.startswith("chapters/"):
        return
    stem = docname.split("/", 1)[1]
    nb = nbformat.read(str(Path(app.srcdir, docname + ".ipynb")), as_version=4)
    n = len(student_edition.exercises(nb, stem))
    section = doctree.next_node(nodes.section)
    if section is None:
        return
    para = nodes.paragraph(classes=["minidiff-downloads"])
    para += nodes.Text("Download this chapter's notebook: ")
    para += nodes.reference("", "full edition", refuri=f"../{FOLDER}/{stem}.ipynb", classes=["download-full"])
    para += nodes.Text(" · ")
    para += nodes.reference("", "student edition", refuri=f"../{FOLDER}/{stem}-student.ipynb",
                            classes=["download-student"])
    para += nodes.Text(f" (the {n} exercises' solutions replaced by stubs for you to fill in, each followed by its check).")
    title = section.next_node(nodes.title)
    section.insert(section.index(title) + 1 if title is not None else 0, para)


def _write(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir, FOLDER)
    out.mkdir(parents=True, exist_ok=True)
    for path in _chapters(app):
        nb = nbformat.read(str(path), as_version=4)
        nbformat.write(student_edition.stripped(nb), str(out / path.name))
    student_edition.write_student_edition(out, _chapters(app), suffix="-student")


def setup(app):
    app.connect("doctree-read", _add_links)
    app.connect("build-finished", _write)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

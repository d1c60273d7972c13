"""Execute a chapter top to bottom in a fresh kernel and print each code cell's time and printed output.

Used to measure the runtime of a chapter in a profile, e.g.::

    MINIDIFF_PROFILE=cpu MINIDIFF_STATIC=1 .venv/bin/python scripts/run_chapter.py chapters/05_sampling.ipynb [out.ipynb]

The executed notebook is written to the optional second path (the chapter itself stays stripped).
"""

import sys
import time

import nbformat
from dateutil.parser import isoparse
from nbclient import NotebookClient


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    nb = nbformat.read(argv[1], as_version=4)
    start = time.time()
    NotebookClient(nb, timeout=1200, kernel_name="python3").execute()
    print(f"total {time.time() - start:.1f} s")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("execution", {})
        try:
            dt = (isoparse(meta["shell.execute_reply"]) - isoparse(meta["iopub.execute_input"])).total_seconds()
        except KeyError:
            dt = float("nan")
        text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
        lines = [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip() and "it/s" not in ln and "s/it" not in ln]
        print(f"--- cell {i} ({dt:.1f} s)")
        print("\n".join(lines[-20:]))
    if len(argv) > 2:
        nbformat.write(nb, argv[2])


if __name__ == "__main__":
    main(sys.argv)

"""Check that the installed torch, torchvision (and triton, where torch brings one) work together.

    python scripts/check_install.py          # `make setup` runs it after pip; exit 1 with one sentence on failure

pip can end up with a torchvision built for another torch than the one installed (a constraints file, a local
wheel or a pin elsewhere makes it backtrack): importing torchvision then fails deep inside torch with
"operator torchvision::nms does not exist". This script turns that, and a triton that is not the one torch was
built with, into a sentence that names both versions and the fix, instead of a traceback.
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import re
import sys

# torchvision 0.N pairs with torch 2.(N - 15): 0.17 with 2.2, ..., 0.29 with 2.14.
TORCHVISION_OFFSET = 15


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _local_tag(version: str) -> str:
    """``"2.13.0+cpu"`` -> ``"cpu"``; no tag -> ``""``."""
    return version.split("+", 1)[1] if "+" in version else ""


def matching_torchvision(torch_version: str) -> str | None:
    """The torchvision series built for ``torch_version`` (``"2.14.1+cu130"`` -> ``"0.29.*"``), or None."""
    m = re.match(r"(\d+)\.(\d+)", torch_version)
    if not m or m.group(1) != "2":
        return None
    return f"0.{int(m.group(2)) + TORCHVISION_OFFSET}.*"


def required_triton(requirements: list[str] | None) -> str | None:
    """The triton requirement (e.g. ``"triton==3.8.0"``) that torch declares for this platform, or None."""
    from packaging.requirements import Requirement

    for line in requirements or []:
        req = Requirement(line)
        if req.name.lower() == "triton" and (req.marker is None or req.marker.evaluate({"extra": ""})):
            return f"triton{req.specifier}"
    return None


def check(torch_version: str | None, torchvision_version: str | None, torchvision_error: str | None,
          triton_req: str | None, triton_version: str | None, triton_error: str | None) -> list[str]:
    """Problems with an installed set, one sentence each (empty when it works). Pure, so the tests can feed it."""
    venv_pip = f"{sys.executable} -m pip"
    if torch_version is None:
        return ["torch is not installed in this environment; run `make setup` (or pip install -e .)."]
    problems = []
    if torchvision_version is None:
        problems.append(f"torchvision is not installed next to torch {torch_version}; install the matching one: "
                        f"{venv_pip} install 'torchvision=={matching_torchvision(torch_version) or '<matching>'}'.")
    elif torchvision_error is not None:
        want = matching_torchvision(torch_version) or "<the release for this torch>"
        t_tag, v_tag = _local_tag(torch_version), _local_tag(torchvision_version)
        if t_tag != v_tag and t_tag == "cpu":
            fix = (f"install torchvision from the index that built this torch: {venv_pip} install --force-reinstall "
                   f"'torchvision=={want}' --index-url https://download.pytorch.org/whl/cpu")
        else:
            fix = (f"install the pair from one index: {venv_pip} install --force-reinstall "
                   f"'torch=={torch_version.split('+')[0]}' 'torchvision=={want}'")
        problems.append(
            f"torchvision {torchvision_version} cannot load its operators with torch {torch_version}: they are "
            f"builds for different torches ({torchvision_error}); fix: {fix}, or start over with make distclean && "
            f"make setup.")
    if triton_req is not None:
        from packaging.requirements import Requirement

        spec = Requirement(triton_req).specifier
        if triton_version is None:
            problems.append(f"torch {torch_version} requires {triton_req} but triton is not installed; fix: "
                            f"{venv_pip} install '{triton_req}'.")
        elif not spec.contains(triton_version, prereleases=True):
            problems.append(f"torch {torch_version} requires {triton_req} but triton {triton_version} is installed "
                            f"(something else pinned it); fix: {venv_pip} install '{triton_req}', and do not pin "
                            f"triton apart from torch.")
        elif triton_error is not None:
            problems.append(f"triton {triton_version} is installed but does not import ({triton_error}); fix: "
                            f"{venv_pip} install --force-reinstall '{triton_req}'.")
    return problems


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:200]


def probe() -> dict:
    """Import the libraries and run one torchvision operator; collect versions and errors."""
    out = {"torch_version": _version("torch"), "torchvision_version": _version("torchvision"),
           "torchvision_error": None, "triton_req": None, "triton_version": _version("triton"), "triton_error": None}
    if out["torch_version"] is None:
        return out
    import torch

    out["triton_req"] = required_triton(md.requires("torch"))
    if out["torchvision_version"] is not None:
        try:
            import torchvision

            boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
            torchvision.ops.nms(boxes, torch.tensor([1.0, 0.5]), 0.5)   # a compiled torchvision operator
        except Exception as e:  # noqa: BLE001 - any failure here is the mismatch we report
            out["torchvision_error"] = _first_line(e)
    if out["triton_version"] is not None:
        try:
            import triton  # noqa: F401
        except Exception as e:  # noqa: BLE001
            out["triton_error"] = _first_line(e)
    return out


def main() -> int:
    found = probe()
    problems = check(**found)
    if problems:
        for p in problems:
            print("!! " + p)
        return 1
    tri = f" | triton {found['triton_version']}" if found["triton_version"] else ""
    print(f">> torch {found['torch_version']} | torchvision {found['torchvision_version']}{tri} | "
          f"{platform.machine()} | Python {platform.python_version()}: they load together")
    return 0


if __name__ == "__main__":
    sys.exit(main())

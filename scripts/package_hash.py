"""Print a hash of the minidiff package's source (every file under minidiff/ that git would ship: .py, .json, .pt;
not caches). `make book` keeps it next to the execution cache and clears that cache when it changes, so a page is
never a result of older package code (the cache itself keys on the notebook's cells only)."""

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_hash(root: Path = ROOT) -> str:
    h = hashlib.sha256()
    for path in sorted((root / "minidiff").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".json", ".pt"):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


if __name__ == "__main__":
    print(package_hash())

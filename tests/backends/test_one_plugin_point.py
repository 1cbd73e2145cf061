"""One plug-in point: the word faiss appears in controller/ only inside the FAISS backend.

Engine, checks, serving, reports, store and core reach vectors through the VectorBackend
protocol; a grep for faiss outside controller/backends/faiss.py finds only the lines below, each
naming the backend type as a value (the registry entry and the manifest's default).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "controller"
BACKEND = ROOT / "backends" / "faiss.py"
ALLOWED = {
    # the registry maps the type name to its module
    ("backends/__init__.py", '"faiss": "controller.backends.faiss:FaissBackend",'),
    # its alias is the store's routing record: known without importing the backend
    ("backends/__init__.py", '_STORE_ALIAS: set[str] = {"faiss"}'),
    # spec.index.backend.type's default value and its description in the manifest reference
    ("manifest/models.py", 'DEFAULT_BACKEND = "faiss"'),
    ("manifest/models.py", '"Vector backend: faiss (files in the store, the default), pgvector or qdrant. The other keys "'),
}


def faiss_lines() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(ROOT.rglob("*")):
        if not path.is_file() or path == BACKEND or "__pycache__" in path.parts:
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if re.search("faiss", line, re.IGNORECASE):
                found.add((path.relative_to(ROOT).as_posix(), line.strip()))
    return found


def test_faiss_appears_only_in_its_backend() -> None:
    stray = faiss_lines() - ALLOWED
    assert not stray, "faiss outside controller/backends/faiss.py:\n" + "\n".join(f"{f}: {l}" for f, l in sorted(stray))


def test_the_allowed_lines_still_exist() -> None:
    # an allow-list entry whose line is gone would let a new stray line hide behind a stale entry
    assert ALLOWED <= faiss_lines()


def test_the_backend_is_where_faiss_is_imported() -> None:
    assert re.search(r"^import faiss$", BACKEND.read_text(encoding="utf-8"), re.MULTILINE)

"""The versioned store on the local file system (the embedded default).

Layout, per index:

    <root>/indexes/<name>/
        versions/<version>/   index.faiss, vectors.npy, ids.json, hashes.json,
                              meta.json (immutable), verdict.json (check results),
                              queries/ (copied precomputed query vectors)
        routing.json          alias -> stable, candidate, weight, held
        status.json           the last computed status (written when it changes)
        history.jsonl         append-only journal of alias and weight changes
        calibration.json      drift thresholds from `controller calibrate` (used by max: auto)
        queries/<fp>.npz      reservoir of served query vectors per model fingerprint

Why plain files and not SQLite: every record is small, read whole and written
whole, so temp-file + fsync + rename gives atomic replacement with no server
or schema; files stay readable with `cat` and `jq`; FAISS and numpy need
files anyway. One writer at a time is enforced with an flock on <root>/.lock.
A version is staged in a hidden directory and renamed into place only when
complete, so an alias can never point at a half-built version.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from controller.errors import NotFound, StoreError
from controller.paths import STORE_ENV  # noqa: F401  (re-exported: one definition)
from controller.store import atomic

if TYPE_CHECKING:  # numpy, faiss and the core types load on first use, so `controller status` starts fast
    import faiss
    import numpy as np

    from controller.core.types import Routing, VersionInfo



class Store:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ---- layout -------------------------------------------------------------
    def index_dir(self, name: str) -> Path:
        return self.root / "indexes" / name

    def version_dir(self, name: str, version: str) -> Path:
        return self.index_dir(name) / "versions" / version

    def indexes(self) -> list[str]:
        base = self.root / "indexes"
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def require_index(self, name: str) -> None:
        if not self.index_dir(name).is_dir():
            known = ", ".join(self.indexes()) or "none"
            raise NotFound(f"no index named {name!r} in the store {self.root} (known: {known})")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer lock; a second writer fails fast instead of interleaving."""
        existed = self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / ".lock", "w")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise StoreError(f"the store {self.root} is locked by another controller process; "
                                 "wait for it to finish") from exc
            yield
        finally:
            handle.close()
            if not existed and os.listdir(self.root) == [".lock"]:
                # nothing was written (e.g. bad input found mid-build): leave no trace
                os.unlink(self.root / ".lock")
                self.root.rmdir()

    # ---- versions -----------------------------------------------------------
    def versions(self, name: str) -> list[VersionInfo]:
        base = self.index_dir(name) / "versions"
        if not base.is_dir():
            return []
        out = []
        for d in sorted(base.iterdir()):
            if d.name.startswith(".") or not (d / "meta.json").is_file():
                continue  # staging leftovers from a crash are not versions
            out.append(self._version_info(name, d.name))
        return sorted(out, key=lambda v: v.created)

    def _version_info(self, name: str, version: str) -> VersionInfo:
        meta = self.meta(name, version)
        from controller.core.types import VersionInfo

        verdict = atomic.read_json(self.version_dir(name, version) / "verdict.json") or {}
        return VersionInfo(
            id=version, label=meta["label"], fingerprint=meta["fingerprint"],
            factory=meta["index"]["factory"], metric=meta["index"]["metric"],
            corpus_digest=meta["corpus"]["digest"], created=meta["created"],
            documents=meta["corpus"]["documents"], verdict=verdict.get("verdict"),
            verdict_message=verdict.get("message", ""),
            stale=bool(((meta.get("corpusDrift") or {}).get("assessment") or {}).get("stale", False)),
        )

    def meta(self, name: str, version: str) -> dict[str, Any]:
        path = self.version_dir(name, version) / "meta.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise NotFound(f"index {name!r} has no version {version!r}") from exc
        except json.JSONDecodeError as exc:
            raise StoreError(f"corrupt version metadata {path}: {exc}") from exc

    def verdict(self, name: str, version: str) -> dict[str, Any] | None:
        return atomic.read_json(self.version_dir(name, version) / "verdict.json")

    def write_verdict(self, name: str, version: str, verdict: dict[str, Any]) -> None:
        atomic.write_json(self.version_dir(name, version) / "verdict.json", verdict)

    def vectors(self, name: str, version: str) -> tuple[list[str], np.ndarray]:
        d = self.version_dir(name, version)
        ids = json.loads((d / "ids.json").read_text())
        import numpy as np

        return ids, np.load(d / "vectors.npy", mmap_mode="r")

    def hashes(self, name: str, version: str) -> list[str]:
        return json.loads((self.version_dir(name, version) / "hashes.json").read_text())

    def index(self, name: str, version: str) -> faiss.Index:
        from controller.store import faiss_index

        return faiss_index.load(self.version_dir(name, version) / "index.faiss")

    def write_version(self, name: str, version: str, *, index: faiss.Index, vectors: np.ndarray,
                      ids: list[str], hashes: list[str], meta: dict[str, Any],
                      extra_files: dict[str, Path] | None = None) -> Path:
        """Stage every file in a hidden directory, fsync, then rename it into place."""
        from controller.store import faiss_index

        final = self.version_dir(name, version)
        if final.exists():
            raise StoreError(f"version {version!r} of {name!r} already exists; versions are immutable")
        staging = final.parent / f".staging-{version}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            faiss_index.save(index, staging / "index.faiss")
            atomic.write_npy(staging / "vectors.npy", vectors)
            atomic.write_json(staging / "ids.json", ids)
            atomic.write_json(staging / "hashes.json", hashes)
            for rel, src in (extra_files or {}).items():
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, staging / rel)
            atomic.write_json(staging / "meta.json", meta)
            atomic.fsync_dir(staging)
            os.rename(staging, final)
            atomic.fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    def delete_version(self, name: str, version: str) -> None:
        """Rename away first so a crash mid-delete never leaves a half version visible."""
        d = self.version_dir(name, version)
        trash = d.parent / f".deleting-{version}-{os.getpid()}"
        os.rename(d, trash)
        atomic.fsync_dir(d.parent)
        shutil.rmtree(trash, ignore_errors=True)

    # ---- routing, status, journal --------------------------------------------
    def routing(self, name: str) -> Routing:
        data = atomic.read_json(self.index_dir(name) / "routing.json") or {}
        from controller.core.types import Routing

        return Routing(stable=data.get("stable"), candidate=data.get("candidate"),
                       weight=float(data.get("weight", 0.0)), held=tuple(data.get("held", [])))

    def routing_record(self, name: str) -> dict[str, Any]:
        return atomic.read_json(self.index_dir(name) / "routing.json") or {}

    def write_routing(self, name: str, alias: str, routing: Routing) -> None:
        self._check_routable(name, routing)
        atomic.write_json(self.index_dir(name) / "routing.json", {
            "alias": alias, "stable": routing.stable, "candidate": routing.candidate,
            "weight": routing.weight, "held": list(routing.held),
        })

    def _check_routable(self, name: str, routing: Routing) -> None:
        """The store refuses to route to a missing or gate-failed version, whoever asks."""
        for version in (routing.stable, routing.candidate):
            if version is None:
                continue
            if not (self.version_dir(name, version) / "meta.json").is_file():
                raise StoreError(f"refusing to route {name!r} to {version!r}: no complete version")
            verdict = self.verdict(name, version) or {}
            if verdict.get("verdict") == "failed":
                raise StoreError(f"refusing to route {name!r} to {version!r}: it failed its gates "
                                 f"({verdict.get('message', '')})")

    def status(self, name: str) -> dict[str, Any] | None:
        return atomic.read_json(self.index_dir(name) / "status.json")

    def write_status(self, name: str, status: dict[str, Any]) -> bool:
        """Write only when something changed; returns whether it wrote."""
        if self.status(name) == json.loads(json.dumps(status)):
            return False
        atomic.write_json(self.index_dir(name) / "status.json", status)
        return True

    def calibration(self, name: str) -> dict[str, Any] | None:
        """Stored drift calibration (`controller calibrate`): thresholds per statistic for one version."""
        return atomic.read_json(self.index_dir(name) / "calibration.json")

    def write_calibration(self, name: str, calibration: dict[str, Any]) -> None:
        atomic.write_json(self.index_dir(name) / "calibration.json", calibration)

    def journal(self, name: str) -> list[dict[str, Any]]:
        return atomic.read_lines(self.index_dir(name) / "history.jsonl")

    def append_journal(self, name: str, record: dict[str, Any]) -> None:
        atomic.append_line(self.index_dir(name) / "history.jsonl", record)

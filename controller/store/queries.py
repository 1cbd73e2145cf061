"""A bounded reservoir of served query vectors per index and model fingerprint.

Why a reservoir: query drift needs a uniform sample of recent traffic, not
all of it; Algorithm R (Vitter 1985) keeps a uniform sample of everything
recorded so far in constant space. Why per fingerprint: a canary serves some
queries with another model, and vectors of two models must never be pooled.

Layout: <index dir>/queries/<fingerprint key>.npz holding ``vectors`` (the
sample), ``seen`` (how many were offered) and ``fingerprint`` (JSON). The
whole file is replaced atomically (temp file, fsync, rename), so a crash
leaves the previous sample; concurrent ``controller query`` processes take
a short exclusive flock so no sample is lost in a read-modify-write race.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from controller.errors import InvalidInput, NotFound, StoreError
from controller.store import atomic

#: Vectors kept per index and fingerprint: enough for the sampled statistics (1000 rows each side).
DEFAULT_CAPACITY: int = 2000


@dataclass(frozen=True)
class Reservoir:
    """A uniform sample of the queries recorded for one model fingerprint."""

    vectors: np.ndarray
    seen: int
    fingerprint: dict[str, Any]


def fingerprint_key(fingerprint: dict[str, Any]) -> str:
    """Short stable file key of a model fingerprint."""
    canonical = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def reservoir_path(index_dir: Path, fingerprint: dict[str, Any]) -> Path:
    return index_dir / "queries" / f"{fingerprint_key(fingerprint)}.npz"


@contextlib.contextmanager
def _locked(index_dir: Path) -> Iterator[None]:
    lock = index_dir / "queries" / ".lock"
    lock.parent.mkdir(exist_ok=True)  # not parents: an index deleted meanwhile stays deleted (FileNotFoundError)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # blocking: the critical section is one small file write
        yield


def read_reservoir(index_dir: Path, fingerprint: dict[str, Any]) -> Reservoir | None:
    """The recorded sample for this fingerprint, or None when nothing was recorded."""
    path = reservoir_path(index_dir, fingerprint)
    try:
        with np.load(path, allow_pickle=False) as data:
            return Reservoir(np.array(data["vectors"]), int(data["seen"]),
                             json.loads(str(data["fingerprint"])))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as exc:
        raise StoreError(f"corrupt query reservoir {path}: {exc}; delete it to start recording afresh") from exc


def record_queries(index_dir: Path, fingerprint: dict[str, Any], vectors: np.ndarray, *,
                   capacity: int = DEFAULT_CAPACITY, rng: np.random.Generator | None = None) -> Reservoir:
    """Offer ``vectors`` to the reservoir (Algorithm R) and write it back atomically."""
    if capacity < 1:
        raise InvalidInput(f"the query reservoir capacity must be >= 1, got {capacity}", value=capacity)
    new = np.asarray(vectors, dtype=np.float32)
    if new.ndim != 2:
        raise InvalidInput(f"query vectors must be a 2-D matrix, got shape {new.shape}", value=new.shape)
    rng = rng or np.random.default_rng()
    with _locked(index_dir):
        old = read_reservoir(index_dir, fingerprint)
        sample = old.vectors if old is not None else np.zeros((0, new.shape[1]), dtype=np.float32)
        seen = old.seen if old is not None else 0
        if sample.shape[1] != new.shape[1]:
            raise StoreError(f"recorded queries have {sample.shape[1]} dimensions, new ones {new.shape[1]}, "
                             "under the same model fingerprint; the reservoir is inconsistent")
        rows = list(sample)
        for v in new:
            seen += 1
            if len(rows) < capacity:
                rows.append(v)
            else:
                j = int(rng.integers(0, seen))  # keep with probability capacity / seen
                if j < capacity:
                    rows[j] = v
        out = np.asarray(rows, dtype=np.float32).reshape(-1, new.shape[1])
        buf = io.BytesIO()
        np.savez(buf, vectors=out, seen=np.int64(seen), fingerprint=np.str_(json.dumps(fingerprint, sort_keys=True)))
        atomic.write_bytes(reservoir_path(index_dir, fingerprint), buf.getvalue())
    return Reservoir(out, seen, fingerprint)


def require_reservoir(index_dir: Path, name: str, version: str, fingerprint: dict[str, Any]) -> Reservoir:
    """The recorded sample, or a NotFound that says how to record one."""
    res = read_reservoir(index_dir, fingerprint)
    if res is None or res.vectors.shape[0] == 0:
        raise NotFound(f"no queries were recorded for {name}/{version} (model "
                       f"{fingerprint.get('name')}@{fingerprint.get('version')}); serve some with "
                       f"`controller query {name} TEXT`, or pass --queries FILE.npy")
    return res

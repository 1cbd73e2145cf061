"""The one Protocol every embedder implements, and the model fingerprint."""

from __future__ import annotations

import math
from typing import Any, Protocol, Sequence

import numpy as np

from controller.errors import EmbedError
from controller.manifest.providers import Capabilities
from controller.progress import Progress, silent


class Embedder(Protocol):
    """Turns texts into float32 vectors of a fixed dimension in one model's space."""

    fingerprint: dict[str, Any]
    dim: int
    capabilities: Capabilities  # what the engine may ask of it (controller.manifest.providers)

    def embed_documents(self, ids: Sequence[str], texts: Sequence[str],
                        progress: Progress = silent) -> np.ndarray: ...

    def embed_queries(self, ids: Sequence[str], texts: Sequence[str]) -> np.ndarray: ...


def is_int(value: Any, low: int, high: int) -> bool:
    """An integer option in [low, high]; bool is excluded although Python counts it as an int, so
    `seed: true` in a manifest is refused rather than read as 1."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def fingerprint_key(fingerprint: dict[str, Any]) -> str:
    """A readable one-line form: provider/name@version dim=.. norm=.. opts=.."""
    return (f"{fingerprint['provider']}/{fingerprint['name']}@{fingerprint['version']}"
            f" dim={fingerprint['dim']} normalize={str(fingerprint['normalize']).lower()}"
            f" options={fingerprint['optionsHash']}")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind not in "fc":
        x = x.astype(np.float64)  # as np.linalg.norm would
    # what np.linalg.norm(x, axis=1, keepdims=True) computes, bit for bit, without its argument
    # handling, which was most of the cost for the one-row query of a search
    if x.shape[0] == 1 and x.dtype.kind == "f":
        return unit_query(x[0])[1].astype(np.float32, copy=False)
    norms = np.sqrt(np.add.reduce(x * x, axis=1, keepdims=True))
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32, copy=False)


def unit_query(vector: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """One 1-D float vector as a row [1, dim], that row L2-normalised bit for bit as l2_normalize
    does it, and its squared norm (not finite when a value is not, or when finite squares overflow).

    The query form, in as few numpy calls as give the same bits: a one-row reduction adds in the
    same order as the batch form's column of norms, and Python's sqrt of a float32 rounds exactly
    like numpy's float32 sqrt (through float64), then one division. Each call saved counts: a search
    has just pushed numpy's code out of the CPU cache.
    """
    squared = float(np.add.reduce(vector * vector))
    row = vector.reshape(1, -1)
    if not math.isfinite(squared):
        # inf/inf is NaN, as in l2_normalize; the caller refuses a non-finite query, so numpy's
        # warning would only be noise in the server's log
        with np.errstate(invalid="ignore"):
            return row, row / math.sqrt(squared), squared
    return row, (row / math.sqrt(squared) if squared != 0 else row / 1.0), squared


#: a row whose squared norm is within this of 1 counts as unit: L2-normalised float32 rows are (the
#: SciFact MiniLM/E5 and synthetic 384-d rows are within 5e-7), so they need no normalising again,
#: which could only move them by an ulp or so; a unit row that misses it is simply normalised
UNIT_TOLERANCE = 4e-6


def unit_rows(x: np.ndarray, squares: np.ndarray | None = None) -> bool:
    """Every row has norm 1 (within float32 rounding of a normalisation) or is zero.

    ``squares``: the rows' squared norms, when the caller has them already.
    """
    if squares is None:
        squares = np.einsum("ij,ij->i", x, x)
    return bool(np.all((np.abs(squares - 1.0) <= UNIT_TOLERANCE) | (squares == 0.0)))


FINITE_CHUNK = 65_536  # rows per scan step: no full-size boolean temporary


def check_finite(x: np.ndarray, what: str) -> None:
    for start in range(0, x.shape[0], FINITE_CHUNK):
        bad = ~np.isfinite(x[start:start + FINITE_CHUNK])
        if bad.any():
            row = start + int(np.argwhere(bad)[0][0])
            raise EmbedError(f"{what} contains NaN or inf (first at row {row})")

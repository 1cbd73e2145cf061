"""The built-in offline embedder: hashed word and character n-grams.

Each feature (a word n-gram or a character n-gram of a word) is hashed with a
seed into `buckets` slots, and each slot is spread over `projections` signed
coordinates of the output (a count-sketch, i.e. a seeded sparse random
projection). Nothing is downloaded and the result is deterministic.

Options change the space the way a new model would: a different `seed` rotates
every feature to other coordinates, so two versions are unrelated spaces;
different n-gram settings change what counts as similar. A small `buckets`
value (e.g. 16) makes unrelated features collide and is clearly worse on
retrieval, which the quickstart uses to show a rollback.
"""

from __future__ import annotations

import re
import zlib
from typing import Any, Sequence

import numpy as np

from controller.embed.base import is_int, l2_normalize
from controller.errors import InvalidInput
from controller.manifest.providers import capabilities
from controller.progress import Progress, silent

TOKEN = re.compile(r"\w+", re.UNICODE)
DEFAULTS: dict[str, Any] = {
    "wordNgrams": 1,      # longest word n-gram
    "charNgrams": [],     # character n-gram sizes inside words, e.g. [3, 4]
    "seed": 0,
    "buckets": 1 << 20,
    "projections": 2,     # signed output coordinates per feature
    "sublinearTf": True,
}
_MASK = np.uint64(0xFFFFFFFF)


class HashingEmbedder:
    capabilities = capabilities("hashing")

    def __init__(self, dim: int, normalize: bool, options: dict[str, Any],
                 fingerprint: dict[str, Any]) -> None:
        self.dim = dim
        self.normalize = normalize
        self.fingerprint = fingerprint
        self.opts = _validated(options)
        rng = np.random.default_rng(self.opts["seed"] + 7919)
        # odd multipliers and offsets for multiply-shift hashing of slot -> coordinate/sign
        p = self.opts["projections"]
        self._mul = (rng.integers(1, 1 << 31, size=p, dtype=np.uint64) * 2 + 1)
        self._add = rng.integers(0, 1 << 31, size=p, dtype=np.uint64)
        self._sign_mul = (rng.integers(1, 1 << 31, size=p, dtype=np.uint64) * 2 + 1)

    def embed_documents(self, ids: Sequence[str], texts: Sequence[str],
                        progress: Progress = silent) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        step = max(1, len(texts) // 100)
        for row, text in enumerate(texts):
            out[row] = self._embed_one(text)
            if row % step == 0:
                progress(row, len(texts))
        progress(len(texts), len(texts))
        return l2_normalize(out) if self.normalize else out

    def embed_queries(self, ids: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        return self.embed_documents(ids, texts)

    def _features(self, text: str) -> list[str]:
        words = TOKEN.findall(text.lower())
        feats: list[str] = []
        for n in range(1, self.opts["wordNgrams"] + 1):
            feats.extend(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
        for n in self.opts["charNgrams"]:
            for w in words:
                padded = f"<{w}>"
                feats.extend("#" + padded[i:i + n] for i in range(len(padded) - n + 1))
        return feats

    def _embed_one(self, text: str) -> np.ndarray:
        feats = self._features(text)
        vec = np.zeros(self.dim, dtype=np.float32)
        if not feats:
            return vec
        seed = self.opts["seed"]
        slots = np.fromiter((zlib.crc32(f.encode("utf-8"), seed) for f in feats),
                            dtype=np.uint64, count=len(feats)) % np.uint64(self.opts["buckets"])
        uniq, counts = np.unique(slots, return_counts=True)
        weights = np.log1p(counts) if self.opts["sublinearTf"] else counts.astype(np.float64)
        for mul, add, smul in zip(self._mul, self._add, self._sign_mul):
            coord = (((uniq * mul + add) & _MASK) >> np.uint64(7)) % np.uint64(self.dim)
            sign = np.where(((uniq * smul) & _MASK) >> np.uint64(31) & np.uint64(1), 1.0, -1.0)
            np.add.at(vec, coord.astype(np.int64), (sign * weights).astype(np.float32))
        return vec


def _validated(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise InvalidInput(f"unknown hashing option {unknown[0]!r}; valid: {', '.join(DEFAULTS)}",
                           field=f"spec.model.options.{unknown[0]}", value=options[unknown[0]])
    opts = {**DEFAULTS, **options}
    _require(is_int(opts["wordNgrams"], 0, 5),
             "wordNgrams", opts["wordNgrams"], "an integer from 0 to 5")
    sizes = opts["charNgrams"]
    _require(isinstance(sizes, list), "charNgrams", sizes, "a list of integers from 1 to 8")
    bad = [n for n in sizes if not is_int(n, 1, 8)]
    # the bad element as the value: a list would not be quoted in the message
    _require(not bad, "charNgrams", bad[0] if bad else None, "a list of integers from 1 to 8")
    _require(opts["wordNgrams"] > 0 or bool(opts["charNgrams"]),
             "wordNgrams", opts["wordNgrams"], "at least one word or character n-gram size")
    _require(is_int(opts["seed"], 0, 2**32 - 1),
             "seed", opts["seed"], "an integer from 0 to 2^32-1")
    _require(is_int(opts["buckets"], 1, 1 << 30),
             "buckets", opts["buckets"], "an integer from 1 to 2^30")
    _require(is_int(opts["projections"], 1, 16),
             "projections", opts["projections"], "an integer from 1 to 16")
    _require(isinstance(opts["sublinearTf"], bool), "sublinearTf", opts["sublinearTf"], "true or false")
    return opts


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise InvalidInput(f"expected {expected}", field=f"spec.model.options.{key}", value=value)

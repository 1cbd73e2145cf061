"""The registry of drift statistics: name -> statistic (one line per statistic).

Separate from the package's __init__ so calibrate.py can look statistics up
without importing the package that imports it.
"""

from __future__ import annotations

from controller.errors import InvalidInput

from .base import Statistic
from .cosine_shift import CosineShift
from .js import JS
from .kl import KL
from .ks_dims import KSDims
from .mmd import MMD
from .norm_shift import NormShift
from .pair_cosine_shift import PairCosineShift
from .psi import PSI
from .wasserstein import Wasserstein

REGISTRY: dict[str, Statistic] = {
    s.name: s for s in (PSI(), KL(), NormShift(), CosineShift(), JS(), Wasserstein(), PairCosineShift(),
                        KSDims(), MMD())
}

#: Why a coordinate-comparing statistic is refused across fingerprints.
_REFUSAL: dict[str, str] = {
    "ksDims": "per-dimension KS compares coordinates",
    "mmd": "MMD compares distances between vectors of the two samples",
}


def get_statistic(name: str) -> Statistic:
    """Registry lookup; unknown names are a user error listing the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise InvalidInput(f"unknown drift statistic {name!r}; valid names: {', '.join(sorted(REGISTRY))}",
                           field="statistic", value=name) from None

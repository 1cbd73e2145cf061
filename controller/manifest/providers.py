"""What each embedding provider can do, as data: the engine asks a capability, never a provider name.

Pure (no numpy, no files) so the planner and the manifest loader can read it.
Adding a provider is one entry here plus one factory in controller.embed.REGISTRY.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capabilities:
    """``embeds_text``: can embed free text (a typed query, golden query texts).
    ``reusable``: vectors of unchanged documents may be carried into a new build of the same model
    (false for vectors read from files, which are re-read whole).
    ``file_options``: options naming files, resolved against the manifest and copied into a version."""

    embeds_text: bool
    reusable: bool
    file_options: tuple[str, ...] = ()
    implemented: bool = True


PROVIDERS: dict[str, Capabilities] = {
    "hashing": Capabilities(embeds_text=True, reusable=True),
    "precomputed": Capabilities(embeds_text=False, reusable=False,
                                file_options=("vectors", "ids", "queryVectors", "queryIds")),
    "sentence-transformers": Capabilities(embeds_text=True, reusable=True),
    "http": Capabilities(embeds_text=True, reusable=True),
}

#: an unknown provider (a store written by a newer release): assume the least
UNKNOWN = Capabilities(embeds_text=False, reusable=False, implemented=False)


def capabilities(provider: str) -> Capabilities:
    return PROVIDERS.get(provider, UNKNOWN)

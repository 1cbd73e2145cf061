"""Which version serves a query: pure, so sticky routing is testable without a store."""

from __future__ import annotations

from controller.core.types import Routing
from controller.hashing import small_sha256


def bucket(key: str) -> float:
    """A stable position in [0, 100) for a routing key (user id, session id)."""
    return _position(_digest(key))


def bucket_and_unit(key: str) -> tuple[float, str]:
    """`bucket(key)`, and the id the event log keeps for the key instead of the key itself.

    The id is the next 8 bytes of the same SHA-256 (16 hex digits): one hash per new key gives both.
    Online gates group a user's samples by it (controller.core.sequential.clustered_variance). It is
    a pseudonym, not anonymous: whoever can guess a key can hash it.
    """
    digest = _digest(key)
    return _position(digest), digest[8:16].hex()


def _digest(key: str) -> bytes:
    return small_sha256(key.encode("utf-8")).digest()


def _position(digest: bytes) -> float:
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def choose_version(routing: Routing, *, key: str | None, draw: float) -> str | None:
    """The candidate serves a query when its position falls under the weight.

    `draw` (uniform in [0, 100)) is used only without a key; with a key the
    same key always lands on the same version for a given weight.
    """
    if routing.candidate is None or routing.weight <= 0:
        return routing.stable
    position = bucket(key) if key is not None else draw
    return routing.candidate if position < routing.weight else (routing.stable or routing.candidate)


def interleaved(routing: Routing, *, key: str | None, draw: float) -> bool:
    """Whether a query gets the team-draft merge of stable and candidate (the interleave step).

    Sticky by key like the weight, but on its own bucket (the key salted), so which users see
    interleaved lists does not depend on which of them the weight sends to the candidate.
    """
    if routing.candidate is None or routing.stable is None or routing.interleave <= 0:
        return False
    position = bucket(f"interleave/{key}") if key is not None else draw
    return position < routing.interleave


def mirrored(routing: Routing, served: str, *, key: str | None, draw: float) -> bool:
    """Whether a query the stable answered is copied to the candidate (setMirror).

    With a routing key the answer is a function of (key, candidate): a user's queries are all
    mirrored or none are, so the mirror sees whole sessions, and a new rollout (another candidate)
    draws a fresh set of users. The bucket is salted apart from the weight's and the interleave's.
    Without a key each query is drawn on its own (`draw`, uniform in [0, 100)).
    """
    if routing.candidate is None or routing.mirror <= 0 or served == routing.candidate:
        return False
    position = bucket(mirror_salt(routing.candidate, key)) if key is not None else draw
    return position < routing.mirror


def mirror_salt(candidate: str, key: str) -> str:
    """The string a key's mirror bucket is hashed from (routers outside the service use the same)."""
    return f"mirror/{candidate}/{key}"

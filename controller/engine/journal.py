"""The journal record of a routing change (history.jsonl), shared by reconcile, manual moves and rollout steps."""

from __future__ import annotations

import uuid
from typing import Any

from controller.core.types import Routing
from controller.engine.status import utc_now


def journal_record(name: str, alias: str, old: Routing, new: Routing, reason: str, message: str, *,
                   manifest_digest: str | None, source: str | None, extra: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,  # lets recovery replay a transition without a second copy of the record
        "time": utc_now(), "index": name, "alias": alias, "reason": reason, "message": message,
        "from": {"stable": old.stable, "candidate": old.candidate, "weight": old.weight},
        "to": {"stable": new.stable, "candidate": new.candidate, "weight": new.weight},
        "manifestDigest": manifest_digest, "source": source, **(extra or {}),
    }

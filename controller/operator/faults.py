"""What a failed cycle means for Kubernetes: which fault, how long to wait, which condition to show.

kopf already handles part of the API's failure modes for its own calls (verified in
kopf 1.x source, kopf/_cogs/clients/api.py and watching.py):
- an in-stream `ERROR 410 Gone` on a watch ends the stream and kopf lists again;
- 429, 403, 5xx, connection errors and timeouts of its requests are retried with
  settings.networking.error_backoffs; a 429's Retry-After replaces a shorter backoff only,
  unless settings.networking.enforce_retry_after (set by configure_settings);
- 401 makes kopf re-authenticate through the login handlers.

Our own calls (status patch, routing ConfigMap, Events, the store) are not kopf's: this
module classifies their failures so run_cycle can (a) wait what the server asked for
(Retry-After), (b) back off long on 401/403, which a retry cannot fix, instead of
hot-looping, (c) show a condition naming the fault and the fix, (d) stop quietly when the
resource was deleted, or deleted and recreated, during the cycle, and (e) report a full or
read-only store volume (ENOSPC/EROFS) as a condition at once.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

AUTH_BACKOFF_S = 60.0  # 401/403: RBAC or credentials must change first; retrying faster only adds load
STORE_FULL_BACKOFF_S = 60.0  # ENOSPC/EROFS: someone must resize or remount the volume


class LeadershipLost(Exception):
    """The lease is gone: this replica must not write anything more."""


class CycleStopped(Exception):
    """kopf stopped the timer running this cycle: the resource is being deleted, or the operator exits."""


@dataclass(frozen=True)
class Fault:
    kind: str  # Forbidden, Unauthorized, Throttled, Timeout, Gone, Stopped, StoreFull, StoreReadOnly, Other
    min_delay: float = 0.0  # the retry waits at least this long
    condition: dict[str, Any] | None = None  # an extra status condition to show, if any
    write_status_now: bool = False  # not a blip: report on the first failure
    resource_gone: bool = False  # deleted (or recreated) meanwhile: nothing to retry, nothing to write


def _http_status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)  # kubernetes.client ApiException, kopf APIError
    return status if isinstance(status, int) else None


def _headers(exc: BaseException) -> dict[str, str]:
    headers = getattr(exc, "headers", None)
    try:
        return {str(k).lower(): str(v) for k, v in dict(headers or {}).items()}
    except (TypeError, ValueError):
        return {}


def retry_after(exc: BaseException) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form), if any."""
    raw = _headers(exc).get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def _is_timeout(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        if isinstance(current, TimeoutError) or name in ("ReadTimeoutError", "ConnectTimeoutError",
                                                          "TimeoutError", "ServerTimeoutError"):
            return True
        current = current.__cause__ or current.__context__
    return False


def _condition(kind: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": kind, "status": "False", "reason": reason, "message": message[:1024]}


def classify(exc: BaseException, what: str = "") -> Fault:
    """The fault behind a failed cycle. `what` names the resource for messages."""
    if isinstance(exc, LeadershipLost):
        return Fault("LeadershipLost", resource_gone=True)
    if isinstance(exc, CycleStopped):
        return Fault("Stopped", resource_gone=True)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        read_only = exc.errno == errno.EROFS
        reason = "StoreReadOnly" if read_only else "StoreFull"
        where = f" ({exc.filename})" if exc.filename else ""
        fix = ("remount the store volume read-write" if read_only else
               "free space or grow the store volume's claim (store.persistence.size), or lower spec.history.keep")
        message = f"the store volume is {'read-only' if read_only else 'full'}{where}: {exc.strerror}; {fix}"
        return Fault(reason, STORE_FULL_BACKOFF_S, _condition("StoreWritable", reason, message), True)
    status = _http_status(exc)
    if status in (401, 403):
        reason = "Forbidden" if status == 403 else "Unauthorized"
        fix = ("grant the operator's ServiceAccount this verb (the chart's Role; with "
               "rbac.routingConfigMapIndexes, list this index there)" if status == 403 else
               "the operator's credentials were rejected; check its ServiceAccount token")
        message = f"the Kubernetes API answered {status} {reason}{' for ' + what if what else ''}: {fix}"
        return Fault(reason, AUTH_BACKOFF_S, _condition("APIAccess", reason, message), True)
    if status == 429:
        return Fault("Throttled", retry_after(exc) or 0.0)
    if status == 404 or (status == 409 and "Precondition failed: UID" in str(getattr(exc, "body", "") or exc)):
        return Fault("Gone", resource_gone=True)
    if _is_timeout(exc):
        return Fault("Timeout")
    return Fault("Other")

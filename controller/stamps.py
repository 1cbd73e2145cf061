"""UTC timestamps as the store, status and logs write them: ISO 8601 with a trailing Z."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_stamp(now: datetime | None = None, *, micro: bool = False) -> str:
    """'2026-11-27T23:40:05Z'; `micro` keeps microseconds, for stamps that must sort within one second."""
    when = now or datetime.now(timezone.utc)
    if not micro:
        when = when.replace(microsecond=0)
    return when.isoformat().replace("+00:00", "Z")


def parse_stamp(stamp: str) -> datetime:
    """An aware datetime from a stamp written by `utc_stamp` (or any ISO 8601; naive means UTC).

    Raises ValueError for text that is not ISO 8601.
    """
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)

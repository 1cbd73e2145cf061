"""Durations on the command line: '500ms', '30s', '5m', '1h', '2d' or plain seconds."""

from __future__ import annotations

from controller.errors import InvalidInput

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: A year: longer waits are typos, and far longer ones overflow the clock's deadline arithmetic.
MAX_SECONDS = 366 * 24 * 3600.0


def parse_duration(text: str, flag: str = "--interval", *, longest: float = MAX_SECONDS) -> float:
    """Seconds from '60s', '5m', '1h', '2d', '500ms' or a plain number; InvalidInput naming the flag otherwise."""
    raw = text.strip().lower()
    for suffix in ("ms", "s", "m", "h", "d"):
        if raw.endswith(suffix):
            number, scale = raw[: -len(suffix)], _UNITS[suffix]
            break
    else:
        number, scale = raw, 1.0
    try:
        seconds = float(number) * scale
    except ValueError:
        seconds = -1
    if not 0 < seconds <= longest:  # NaN fails every comparison, so it is refused here too
        bound = " of at most a year" if longest == MAX_SECONDS else ""
        raise InvalidInput(f"expected a positive duration{bound}, such as 30s, 5m or 1h, got {text!r}",
                           field=flag, value=text)
    return seconds

"""Output of the long-running loops (sync, watch): timestamped, text or JSON lines, quiet when idle.

A pass that changed nothing prints only when the previous pass did something
or once per heartbeat interval, so a log shows changes and a pulse, not a
"no changes" line every minute.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable

from controller.stamps import utc_stamp

LOG_FORMATS = ("text", "json")


def changed(report: Any) -> bool:
    """A pass worth printing: an error, a skip, or an index that executed actions or ran checks."""
    if getattr(report, "error", None):
        return True
    if getattr(report, "pruned", None):
        return True
    for outcome in getattr(report, "outcomes", []):
        if outcome.error or outcome.skipped:
            return True
        result = outcome.result
        if result is not None and (result.executed or result.reports or result.plan.blocked):
            return True
    return False


class LoopPrinter:
    """Prints each pass of a loop according to --log-format and the heartbeat."""

    def __init__(self, verb: str, log_format: str = "text", heartbeat: float = 600.0,
                 clock: Callable[[], float] = time.monotonic, stamp: Callable[[], str] = utc_stamp) -> None:
        self.verb, self.log_format, self.heartbeat = verb, log_format, heartbeat
        self.clock, self.stamp = clock, stamp
        self.last_printed: float | None = None
        self.last_key: str | None = None

    def __call__(self, report: Any) -> bool:
        """Print the pass when it matters; returns whether it printed."""
        key = self._key(report)
        now = self.clock()
        due = self.last_printed is None or now - self.last_printed >= self.heartbeat
        if not (changed(report) or key != self.last_key or due):
            return False
        self.last_printed, self.last_key = now, key
        self.emit(report)
        return True

    def emit(self, report: Any) -> None:
        error = bool(getattr(report, "error", None))
        stream = sys.stderr if error else sys.stdout
        if self.log_format == "json":
            body = report.to_dict() if hasattr(report, "to_dict") else {"lines": report.lines()}
            record = {"time": self.stamp(), "level": "error" if error else "info", "verb": self.verb,
                      "changed": changed(report), **body}
            print(json.dumps(record, default=str), file=stream, flush=True)
            return
        stamp = self.stamp()
        print("\n".join(f"{stamp} {line}" for line in report.lines()), file=stream, flush=True)

    def info(self, message: str) -> None:
        """A one-off line (start-up, shutdown) in the same format."""
        if self.log_format == "json":
            print(json.dumps({"time": self.stamp(), "level": "info", "verb": self.verb, "message": message}),
                  file=sys.stderr, flush=True)
        else:
            print(f"{self.stamp()} {message}", file=sys.stderr, flush=True)

    @staticmethod
    def _key(report: Any) -> str:
        """What a quiet pass is compared on: the commit (sync) and each index's one-line state."""
        return json.dumps([getattr(report, "commit", None)] + list(report.lines()), default=str)

"""A delete that lands while a timer cycle is running: the finalizer is released within seconds.

kopf gives timers no cancellation timeout; it re-checks a still-running timer only after
`settings.background.cancellation_polling` (60 s by default), and nothing else wakes the resource
once the timer has exited. Under load a timer cycle overlapping the delete was common and the
finalizer stayed for a minute. Here the overlap is made certain: the timer's ConfigMap write is
held for 3 s and the resource is deleted during it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.operator.conftest import NAMESPACE, Api, eventually, example
from tests.operator.kmock_state import StatefulEmulator

pytestmark = [pytest.mark.operator, pytest.mark.asyncio, pytest.mark.kmock(cls=StatefulEmulator)]

HELD_S = 3.0


class HeldPublisher:
    """The real publisher, whose writes pause once `hold` is set (signalling `entered` first)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.hold = threading.Event()
        self.entered = threading.Event()

    def publish(self, namespace: str, name: str, owner: dict[str, Any], data: dict[str, str]) -> None:
        if self.hold.is_set():
            self.entered.set()
            time.sleep(HELD_S)
        self.real.publish(namespace, name, owner, data)

    def remove(self, namespace: str, name: str, owner_uid: str | None = None) -> None:
        self.real.remove(namespace, name, owner_uid)


async def test_delete_during_a_timer_cycle_releases_the_finalizer_promptly(cluster: Api, operator) -> None:
    rt, _ = operator
    held = HeldPublisher(rt.publisher)
    rt.publisher = held
    await cluster.create(example("quickstart-v1.yaml"))
    await eventually(lambda: (cluster.get("quickstart") or {}).get("status", {}).get("phase") == "Healthy",
                     30, "Healthy")
    held.hold.set()  # no spec change from here on: the next publish is the timer's
    await eventually(held.entered.is_set, 3 * rt.config.interval + 10, "a timer cycle to reach its ConfigMap write")
    await cluster.delete("quickstart")
    started = time.monotonic()
    # 3 s of held write, a 1 s re-check, the finalizer: well under kopf's 60 s default re-check
    await eventually(lambda: cluster.get("quickstart") is None, 20, "the finalizer to release the resource")
    assert time.monotonic() - started < 20
    assert (rt.config.store_root / NAMESPACE / "indexes" / "quickstart").is_dir()  # retained by default
    assert "IndexRetained" in {e["reason"] for e in cluster.events("quickstart")}

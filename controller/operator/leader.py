"""Leader election on a coordination.k8s.io/v1 Lease (the client-go protocol, simplified).

Only the leader runs the operator: the store has a single writer. A standby
retries every `retry_period`; the leader renews as often and gives up (the
process exits and the pod restarts as a standby) when it could not renew
within `renew_deadline`, before `lease_duration` lets another replica take over.
The decision is a pure function; the API calls use the official client, with
optimistic concurrency (a stale resourceVersion gets 409 and the round is lost).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Literal

log = logging.getLogger("controller.operator.leader")

Decision = Literal["renew", "acquire", "wait"]


def lease_decision(holder: str | None, renew_time: datetime | None, duration_s: int | None, identity: str,
                   now: datetime) -> Decision:
    """renew: we hold it; acquire: free or expired; wait: someone else holds a live lease."""
    if holder == identity:
        return "renew"
    if not holder or renew_time is None:
        return "acquire"
    expires = renew_time + timedelta(seconds=duration_s or 0)
    return "acquire" if now >= expires else "wait"


@dataclass
class LeaseElector:
    api_client: Any
    namespace: str
    name: str
    identity: str
    lease_duration: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    clock: Callable[[], float] = time.monotonic  # for holds_lease: immune to wall-clock jumps
    request_timeout: float = 5.0  # one lease call; a hung API server must not outlast renew_deadline

    def __post_init__(self) -> None:
        from kubernetes import client  # operator extra

        self._api = client.CoordinationV1Api(self.api_client)
        self._client = client
        self._held_since: float | None = None  # monotonic time of the last successful renewal
        self._lost = False

    def holds_lease(self) -> bool:
        """Whether this replica may still write: checked before each write (Runtime.may_write).

        False once a round found another holder, once stepping down, and as soon as
        renew_deadline passed since the last successful renewal: before lease_duration lets
        a standby take over, so two writers never overlap (renew_deadline < lease_duration)."""
        if self._lost or self._held_since is None:
            return False
        return self.clock() - self._held_since < self.renew_deadline

    def _mark_held(self, since: float) -> None:
        self._held_since, self._lost = since, False

    def try_acquire_or_renew(self) -> bool:
        """One round; True when this process holds the lease afterwards. API errors lose the round."""
        from kubernetes.client.exceptions import ApiException

        from urllib3.exceptions import HTTPError

        started = self.clock()  # a renewal counts from when it was asked for, not when it returned
        now = self.now()
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace,
                                                    _request_timeout=self.request_timeout)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("cannot read lease %s/%s: %s", self.namespace, self.name, exc.reason)
                return False
            return self._created(now, started)
        except (HTTPError, OSError) as exc:  # a timeout or a dropped connection loses the round
            log.warning("cannot read lease %s/%s: %s", self.namespace, self.name, exc)
            return False
        spec = lease.spec
        decision = lease_decision(spec.holder_identity, spec.renew_time, spec.lease_duration_seconds,
                                  self.identity, now)
        if decision == "wait":
            if self._held_since is not None and not self._lost:
                log.error("lease %s/%s is held by %s now: stop writing", self.namespace, self.name,
                          spec.holder_identity)
            self._lost = self._held_since is not None or self._lost
            return False
        if decision == "acquire":
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity, spec.renew_time, spec.lease_duration_seconds = self.identity, now, self.lease_duration
        try:
            # carries resourceVersion: a concurrent writer makes this a 409 and the round is lost
            self._api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=self.request_timeout)
        except ApiException as exc:
            log.info("lost a lease round on %s/%s (%s)", self.namespace, self.name, exc.status)
            return False
        except (HTTPError, OSError) as exc:
            log.warning("cannot renew lease %s/%s: %s", self.namespace, self.name, exc)
            return False
        if decision == "acquire":
            log.info("became the leader (lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
        self._mark_held(started)
        return True

    def release(self) -> None:
        """Give the lease up if we hold it (best effort: on failure it simply expires)."""
        from kubernetes.client.exceptions import ApiException

        self._lost = True  # nothing is written after a release
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.renew_time = None
            self._api.replace_namespaced_lease(self.name, self.namespace, lease)
            log.info("released lease %s/%s", self.namespace, self.name)
        except ApiException as exc:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, exc.reason)

    def _created(self, now: datetime, started: float) -> bool:
        if self._create(now):
            self._mark_held(started)
            return True
        return False

    def _create(self, now: datetime) -> bool:
        from kubernetes.client.exceptions import ApiException

        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_duration,
                         "acquireTime": now.isoformat(), "renewTime": now.isoformat(), "leaseTransitions": 0}}
        try:
            self._api.create_namespaced_lease(self.namespace, body)
        except ApiException:
            return False  # another replica created it first
        log.info("became the leader (new lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
        return True

    def wait_for_leadership(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            if self.try_acquire_or_renew():
                return True
            stop.wait(self.retry_period)
        return False

    def keep_renewing(self, stop: threading.Event, on_lost: Callable[[], None]) -> None:
        """Renew until `stop`; call `on_lost` once renewals failed for renew_deadline seconds."""
        last_ok = self.now()
        while not stop.wait(self.retry_period):
            if self.try_acquire_or_renew():
                last_ok = self.now()
            elif self._lost or (self.now() - last_ok).total_seconds() >= self.renew_deadline:
                log.error("could not renew lease %s/%s for %.0fs: stepping down", self.namespace, self.name,
                          self.renew_deadline)
                self._lost = True
                on_lost()
                return

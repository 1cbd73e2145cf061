"""The chart refuses a lease that is not longer than its renew deadline at `helm template` time.

`controller operator` refuses it at start (a leader must step down before a standby may take over),
so a release rendered with it would only crash-loop.
"""

from __future__ import annotations

import pytest

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")

from controller.operator import render  # noqa: E402


@pytest.mark.parametrize("lease,renew", [(10, 10), (5, 10)])
def test_a_lease_not_longer_than_the_renew_deadline_fails_the_render(lease: int, renew: int) -> None:
    values = {"leaderElection": {"leaseDurationSeconds": lease, "renewDeadlineSeconds": renew}}
    with pytest.raises(helm.HelmRenderError) as err:
        render.render_chart(values, release="eic", namespace="ops")
    message = str(err.value)
    assert "leaderElection.leaseDurationSeconds" in message and "renewDeadlineSeconds" in message
    assert f"({lease})" in message and f"({renew})" in message


def test_the_check_is_off_without_leader_election_and_passes_a_longer_lease() -> None:
    off = {"leaderElection": {"enabled": False, "leaseDurationSeconds": 5, "renewDeadlineSeconds": 10}}
    assert render.render_chart(off, release="eic", namespace="ops")
    on = {"leaderElection": {"leaseDurationSeconds": 11, "renewDeadlineSeconds": 10}}
    deploy = next(o for o in render.render_chart(on, release="eic", namespace="ops") if o["kind"] == "Deployment")
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--lease-duration=11" in args and "--renew-deadline=10" in args

"""Simulated users for rehearsing online gates: a seeded position-biased cascade click model.

* controller.simulate.clicks    the click model (ClickModel, simulate)
* controller.simulate.http      users that drive the real search service over HTTP
* controller.simulate.rollouts  fast in-process A/B and interleaving runs on ranked lists
* controller.simulate.rankings  exact rankings from vectors, a seeded degraded model

See docs/rollouts.md, "Online statistics and interleaving".
"""

from controller.simulate.clicks import Click, ClickModel, Interaction, simulate

__all__ = ["Click", "ClickModel", "Interaction", "simulate"]

"""Privacy events: the vocabulary of the ledger and the accountants.

Each release of a noised aggregate is described by one frozen event carrying exactly what
accounting needs, plus where it came from. Compatibility rule (as in Google's
``dp_accounting.dp_event``): never change the meaning of an event type or remove one; add a
new type instead, and only add optional fields.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from fedprofile.errors import UnsupportedEventError

__all__ = ["GaussianEvent", "NonPrivateEvent", "PrivacyEvent", "SkellamEvent",
           "event_from_dict"]


@dataclass(frozen=True, slots=True)
class GaussianEvent:
    """One release through the Gaussian mechanism with ``sigma = noise_multiplier * sensitivity``.

    Under add/remove adjacency it is ``mu``-GDP with ``mu = 1 / noise_multiplier``
    (Dong, Roth & Su 2022, Thm 2.7).
    """

    noise_multiplier: float
    sensitivity: float
    stage: str
    round: int
    component: str

    @property
    def sigma(self) -> float:
        """Standard deviation of the noise added to each coordinate."""
        return self.noise_multiplier * self.sensitivity

    @property
    def mu(self) -> float:
        """Gaussian-DP parameter of this release."""
        return 1.0 / self.noise_multiplier

    @property
    def mechanism(self) -> str:
        """Name of the mechanism."""
        return "gaussian"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict including the mechanism name."""
        return {"mechanism": self.mechanism, **asdict(self), "sigma": self.sigma, "mu": self.mu}


@dataclass(frozen=True, slots=True)
class SkellamEvent(GaussianEvent):
    """A securely aggregated release with distributed Skellam noise.

    The partner checked that, at every Renyi order, its guaranteed noise costs at most the
    Gaussian release of ``noise_multiplier``; it is therefore accounted in RDP (Rényi DP)
    with that Gaussian's curve, never in GDP, which the Skellam sum is not shown to be.
    """

    @property
    def mechanism(self) -> str:
        """Name of the mechanism."""
        return "skellam"


@dataclass(frozen=True, slots=True)
class NonPrivateEvent:
    """A release without noise (an explicitly non-private run): its epsilon is infinite."""

    sensitivity: float
    stage: str
    round: int
    component: str

    noise_multiplier: float = 0.0

    @property
    def sigma(self) -> float:
        """No noise is added."""
        return 0.0

    @property
    def mu(self) -> float:
        """Infinite: the release is not private."""
        return math.inf

    @property
    def mechanism(self) -> str:
        """Name of the mechanism."""
        return "none"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict including the mechanism name."""
        return {"mechanism": self.mechanism, **asdict(self), "sigma": 0.0, "mu": "inf"}


PrivacyEvent = GaussianEvent | NonPrivateEvent


def event_from_dict(data: dict[str, Any]) -> PrivacyEvent:
    """Rebuild an event from :meth:`to_dict` output (ledger rows, wire replies)."""
    sensitivity, stage = float(data["sensitivity"]), str(data["stage"])
    round_, component = int(data["round"]), str(data["component"])
    mechanism = data.get("mechanism")
    if mechanism in ("gaussian", "skellam"):
        z = float(data["noise_multiplier"])
        if not (math.isfinite(z) and z > 0):
            raise UnsupportedEventError(f"A {mechanism} event needs a noise multiplier in "
                                        f"(0, inf). Got {z!r} instead.")
        kind = GaussianEvent if mechanism == "gaussian" else SkellamEvent
        return kind(noise_multiplier=z, sensitivity=sensitivity, stage=stage,
                    round=round_, component=component)
    if mechanism == "none":
        return NonPrivateEvent(sensitivity=sensitivity, stage=stage, round=round_,
                               component=component)
    raise UnsupportedEventError(f"Unknown privacy mechanism {mechanism!r}; known: 'gaussian', "
                                "'skellam', 'none'.")

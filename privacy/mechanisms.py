"""Noise mechanisms: small frozen objects calibrated from a declared sensitivity."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np

from fedprofile.errors import ContractError
from fedprofile.privacy.events import GaussianEvent, NonPrivateEvent, PrivacyEvent

__all__ = ["GaussianMechanism", "secure_rng"]


def secure_rng(seed: int | None = None) -> np.random.Generator:
    """Return a generator seeded from OS entropy, or from ``seed`` (tests and simulations).

    Notes
    -----
    Sampling uses NumPy's floating-point normal generator; the floating-point side channel of
    Mironov (CCS 2012) is not mitigated by a discrete or snapping mechanism.
    """
    return np.random.default_rng(secrets.randbits(128) if seed is None else seed)


@dataclass(frozen=True, slots=True)
class GaussianMechanism:
    """The Gaussian mechanism with noise ``sigma = noise_multiplier * sensitivity``.

    Parameters
    ----------
    sensitivity : float
        Declared L2 sensitivity of the released statistic, in ``[0, inf)``. Never computed
        from data.
    noise_multiplier : float
        ``z = sigma / sensitivity`` in ``[0, inf)``; 0 means no noise (a non-private release).

    Examples
    --------
    >>> mech = GaussianMechanism(sensitivity=2.0, noise_multiplier=3.0)
    >>> mech.sigma
    6.0
    >>> mech.randomise(np.zeros(2), secure_rng(0)).shape
    (2,)
    """

    sensitivity: float
    noise_multiplier: float

    def __post_init__(self) -> None:
        for name in ("sensitivity", "noise_multiplier"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value) or value < 0:
                raise ContractError(f"The {name!r} parameter of GaussianMechanism must be a float "
                                    f"in the range [0, inf). Got {value!r} instead.")

    @property
    def sigma(self) -> float:
        """Standard deviation of the noise on each coordinate."""
        return float(self.noise_multiplier * self.sensitivity)

    def variance(self) -> float:
        """Variance of the noise on each coordinate."""
        return self.sigma**2

    def randomise(self, value: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return ``value`` plus independent Gaussian noise on every coordinate."""
        value = np.asarray(value, dtype=float)
        if self.sigma == 0.0:
            return value.copy()
        return value + rng.normal(0.0, self.sigma, size=value.shape)

    def event(self, *, stage: str, round: int, component: str) -> PrivacyEvent:
        """Return the ledger event describing one release through this mechanism."""
        if self.noise_multiplier == 0.0:
            return NonPrivateEvent(sensitivity=self.sensitivity, stage=stage, round=round,
                                   component=component)
        return GaussianEvent(noise_multiplier=self.noise_multiplier, sensitivity=self.sensitivity,
                             stage=stage, round=round, component=component)

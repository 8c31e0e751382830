"""The public plan of one secure-aggregation release: quantisation, noise share, threshold.

Trust model of the noise. ``partners = m`` partners take part and each adds a Skellam share of
``share_variance``. At most ``dropouts = t`` of them may drop out *or* collude with the
coordinator (whose shares are then known), so at least ``m - t`` honest shares are in every
released sum: the guaranteed noise is ``(m - t) * share_variance``. A release with fewer than
``m - t`` shares present is refused (:meth:`SecaggPlan.check_survivors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedprofile.errors import ContractError, ProtocolError
from fedprofile.privacy.secagg.noise import (
    ORDERS,
    min_skellam_variance,
    rdp_epsilon,
    skellam_rdp,
    skellam_share,
)
from fedprofile.privacy.secagg.quantize import (
    MAX_BITS,
    QuantizationPlan,
    choose_quantization,
    rounded_sensitivity,
)

__all__ = ["SecaggPlan", "default_threshold", "fewest_secure_partners", "plan_secagg"]


@dataclass(frozen=True, slots=True)
class SecaggPlan:
    """Everything a partner and the coordinator must agree on for one kind of release.

    Parameters
    ----------
    quantization : QuantizationPlan
        Bound, dimension, scale and modulus bits.
    dropouts : int
        ``t``: partners that may drop out or collude without weakening the planned noise.
    threshold : int
        Shamir reconstruction threshold ``k`` of the secure aggregation.
    sensitivity : float
        L2 sensitivity of one partner's real vector to one customer.
    share_variance : float
        Variance (integer steps squared) of each partner's Skellam share; 0 = no noise.
    mu : float
        The per-release budget the noise was calibrated to (``inf`` = no noise).
    """

    quantization: QuantizationPlan
    dropouts: int
    threshold: int
    sensitivity: float
    share_variance: float
    mu: float

    @property
    def partners(self) -> int:
        """Number of partners ``m`` in the plan."""
        return self.quantization.partners

    @property
    def min_survivors(self) -> int:
        """Fewest partners whose vectors may be released: ``max(m - t, threshold)``."""
        return max(self.partners - self.dropouts, self.threshold)

    @property
    def guaranteed_variance(self) -> float:
        """Noise variance (integer steps squared) guaranteed in every released sum."""
        return (self.partners - self.dropouts) * self.share_variance

    @property
    def noise_sd(self) -> float:
        """Guaranteed noise standard deviation of the released sum, in real units."""
        return math.sqrt(self.guaranteed_variance) / self.quantization.scale

    @property
    def rounded_l2(self) -> float:
        """L2 sensitivity after rounding, in integer steps."""
        return rounded_sensitivity(self.sensitivity, self.quantization.scale,
                                   self.quantization.dim)[0]

    @property
    def rounded_l1(self) -> float:
        """L1 sensitivity after rounding, in integer steps."""
        return rounded_sensitivity(self.sensitivity, self.quantization.scale,
                                   self.quantization.dim)[1]

    def rdp(self, honest_shares: int | None = None) -> np.ndarray:
        """RDP curve on :data:`ORDERS` with ``honest_shares`` (default ``m - t``) shares."""
        shares = self.partners - self.dropouts if honest_shares is None else honest_shares
        return skellam_rdp(ORDERS, l2=self.rounded_l2, l1=self.rounded_l1,
                           variance=shares * self.share_variance)

    def epsilon(self, delta: float, honest_shares: int | None = None) -> float:
        """Epsilon at ``delta`` of one release (RDP conversion of :meth:`rdp`)."""
        return rdp_epsilon(self.rdp(honest_shares), delta)

    def encode(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Partner side: clip, quantise, add this partner's Skellam share, reduce mod ``2**b``."""
        q = self.quantization
        integers = q.quantize(values, rng) + skellam_share(self.share_variance, q.dim, rng)
        return q.encode(integers)

    def on_ring(self, bits: int) -> SecaggPlan:
        """The same plan on a larger ring, so several plans' vectors share one masked vector."""
        if not self.quantization.bits <= bits <= MAX_BITS:
            raise ContractError(f"A ring of {bits} bits cannot hold this plan; it needs "
                                f"{self.quantization.bits} to {MAX_BITS} bits.")
        return replace(self, quantization=replace(self.quantization, bits=bits))

    def check_survivors(self, present: int) -> None:
        """Refuse a release whose vectors come from fewer than :attr:`min_survivors` partners."""
        if present < self.min_survivors:
            raise ProtocolError(
                f"Secure aggregation refused: {present} partners' vectors are present but the "
                f"plan needs at least {self.min_survivors} (m={self.partners}, t="
                f"{self.dropouts}, threshold={self.threshold}) for its guaranteed noise; "
                f"nothing is released.")

    def ledger_fields(self, present: int) -> dict[str, Any]:
        """Fields a ledger event for one secagg release should record (JSON-compatible)."""
        q = self.quantization
        return {
            "mechanism": "skellam", "placement": "secagg", "sensitivity": self.sensitivity,
            "scale": q.scale, "bits": q.bits, "bound": q.bound, "dim": q.dim,
            "partners": self.partners, "dropouts": self.dropouts, "threshold": self.threshold,
            "shares_present": present, "share_variance": self.share_variance,
            "guaranteed_variance": self.guaranteed_variance, "noise_sd": self.noise_sd,
            "rounded_l2": self.rounded_l2, "rounded_l1": self.rounded_l1,
            "mu_budget": "inf" if math.isinf(self.mu) else self.mu,
        }


def default_threshold(partners: int, dropouts: int = 0) -> int:
    """Shamir threshold of ``m`` partners with ``t`` dropouts: a majority, at least ``2t + 1``.

    A coordinator may show a set ``T`` of honest partners that everyone survived (a list
    that needs no signatures: each reveals its share of the others' seeds) and the other
    honest partners a signed list that drops ``T`` (they reveal their pairwise keys with
    ``T``). That list needs ``m - t`` survivors, so ``|T| <= t``, and with ``t`` colluders
    the coordinator holds ``|T| + t <= 2t`` shares of each seed in ``T``: the threshold
    must exceed ``2t`` for the sum over ``T`` to stay masked. A round needs ``max(m - t, k)``
    survivors, so ``t`` dropouts are tolerated from ``m >= 3t + 1`` partners; with fewer
    (a later stage of a run that lost partners) every partner must stay.
    """
    return max(partners // 2 + 1, 2 * dropouts + 1)


def fewest_secure_partners(dropouts: int) -> int:
    """The fewest partners a secure aggregation declaring ``t`` dropouts accepts.

    The threshold ``2t + 1`` of them, and two more than ``t``.
    """
    return max(dropouts + 2, 2 * dropouts + 1)


def plan_secagg(*, partners: int, dropouts: int, dim: int, bound: float, sensitivity: float,
                mu: float, threshold: int | None = None, failure_prob: float = 2.0**-40
                ) -> SecaggPlan:
    """Plan one kind of secagg release so it costs at most a ``mu``-GDP Gaussian release in RDP.

    Parameters
    ----------
    partners, dropouts : int
        ``m`` partners and the tolerance ``t`` (dropouts plus colluders), ``0 <= t <= m - 2``.
    dim : int
        Vector length.
    bound : float
        Public L2 bound of each partner's vector.
    sensitivity : float
        L2 sensitivity of a partner's vector to one customer (real units).
    mu : float
        Per-release budget; ``inf`` plans an exact, noiseless sum.
    threshold : int, optional
        Shamir threshold; default :func:`default_threshold`; a majority in ``[2t + 1, m]``.
    failure_prob : float, default=2**-40
        Probability that noise makes the modular sum wrap.
    """
    if isinstance(partners, bool) or not isinstance(partners, int) or partners < 2:
        raise ContractError(f"Secure aggregation needs 'partners' >= 2. Got {partners!r}.")
    if isinstance(dropouts, bool) or not isinstance(dropouts, int) \
            or not 0 <= dropouts <= partners - 2:
        raise ContractError(f"The 'dropouts' parameter t must be an integer in [0, "
                            f"{partners - 2}] for {partners} partners. Got {dropouts!r}.")
    k = default_threshold(partners, dropouts) if threshold is None else threshold
    if isinstance(k, bool) or not isinstance(k, int) or not (
            2 * k > partners and 2 * dropouts + 1 <= k <= partners):
        raise ContractError(
            f"The 'threshold' must be an integer k with k > m/2 and 2t + 1 = {2 * dropouts + 1}"
            f" <= k <= m = {partners} (t={dropouts}). Got {k!r}; lower 'dropouts' or add "
            f"partners (at least 2t + 1).")
    if not (isinstance(sensitivity, int | float) and math.isfinite(sensitivity)
            and sensitivity > 0):
        raise ContractError(f"The 'sensitivity' must be in (0, inf). Got {sensitivity!r}.")
    if not (isinstance(mu, int | float) and mu > 0):
        raise ContractError(f"The per-release 'mu' must be in (0, inf]. Got {mu!r}.")
    honest = partners - dropouts
    if math.isinf(mu):
        q = choose_quantization(bound=bound, dim=dim, partners=partners,
                                failure_prob=failure_prob)
        return SecaggPlan(q, dropouts, k, float(sensitivity), 0.0, math.inf)
    share_sd = sensitivity / mu / math.sqrt(honest)
    for _ in range(20):
        q = choose_quantization(bound=bound, dim=dim, partners=partners, share_sd=share_sd,
                                failure_prob=failure_prob)
        l2, l1 = rounded_sensitivity(sensitivity, q.scale, dim)
        share_variance = min_skellam_variance(l2=l2, l1=l1, mu=mu) / honest
        actual_sd = math.sqrt(share_variance) / q.scale
        if actual_sd <= share_sd:
            return SecaggPlan(q, dropouts, k, float(sensitivity), share_variance, float(mu))
        share_sd = actual_sd * 1.01
    raise ContractError("Secure-aggregation planning did not converge; raise 'mu' or lower "
                        "'dim'.")  # pragma: no cover - the loop converges in 2-3 steps

"""Quantisation of real aggregates to integers mod ``2**bits`` for secure aggregation.

Each partner clips its aggregate to a public L2 ``bound``, multiplies it by a power-of-two
``scale`` (exact in floating point), rounds it at random to an integer vector and encodes it
mod ``2**bits``. The coordinator lifts the modular sum to signed integers and divides by
``scale``.

Rounding. ``round(y) = floor(y) + [U < y - floor(y)]`` with ``U`` uniform: unbiased, and every
coordinate moves by less than 1. Under the coupling ``floor(y + U')`` (``U' = 1 - U``) adding one
customer whose contribution ``x`` has ``||x||_2 <= Delta`` changes the rounded vector by an integer
vector ``e`` with ``|e_i| < scale*|x_i| + 1``; hence ``||e||_2 <= scale*Delta + sqrt(d)`` and
``||e||_1 <= min(sqrt(d) * ||e||_2, ||e||_2**2)`` (``e`` is integral). The rounding randomness is
a mixture over ``U'``, and Renyi divergence is jointly quasi-convex, so the discrete mechanism's
bound evaluated at these rounded sensitivities covers it (:func:`rounded_sensitivity`).
Clipping to the L2 ball is a projection (1-Lipschitz in L2), so it never raises ``Delta``.

No wrap-around. With ``m`` partners, every partner's clipped, rounded vector has coordinates of
magnitude at most ``scale*bound*(1 + 2**-20) + 1`` (the factor covers the floating-point error
of the clipping: the computed L2 norm of at most ``2**22`` values is off by at most about
``2**-30`` relative); the aggregate noise is Skellam of variance ``V <= m*v`` (``v`` each
share's variance), which is sub-gamma: ``P(|N| >= x) <= 2 exp(-x**2 / (2(V + x/3)))``. The
plan requires ``m*(scale*bound*(1 + 2**-20) + 1) + x <= 2**(bits-1) - 1`` with ``x`` chosen
so that the union over the ``d`` coordinates fails with probability at most ``failure_prob``
(default ``2**-40``). A wrap would only damage utility: it is a function of the noised sum.

Scale. The scale is the largest power of two whose sums fit the ``2**bits`` ring (``bits <=
62``) by the inequality above, within the resolution cap below: it is a function of public
values only (the bound, ``m``, the noise plan), never of the data. Multiplying by a power of
two is exact in float64, ``floor`` and the ``int64`` cast are exact below ``2**63``, so the
only losses are the rounding (less than one step, ``1/scale``, per partner and coordinate)
and the float64 conversion of the lifted integer sum ``S`` (at most ``|S| * 2**-53``). Hence,
without noise, every decoded coordinate is within ``summed/scale + |sum| * 2**-52`` of the
real sum of the clipped vectors (:meth:`QuantizationPlan.rounding_error_bound`). For a bound
of ``1e8`` customers times a unit sensitivity and 10 partners the step is ``2**-31`` (about
``5e-10``), so the rounding error of the sum is below ``5e-9`` per coordinate.

Resolution cap. Each share's standard deviation is at most ``2**20`` integer steps, so the
Poisson sampler works with rates far below ``2**52``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedprofile.errors import ContractError, ProtocolError

__all__ = [
    "MAX_BITS",
    "QuantizationPlan",
    "choose_quantization",
    "rounded_sensitivity",
]

MAX_BITS = 62
_CLIP_SLACK = 2.0**-20
"""Relative allowance for the float error of clipping, in the no-wrap inequality."""
_MAX_SHARE_SD = 2.0**20


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        kind = "[0, inf)" if allow_zero else "(0, inf)"
        raise ContractError(f"The {name!r} parameter must be a finite number in {kind}. "
                            f"Got {value!r} instead.")
    return float(value)


def _count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ContractError(f"The {name!r} parameter must be an integer >= {minimum}. "
                            f"Got {value!r} instead.")
    return value


def noise_tail(variance: float, dim: int, failure_prob: float) -> float:
    """Return ``x`` with ``P(max_i |N_i| >= x) <= failure_prob`` for Skellam noise of ``variance``.

    Bernstein's inequality for the sub-gamma difference of two Poisson variables, union-bounded
    over ``dim`` coordinates and both signs.
    """
    if variance == 0:
        return 0.0
    log_term = math.log(2.0 * dim / failure_prob)
    return log_term / 3.0 + math.sqrt(log_term**2 / 9.0 + 2.0 * log_term * variance)


@dataclass(frozen=True, slots=True)
class QuantizationPlan:
    """Public quantisation parameters shared by every partner and the coordinator.

    Parameters
    ----------
    bound : float
        Public L2 bound of each partner's real vector (values are clipped to it).
    dim : int
        Vector length ``d``.
    partners : int
        Number of partners ``m`` whose vectors may be summed.
    scale : float
        Power of two; real value ``a`` becomes the integer ``~ scale * a``.
    bits : int
        Modulus ``2**bits`` of secure aggregation, ``bits <= 62``.
    """

    bound: float
    dim: int
    partners: int
    scale: float
    bits: int

    @property
    def modulus_mask(self) -> np.uint64:
        """``2**bits - 1`` as ``uint64`` (reduces mod ``2**bits`` with ``&``)."""
        return np.uint64((1 << self.bits) - 1)

    def rounding_error_bound(self, summed: int | None = None, magnitude: float = 0.0) -> float:
        """Per-coordinate bound (strict) on ``|decoded sum - real sum of clipped vectors|``.

        Each of the ``summed`` (default ``partners``) rounded vectors is off by less than one
        integer step, i.e. ``1/scale``, on every coordinate; the float64 conversion of the
        lifted sum adds at most ``magnitude * 2**-52`` for a sum of that absolute value
        (at most the largest decoded coordinate); noise is excluded.
        """
        return (self.partners if summed is None else summed) / self.scale + magnitude * 2.0**-52

    def quantize(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Clip to ``bound`` (L2), scale and round at random; return ``int64`` integers."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape != (self.dim,):
            raise ProtocolError(f"A secure-aggregation vector must have shape ({self.dim},). "
                                f"Got shape {arr.shape} instead.")
        if not np.all(np.isfinite(arr)):
            raise ProtocolError("A secure-aggregation vector must be finite; it holds NaN or "
                                "infinite values.")
        norm = float(np.linalg.norm(arr))
        if norm > self.bound:
            arr = arr * (self.bound / norm)
        scaled = arr * self.scale
        low = np.floor(scaled)
        up = rng.random(self.dim) < (scaled - low)
        return low.astype(np.int64) + up.astype(np.int64)

    def encode(self, integers: np.ndarray) -> np.ndarray:
        """Map signed integers to ``uint64`` residues mod ``2**bits`` (two's complement)."""
        return np.asarray(integers, dtype=np.int64).view(np.uint64) & self.modulus_mask

    def decode_sum(self, total: np.ndarray) -> np.ndarray:
        """Lift a modular sum to signed integers in ``[-2**(bits-1), 2**(bits-1))``, unscale."""
        res = np.asarray(total, dtype=np.uint64) & self.modulus_mask
        signed = res.astype(np.int64)
        signed[res >= np.uint64(1 << (self.bits - 1))] -= np.int64(1) << np.int64(self.bits)
        return signed.astype(np.float64) / self.scale


def rounded_sensitivity(sensitivity: float, scale: float, dim: int) -> tuple[float, float]:
    """Return the (L2, L1) sensitivity, in integer steps, of a randomly rounded vector.

    ``sensitivity`` is the L2 sensitivity of the real vector to one customer.

    Examples
    --------
    >>> rounded_sensitivity(1.0, 1024.0, 4)
    (1026.0, 2052.0)
    """
    l2 = scale * sensitivity + math.sqrt(dim)
    return l2, min(math.sqrt(dim) * l2, l2 * l2)


def choose_quantization(*, bound: float, dim: int, partners: int, share_sd: float = 0.0,
                        failure_prob: float = 2.0**-40, max_bits: int = MAX_BITS
                        ) -> QuantizationPlan:
    """Choose the largest power-of-two scale that fits ``max_bits``, and its smallest modulus.

    Only public values enter: the bound, the dimension, the partner count and the noise
    share's standard deviation (see the module's *Scale* and *No wrap-around*).

    Parameters
    ----------
    bound : float
        Public L2 bound of each partner's real vector.
    dim, partners : int
        Vector length and the largest number of partners whose vectors are summed.
    share_sd : float, default=0
        Upper bound on each partner's noise-share standard deviation, in real units.
    failure_prob : float, default=2**-40
        Allowed probability that the noise makes some coordinate wrap.
    max_bits : int, default=62
        Largest modulus exponent allowed.

    Examples
    --------
    >>> plan = choose_quantization(bound=100.0, dim=10, partners=5)
    >>> plan.scale == 2.0**52, plan.bits
    (True, 62)
    """
    bound = _positive("bound", bound)
    _count("dim", dim, 1)
    _count("partners", partners, 1)
    share_sd = _positive("share_sd", share_sd, allow_zero=True)
    if not 0 < failure_prob < 1:
        raise ContractError(f"The 'failure_prob' parameter must be in (0, 1). "
                            f"Got {failure_prob!r} instead.")
    if isinstance(max_bits, bool) or not isinstance(max_bits, int) or not 2 <= max_bits <= MAX_BITS:
        raise ContractError(f"The 'max_bits' parameter must be an integer in [2, {MAX_BITS}]. "
                            f"Got {max_bits!r} instead.")
    cap = 2.0 ** (max_bits - 1) / (partners * bound)
    if share_sd > 0:
        cap = min(cap, _MAX_SHARE_SD / share_sd)
    exponent = math.floor(math.log2(cap))
    while True:
        scale = 2.0**exponent
        noise = noise_tail(partners * (scale * share_sd) ** 2, dim, failure_prob)
        needed = partners * (scale * bound * (1.0 + _CLIP_SLACK) + 1.0) + noise + 1.0
        bits = max(2, math.ceil(math.log2(needed)) + 1)
        if bits <= max_bits:
            return QuantizationPlan(bound=bound, dim=dim, partners=partners, scale=scale,
                                    bits=bits)
        exponent -= 1
        if exponent < -1074:
            raise ContractError(f"No quantisation fits {partners} partners in {max_bits} bits; "
                                f"raise 'max_bits' or lower the number of partners.")

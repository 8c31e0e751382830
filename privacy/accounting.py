"""Exact Gaussian-DP accounting and calibration.

With full participation (every partner's every customer is in every release) a sequence of
Gaussian releases with multipliers ``z_i`` composes *exactly* to ``mu``-GDP with
``mu = sqrt(sum(1 / z_i**2))`` (Dong, Roth & Su, "Gaussian Differential Privacy", JRSS-B 2022,
Cor. 3.3), and ``mu``-GDP is equivalent to the family of (epsilon, delta(epsilon)) guarantees

    delta(epsilon) = Phi(-epsilon/mu + mu/2) - exp(epsilon) * Phi(-epsilon/mu - mu/2)

(ibid. Cor. 2.13; Balle & Wang 2018, Thm 8). ``epsilon`` for a given ``delta`` is found by
bisection and reported on the safe (upper) side; calibration returns the safe (lower) ``mu``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from scipy.special import log_ndtr

from fedprofile.errors import BudgetExceededError, ContractError, UnsupportedEventError
from fedprofile.privacy.events import GaussianEvent, NonPrivateEvent, PrivacyEvent

__all__ = [
    "EPSILON_RTOL",
    "GdpAccountant",
    "budget_mu",
    "compose_mu",
    "composed_epsilon",
    "gdp_delta",
    "gdp_epsilon",
    "gdp_mu",
    "in_rdp",
    "mu_epsilon",
    "planning_epsilon",
    "split_mu",
]

_BISECTION_STEPS = 200
EPSILON_RTOL = 1e-9
"""Relative slack when comparing a composed epsilon with a budget: the bisection reports
epsilon to ~1e-13 above the exact value of a plan calibrated to exactly that budget."""


def _check_delta(delta: float) -> None:
    if not (isinstance(delta, int | float) and 0.0 < delta < 1.0):
        raise ContractError(f"The 'delta' parameter must be a float in the range (0, 1). "
                            f"Got {delta!r} instead.")


def gdp_delta(epsilon: float, mu: float) -> float:
    """Return the smallest ``delta`` for which ``mu``-GDP implies (epsilon, delta)-DP."""
    if mu == 0.0:
        return 0.0
    if math.isinf(mu):
        return 1.0
    a = log_ndtr(-epsilon / mu + mu / 2.0)
    b = epsilon + log_ndtr(-epsilon / mu - mu / 2.0)
    return float(math.exp(a) - math.exp(b)) if a > b else 0.0


def gdp_epsilon(mu: float, delta: float) -> float:
    """Return the (upper-bound) ``epsilon`` of ``mu``-GDP at ``delta``.

    Examples
    --------
    >>> round(gdp_epsilon(1.0, 1e-6), 4)
    4.8866
    """
    _check_delta(delta)
    if mu < 0 or math.isnan(mu):
        raise ContractError(f"mu must be non-negative, got mu={mu!r}.")
    if mu == 0.0:
        return 0.0
    if math.isinf(mu):
        return math.inf
    lo, hi = 0.0, 1.0
    while gdp_delta(hi, mu) > delta:
        lo, hi = hi, 2.0 * hi
    if gdp_delta(0.0, mu) <= delta:
        return 0.0
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if gdp_delta(mid, mu) > delta:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return hi


def gdp_mu(epsilon: float, delta: float) -> float:
    """Return the largest ``mu`` (safe side) whose ``mu``-GDP guarantee meets (epsilon, delta).

    ``epsilon = inf`` returns ``inf`` (a non-private run).
    """
    _check_delta(delta)
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise ContractError(f"The 'epsilon' parameter must be a float in the range (0, inf]. "
                            f"Got {epsilon!r} instead.")
    if math.isinf(epsilon) and epsilon > 0:
        return math.inf
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ContractError(f"The 'epsilon' parameter must be a float in the range (0, inf]. "
                            f"Got {epsilon!r} instead.")
    lo, hi = 0.0, 1.0
    while gdp_delta(epsilon, hi) < delta:
        lo, hi = hi, 2.0 * hi
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if gdp_delta(epsilon, mid) <= delta:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-14 * hi:
            break
    return lo


def compose_mu(mus: Iterable[float]) -> float:
    """Exact composition of GDP releases: ``sqrt(sum(mu_i**2))``."""
    total = 0.0
    for mu in mus:
        if math.isinf(mu):
            return math.inf
        total += mu * mu
    return math.sqrt(total)


def split_mu(mu_total: float, weights: Sequence[float]) -> list[float]:
    """Split a GDP budget so that ``mu_i**2`` is proportional to ``weights[i]``.

    The parts compose back to exactly ``mu_total``.
    """
    if not weights or any(w <= 0 or not math.isfinite(w) for w in weights):
        raise ContractError(f"Budget weights must be positive finite numbers. Got {weights!r}.")
    if math.isinf(mu_total):
        return [math.inf] * len(weights)
    total = float(sum(weights))
    return [mu_total * math.sqrt(w / total) for w in weights]


class GdpAccountant:
    """Composes Gaussian events exactly and refuses spends beyond a budget.

    Parameters
    ----------
    delta : float
        The delta at which epsilon is reported, in ``(0, 1)``.
    max_epsilon : float, default=inf
        Budget; :meth:`compose` refuses an event that would exceed it.

    Examples
    --------
    >>> acc = GdpAccountant(delta=1e-6)
    >>> acc.compose(GaussianEvent(noise_multiplier=2.0, sensitivity=1.0, stage="s", round=0,
    ...                           component="counts"))
    >>> round(acc.mu, 3)
    0.5
    """

    def __init__(self, *, delta: float, max_epsilon: float = math.inf) -> None:
        _check_delta(delta)
        if isinstance(max_epsilon, bool) or not isinstance(max_epsilon, int | float) \
                or not max_epsilon > 0:
            raise ContractError(f"The 'max_epsilon' parameter must be in (0, inf]. "
                                f"Got {max_epsilon!r} instead.")
        self.delta = delta
        self.max_epsilon = max_epsilon
        self._events: list[PrivacyEvent] = []

    def __len__(self) -> int:
        return len(self._events)

    def __repr__(self) -> str:
        return f"GdpAccountant(delta={self.delta!r}, max_epsilon={self.max_epsilon!r})"

    @property
    def events(self) -> tuple[PrivacyEvent, ...]:
        """The composed events, in order."""
        return tuple(self._events)

    @property
    def mu(self) -> float:
        """GDP parameter of everything composed so far."""
        return compose_mu(e.mu for e in self._events)

    def get_epsilon(self, delta: float | None = None) -> float:
        """Epsilon (upper bound) of everything composed so far."""
        return gdp_epsilon(self.mu, self.delta if delta is None else delta)

    @staticmethod
    def supports(event: object) -> bool:
        """Whether the accountant can compose ``event`` (not a Skellam release: RDP only)."""
        return isinstance(event, GaussianEvent | NonPrivateEvent) and \
            getattr(event, "mechanism", "") != "skellam"

    def epsilon_after(self, events: Iterable[PrivacyEvent]) -> float:
        """Epsilon if ``events`` were composed too (a dry run; nothing changes)."""
        events = list(events)
        for event in events:
            if not self.supports(event):
                raise UnsupportedEventError(f"GdpAccountant cannot compose {event!r}.")
        mu = compose_mu([self.mu, *(e.mu for e in events)])
        return gdp_epsilon(mu, self.delta)

    def check(self, *events: PrivacyEvent) -> None:
        """Raise :class:`BudgetExceededError` if composing ``events`` would exceed the budget."""
        after = self.epsilon_after(events)
        if after > self.max_epsilon * (1 + EPSILON_RTOL):
            spent = self.get_epsilon()
            raise BudgetExceededError(
                f"Privacy spend refused: it would bring epsilon to {after:.4g} (delta="
                f"{self.delta:g}) but the budget is {self.max_epsilon:.4g}; "
                f"{max(self.max_epsilon - spent, 0.0):.4g} remains.")

    def compose(self, *events: PrivacyEvent) -> None:
        """Check the budget, then record ``events``; a refused spend records nothing."""
        self.check(*events)
        self._events.extend(events)


def composed_epsilon(events: Iterable[PrivacyEvent], delta: float) -> float:
    """Epsilon at ``delta`` of composing ``events``, exact for the mechanisms used.

    Gaussian releases compose to ``mu``-GDP, converted exactly. Once a Skellam release
    (secure aggregation) is among them, the composition is bounded by the RDP curve of the
    same ``mu`` (each release's curve is at most its Gaussian counterpart's, and RDP
    composes by adding curves) and converted from RDP, which gives a larger epsilon.
    """
    events = list(events)
    return mu_epsilon(compose_mu(e.mu for e in events), delta, rdp=in_rdp(events))


def in_rdp(events: Iterable[PrivacyEvent]) -> bool:
    """Whether a composition of ``events`` is accounted in RDP: it holds a Skellam release."""
    return any(e.mechanism == "skellam" for e in events)


def mu_epsilon(mu: float, delta: float, *, rdp: bool = False) -> float:
    """Epsilon at ``delta`` of releases composing to ``mu``.

    GDP-exact; with ``rdp``, through the Gaussian RDP curve of ``mu`` (how Skellam releases
    are accounted).
    """
    if not rdp or math.isinf(mu) or mu == 0:
        return gdp_epsilon(mu, delta)
    from fedprofile.privacy.secagg.noise import ORDERS, gaussian_rdp, rdp_epsilon

    return rdp_epsilon(gaussian_rdp(ORDERS, mu), delta)


def budget_mu(epsilon: float, delta: float, *, rdp: bool = False) -> float:
    """The largest ``mu`` whose releases fit (epsilon, delta) as :func:`mu_epsilon` converts."""
    if not rdp or math.isinf(epsilon):
        return gdp_mu(epsilon, delta)
    from fedprofile.privacy.secagg.noise import rdp_mu

    return rdp_mu(epsilon, delta)


def planning_epsilon(epsilon: float, delta: float) -> float:
    """The GDP epsilon a secure-aggregation run plans with so that its RDP epsilon is ``epsilon``.

    Skellam releases are accounted in RDP, whose conversion gives a larger epsilon than GDP
    composition of the same releases; planning with the GDP epsilon of
    ``rdp_mu(epsilon, delta)`` makes the RDP-exact epsilon of all the run's releases the
    target (``epsilon = 1``, ``delta = 1e-6``: 0.927).
    """
    from fedprofile.privacy.secagg.noise import rdp_mu

    if math.isinf(epsilon):
        return epsilon
    return gdp_epsilon(rdp_mu(epsilon, delta), delta)

"""A partner's local checks that a run can succeed, made before anything is released.

A run whose target cannot be learnt (a declared ``positive`` label that no value matches, a
binary target with one class only) would otherwise spend privacy budget at every partner and
fail at the end. These checks read only the partner's own data. Their error messages may
leave the partner, so they name the problem and the declared contract, never a data value
or a count; the exact counts and the labels found are in :attr:`NotReadyError.hint`, which
is for the partner's own log and console only.
"""

from __future__ import annotations

import math

import pandas as pd

from fedprofile.client.site import PartnerSite
from fedprofile.contract.targets import binary_labels, target_column, target_vector
from fedprofile.errors import ContractError, DataError
from fedprofile.privacy.accounting import EPSILON_RTOL, budget_mu, mu_epsilon
from fedprofile.privacy.policy import epsilon_left

__all__ = ["NotReadyError", "budget_problem", "check_ready", "pooled_k_problem"]

_SHOWN_LABELS = 8


class NotReadyError(DataError):
    """A partner's data cannot serve the announced run.

    ``str(error)`` may be sent to the coordinator (no data value, no count); ``hint`` holds
    local details (counts, labels found) for the partner's own eyes only.
    """

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def check_ready(site: PartnerSite, *, k: int | None, target: str | None,
                min_segment_size: int) -> None:
    """Refuse, before any release, a run this partner's data cannot serve.

    Parameters
    ----------
    site : PartnerSite
        The partner (its contract, mapping and customer table).
    k : int or None
        Segments of a k-means stage, or None when the run has none.
    target : str or None
        Target of a ridge/logistic stage, or None (or "") when the run has none.
    min_segment_size : int
        The run's minimum published segment size.

    Raises
    ------
    ContractError
        If ``target`` is not declared in the contract or ``k`` is not positive.
    NotReadyError
        If ``k * min_segment_size`` exceeds the partner's customers, a binary target's
        declared ``positive`` matches no customer's value, or every customer's value (one
        class only), or a numeric target holds no usable value.
    DataError
        As the partner's data preparation (missing columns, unreadable file).

    Notes
    -----
    A partner refuses a ``k`` whose segments of ``min_segment_size`` customers its own
    customers cannot fill (``k * min_segment_size`` above them): the message says so without
    the count, which only the hint holds.
    """
    customers = len(site.matrix())
    if k is not None:
        if k < 1:
            raise ContractError(f"The number of segments k must be at least 1. Got {k}.")
        need = k * max(min_segment_size, 1)
        if need > customers:
            raise NotReadyError(
                f"k={k} segments of at least {max(min_segment_size, 1)} customers need more "
                "customers than this partner holds; lower k or the minimum segment size.",
                hint=f"this partner holds {customers:,} customers; {need:,} are needed")
    if target:
        _check_target(site, target)


def _check_target(site: PartnerSite, name: str) -> None:
    spec = site.spec
    if name not in spec.targets:
        raise ContractError(f"Target {name!r} is not declared in the partner's contract; "
                            f"declared: {sorted(spec.targets) or 'none'}.")
    target = spec.targets[name]
    table = site.customers()
    column = target_column(target, site.mapping)
    _, valid = target_vector(table, target, mapping=site.mapping, source="<data-path>")
    if target.kind != "binary":
        if not valid.any():
            raise NotReadyError(f"Target {name!r} (column {column!r}) has no numeric value at "
                                "this partner.")
        return
    values = table[column][valid]
    positive = binary_labels(values, target.positive).to_numpy()
    found = _labels_hint(values)
    if not positive.any():
        raise NotReadyError(
            f"Target {name!r} declares positive = {target.positive!r}, but no customer's value "
            f"of column {column!r} equals it (compared as text, ignoring case); set "
            f"'positive' in the contract to the label that means 1.",
            hint=f"{int((~positive).sum()):,} values do not match; the column holds {found}")
    if positive.all():
        raise NotReadyError(
            f"Target {name!r}: every customer's value of column {column!r} equals the declared "
            f"positive {target.positive!r}; a binary target needs customers of both classes.",
            hint=f"all {len(positive):,} values match; the column holds {found}")


def _labels_hint(values: pd.Series) -> str:
    """The most frequent labels of a column, for the partner's own eyes only."""
    counts = values.astype(str).value_counts()
    shown = ", ".join(f"{label!r} ({n:,})" for label, n in counts.head(_SHOWN_LABELS).items())
    more = len(counts) - _SHOWN_LABELS
    return shown + (f" and {more} more labels" if more > 0 else "") if len(counts) else "nothing"


def pooled_k_problem(k: int, min_segment_size: int, customers: int, partners: int
                     ) -> str | None:
    """Why ``k`` segments cannot all be published from ``customers`` pooled customers.

    Returns None when ``k * min_segment_size`` (at least ``k``) fits.
    """
    need = k * max(min_segment_size, 1)
    if need <= customers:
        return None
    return (f"k={k} segments of at least {max(min_segment_size, 1)} customers need {need:,} "
            f"customers; the {partners} partners hold {customers:,} together. Lower --k "
            "or --min-segment-size.")



def budget_problem(site: PartnerSite, *, epsilon: float, delta: float,
                   noise: str = "partner") -> str | None:
    """Why this partner's policy would refuse a run of ``(epsilon, delta)``, or None.

    The check its guard makes when the run is announced, made ahead (nothing is recorded):
    the run's GDP ``mu`` must fit what its ledger leaves of the budgets (see
    :func:`fedprofile.privacy.policy.epsilon_left`). No partner name, so equal refusals
    group.
    """
    policy = site.policy
    if math.isinf(epsilon):
        if policy.allow_non_private:
            return None
        return "its policy does not allow non-private (epsilon = inf) runs."
    secure = noise == "secagg"
    left = epsilon_left(policy, site.ledger.events(party=site.name), secure=secure)
    run_mu = budget_mu(epsilon, delta, rdp=secure)
    if mu_epsilon(run_mu, policy.delta, rdp=secure) <= left * (1 + EPSILON_RTOL):
        return None
    if left >= policy.max_epsilon_per_run:
        return (f"its policy allows at most epsilon = {left:g} per run; this run requests "
                f"epsilon = {epsilon:g}.")
    return (f"its privacy budget leaves at most epsilon = {left:.4g} for a next run; this run "
            f"requests epsilon = {epsilon:g}.")

"""A partner's privacy policy and its enforcement at the partner (site-enforced, DESIGN §3).

The partner, not the coordinator, decides: before any data-dependent release it checks the
run's whole plan and every release against its policy and its own ledger, and refuses with a
:class:`PolicyRefusedError` that names the limit. A refusal is written to the ledger as a note.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fedprofile.errors import ContractError, PolicyRefusedError
from fedprofile.privacy.accounting import EPSILON_RTOL, compose_mu, gdp_epsilon, gdp_mu
from fedprofile.privacy.events import NonPrivateEvent, PrivacyEvent
from fedprofile.privacy.ledger import AcceptedPlan, Ledger, LedgerTransaction
from fedprofile.privacy.overlap_limits import OVERLAP_KEYS, overlap_limits

__all__ = ["ALL_STAGES", "RELEASE_STAGES", "SIMULATION_POLICY", "PartnerGuard",
           "PartnerPolicy", "epsilon_left", "load_policy"]

ALL_STAGES = ("profile", "kmeans", "ridge", "logistic", "score", "overlap", "lookalike")
RELEASE_STAGES = {"kmeans-init": "kmeans", "kmeans": "kmeans", "ridge": "ridge",
                  "logistic": "logistic", "overlap": "overlap", "lookalike": "lookalike"}
"""The stage label of each kind of release -> the policy stage it is charged to."""
_KEYS = {"max_epsilon_per_run", "total_epsilon", "delta", "min_segment_size", "allowed_stages",
         "allow_non_private", "max_candidate_centres", *OVERLAP_KEYS}


@dataclass(frozen=True)
class PartnerPolicy:
    """A partner's limits. The defaults are the policy of a node without a policy file.

    Parameters
    ----------
    max_epsilon_per_run : float, default=1.0
        Refuse a run whose epsilon at this partner would exceed it.
    total_epsilon : float, default=10.0
        Lifetime budget of this partner's data in this federation.
    delta : float, default=1e-6
        The delta at which this partner accounts; runs asking for a larger delta are refused.
    min_segment_size : int, default=50
        Smallest segment the partner accepts to see published.
    allowed_stages : tuple of str
        Stages the partner takes part in.
    allow_non_private : bool, default=False
        Whether non-private (epsilon = inf) runs are allowed.
    max_candidate_centres : int, default=4096
        Most centres one k-means request may carry (checked before anything is charged).
    min_overlap_size, min_query_set_size, max_overlap_queries_per_day, min_seed_size : int
        Overlap and lookalike limits (see :mod:`fedprofile.privacy.overlap_limits`).
    """

    max_epsilon_per_run: float = 1.0
    total_epsilon: float = 10.0
    delta: float = 1e-6
    min_segment_size: int = 50
    allowed_stages: tuple[str, ...] = ALL_STAGES
    allow_non_private: bool = False
    max_candidate_centres: int = 4096
    min_overlap_size: int = 20
    min_query_set_size: int = 100
    max_overlap_queries_per_day: int = 3
    min_seed_size: int = 100
    source: str = field(default="default policy", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the policy as a JSON-compatible dict (infinite limits as None)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.compare}
        return {k: None if isinstance(v, float) and math.isinf(v) else
                list(v) if isinstance(v, tuple) else v for k, v in out.items()}


SIMULATION_POLICY = PartnerPolicy(
    max_epsilon_per_run=math.inf, total_epsilon=math.inf, allow_non_private=True,
    max_overlap_queries_per_day=10**6, source="simulation policy (no limits)")
"""What simulated partners run without ``--policy``: the user's own test data, no limits.
A deployed node without a policy file runs ``PartnerPolicy()`` instead."""


def _positive(data: dict[str, Any], key: str, source: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ContractError(f"Policy {source}: {key!r} must be a number in (0, inf]. "
                            f"Got {value!r} instead.")
    return float(value)


def load_policy(path: str | Path) -> PartnerPolicy:
    """Read and validate a partner policy TOML file.

    Raises
    ------
    ContractError
        If the file is missing, not TOML, has unknown keys or invalid values.
    """
    p = Path(path)
    if not p.is_file():
        raise ContractError(f"Policy file {str(p)!r} does not exist.")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(f"Policy file {str(p)!r} is not valid TOML: {exc}") from None
    source = str(p)
    unknown = set(data) - _KEYS
    if unknown:
        raise ContractError(f"Policy {source}: unknown key(s) {sorted(unknown)}; allowed: "
                            f"{sorted(_KEYS)}.")
    delta = _positive(data, "delta", source, 1e-6)
    if delta >= 1:
        raise ContractError(f"Policy {source}: 'delta' must be in (0, 1). Got {delta!r}.")
    stages = data.get("allowed_stages", list(ALL_STAGES))
    if not isinstance(stages, list) or not all(isinstance(x, str) for x in stages) \
            or not set(stages) <= set(ALL_STAGES):
        raise ContractError(f"Policy {source}: 'allowed_stages' must be a list drawn from "
                            f"{list(ALL_STAGES)}. Got {stages!r} instead.")
    min_size = data.get("min_segment_size", 50)
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        raise ContractError(f"Policy {source}: 'min_segment_size' must be an integer >= 0. "
                            f"Got {min_size!r} instead.")
    allow = data.get("allow_non_private", False)
    if not isinstance(allow, bool):
        raise ContractError(f"Policy {source}: 'allow_non_private' must be true or false.")
    centres = data.get("max_candidate_centres", PartnerPolicy.max_candidate_centres)
    if isinstance(centres, bool) or not isinstance(centres, int) or centres < 1:
        raise ContractError(f"Policy {source}: 'max_candidate_centres' must be an integer >= 1."
                            f" Got {centres!r} instead.")
    default = PartnerPolicy()
    return PartnerPolicy(max_epsilon_per_run=_positive(data, "max_epsilon_per_run", source,
                                                       default.max_epsilon_per_run),
                         total_epsilon=_positive(data, "total_epsilon", source,
                                                 default.total_epsilon),
                         delta=delta, min_segment_size=min_size, allowed_stages=tuple(stages),
                         allow_non_private=allow, max_candidate_centres=centres, source=source,
                         **overlap_limits(data, source))


class PolicyRefusal(Exception):
    """Raised inside a ledger transaction; turned into a noted :class:`PolicyRefusedError`."""


def _same_release(a: PrivacyEvent, b: PrivacyEvent) -> bool:
    return (a.mechanism, a.stage, a.round, a.component) == \
        (b.mechanism, b.stage, b.round, b.component) and \
        math.isclose(a.noise_multiplier, b.noise_multiplier, rel_tol=1e-9, abs_tol=0.0) and \
        math.isclose(a.sensitivity, b.sensitivity, rel_tol=1e-9, abs_tol=1e-12)


def _take(pending: list[PrivacyEvent], release: PrivacyEvent) -> bool:
    """Remove the planned release matching ``release`` from ``pending``; False if none."""
    for i, planned in enumerate(pending):
        if _same_release(planned, release):
            del pending[i]
            return True
    return False


def _describe(e: PrivacyEvent) -> str:
    return (f"{e.component} of {e.stage} round {e.round} ({e.mechanism}, noise multiplier "
            f"{e.noise_multiplier:.6g}, sensitivity {e.sensitivity:.6g})")


def epsilon_left(policy: PartnerPolicy, spent: Sequence[PrivacyEvent]) -> float:
    """The largest epsilon a next run may spend at the policy's delta.

    Budgets compose in GDP ``mu`` (not by subtracting epsilons): with ``mu_T`` the budget of
    ``total_epsilon`` and ``mu_s`` the composition of what was spent, a next run may spend
    ``mu = sqrt(mu_T**2 - mu_s**2)``, capped by the per-run limit.
    """
    per_run = policy.max_epsilon_per_run
    if math.isinf(policy.total_epsilon):
        return per_run
    mu_spent = compose_mu(e.mu for e in spent)
    mu_total = gdp_mu(policy.total_epsilon, policy.delta)
    if mu_spent >= mu_total:
        return 0.0
    left = gdp_epsilon(math.sqrt(mu_total**2 - mu_spent**2), policy.delta)
    return min(max(left, 0.0), per_run)


class PartnerGuard:
    """Enforces a partner's policy against its durable ledger.

    A run must first be announced (``query.profile``): :meth:`accept_plan` checks its whole
    plan and stores it. Each release is then authorised by :meth:`authorize` only if it is
    one of the plan's releases not yet made, its stage follows from what is computed (not
    from a label), and the budget allows it; the check and the record are one SQLite write
    transaction, so concurrent requests cannot together exceed a limit.

    Parameters
    ----------
    policy : PartnerPolicy
        The partner's limits.
    ledger : Ledger
        The partner's own ledger (authoritative for its spend).
    party : str
        The partner's name in its ledger.
    """

    def __init__(self, policy: PartnerPolicy, ledger: Ledger, party: str) -> None:
        self.policy, self.ledger, self.party = policy, ledger, party

    def _refused(self, run_id: str, message: str) -> PolicyRefusedError:
        self.ledger.note(run_id=run_id, party=self.party, kind="refusal", message=message)
        # no partner name: the coordinator knows who answered, and equal refusals group
        return PolicyRefusedError(f"Policy refusal: {message}")

    def _epsilon_with(self, past: Sequence[PrivacyEvent], events: Sequence[PrivacyEvent]
                      ) -> float:
        return gdp_epsilon(compose_mu(e.mu for e in [*past, *events]), self.policy.delta)

    def remaining(self) -> float:
        """The largest epsilon a next run may spend (see :func:`epsilon_left`)."""
        return epsilon_left(self.policy, self.ledger.events(party=self.party))

    def _check_budget(self, tx: LedgerTransaction, run_id: str,
                      events: Sequence[PrivacyEvent]) -> None:
        p = self.policy
        self._check_non_private(events)
        run_eps = self._epsilon_with(tx.events(run_id=run_id, party=self.party), events)
        if run_eps > p.max_epsilon_per_run * (1 + EPSILON_RTOL):
            raise PolicyRefusal(f"the run would spend epsilon = {run_eps:.4g} of its data, "
                                f"above its limit of {p.max_epsilon_per_run:g} per run.")
        lifetime = tx.events(run_id=None, party=self.party)
        total = self._epsilon_with(lifetime, events)
        if total > p.total_epsilon * (1 + EPSILON_RTOL):
            left = epsilon_left(p, lifetime)
            raise PolicyRefusal(f"the run would bring its lifetime spend to epsilon = "
                                f"{total:.4g}, above its total budget of {p.total_epsilon:g} "
                                f"(a next run may spend at most epsilon = {left:.4g}).")

    def _check_non_private(self, events: Sequence[PrivacyEvent]) -> None:
        if not self.policy.allow_non_private and \
                any(isinstance(e, NonPrivateEvent) for e in events):
            raise PolicyRefusal("non-private (epsilon = inf) releases are not allowed by its "
                                "policy.")

    def _check_stages(self, stages: Sequence[str]) -> None:
        for stage in stages:
            if stage not in self.policy.allowed_stages:
                raise PolicyRefusal(f"stage {stage!r} is not in its allowed stages "
                                    f"{list(self.policy.allowed_stages)}.")

    def accept_plan(self, *, run_id: str, stages: Sequence[str],
                    events: Sequence[PrivacyEvent], delta: float, min_segment_size: int
                    ) -> None:
        """Check an announced run's whole plan against the policy and store it.

        Raises
        ------
        PolicyRefusedError
            If any stage is not allowed, a release's stage is not one of the announced
            stages, the delta or minimum segment size is weaker than the policy's, the plan
            would break a budget, or the run id was announced before with another plan.
        """
        try:
            with self.ledger.exclusive() as tx:
                self._check_plan(tx, run_id, tuple(stages), tuple(events), delta,
                                 min_segment_size)
        except PolicyRefusal as exc:
            raise self._refused(run_id, str(exc)) from None

    def _check_plan(self, tx: LedgerTransaction, run_id: str, stages: tuple[str, ...],
                    events: tuple[PrivacyEvent, ...], delta: float, min_segment_size: int
                    ) -> None:
        p = self.policy
        unknown = [s for s in stages if s not in ALL_STAGES]
        if unknown:
            raise PolicyRefusal(f"the run announces unknown stage(s) {unknown}; known: "
                                f"{list(ALL_STAGES)}.")
        self._check_stages(("profile", *stages))
        for e in events:
            if RELEASE_STAGES.get(e.stage) not in stages:
                raise PolicyRefusal(f"the plan's release {_describe(e)} belongs to no "
                                    f"announced stage {list(stages)}.")
        if delta > p.delta:
            raise PolicyRefusal(f"the run's delta {delta:g} is larger than its policy's delta "
                                f"{p.delta:g}.")
        if "kmeans" in stages and min_segment_size < p.min_segment_size:
            raise PolicyRefusal(f"the run would publish segments of {min_segment_size} "
                                f"customers; its policy's minimum is {p.min_segment_size}.")
        previous = tx.plan(run_id=run_id, party=self.party)
        plan = AcceptedPlan(run_id=run_id, stages=stages, events=events)
        if previous is not None:
            same = previous.stages == stages and len(previous.events) == len(events) and \
                all(_same_release(a, b) for a, b in zip(previous.events, events, strict=True))
            if not same:
                raise PolicyRefusal(f"run {run_id!r} was announced before with another plan.")
            return
        self._check_budget(tx, run_id, events)
        tx.save_plan(party=self.party, plan=plan)

    def authorize(self, *, run_id: str, stage: str, events: Sequence[PrivacyEvent]) -> None:
        """Authorise and durably record one release (before it is sent), atomically.

        ``stage`` is the policy stage the partner derived from the statistic it computes.

        Raises
        ------
        PolicyRefusedError
            If the run was not announced and accepted, ``stage`` is not allowed or not in
            the run's plan, a release is not one of the plan's releases not yet made, or a
            budget would be exceeded. Nothing is recorded then, except a note.
        """
        try:
            with self.ledger.exclusive() as tx:
                plan = self._plan_with(tx, run_id, stage)
                self._check_non_private(events)
                done = tx.events(run_id=run_id, party=self.party)
                pending = list(plan.events)
                for e in done:
                    _take(pending, e)
                for e in events:
                    if RELEASE_STAGES.get(e.stage) != stage:
                        raise PolicyRefusal(f"release {_describe(e)} is not a {stage!r} "
                                            "release.")
                    if not _take(pending, e):
                        raise PolicyRefusal(f"release {_describe(e)} is not in the run's "
                                            "announced plan, or was already made.")
                self._check_budget(tx, run_id, events)
                tx.record(run_id=run_id, party=self.party, events=events,
                          delta=self.policy.delta)
        except PolicyRefusal as exc:
            raise self._refused(run_id, str(exc)) from None

    def _plan_with(self, tx: LedgerTransaction, run_id: str, stage: str) -> AcceptedPlan:
        plan = tx.plan(run_id=run_id, party=self.party)
        if plan is None:
            raise PolicyRefusal(f"run {run_id!r} was never announced and accepted "
                                "(query.profile).")
        self._check_stages((stage,))
        if stage not in plan.stages:
            raise PolicyRefusal(f"stage {stage!r} is not among the stages announced for run "
                                f"{run_id!r}: {list(plan.stages)}.")
        return plan

    def check_announced(self, *, run_id: str, stage: str) -> None:
        """Refuse a step that releases nothing (e.g. local scoring) outside an accepted run."""
        try:
            with self.ledger.exclusive() as tx:
                self._plan_with(tx, run_id, stage)
        except PolicyRefusal as exc:
            raise self._refused(run_id, str(exc)) from None

"""A partner's privacy policy and its enforcement at the partner (site-enforced, DESIGN §3).

The partner, not the coordinator, decides: before any data-dependent release it checks the
run's whole plan and every release against its policy and its own ledger, and refuses with a
:class:`PolicyRefusedError` that names the limit. A refusal is written to the ledger as a note.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fedprofile.errors import PolicyRefusedError
from fedprofile.privacy.accounting import (
    EPSILON_RTOL,
    budget_mu,
    compose_mu,
    composed_epsilon,
    in_rdp,
    mu_epsilon,
)
from fedprofile.privacy.events import NonPrivateEvent, PrivacyEvent
from fedprofile.privacy.ledger import AcceptedPlan, Ledger, LedgerTransaction
from fedprofile.privacy.policy_file import (
    ALL_STAGES,
    SIMULATION_POLICY,
    PartnerPolicy,
    load_policy,
)

__all__ = ["ALL_STAGES", "RELEASE_STAGES", "SIMULATION_POLICY", "PartnerGuard",
           "PartnerPolicy", "epsilon_left", "load_policy"]

RELEASE_STAGES = {"kmeans-init": "kmeans", "kmeans": "kmeans", "ridge": "ridge",
                  "logistic": "logistic", "overlap": "overlap", "lookalike": "lookalike"}
"""The stage label of each kind of release -> the policy stage it is charged to."""


class PolicyRefusal(Exception):
    """Raised inside a ledger transaction; turned into a noted :class:`PolicyRefusedError`."""


def _family(e: PrivacyEvent) -> str:
    """A planned Gaussian release may be made as a Skellam one (secure aggregation)."""
    return "gaussian" if e.mechanism == "skellam" else e.mechanism


def _same_release(a: PrivacyEvent, b: PrivacyEvent, *, tighter: bool = False) -> bool:
    """Whether ``b`` is the release ``a`` describes.

    With ``tighter`` ``b`` may also have a smaller sensitivity than ``a``: its noise scales
    with its sensitivity at the same multiplier, so its privacy loss is the same.
    """
    same_sensitivity = math.isclose(a.sensitivity, b.sensitivity, rel_tol=1e-9, abs_tol=1e-12)
    return (_family(a), a.stage, a.round, a.component) == \
        (_family(b), b.stage, b.round, b.component) and \
        math.isclose(a.noise_multiplier, b.noise_multiplier, rel_tol=1e-9, abs_tol=0.0) and \
        (same_sensitivity or (tighter and 0.0 < b.sensitivity < a.sensitivity))


def _take(pending: list[PrivacyEvent], release: PrivacyEvent) -> bool:
    """Remove the planned release matching ``release`` from ``pending``; False if none.

    A release may clip tighter than planned (a smaller sensitivity, the same multiplier).
    """
    for i, planned in enumerate(pending):
        if _same_release(planned, release, tighter=True):
            del pending[i]
            return True
    return False


def _describe(e: PrivacyEvent) -> str:
    return (f"{e.component} of {e.stage} round {e.round} ({e.mechanism}, noise multiplier "
            f"{e.noise_multiplier:.6g}, sensitivity {e.sensitivity:.6g})")


def epsilon_left(policy: PartnerPolicy, spent: Sequence[PrivacyEvent], *,
                 secure: bool = False) -> float:
    """The largest epsilon a next run may spend at the policy's delta.

    Budgets compose in ``mu`` (not by subtracting epsilons): with ``mu_T`` the budget of
    ``total_epsilon`` and ``mu_s`` the composition of what was spent, a next run may spend
    ``mu = sqrt(mu_T**2 - mu_s**2)``, capped by the per-run limit. Once a Skellam release
    (secure aggregation) is spent, or the next run is ``secure``, the lifetime is accounted
    in RDP (:func:`fedprofile.privacy.accounting.composed_epsilon`), so ``mu_T`` is the RDP
    budget; the epsilon returned is the target a next run of that placement may request.
    """
    per_run = policy.max_epsilon_per_run
    if math.isinf(policy.total_epsilon):
        return per_run
    rdp = secure or in_rdp(spent)
    mu_spent = compose_mu(e.mu for e in spent)
    mu_total = budget_mu(policy.total_epsilon, policy.delta, rdp=rdp)
    if mu_spent >= mu_total:
        return 0.0
    left = mu_epsilon(math.sqrt(mu_total**2 - mu_spent**2), policy.delta, rdp=secure)
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
        return composed_epsilon([*past, *events], self.policy.delta)

    def remaining(self, *, secure: bool = False) -> float:
        """The largest epsilon a next run may spend (see :func:`epsilon_left`)."""
        return epsilon_left(self.policy, self.ledger.events(party=self.party), secure=secure)

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
            left = epsilon_left(p, lifetime, secure=in_rdp(events))
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
        seen: set[tuple[str, int, str]] = set()
        for e in events:
            if RELEASE_STAGES.get(e.stage) not in stages:
                raise PolicyRefusal(f"the plan's release {_describe(e)} belongs to no "
                                    f"announced stage {list(stages)}.")
            if (e.stage, e.round, e.component) in seen:
                # each release is made once; two alike could be asked for by requests that
                # differ only outside their noise seed, and their difference cancel the noise
                raise PolicyRefusal(f"the plan lists the release {_describe(e)} twice.")
            seen.add((e.stage, e.round, e.component))
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

    def pending(self, *, run_id: str, stage: str) -> int:
        """How many of the run's planned ``stage`` releases this partner has not made yet.

        0 once the stage's last planned release is recorded, or if the run was never accepted.
        """
        with self.ledger.exclusive() as tx:
            plan = tx.plan(run_id=run_id, party=self.party)
            if plan is None:
                return 0
            left = [e for e in plan.events if RELEASE_STAGES.get(e.stage) == stage]
            for e in tx.events(run_id=run_id, party=self.party):
                _take(left, e)
            return len(left)

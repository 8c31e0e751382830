"""A partner's privacy policy and its enforcement at the partner (site-enforced, DESIGN §3).

The partner, not the coordinator, decides: before any data-dependent release it checks the
run's whole plan and every release against its policy and its own ledger, and refuses with a
:class:`PolicyRefusedError` that names the limit. A refusal is written to the ledger as a note.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedprofile.errors import ContractError, PolicyRefusedError
from privacy.accounting import EPSILON_RTOL, compose_mu, gdp_epsilon
from privacy.events import NonPrivateEvent, PrivacyEvent
from privacy.ledger import Ledger

__all__ = ["ALL_STAGES", "PartnerGuard", "PartnerPolicy", "load_policy"]

ALL_STAGES = ("profile", "kmeans", "ridge", "logistic", "score")
_KEYS = {"max_epsilon_per_run", "total_epsilon", "delta", "min_segment_size", "allowed_stages",
         "allow_non_private"}


@dataclass(frozen=True)
class PartnerPolicy:
    """A partner's limits. The defaults (no file) allow everything, for simulations.

    Parameters
    ----------
    max_epsilon_per_run : float, default=inf
        Refuse a run whose epsilon at this partner would exceed it.
    total_epsilon : float, default=inf
        Lifetime budget of this partner's data in this federation.
    delta : float, default=1e-6
        The delta at which this partner accounts; runs asking for a larger delta are refused.
    min_segment_size : int, default=50
        Smallest segment the partner accepts to see published.
    allowed_stages : tuple of str
        Stages the partner takes part in.
    allow_non_private : bool, default=True
        Whether non-private (epsilon = inf) runs are allowed; a policy file defaults to false.
    """

    max_epsilon_per_run: float = math.inf
    total_epsilon: float = math.inf
    delta: float = 1e-6
    min_segment_size: int = 50
    allowed_stages: tuple[str, ...] = ALL_STAGES
    allow_non_private: bool = True
    source: str = field(default="default policy", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the policy as a JSON-compatible dict (infinite limits as None)."""
        def fin(x: float) -> float | None:
            return None if math.isinf(x) else x
        return {"max_epsilon_per_run": fin(self.max_epsilon_per_run),
                "total_epsilon": fin(self.total_epsilon), "delta": self.delta,
                "min_segment_size": self.min_segment_size,
                "allowed_stages": list(self.allowed_stages),
                "allow_non_private": self.allow_non_private}


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
    return PartnerPolicy(max_epsilon_per_run=_positive(data, "max_epsilon_per_run", source,
                                                       math.inf),
                         total_epsilon=_positive(data, "total_epsilon", source, math.inf),
                         delta=delta, min_segment_size=min_size, allowed_stages=tuple(stages),
                         allow_non_private=allow, source=source)


class PartnerGuard:
    """Enforces a partner's policy against its durable ledger.

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

    def _refuse(self, run_id: str, message: str) -> PolicyRefusedError:
        self.ledger.note(run_id=run_id, party=self.party, kind="refusal", message=message)
        return PolicyRefusedError(f"Partner {self.party!r} refused: {message}")

    def _epsilon_with(self, events: Sequence[PrivacyEvent], *, run_id: str | None) -> float:
        past = self.ledger.events(run_id=run_id, party=self.party)
        return gdp_epsilon(compose_mu(e.mu for e in [*past, *events]), self.policy.delta)

    def remaining(self) -> float:
        """Lifetime epsilon left under the total budget."""
        return max(self.policy.total_epsilon - self._epsilon_with([], run_id=None), 0.0)

    def check(self, *, run_id: str, stage: str, events: Sequence[PrivacyEvent],
              delta: float) -> None:
        """Refuse (raise, and note it) if ``events`` would break the policy; record nothing."""
        p = self.policy
        if stage not in p.allowed_stages:
            raise self._refuse(run_id, f"stage {stage!r} is not in its allowed stages "
                                       f"{list(p.allowed_stages)}.")
        if delta > p.delta:
            raise self._refuse(run_id, f"the run's delta {delta:g} is larger than its policy's "
                                       f"delta {p.delta:g}.")
        if not p.allow_non_private and any(isinstance(e, NonPrivateEvent) for e in events):
            raise self._refuse(run_id, "non-private (epsilon = inf) releases are not allowed "
                                       "by its policy.")
        run_eps = self._epsilon_with(events, run_id=run_id)
        if run_eps > p.max_epsilon_per_run * (1 + EPSILON_RTOL):
            raise self._refuse(run_id, f"the run would spend epsilon = {run_eps:.4g} of its data, "
                                       f"above its limit of {p.max_epsilon_per_run:g} per run.")
        total = self._epsilon_with(events, run_id=None)
        if total > p.total_epsilon * (1 + EPSILON_RTOL):
            raise self._refuse(run_id, f"the run would bring its lifetime spend to epsilon = "
                                       f"{total:.4g}, above its total budget of "
                                       f"{p.total_epsilon:g} ({self.remaining():.4g} left).")

    def authorize(self, *, run_id: str, stage: str, events: Sequence[PrivacyEvent],
                  delta: float) -> None:
        """Check ``events`` against the policy, then durably record them (before sending)."""
        self.check(run_id=run_id, stage=stage, events=events, delta=delta)
        self.ledger.record(run_id=run_id, party=self.party, events=events, delta=self.policy.delta)

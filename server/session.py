"""One run's life on the coordinator: introduction, the stage loop and the ledger.

Every stage (k-means, ridge, logistic) is a small object with ``rounds()``,
``configure(round)``, ``aggregate(round, replies)`` and ``finalize()``; :func:`drive` runs
any of them, validates replies as a set and enters each partner's releases in the
federation ledger.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from flwr.app import RecordDict
from flwr.serverapp import Grid

from fedprofile.config import RunConfig
from fedprofile.contract.lookalike import SeedAudience
from fedprofile.contract.spec import FeatureSpec
from fedprofile.privacy.accounting import compose_mu, gdp_epsilon, mu_epsilon
from fedprofile.privacy.events import PrivacyEvent
from fedprofile.privacy.ledger import Ledger
from fedprofile.protocol import (
    ErrorCode,
    GradientReply,
    GradientRequest,
    GramReply,
    GramRequest,
    KMeansReply,
    KMeansRequest,
    MessageKind,
    ProfileReply,
    ProfileRequest,
)
from fedprofile.protocol.secagg import secure_sum_for
from fedprofile.server.federation import (
    Federation,
    RunAborted,
    SecureAggregationDeclined,
    group_reasons,
    wait_for_nodes,
)
from fedprofile.server.secure import SecureAggregation

__all__ = ["RunSession", "Stage", "drive", "open_run", "privacy_record"]

log = logging.getLogger("fedprofile.server")
ACCOUNTANT = "gdp-exact"
SECAGG_ACCOUNTANT = "rdp-skellam"


class Stage(Protocol):
    """The life cycle every server stage follows."""

    def rounds(self) -> tuple[Any, ...]: ...  # noqa: D102

    def configure(self, rnd: Any) -> Any: ...  # noqa: D102

    def aggregate(self, rnd: Any, replies: list[Any]) -> None: ...  # noqa: D102

    def finalize(self) -> Any: ...  # noqa: D102


class Plan(Protocol):
    """What a privacy plan exposes (k-means and response plans)."""

    @property
    def epsilon(self) -> float: ...

    @property
    def delta(self) -> float: ...

    @property
    def mu(self) -> float: ...

    @property
    def non_private(self) -> bool: ...

    def events(self) -> tuple[PrivacyEvent, ...]: ...


def privacy_record(plan: Plan, noise: str = "partner") -> dict[str, Any]:
    """The model's privacy section: target, spend, accountant, placement and every release."""
    # Skellam releases (secure aggregation): RDP-exact composition of the curves the
    # partners checked
    rdp = noise == "secagg" and not plan.non_private
    releases, mus = [], []
    for event in plan.events():
        mus.append(event.mu)
        eps = mu_epsilon(compose_mu(mus), plan.delta, rdp=rdp)
        releases.append({**event.to_dict(), "epsilon_cumulative": eps})
    spent = mu_epsilon(compose_mu(mus), plan.delta, rdp=rdp)
    extra: dict[str, Any] = {}
    if rdp:
        extra = {"accountant": SECAGG_ACCOUNTANT,
                 "epsilon_gdp_equivalent": gdp_epsilon(compose_mu(mus), plan.delta)}
    return {"epsilon_target": max(plan.epsilon, spent), "delta": plan.delta,
            "epsilon_spent": spent, "mu": plan.mu, "accountant": ACCOUNTANT,
            "non_private": plan.non_private, "noise_placement": noise, **extra,
            "unit": "one customer of one partner (add/remove)", "releases": releases}


@dataclass
class RunSession:
    """The partners, the federation ledger and the id of one run."""

    run_id: str
    fed: Federation
    ledger: Ledger
    delta: float
    timings: list[dict[str, Any]] = field(default_factory=list)
    reported: int = 0
    noise: str = "partner"
    dropouts: int = 0
    norm_bound: float = 0.0

    def take_timings(self) -> list[dict[str, Any]]:
        """The round times not yet given to a model (each round goes to exactly one)."""
        new, self.reported = self.timings[self.reported:], len(self.timings)
        return new


def _introduce(fed: Federation, request: ProfileRequest, *, noise_auto: bool = False) -> None:
    try:
        replies = fed.broadcast(MessageKind.PROFILE, request.to_record(),
                                ProfileReply.from_record)
    finally:
        declined = {name: fed.dropped[name] for name, code in fed.error_codes.items()
                    if code == ErrorCode.SECAGG_REFUSED}
        if noise_auto and declined:
            raise SecureAggregationDeclined(
                "Secure aggregation was declined before any release: "
                f"{group_reasons(declined)}.")
    for node, reply in replies.items():
        fed.names[node] = reply.partner
    key_ids = {reply.key_id for reply in replies.values()}
    if len(key_ids) > 1:
        uses = "; ".join(f"{r.partner} uses {r.key_id or 'no key'}" for r in replies.values())
        raise RunAborted("Partners pseudonymise with different keys, so their customers "
                         f"cannot be matched; the run stops before any release: {uses}.")
    log.info("Partners taking part: %s", ", ".join(fed.name(n) for n in fed.node_ids))


def open_run(grid: Grid, cfg: RunConfig, spec: FeatureSpec, plan: Plan, *,
             stages: tuple[str, ...], expected_partners: int = 0,
             seed: SeedAudience | None = None) -> RunSession:
    """Wait for partners, announce the run and its whole plan, open the ledger.

    ``seed`` is a lookalike run's seed audience, which its owner checks before accepting.
    """
    run_id = cfg.run_id or uuid.uuid4().hex[:16]
    # the target as accounted: a secure run plans with a lower GDP epsilon (secagg_budget)
    # whose RDP-accounted epsilon is what the user asked for
    target = privacy_record(plan, cfg.noise)["epsilon_target"]
    nodes = wait_for_nodes(grid, expected=max(expected_partners, cfg.min_partners),
                           timeout=min(cfg.timeout, 120.0))
    fed = Federation(grid=grid, node_ids=nodes, min_partners=cfg.min_partners,
                     timeout=cfg.timeout)
    fed.check_quorum("start")
    start = time.perf_counter()
    _introduce(fed, ProfileRequest(
        run_id=run_id, spec_fingerprint=spec.fingerprint(), epsilon_target=target,
        delta=cfg.delta, stages=stages, planned_events=plan.events(),
        min_segment_size=cfg.min_segment_size,
        k=cfg.fewest_segments if "kmeans" in stages else 0,
        target=cfg.target if {"ridge", "logistic"} & set(stages) else "", seed=seed,
        noise=cfg.noise, partners=len(fed.node_ids),
        secagg_dropouts=cfg.secagg_dropouts if cfg.noise == "secagg" else 0),
        noise_auto=cfg.noise_auto)
    profiled = {"message": MessageKind.PROFILE, "round": 0,
                "seconds": round(time.perf_counter() - start, 3)}
    ledger = Ledger(Path(cfg.out_dir) / "federation_ledger.sqlite")
    for node in fed.node_ids:
        ledger.start_run(run_id=run_id, party=fed.name(node), epsilon_target=target,
                         delta=cfg.delta, params={"planned_stages": list(stages)})
    return RunSession(run_id=run_id, fed=fed, ledger=ledger, delta=cfg.delta,
                      timings=[profiled], noise=cfg.noise, dropouts=cfg.secagg_dropouts,
                      norm_bound=spec.norm_bound)


def _decoder(request: Any, dim: int) -> Callable[[RecordDict], Any]:
    if isinstance(request, KMeansRequest):
        return partial(KMeansReply.from_record, shape=request.centers.shape)
    if isinstance(request, GramRequest):
        return partial(GramReply.from_record, dim=dim)
    if isinstance(request, GradientRequest):
        return partial(GradientReply.from_record, dim=dim)
    raise TypeError(f"No reply type for {type(request).__name__}.")


def _secure_round(session: RunSession, secure: SecureAggregation, request: Any,
                  bounds: tuple[float, float], dim: int, *, last: bool
                  ) -> tuple[Any, dict[int, tuple[PrivacyEvent, ...]]]:
    """One round under secure aggregation: a single reply holding the federation's sums.

    The stage's ``last`` round asks every survivor to unmask, so that each deletes its
    secrets of the stage at once.
    """
    secure_sum = secure_sum_for(request, norm_bound=bounds[0], target_bound=bounds[1], dim=dim)
    sums, events = secure.release(request.to_record(), request.message_type, secure_sum,
                                  everyone=last)
    received = [p.ledger_fields(len(events)) for p in
                secure_sum.plans(secure.partners, secure.dropouts)]
    session.ledger.note(run_id=session.run_id, party="coordinator", kind="secagg",
                        message=json.dumps({"message": request.message_type,
                                            "round": getattr(request, "round", 0),
                                            "summed": [session.fed.name(n) for n in events],
                                            "received": "masked vectors and their sum only",
                                            "releases": received}))
    if isinstance(request, KMeansRequest):
        return KMeansReply(sums=sums[0].reshape(request.centers.shape), counts=sums[1],
                           events=()), events
    if isinstance(request, GramRequest):
        return GramReply(gram_upper=sums[0], xty=sums[1], events=()), events
    return GradientReply(gradient=sums[0], events=()), events


def drive(session: RunSession, stage: Stage, *, dim: int = 0, secure_dim: int = 0,
          stage_name: str = "") -> Any:
    """Run every round of ``stage``; return its ``finalize()``.

    Under ``noise = 'secagg'`` every round is securely summed; ``secure_dim`` is the length
    of the stage's largest release and ``stage_name`` names the stage to the partners.
    """
    secure = (SecureAggregation(session.fed, session.run_id, stage_name, secure_dim,
                                session.dropouts) if session.noise == "secagg" else None)
    rounds = stage.rounds()
    for index, rnd in enumerate(rounds):
        start = time.perf_counter()
        request = stage.configure(rnd)
        if secure is None:
            replies = session.fed.broadcast(request.message_type, request.to_record(),
                                            _decoder(request, dim))
            events = {node: reply.events for node, reply in replies.items()}
            summed = list(replies.values())
        else:
            plan: Any = getattr(stage, "plan", None)
            bounds = ((session.norm_bound, 0.0) if isinstance(request, KMeansRequest)
                      else (plan.norm_bound, plan.target_bound))
            reply, events = _secure_round(session, secure, request, bounds, dim,
                                          last=index == len(rounds) - 1)
            summed = [reply]
        for node, released in events.items():
            session.ledger.record(run_id=session.run_id, party=session.fed.name(node),
                                  events=released, delta=session.delta)
        stage.aggregate(rnd, summed)
        session.timings.append({"message": request.message_type,
                                "round": getattr(rnd, "round", rnd),
                                "seconds": round(time.perf_counter() - start, 3)})
        log.info("%s round %s: %d partners answered", request.message_type,
                 getattr(rnd, "round", rnd), len(events))
    return stage.finalize()

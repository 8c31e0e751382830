"""Lookalike audiences on the coordinator: "seed vs everyone" through the DP logistic path.

The seed owner's seed customers are positives, every other customer of the federation a
negative. The run announces its plan (``query.profile``, where the seed owner checks that
its seed exists and is large enough), drives the same noised Gram round and clipped-gradient
rounds as logistic regression, with every release charged to the policy stage
``lookalike``, then has each partner score and select its audience locally
(``query.lookalike``), which releases nothing.
"""

from __future__ import annotations

import json
import logging

import numpy as np
from flwr.serverapp import Grid

from fedprofile.config import RunConfig
from fedprofile.contract.lookalike import SeedAudience, lookalike_names, lookalike_norm_bound
from fedprofile.contract.parser import load_spec
from fedprofile.contract.spec import FeatureSpec
from fedprofile.io.tables import json_safe
from fedprofile.models.lookalike_model import LookalikeModel
from fedprofile.protocol import LookalikeReply, LookalikeRequest, MessageKind, ResponseTask
from fedprofile.server.federation import RunAborted
from fedprofile.server.regression import LogisticStage, ResponsePlan, plan_response
from fedprofile.server.session import drive, open_run, privacy_record

__all__ = ["lookalike_plan", "run_lookalike", "seed_audience"]

log = logging.getLogger("fedprofile.server")


def seed_audience(cfg: RunConfig) -> SeedAudience:
    """The run's seed audience, from its ``seed-*`` keys."""
    return SeedAudience(partner=cfg.seed_partner, column=cfg.seed_column, expr=cfg.seed_expr,
                        file=cfg.seed_file)


def lookalike_plan(cfg: RunConfig, spec: FeatureSpec, seed: SeedAudience) -> ResponsePlan:
    """The noise of a lookalike run: a logistic plan whose releases are ``lookalike``'s."""
    return plan_response(task="logistic", epsilon=cfg.epsilon, delta=cfg.delta,
                         norm_bound=lookalike_norm_bound(spec, seed), target_bound=1.0,
                         rounds=cfg.gd_rounds, clip=cfg.clip, stage="lookalike")


def run_lookalike(grid: Grid, cfg: RunConfig, *, expected_partners: int = 0) -> LookalikeModel:
    """Fit the lookalike model, have every partner select its audience; return the model.

    Raises
    ------
    RunAborted
        If the seed partner is not among the partners (before any release), or fewer than
        ``min_partners`` partners answer.
    """
    spec = load_spec(cfg.spec)
    seed = seed_audience(cfg)
    plan = lookalike_plan(cfg, spec, seed)
    dim = len(lookalike_names(spec, seed))
    session = open_run(grid, cfg, spec, plan, stages=("lookalike",),
                       expected_partners=expected_partners, seed=seed)
    names = [session.fed.name(n) for n in session.fed.node_ids]
    if seed.partner not in names:
        session.ledger.close()
        raise RunAborted(f"The seed partner {seed.partner!r} is not in this run (partners: "
                         f"{', '.join(names)}); the run stops before any release.")
    task = ResponseTask(run_id=session.run_id, spec_fingerprint=spec.fingerprint(),
                        stage="lookalike", round=0, target="", holdout=cfg.holdout,
                        holdout_seed=cfg.seed, segment_centers=np.zeros((0,)), seed=seed)
    result = drive(session, LogisticStage(plan=plan, task=task, dim=dim, alpha=cfg.alpha),
                   dim=dim)
    params = {"task": "lookalike", "alpha": cfg.alpha, "gd_rounds": cfg.gd_rounds,
              "clip": plan.clip, "holdout": cfg.holdout, "seed": cfg.seed,
              "run_id": session.run_id, "lookalike_size": cfg.lookalike_size,
              "lookalike_threshold": cfg.lookalike_threshold,
              "dropped_partners": session.fed.summary()["dropped"],
              "round_seconds": session.take_timings()}
    spent = {name: session.ledger.spend(party=name, delta=cfg.delta,
                                        run_id=session.run_id).to_dict()["epsilon"]
             for name in names}
    model = LookalikeModel(spec=spec, seed=seed, coef=result.coef, penalty=result.penalty,
                           privacy={**privacy_record(plan), "epsilon_per_partner": spent},
                           params=params,
                           partners=session.fed.summary()["partners"])
    request = LookalikeRequest(run_id=session.run_id, spec_fingerprint=spec.fingerprint(),
                               model=json.dumps(json_safe(model.to_dict())), seed=seed,
                               size=cfg.lookalike_size, threshold=cfg.lookalike_threshold)
    session.fed.broadcast(MessageKind.LOOKALIKE, request.to_record(), LookalikeReply.from_record)
    session.ledger.close()
    log.info("Lookalike audiences written at every partner")
    return model

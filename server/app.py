"""The coordinator's ServerApp: orchestrates a private segmentation run.

Stages: ``query.profile`` (partners check the contract and the whole privacy plan against
their policy; nothing is released), then the k-means start and Lloyd rounds
(``train.kmeans``). Every partner's releases are entered in the federation ledger; the model,
its metrics and the HTML report are written to ``out-dir``.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedprofile.config import RunConfig
from fedprofile.contract import FeatureSpec, load_spec
from fedprofile.protocol import KMeansReply, MessageKind, ProfileReply, ProfileRequest
from fedprofile.segment_model import SegmentModel
from privacy.accounting import compose_mu, gdp_epsilon
from privacy.ledger import Ledger
from server.federation import Federation, RunAborted, wait_for_nodes
from server.kmeans import KMeansPlan, KMeansStage, plan_kmeans
from server.report import render_report

__all__ = ["app", "build_server_app", "run_segmentation"]

log = logging.getLogger("fedprofile.server")
ACCOUNTANT = "gdp-exact"


def privacy_record(plan: KMeansPlan) -> dict[str, Any]:
    """The model's privacy section: target, spend, accountant and every release."""
    releases, mus = [], []
    for event in plan.events():
        mus.append(event.mu)
        eps = gdp_epsilon(compose_mu(mus), plan.delta)
        releases.append({**event.to_dict(), "epsilon_cumulative": eps})
    spent = gdp_epsilon(compose_mu(mus), plan.delta)
    return {"epsilon_target": plan.epsilon, "delta": plan.delta, "epsilon_spent": spent,
            "mu": plan.mu, "accountant": ACCOUNTANT, "non_private": plan.non_private,
            "noise_placement": "partner",
            "unit": "one customer of one partner (add/remove)", "releases": releases}


def _introduce(fed: Federation, request: ProfileRequest) -> None:
    replies = fed.broadcast(MessageKind.PROFILE, request.to_record(), ProfileReply.from_record)
    for node, reply in replies.items():
        fed.names[node] = reply.partner
    key_ids = {reply.key_id for reply in replies.values()}
    if len(key_ids) > 1:
        uses = "; ".join(f"{r.partner} uses {r.key_id or 'no key'}" for r in replies.values())
        raise RunAborted("Partners pseudonymise with different keys, so their customers "
                         f"cannot be matched; the run stops before any release: {uses}.")
    log.info("Partners taking part: %s", ", ".join(fed.name(n) for n in fed.node_ids))


def run_segmentation(grid: Grid, cfg: RunConfig, *, expected_partners: int = 0) -> SegmentModel:
    """Run the whole private segmentation on ``grid`` and return the model.

    Raises
    ------
    RunAborted
        If fewer than ``cfg.min_partners`` partners take part to the end.
    """
    spec: FeatureSpec = load_spec(cfg.spec)
    run_id = uuid.uuid4().hex[:16]
    plan = plan_kmeans(epsilon=cfg.epsilon, delta=cfg.delta, lloyd_rounds=cfg.rounds,
                       norm_bound=spec.norm_bound, init=cfg.init)  # type: ignore[arg-type]
    nodes = wait_for_nodes(grid, expected=max(expected_partners, cfg.min_partners),
                           timeout=min(cfg.timeout, 120.0))
    fed = Federation(grid=grid, node_ids=nodes, min_partners=cfg.min_partners,
                     timeout=cfg.timeout)
    fed.check_quorum("start")
    _introduce(fed, ProfileRequest(
        run_id=run_id, spec_fingerprint=spec.fingerprint(), epsilon_target=cfg.epsilon,
        delta=cfg.delta, stages=("kmeans",), planned_events=plan.events(),
        min_segment_size=cfg.min_segment_size))
    out = Path(cfg.out_dir)
    ledger = Ledger(out / "federation_ledger.sqlite")
    for node in fed.node_ids:
        ledger.start_run(run_id=run_id, party=fed.name(node), epsilon_target=cfg.epsilon,
                         delta=cfg.delta, params={"stage": "kmeans", "k": cfg.k})
    stage = KMeansStage(spec=spec, plan=plan, k=cfg.k, n_partners=len(fed.node_ids),
                        run_id=run_id, fingerprint=spec.fingerprint(),
                        candidates=cfg.n_candidates(spec.dim), seed=cfg.seed)
    for rnd in stage.rounds():
        request = stage.configure(rnd)
        decode = partial(KMeansReply.from_record, shape=request.centers.shape)
        replies = fed.broadcast(MessageKind.KMEANS, request.to_record(), decode)
        for node, reply in replies.items():
            ledger.record(run_id=run_id, party=fed.name(node), events=reply.events,
                          delta=cfg.delta)
        stage.aggregate(rnd, list(replies.values()), n_answered=len(replies))
        log.info("%s round %d: %d partners answered", rnd.stage, rnd.round, len(replies))
    result = stage.finalize()
    ledger.close()
    params = {"k": cfg.k, "rounds": cfg.rounds, "init": cfg.init,
              "candidates": cfg.n_candidates(spec.dim), "seed": cfg.seed, "run_id": run_id,
              "min_partners": cfg.min_partners}
    return SegmentModel(spec=spec, centers=result.centers, sizes=result.sizes,
                        min_segment_size=cfg.min_segment_size, privacy=privacy_record(plan),
                        params=params, partners=fed.summary()["partners"],
                        history=result.history)


def write_outputs(model: SegmentModel, metrics: Mapping[str, Any], out_dir: Path) -> None:
    """Write ``model.json``, ``metrics.json`` and ``report.html`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.json")
    doc = json.dumps(metrics, indent=1, default=lambda x: None if x is None else str(x))
    (out_dir / "metrics.json").write_text(doc, encoding="utf-8")
    render_report(model.to_dict(), metrics, out_dir / "report.html")


def coordinator_metrics(model: SegmentModel, wall_time: float) -> dict[str, Any]:
    """Metrics the coordinator knows without any data: privacy, rounds, time."""
    eps = model.privacy["epsilon_spent"]
    return {"privacy": {"epsilon_spent": None if math.isinf(eps) else eps,
                        "delta": model.privacy["delta"],
                        "non_private": model.privacy["non_private"]},
            "n_partners": len(model.partners), "rounds": model.params["rounds"],
            "wall_time_s": wall_time, "evaluation": "deployment"}


def build_server_app(overrides: Mapping[str, Any] | None = None) -> ServerApp:
    """Build the coordinator ServerApp; ``overrides`` complete Flower's run config."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        settings = {**dict(context.run_config), **dict(overrides or {})}
        expected = int(settings.pop("expected-partners", 0))
        cfg = RunConfig.from_mapping(settings)
        start = time.perf_counter()
        try:
            model = run_segmentation(grid, cfg, expected_partners=expected)
        except RunAborted as exc:
            log.error("%s", exc)
            raise
        write_outputs(model, coordinator_metrics(model, time.perf_counter() - start),
                      Path(cfg.out_dir))
        log.info("Segment model written to %s", Path(cfg.out_dir) / "model.json")

    return server


app = build_server_app()

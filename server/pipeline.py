"""The full pipeline: segments, a segment-aware response model, then local scoring.

The run's (epsilon, delta) covers everything: its GDP budget is split evenly between the
segmentation and the response model, announced to partners as one plan under one run id
(so a partner's per-run limit applies to the whole pipeline), and the scoring stage
releases nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from flwr.serverapp import Grid

from fedprofile.config import RunConfig
from fedprofile.contract.parser import load_spec
from fedprofile.io.tables import json_safe
from fedprofile.models.response_model import ResponseModel
from fedprofile.models.segment_model import SegmentModel
from fedprofile.privacy.accounting import gdp_epsilon, gdp_mu
from fedprofile.privacy.events import PrivacyEvent
from fedprofile.protocol import MessageKind, ScoreReply, ScoreRequest
from fedprofile.server.runs import (
    published_start,
    response_plan,
    response_task_for,
    run_response,
    run_segmentation,
    segment_plan,
)
from fedprofile.server.session import open_run

__all__ = ["PipelinePlan", "run_pipeline", "stage_epsilon"]


@dataclass(frozen=True)
class PipelinePlan:
    """The announced plan of a whole pipeline (both stages' releases)."""

    epsilon: float
    delta: float
    mu: float
    planned: tuple[PrivacyEvent, ...]

    @property
    def non_private(self) -> bool:
        """Whether no noise is added."""
        return math.isinf(self.epsilon)

    def events(self) -> tuple[PrivacyEvent, ...]:
        """Every event one partner records."""
        return self.planned


def stage_epsilon(epsilon: float, delta: float) -> float:
    """Epsilon of each of the pipeline's two learning stages: half the run's GDP ``mu**2``."""
    mu = gdp_mu(epsilon, delta)
    return gdp_epsilon(mu / math.sqrt(2.0), delta) if math.isfinite(mu) else math.inf


def run_pipeline(grid: Grid, cfg: RunConfig, *, expected_partners: int = 0
                 ) -> dict[Path, SegmentModel | ResponseModel]:
    """Run segments, the response model and local scoring; return models by output folder."""
    spec = load_spec(cfg.spec)
    cfg, _ = published_start(cfg, spec)
    task = response_task_for(spec, cfg.target)
    mu = gdp_mu(cfg.epsilon, cfg.delta)
    half = stage_epsilon(cfg.epsilon, cfg.delta)
    seg_cfg = replace(cfg, task="segments", epsilon=half)
    resp_cfg = replace(cfg, task=task, epsilon=half)
    plan = PipelinePlan(epsilon=cfg.epsilon, delta=cfg.delta, mu=mu, planned=(
        *segment_plan(seg_cfg, spec).events(),
        *response_plan(resp_cfg, spec, segment_aware=True).events()))
    session = open_run(grid, cfg, spec, plan, stages=("kmeans", task, "score"),
                       expected_partners=expected_partners)
    segments = run_segmentation(grid, seg_cfg, session=session)
    response = run_response(grid, resp_cfg, session=session,
                            segment_centers=segments.cluster_centers_)
    request = ScoreRequest(run_id=session.run_id, spec_fingerprint=spec.fingerprint(),
                           segment_model=json.dumps(json_safe(segments.to_dict())),
                           response_model=json.dumps(json_safe(response.to_dict())))
    session.fed.broadcast(MessageKind.SCORE, request.to_record(), ScoreReply.from_record)
    session.ledger.close()
    out = Path(cfg.out_dir)
    return {out / "segments": segments, out / "response": response}

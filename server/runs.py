"""The coordinator's runs: segmentation and response models over the federation.

Each run announces its whole plan (``query.profile``), drives its stage's rounds, enters
every partner's releases in the federation ledger and returns the published model; the
ServerApp (:mod:`fedprofile.server.app`) and the pipeline compose them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from flwr.serverapp import Grid

from fedprofile.config import InitMethod, RunConfig
from fedprofile.contract.design import (
    design_names,
    design_norm_bound,
    target_bound,
    unsupported_columns,
)
from fedprofile.contract.parser import load_spec
from fedprofile.contract.spec import FeatureSpec
from fedprofile.errors import FedprofileError
from fedprofile.models.response_model import ResponseModel
from fedprofile.models.segment_model import SegmentModel
from fedprofile.protocol import ResponseTask
from fedprofile.server.federation import RunAborted
from fedprofile.server.kmeans import KMeansPlan, KMeansStage, plan_kmeans
from fedprofile.server.regression import LogisticStage, ResponsePlan, RidgeStage, plan_response
from fedprofile.server.report import render_report
from fedprofile.server.report_response import render_response_report
from fedprofile.server.session import RunSession, drive, open_run, privacy_record

__all__ = ["coordinator_metrics", "published_start", "response_plan", "response_task_for",
           "run_response", "run_segmentation", "segment_plan", "write_outputs"]

log = logging.getLogger("fedprofile.server")
Model = SegmentModel | ResponseModel


def segment_plan(cfg: RunConfig, spec: FeatureSpec) -> KMeansPlan:
    """The noise of a segmentation run under ``cfg`` (a refresh has no private start)."""
    init: InitMethod = "random" if cfg.start_from else cfg.init  # both start without a release
    return plan_kmeans(epsilon=cfg.epsilon, delta=cfg.delta, lloyd_rounds=cfg.lloyd_rounds,
                       norm_bound=spec.norm_bound, init=init)


def published_start(cfg: RunConfig, spec: FeatureSpec) -> tuple[RunConfig, SegmentModel | None]:
    """The earlier model a refresh starts from, and ``cfg`` with that model's ``k``.

    Its centres are an earlier DP release, so starting from them is post-processing; the
    model must have been trained under this run's contract.
    """
    if not cfg.start_from:
        return cfg, None
    try:
        previous = SegmentModel.load(cfg.start_from)
    except (OSError, ValueError, FedprofileError) as exc:
        raise RunAborted(f"Cannot start from {cfg.start_from}: {exc}") from None
    if previous.spec.fingerprint() != spec.fingerprint():
        raise RunAborted(f"The model {cfg.start_from} was trained under another contract than "
                         "this run's spec; a refresh must keep the contract.")
    return replace(cfg, k=previous.k), previous


def _published_radius(previous: SegmentModel | None) -> float:
    """The Lloyd radius a published model was trained with (public; 0 if none)."""
    value = (previous.params if previous is not None else {}).get("clip_radius", 0.0)
    radius = float(value) if isinstance(value, int | float) else 0.0
    return radius if math.isfinite(radius) and radius > 0.0 else 0.0


def _refresh_record(previous: SegmentModel, centers: np.ndarray, sizes: np.ndarray
                    ) -> dict[str, Any]:
    """What moved since the published model: sizes and centre shifts, segment by segment."""
    shift = np.linalg.norm(centers - previous.cluster_centers_, axis=1)
    return {"source": previous.params.get("run_id", ""),
            "previous_sizes": previous.segment_sizes_.tolist(),
            "sizes": np.asarray(sizes, dtype=float).tolist(),
            "center_shift_scaled": shift.tolist()}


def run_segmentation(grid: Grid, cfg: RunConfig, *, expected_partners: int = 0,
                     session: RunSession | None = None) -> SegmentModel:
    """Run a private segmentation on ``grid`` and return the model.

    Raises
    ------
    RunAborted
        If fewer than ``cfg.min_partners`` partners take part to the end.
    """
    spec: FeatureSpec = load_spec(cfg.spec)
    cfg, previous = published_start(cfg, spec)
    plan = segment_plan(cfg, spec)
    own = session is None
    session = session or open_run(grid, cfg, spec, plan, stages=("kmeans",),
                                  expected_partners=expected_partners)
    stage = KMeansStage(spec=spec, plan=plan, k=cfg.k, n_partners=len(session.fed.node_ids),
                        run_id=session.run_id, fingerprint=spec.fingerprint(),
                        candidates=cfg.n_candidates(spec.dim), seed=cfg.seed,
                        initial_centers=None if previous is None else previous.cluster_centers_,
                        initial_radius=_published_radius(previous),
                        k_range=(cfg.k_min, cfg.k_max) if cfg.k_auto else None,
                        min_segment_size=cfg.min_segment_size)
    result = drive(session, stage, secure_dim=len(stage.centers) * (spec.dim + 1),
                   stage_name="kmeans")
    if own:
        session.ledger.close()
    params: dict[str, Any] = {
        "task": "segments", "k": stage.k, "rounds": cfg.lloyd_rounds,
        "clip_radius": stage.radius,
        "init": "published" if previous is not None else cfg.init,
        "candidates": 0 if previous is not None else cfg.n_candidates(spec.dim),
        "seed": cfg.seed, "run_id": session.run_id, "min_partners": cfg.min_partners,
        "dropped_partners": session.fed.summary()["dropped"],
        "round_seconds": session.take_timings()}
    if cfg.k_auto:
        params["k_auto"] = {"range": [cfg.k_min, cfg.k_max], "curve": stage.k_curve,
                            "criterion": "weighted silhouette of the private start's noisy "
                                         "summary, among k whose segments all hold twice "
                                         "min_segment_size (no extra epsilon)"}
    if previous is not None:
        params["start_from"] = _refresh_record(previous, result.centers, result.sizes)
    return SegmentModel(spec=spec, centers=result.centers, sizes=result.sizes,
                        min_segment_size=cfg.min_segment_size,
                        privacy=privacy_record(plan, cfg.noise),
                        params=params, partners=session.fed.summary()["partners"],
                        history=result.history)


def _segment_centers(cfg: RunConfig, spec: FeatureSpec) -> np.ndarray:
    if not cfg.segments:
        return np.zeros((0,))
    segments = SegmentModel.load(cfg.segments)
    if segments.spec.fingerprint() != spec.fingerprint():
        raise RunAborted(f"The segment model {cfg.segments} was trained under another "
                         "contract than this run's spec.")
    return segments.cluster_centers_


def response_task_for(spec: FeatureSpec, target: str) -> str:
    """Ridge for a numeric target, logistic for a binary one."""
    if target not in spec.targets:
        raise RunAborted(f"Target {target!r} is not declared in the spec {spec.source}; "
                         f"declared: {sorted(spec.targets) or 'none'}.")
    return "logistic" if spec.targets[target].kind == "binary" else "ridge"


def response_plan(cfg: RunConfig, spec: FeatureSpec, *, segment_aware: bool) -> ResponsePlan:
    """The noise of a response-model run under ``cfg``."""
    return plan_response(task=cfg.task, epsilon=cfg.epsilon,
                         delta=cfg.delta,
                         norm_bound=design_norm_bound(spec, cfg.target,
                                                      segment_aware=segment_aware),
                         target_bound=target_bound(spec, cfg.target), rounds=cfg.gd_rounds,
                         clip=cfg.clip)


def run_response(grid: Grid, cfg: RunConfig, *, expected_partners: int = 0,
                 session: RunSession | None = None,
                 segment_centers: np.ndarray | None = None) -> ResponseModel:
    """Fit a private ridge or logistic regression on ``grid`` and return the model."""
    spec = load_spec(cfg.spec)
    if response_task_for(spec, cfg.target) != cfg.task:
        raise RunAborted(f"Task {cfg.task!r} does not fit the "
                         f"{spec.targets[cfg.target].kind} target {cfg.target!r}; use ridge "
                         "for numeric targets and logistic for binary ones.")
    centers = _segment_centers(cfg, spec) if segment_centers is None else segment_centers
    dim = len(design_names(spec, cfg.target, len(centers) if centers.size else 0))
    plan = response_plan(cfg, spec, segment_aware=bool(centers.size))
    own = session is None
    session = session or open_run(grid, cfg, spec, plan, stages=(cfg.task,),
                                  expected_partners=expected_partners)
    task = ResponseTask(run_id=session.run_id, spec_fingerprint=spec.fingerprint(),
                        stage=cfg.task, round=0, target=cfg.target, holdout=cfg.holdout,
                        holdout_seed=cfg.seed, segment_centers=centers)
    stage_cls = RidgeStage if cfg.task == "ridge" else LogisticStage
    result = drive(session, stage_cls(plan=plan, task=task, dim=dim, alpha=cfg.alpha), dim=dim,
                   secure_dim=dim * (dim + 1) // 2 + dim, stage_name=cfg.task)
    if own:
        session.ledger.close()
    params = {"task": cfg.task, "target": cfg.target, "alpha": cfg.alpha,
              "gd_rounds": cfg.gd_rounds if cfg.task == "logistic" else 0,
              "clip": plan.clip, "holdout": cfg.holdout, "seed": cfg.seed,
              "segments": cfg.segments, "run_id": session.run_id,
              "dropped_partners": session.fed.summary()["dropped"],
              "round_seconds": session.take_timings(),
              "unsupported_columns": unsupported_columns(
                  spec, cfg.target, len(centers) if centers.size else 0,
                  result.gram_diagonal, result.gram_noise_sd)}
    return ResponseModel(task=cfg.task, spec=spec, target=cfg.target, coef=result.coef,
                         penalty=result.penalty, privacy=privacy_record(plan, cfg.noise),
                         params=params,
                         partners=session.fed.summary()["partners"],
                         segment_centers=centers if centers.size else None)


def write_outputs(model: Model, metrics: Mapping[str, Any], out_dir: Path) -> None:
    """Write ``model.json``, ``metrics.json`` and ``report.html`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.json")
    doc = json.dumps(metrics, indent=1, default=lambda x: None if x is None else str(x))
    (out_dir / "metrics.json").write_text(doc, encoding="utf-8")
    if isinstance(model, SegmentModel):
        render_report(model.to_dict(), metrics, out_dir / "report.html")
    else:
        render_response_report(model, metrics, out_dir / "report.html")


def coordinator_metrics(model: Model, wall_time: float) -> dict[str, Any]:
    """Metrics the coordinator knows without any data: privacy, rounds, time."""
    eps = model.privacy["epsilon_spent"]
    return {"privacy": {"epsilon_spent": None if math.isinf(eps) else eps,
                        "delta": model.privacy["delta"],
                        "non_private": model.privacy["non_private"],
                        "noise_placement": model.privacy.get("noise_placement", "partner")},
            "n_partners": len(model.partners), "params": model.params,
            "rounds": model.params.get("rounds"),
            "wall_time_s": wall_time, "evaluation": "deployment"}

"""The coordinator's ServerApp: orchestrates private segmentation and response-model runs.

Every run starts with ``query.profile`` (partners check the contract and the whole privacy
plan against their policy; nothing is released), then drives one stage: k-means
(``train.kmeans``), ridge (``train.gram``), logistic regression (``train.gram`` then
``train.gradient``), a lookalike model (the same, then ``query.lookalike``) or overlaps.
Every partner's releases are entered in the federation ledger; the model, its metrics and
the HTML report are written to ``out-dir``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedprofile.config import RunConfig
from fedprofile.flower_waits import shorten_pull_backoff
from fedprofile.server.federation import RunAborted, SecureAggregationDeclined
from fedprofile.server.lookalike import run_lookalike
from fedprofile.server.overlap import run_overlap
from fedprofile.server.pipeline import run_pipeline
from fedprofile.server.report_lookalike import write_lookalike_outputs
from fedprofile.server.report_overlap import write_overlap_outputs
from fedprofile.server.runs import (
    coordinator_metrics,
    run_response,
    run_segmentation,
    write_outputs,
)
from fedprofile.server.secure import secagg_budget

__all__ = ["app", "build_server_app"]

log = logging.getLogger("fedprofile.server")


def build_server_app(overrides: Mapping[str, Any] | None = None) -> ServerApp:
    """Build the coordinator ServerApp; ``overrides`` complete Flower's run config."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        shorten_pull_backoff()  # replies' parts are asked for again after 20 ms, not 1 s
        cfg = RunConfig.from_mapping({**dict(context.run_config), **dict(overrides or {})})
        start = time.perf_counter()
        try:
            try:
                _run(grid, secagg_budget(cfg), start)
            except SecureAggregationDeclined as exc:
                if not cfg.noise_auto:
                    raise
                log.warning("%s The run is planned again with noise = 'partner'.", exc)
                again = f"{cfg.run_id[:56]}-partner" if cfg.run_id else ""  # ids <= 64 chars
                _run(grid, replace(cfg, noise="partner", noise_auto=False, run_id=again), start)
        except RunAborted as exc:
            log.error("%s", exc)
            raise

    return server


def _run(grid: Grid, cfg: RunConfig, start: float) -> None:
    """Run ``cfg.task`` and write its outputs."""
    expected, out = cfg.expected_partners, Path(cfg.out_dir)
    if cfg.task == "overlap":
        doc = run_overlap(grid, cfg, expected_partners=expected)
        write_overlap_outputs(doc, _timing(start), out)
    elif cfg.task == "lookalike":
        lookalike = run_lookalike(grid, cfg, expected_partners=expected)
        write_lookalike_outputs(lookalike, _timing(start), out)
    if cfg.task in ("overlap", "lookalike"):
        log.info("%s written to %s", cfg.task.capitalize(), out / "model.json")
        return
    if cfg.task == "pipeline":
        outputs = run_pipeline(grid, cfg, expected_partners=expected)
    else:
        run = run_segmentation if cfg.task == "segments" else run_response
        outputs = {out: run(grid, cfg, expected_partners=expected)}
    for folder, model in outputs.items():
        write_outputs(model, coordinator_metrics(model, time.perf_counter() - start), folder)
        log.info("Model written to %s", folder / "model.json")


def _timing(start: float) -> dict[str, Any]:
    return {"wall_time_s": time.perf_counter() - start, "evaluation": "deployment"}


app = build_server_app()

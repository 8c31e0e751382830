"""Run the segmentation pipeline on Flower's simulation engine with N virtual partners.

The runner plays the part of each partner's administrator: it writes every partner's slice
of the data to its own file and gives each virtual SuperNode the node config a real partner
would set (data file, contract, policy, state folder). The ServerApp and ClientApp are the
same objects a deployment runs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedprofile.client.app import build_client_app
from fedprofile.client.checks import NotReadyError, budget_problem, check_ready
from fedprofile.client.lookalike import check_seed
from fedprofile.client.secure import trust_each_other
from fedprofile.client.site import PartnerSite
from fedprofile.config import RunConfig
from fedprofile.contract.customers import customer_table
from fedprofile.contract.design import DesignData, design_data
from fedprofile.contract.features import transform_frame
from fedprofile.contract.parser import load_spec
from fedprofile.errors import ContractError, DataError, FedprofileError
from fedprofile.flower_waits import shorten_simulation_dispatch
from fedprofile.io.matrix_store import stored_values
from fedprofile.io.tables import write_table
from fedprofile.models.response_model import FORMAT as RESPONSE_FORMAT
from fedprofile.models.response_model import ResponseModel
from fedprofile.models.segment_model import SegmentModel
from fedprofile.presets.partition import Partition, PartnerFile
from fedprofile.privacy.keys import generate_key, load_key, write_key
from fedprofile.privacy.pseudonym import Pseudonymizer
from fedprofile.server.app import build_server_app
from fedprofile.server.federation import group_reasons
from fedprofile.server.lookalike import seed_audience
from fedprofile.server.runs import write_outputs
from fedprofile.sim.evaluate import evaluate_segments
from fedprofile.sim.evaluate_response import evaluate_response
from fedprofile.sim.jobs import ensure_folder
from fedprofile.sim.lookalike import check_seed_partner, lookalike_metrics
from fedprofile.sim.overlap import overlap_metrics, read_overlap
from fedprofile.sim.quality import category_suggestions, quality_summary, quality_warnings
from fedprofile.sim.results import RoundHandler, SimulationResult

__all__ = ["SimulationResult", "default_workers", "federation_key", "load_model",
           "partner_tables", "pooled_matrix", "preflight", "simulate"]

log = logging.getLogger("fedprofile.sim")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60]


def federation_key(state_dir: Path) -> Path:
    """The simulated partners' shared pseudonymisation key (created once per state folder).

    In a real federation the partners agree on this key among themselves; the coordinator
    never sees it. Here the runner plays the partners' administrators.
    """
    path = state_dir / "partners" / "federation.key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_key(generate_key(), path)
    return path


def _prepare_partners(partitions: Sequence[Partition | PartnerFile], *, spec_path: Path,
                      state_dir: Path, policy: Path | None, seed: int | None, capture: Path | None
                      ) -> dict[int, dict[str, Any]]:
    key = federation_key(state_dir) if load_spec(spec_path).identity else None
    nodes: dict[int, dict[str, Any]] = {}
    for pid, part in enumerate(partitions):
        slug = f"{pid:02d}-{_slug(part.name)}"
        home = state_dir / "partners" / slug
        data = (part.path if isinstance(part, PartnerFile)
                else write_table(part.frame, home / "data" / "customers.parquet"))
        nodes[pid] = {"data-path": str(data), "spec": str(spec_path), "partner-name": part.name,
                      "state-dir": str(home), "policy": str(policy) if policy else "",
                      "noise-seed": -1 if seed is None else seed,
                      "capture-dir": str(capture / slug) if capture else "",
                      "key": str(key) if key else ""}
    return nodes


def _quiet_flower() -> None:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    logging.getLogger("flwr").setLevel(logging.ERROR)
    # the simulated partners' own data-quality log lines: the summary shows them as a table
    client_log = logging.getLogger("fedprofile.client")
    if not client_log.handlers:
        client_log.addHandler(logging.NullHandler())


def partner_tables(partitions: list[Partition], spec_path: Path, state_dir: Path
                   ) -> list[pd.DataFrame]:
    """Every partner's customer table, built as the partners build theirs."""
    spec = load_spec(spec_path)
    pseudo = Pseudonymizer(load_key(federation_key(state_dir)),
                           default_region=spec.identity.region) if spec.identity else None
    return [customer_table(p.frame, spec, pseudonymizer=pseudo, source=p.name)
            for p in partitions]


def pooled_matrix(partitions: list[Partition], spec_path: Path, state_dir: Path) -> np.ndarray:
    """Every partner's scaled matrix stacked, with the values the partners store."""
    spec = load_spec(spec_path)
    return stored_values(np.vstack([transform_frame(t, spec).matrix
                                    for t in partner_tables(partitions, spec_path, state_dir)]))


def default_workers() -> int:
    """Partners a simulation computes at a time by default: the cores, at most 2."""
    return min(os.cpu_count() or 1, 2)


def simulate(partitions: Sequence[Partition | PartnerFile], *, spec_path: Path, out_dir: Path,
             state_dir: Path, run_config: Mapping[str, Any], policy: Path | None = None,
             seed: int | None = 0, evaluate: bool = True, capture: Path | None = None,
             on_round: Callable[[str], None] | None = None,
             workers: int | None = None, seed_file: Path | None = None) -> SimulationResult:
    """Simulate a federation of ``len(partitions)`` partners and write model, metrics, report.

    Parameters
    ----------
    partitions : sequence of Partition or PartnerFile
        One table per partner (one row per customer), in memory or as a file.
    spec_path : Path
        The federation's feature contract.
    out_dir, state_dir : Path
        Outputs (model, metrics, report, federation ledger); partners' files and ledgers.
    run_config : mapping
        Run parameters (``k``, ``epsilon``, ``delta``, ``rounds``, ...; see ``RunConfig``).
    policy : Path, optional
        A partner policy file applied to every simulated partner.
    seed : int or None
        Seeds the simulation (candidates and partners' noise); None draws noise from OS entropy.
    evaluate : bool
        Compare with centralized scikit-learn on the pooled data (in-memory partitions only).
    capture : Path, optional
        Wire audit: every message each partner sends is written under ``capture/<partner>``.
    on_round : callable, optional
        Called with a message after every round (progress display).
    workers : int, optional
        Partners computed at a time (Ray actors, one CPU each); default: the machine's
        cores, at most 2.
    seed_file : Path, optional
        Lookalike: the seed owner's file of pseudonymised ids (its node config ``seed-file``).
    """
    if len(partitions) < 1:
        raise ContractError("A simulation needs at least one partner.")
    if evaluate and any(isinstance(p, PartnerFile) for p in partitions):
        raise ContractError("Evaluation pools the partners' tables in memory; give Partition "
                            "tables, or evaluate=False for partners given as files.")
    from flwr.simulation import run_simulation

    cfg = RunConfig.from_mapping({**dict(run_config), "spec": str(spec_path),  # fail fast
                                  "expected-partners": len(partitions)})
    if len(partitions) < cfg.min_partners:
        raise ContractError(f"A federation needs at least min-partners={cfg.min_partners} "
                            f"partners; this simulation has {len(partitions)}. Give more "
                            "partners (or a partition column with more values).")
    ensure_folder(out_dir, "output folder")
    ensure_folder(state_dir, "state folder")
    _quiet_flower()
    shorten_simulation_dispatch()  # instructions reach the virtual partners within 20 ms
    nodes = _prepare_partners(partitions, spec_path=spec_path, state_dir=state_dir,
                              policy=policy, seed=seed, capture=capture)
    if cfg.task == "lookalike":
        check_seed_partner(cfg, nodes, seed_file)
    preflight(nodes, cfg)
    if cfg.noise == "secagg":
        trust_each_other({n["partner-name"]: Path(n["state-dir"]) for n in nodes.values()})
    overrides = {**dict(run_config), "spec": str(spec_path), "out-dir": str(out_dir),
                 "expected-partners": len(partitions)}
    if seed is not None:
        overrides["seed"] = seed
    handler = RoundHandler(on_round) if on_round else None
    server_log = logging.getLogger("fedprofile.server")
    if handler:
        server_log.addHandler(handler)
    server_log.setLevel(logging.INFO)
    start = time.perf_counter()
    try:
        run_simulation(server_app=build_server_app(overrides),
                       client_app=build_client_app(nodes), num_supernodes=len(partitions),
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": workers or default_workers(),
                                                     "log_to_driver": False}})
    finally:
        if handler:
            server_log.removeHandler(handler)
    wall = time.perf_counter() - start
    if run_config.get("task") == "overlap":
        doc = read_overlap(out_dir)
        parts = [p for p in partitions if isinstance(p, Partition)]
        known = evaluate and len(parts) == len(partitions)
        metrics = overlap_metrics(doc, partner_tables(parts, spec_path, state_dir)
                                  if known else None, parts if known else None, wall, out_dir)
        return SimulationResult(out_dir=out_dir, model=doc, metrics=metrics)
    if cfg.task == "lookalike":
        parts = [p for p in partitions if isinstance(p, Partition)]
        known = evaluate and len(parts) == len(partitions)
        lookalike, metrics = lookalike_metrics(
            out_dir, nodes, partner_tables(parts, spec_path, state_dir) if known else None,
            parts if known else None, wall, seed_file)
        return SimulationResult(out_dir=out_dir, model=lookalike, metrics=metrics)
    folders = ([out_dir / "segments", out_dir / "response"]
               if run_config.get("task") == "pipeline" else [out_dir])
    quality_files = {node["partner-name"]: Path(node["state-dir"]) / "data_quality.json"
                     for node in nodes.values()}
    suggestions = tuple(category_suggestions(quality_files))
    results = []
    for folder in folders:
        model_path = folder / "model.json"
        if not model_path.is_file():
            raise ContractError(f"The simulation ended without a model in {folder}; see the "
                                "log above for the partners' replies.")
        model = load_model(model_path)
        metrics = _metrics(model, partitions, spec_path, state_dir, wall, seed, evaluate)
        metrics["data_quality"] = quality_summary(quality_files)
        metrics["warnings"] = _warnings(metrics, model)
        write_outputs(model, metrics, folder)
        results.append(SimulationResult(out_dir=folder, model=model, metrics=metrics,
                                        suggestions=suggestions))
    return results[-1] if len(results) == 1 else replace(results[-1], stages=tuple(results))


def preflight(nodes: Mapping[int, Mapping[str, Any]], cfg: RunConfig) -> int:
    """Every simulated partner's local checks, before Flower starts; the pooled customers.

    Each partner is built from the node config its virtual SuperNode gets, prepares its
    matrix (cached for the run) and runs :func:`fedprofile.client.checks.check_ready` and
    :func:`~fedprofile.client.checks.budget_problem`, so a bad file, policy, target, ``k``
    or a budget the run would break fails in seconds, before any release or ledger entry.
    Identical reasons are reported once with the partners they concern.

    A partner that is only *not ready* (``k`` segments of ``min_segment_size`` customers
    it cannot fill, a target it cannot model) leaves the run at ``query.profile``, as in a
    deployment: the run goes on, with a warning naming it, while ``min_partners`` remain.

    Raises
    ------
    DataError
        If a partner cannot serve the run for another reason (its data, policy, budget), or
        fewer than ``min_partners`` partners could.
    """
    kmeans = cfg.task in ("segments", "pipeline")
    target = cfg.target if cfg.task in ("ridge", "logistic", "pipeline") else None
    problems: dict[str, str] = {}
    not_ready: dict[str, int] = {}  # partners that would only leave the run, with customers
    hints: list[str] = []
    customers = 0
    for pid, node in nodes.items():
        name = str(node["partner-name"])
        try:
            site = PartnerSite.from_node_config(
                {"partition-id": pid, "num-partitions": len(nodes)}, nodes)
            _ = site.policy  # a policy file that cannot be read
            held = len(site.matrix())
            customers += held
            try:
                check_ready(site, k=cfg.fewest_segments if kmeans else None, target=target,
                            min_segment_size=max(cfg.min_segment_size,
                                                 site.policy.min_segment_size))
            except NotReadyError:
                not_ready[name] = held  # (a seed audience that is not ready stops the run)
                raise
            if cfg.task == "lookalike":
                check_seed(site, seed_audience(cfg))
            budget = budget_problem(site, epsilon=cfg.epsilon, delta=cfg.delta,
                                    noise=cfg.noise)
            if budget:
                problems[name] = budget
        except NotReadyError as exc:
            problems[name] = str(exc)
            hints.append(f"{name}: {exc.hint}.")
        except FedprofileError as exc:
            problems[name] = str(exc).replace(str(node["data-path"]), "<data-path>")
    details = f" Local details: {' '.join(hints)}" if hints else ""
    reasons = group_reasons(problems, total=len(nodes)).rstrip(".")
    staying = len(nodes) - len(problems)
    if problems and set(problems) == set(not_ready) and staying >= cfg.min_partners:
        # as in a deployment: a partner that cannot serve refuses at query.profile, and
        # the run goes on with the others (nothing of the refusing partner is released)
        log.warning("Leaving the run at query.profile: %s. The run goes on with %d "
                    "partners.%s", reasons, staying, details)
        return customers - sum(not_ready.values())
    if problems:  # (every partner filling k segments, the pooled customers do too)
        raise DataError("The partners cannot serve this run; nothing was released: "
                        f"{reasons}.{details}")
    return customers


def _warnings(metrics: Mapping[str, Any], model: SegmentModel | ResponseModel) -> list[str]:
    """Plain warnings of a finished run: data quality over 5 %, suppressed segments."""
    out = quality_warnings(metrics.get("data_quality") or {})
    if isinstance(model, SegmentModel) and model.suppressed_.any():
        out.append(f"{int(model.suppressed_.sum())} of {model.k} segments suppressed (noisy "
                   f"size under the minimum of {model.min_segment_size} customers); lower --k "
                   "or --min-segment-size, or give more customers.")
    return out


def load_model(path: Path) -> SegmentModel | ResponseModel:
    """Load a segment or response model by its declared format."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("format") == RESPONSE_FORMAT:
        return ResponseModel.load(path)
    return SegmentModel.load(path)


def _response_designs(model: ResponseModel, partitions: list[Partition], spec_path: Path,
                      state_dir: Path) -> list[DesignData]:
    centers = model.segment_centers if len(model.segment_centers) else None
    return [design_data(table, model.spec, model.target, segment_centers=centers,
                        holdout=float(model.params["holdout"]), seed=int(model.params["seed"]),
                        source=p.name)
            for table, p in zip(partner_tables(partitions, spec_path, state_dir), partitions,
                                strict=True)]


def _metrics(model: SegmentModel | ResponseModel, partitions: Sequence[Partition | PartnerFile],
             spec_path: Path, state_dir: Path, wall: float, seed: int | None,
             evaluate: bool) -> dict[str, Any]:
    eps = model.privacy["epsilon_spent"]
    metrics: dict[str, Any] = {
        "privacy": {"epsilon_spent": None if eps == "inf" else eps,
                    "epsilon_target": model.privacy["epsilon_target"],
                    "delta": model.privacy["delta"], "non_private": model.privacy["non_private"],
                    "accountant": model.privacy["accountant"],
                    "noise_placement": model.privacy.get("noise_placement", "partner")},
        "n_partners": len(model.partners), "partners": model.partners,
        "params": model.params, "rounds": model.params.get("rounds"),
        "wall_time_s": round(wall, 3), "evaluation": "simulation"}
    tables = [p for p in partitions if isinstance(p, Partition)]  # all, when evaluating
    if evaluate:
        if isinstance(model, ResponseModel):
            metrics["response"] = evaluate_response(
                model, _response_designs(model, tables, spec_path, state_dir))
        else:
            pooled = pooled_matrix(tables, spec_path, state_dir)
            metrics["n_customers"] = len(pooled)
            metrics["kmeans"] = evaluate_segments(model, pooled, seed=seed or 0)
    return metrics

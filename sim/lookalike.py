"""Simulation-only evaluation of lookalike runs, and each partner's selection count.

Every partner's "seed vs everyone" design rows are rebuilt exactly as the partner builds
them (same contract, same seeded hold-out); the federated model and a non-private
centralized logistic regression fitted on the pooled training rows are scored on the pooled
held-out rows (held-out seed customers against held-out others). The counts of customers
each partner selected are read from the partners' own output files, which the simulation
can see; none of this is part of the protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fedprofile.config import RunConfig
from fedprofile.contract.lookalike import lookalike_design, read_seed_file, seed_labels
from fedprofile.contract.suggest import did_you_mean
from fedprofile.errors import ContractError
from fedprofile.models.lookalike_model import LookalikeModel
from fedprofile.presets.partition import Partition

__all__ = ["check_seed_partner", "evaluate_lookalike", "lookalike_metrics", "selected_counts",
           "top_decile_lift"]


def top_decile_lift(scores: np.ndarray, labels: np.ndarray) -> float:
    """The positives' share among the top-scored 10 % over their share among all (1: random)."""
    base = float(np.mean(labels))
    if base == 0.0 or len(scores) == 0:
        return float("nan")
    top = np.argsort(-scores, kind="stable")[:max(1, round(len(scores) / 10))]
    return float(np.mean(labels[top]) / base)


def _quality(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    both = 0 < labels.sum() < len(labels)
    return {"auc": float(roc_auc_score(labels, scores)) if both else float("nan"),
            "top_decile_lift": top_decile_lift(scores, labels)}


def evaluate_lookalike(model: LookalikeModel, tables: Sequence[pd.DataFrame],
                       names: Sequence[str], seed_file: Path | None = None) -> dict[str, Any]:
    """Held-out AUC and top-decile lift of the federated model and the centralized one."""
    spec, seed = model.spec, model.seed
    members = read_seed_file(seed_file) if seed.file and seed_file else None
    designs = [lookalike_design(
        table, spec, seed,
        seed_labels(table, seed, members=members) if name == seed.partner else None,
        holdout=float(model.params["holdout"]), holdout_seed=int(model.params["seed"]))
        for table, name in zip(tables, names, strict=True)]
    z_tr = np.vstack([d.z_train for d in designs])
    y_tr = np.concatenate([d.y_train for d in designs])
    z_te = np.vstack([d.z_test for d in designs])
    y_te = np.concatenate([d.y_test for d in designs])
    alpha = float(model.params["alpha"])
    central = LogisticRegression(C=1.0 / max(alpha, 1e-12), max_iter=2000)
    central.fit(z_tr[:, :-1], y_tr)
    owner = designs[list(names).index(seed.partner)]
    return {"federated": _quality(model.decision(z_te), y_te),
            "centralized": _quality(central.decision_function(z_te[:, :-1]), y_te),
            "within_seed_owner": {  # the seed against the seed owner's other customers only
                "federated": _quality(model.decision(owner.z_test), owner.y_test),
                "centralized": _quality(central.decision_function(owner.z_test[:, :-1]),
                                        owner.y_test)},
            "held_out": {"seed": int(y_te.sum()), "others": int(len(y_te) - y_te.sum())},
            "train": {"seed": int(y_tr.sum()), "others": int(len(y_tr) - y_tr.sum())}}


def selected_counts(model: LookalikeModel, nodes: Mapping[int, Mapping[str, Any]]
                    ) -> dict[str, int]:
    """How many customers each simulated partner wrote to its lookalike audience file."""
    out = {}
    for node in nodes.values():
        folder = Path(node.get("output-dir") or Path(str(node["state-dir"])) / "outputs")
        path = folder / f"lookalike-{model.params['run_id']}.parquet"
        if path.is_file():
            out[str(node["partner-name"])] = len(pd.read_parquet(path))
    return out


def lookalike_metrics(out_dir: Path, nodes: Mapping[int, Mapping[str, Any]],
                      tables: Sequence[pd.DataFrame] | None,
                      partitions: Sequence[Partition] | None, wall: float,
                      seed_file: Path | None = None) -> tuple[LookalikeModel, dict[str, Any]]:
    """The written model and its simulation metrics; rewrites the outputs with them."""
    from fedprofile.server.report_lookalike import write_lookalike_outputs

    model = LookalikeModel.load(out_dir / "model.json")
    eps = model.privacy["epsilon_spent"]
    metrics: dict[str, Any] = {
        "privacy": {"epsilon_spent": None if eps == "inf" else eps,
                    "epsilon_target": model.privacy["epsilon_target"],
                    "delta": model.privacy["delta"],
                    "non_private": model.privacy["non_private"],
                    "epsilon_per_partner": model.privacy.get("epsilon_per_partner")},
        "n_partners": len(model.partners), "partners": model.partners,
        "params": model.params, "wall_time_s": round(wall, 3), "evaluation": "simulation",
        "selected": selected_counts(model, nodes)}
    if tables is not None and partitions is not None:
        metrics["lookalike"] = evaluate_lookalike(model, tables, [p.name for p in partitions],
                                                  seed_file)
    write_lookalike_outputs(model, metrics, out_dir)
    return model, metrics


def check_seed_partner(cfg: RunConfig, nodes: MutableMapping[int, dict[str, Any]],
                       seed_file: Path | None) -> None:
    """The seed partner is one of the simulated partners; it gets the seed file, if any.

    Raises
    ------
    ContractError
        If no simulated partner has the seed partner's name, or the seed file and the
        run's ``seed-file`` key disagree.
    """
    names = [str(node["partner-name"]) for node in nodes.values()]
    if cfg.seed_partner not in names:
        raise ContractError(f"The seed partner {cfg.seed_partner!r} is not in this run; the "
                            f"partners are {', '.join(names)}"
                            f"{did_you_mean(cfg.seed_partner, names)}. Nothing was released.")
    if cfg.seed_file != (seed_file is not None):
        raise ContractError("Give the seed file with --seed-file (or 'seed-file = true' with "
                            "the seed owner's node config 'seed-file'), not one without the "
                            "other.")
    for node in nodes.values():
        if seed_file is not None and node["partner-name"] == cfg.seed_partner:
            node["seed-file"] = str(seed_file)

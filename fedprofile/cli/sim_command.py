"""``fedprofile sim``: a whole federated run, simulated on a shipped data set or a table.

Registered on the command line's app by :mod:`fedprofile.cli.commands`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedprofile.cli.common import PRESET_NAMES, console
from fedprofile.cli.common import fail as _fail
from fedprofile.errors import FedprofileError


def _parse_epsilon(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter(f"must be a positive number or 'inf'. Got {text!r}.") from None
    if math.isnan(value) or value <= 0:
        raise typer.BadParameter(f"must be a positive number or 'inf'. Got {text!r}.")
    return value


def _parse_k(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise typer.BadParameter(f"must be an int in [1, 100] or 'auto'. Got {text!r}.") from None
    if not 1 <= value <= 100:
        raise typer.BadParameter(f"must be an int in [1, 100] or 'auto'. Got {text!r}.")
    return value


def sim(
    dataset: Annotated[str | None, typer.Option(
        help=f"A shipped data set: {', '.join(PRESET_NAMES)}.")] = None,
    data: Annotated[str | None, typer.Option(
        help="Any CSV/Parquet file or Parquet folder, one row per customer, or a database "
             "URL without password, with --data-query (instead of --dataset).")] = None,
    data_query: Annotated[str, typer.Option(
        help="With a database --data: a table name or one SELECT query.")] = "",
    spec: Annotated[Path | None, typer.Option(
        help="Feature contract TOML (required with --data).")] = None,
    partition_by: Annotated[str | None, typer.Option(
        help="Partner split: a COLUMN, 'iid', or 'dirichlet:ALPHA:COLUMN'.")] = None,
    partners: Annotated[int | None, typer.Option(min=1, max=1000,
                                                 help="Number of simulated partners.")] = None,
    k: Annotated[str, typer.Option(
        help="Number of segments, or 'auto' to choose it in --k-min..--k-max from the private "
             "start (no extra epsilon).")] = "6",
    k_min: Annotated[int, typer.Option(min=2, max=100, help="Smallest k of --k auto.")] = 2,
    k_max: Annotated[int, typer.Option(min=2, max=100, help="Largest k of --k auto.")] = 10,
    start_from: Annotated[Path | None, typer.Option(
        help="Refresh: start the Lloyd rounds from this published segment model.json "
             "(its k; the whole budget goes to the rounds).")] = None,
    epsilon: Annotated[str, typer.Option(
        help="Target epsilon of the whole run (init included); 'inf' = non-private check."
    )] = "1.0",
    delta: Annotated[float, typer.Option(min=1e-12, max=0.1, help="Target delta.")] = 1e-6,
    rounds: Annotated[int, typer.Option(
        min=0, max=50, help="Lloyd rounds; 0: from the budget (5, 8 or 12; 20 at inf).")] = 0,
    init: Annotated[str, typer.Option(help="Start: 'overcluster' (DP) or 'random'.")
                    ] = "overcluster",
    candidates: Annotated[int, typer.Option(
        min=0, help="Candidates of the over-clustering start (0 = automatic).")] = 0,
    min_segment_size: Annotated[int, typer.Option(
        min=0, help="Suppress segments with a smaller noisy size.")] = 50,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the simulation.")] = 0,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/latest"),
    state_dir: Annotated[Path, typer.Option(
        help="Partners' files, keys and ledgers; successive runs see earlier spend.")
    ] = Path(".fedprofile/sim-state"),
    policy: Annotated[Path | None, typer.Option(
        help="Partner policy TOML applied to every simulated partner.")] = None,
    evaluate: Annotated[bool, typer.Option(
        help="Compare with centralized scikit-learn on the pooled data.")] = True,
    capture: Annotated[Path | None, typer.Option(
        help="Wire audit: write every message a partner sends to this folder.")] = None,
    task: Annotated[str, typer.Option(
        help="What to learn: segments, ridge (value), logistic (conversion), pipeline "
             "(segments, then a segment-aware model of --target, then local scoring), "
             "overlap (PSI counts) or lookalike (audiences like --seed-partner's seed).")
    ] = "segments",
    target: Annotated[str, typer.Option(
        help="Target of ridge/logistic (a \\[target.NAME] of the spec).")] = "",
    alpha: Annotated[float, typer.Option(min=0.0, help="Ridge penalty of response models.")
                     ] = 1.0,
    gd_rounds: Annotated[int, typer.Option(min=1, max=100,
                                           help="Gradient rounds of logistic regression.")] = 3,
    holdout: Annotated[float, typer.Option(min=0.0, max=0.9,
                                           help="Share of customers each partner keeps for "
                                                "testing.")] = 0.2,
    segments: Annotated[Path | None, typer.Option(
        help="A segment model.json: response models use the segment as a feature.")] = None,
    overlap: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of each partner's customers also present at another "
                               "partner (needs an e-mail identity column).")] = 0.0,
    pairs: Annotated[str, typer.Option(
        help="--task overlap: the pairs to count, 'A:B,A:C' by partner name (default: all)."
    )] = "",
    seed_partner: Annotated[str, typer.Option(
        help="--task lookalike: the partner whose seed audience the others look like.")] = "",
    seed_column: Annotated[str, typer.Option(
        help="--task lookalike: the seed is the seed partner's customers whose COLUMN is "
             "true, yes or non-zero.")] = "",
    seed_expr: Annotated[str, typer.Option(
        help="--task lookalike: the seed is the seed partner's customers matching this "
             "expression over its columns, e.g. 'y == \"yes\"'.")] = "",
    seed_file: Annotated[Path | None, typer.Option(
        help="--task lookalike: the seed partner's file of pseudonymised customer ids "
             "(read by that partner only).")] = None,
    lookalike_size: Annotated[int, typer.Option(
        min=0, help="--task lookalike: customers each partner selects (0: no limit).")] = 1000,
    lookalike_threshold: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="--task lookalike: select only customers scoring at least "
                               "this (0: none).")] = 0.0,
    noise: Annotated[str, typer.Option(
        help="Noise placement: 'partner' (each partner adds all the noise), 'secagg' (each "
             "adds a share; the coordinator sees only secure sums) or 'auto' (secagg for a "
             "private segments/ridge/logistic/pipeline run of 3 or more partners, unless a "
             "partner's policy demands partner noise).")
    ] = "auto",
    secagg_dropouts: Annotated[int, typer.Option(
        min=0, help="With --noise secagg: partners that may drop out or collude while every "
                    "sum keeps its planned noise.")] = 0,
) -> None:
    """Simulate a federation on one machine and learn private audience segments."""
    from fedprofile.privacy.policy import load_policy
    from fedprofile.run_defaults import default_noise, default_rounds
    from fedprofile.server.pipeline import stage_epsilon
    from fedprofile.sim.jobs import ensure_folder, prepare_partitions
    from fedprofile.sim.runner import simulate

    eps = _parse_epsilon(epsilon)
    segments_k = _parse_k(k)
    try:
        ensure_folder(out, "--out folder")
        ensure_folder(state_dir, "--state-dir folder")
        if policy is not None:
            load_policy(policy)
        spec_path, parts = prepare_partitions(dataset=dataset, data=data, data_query=data_query,
                                              spec=spec,
                                              partition_by=partition_by, partners=partners,
                                              seed=seed, overlap=overlap)
        console.print(f"Simulating [bold]{len(parts)}[/] partners: "
                      + ", ".join(p.label for p in parts), highlight=False)
        config = {"k": segments_k, "k-min": k_min, "k-max": k_max,
                  "start-from": str(start_from or ""),
                  "epsilon": eps, "delta": delta, "rounds": rounds, "init": init,
                  "candidates": candidates, "min-segment-size": min_segment_size,
                  "task": task, "target": target, "alpha": alpha, "gd-rounds": gd_rounds,
                  "holdout": holdout, "segments": str(segments or ""), "pairs": pairs,
                  "noise": noise, "secagg-dropouts": secagg_dropouts}
        if task == "lookalike":
            config |= {"seed-partner": seed_partner, "seed-column": seed_column,
                       "seed-expr": seed_expr, "seed-file": seed_file is not None,
                       "lookalike-size": lookalike_size,
                       "lookalike-threshold": lookalike_threshold}
        starts = init == "overcluster" and not start_from
        seg_eps = stage_epsilon(eps, delta) if task == "pipeline" else eps
        placement = default_noise(task, eps, len(parts)) if noise == "auto" else noise
        seg_rounds = (rounds or default_rounds(seg_eps, delta=delta, noise=placement,
                                               partners=len(parts), dropouts=secagg_dropouts)
                      ) + (1 if starts else 0)
        total = {"segments": seg_rounds, "ridge": 1, "logistic": 1 + gd_rounds,
                 "pipeline": seg_rounds + 1 + gd_rounds,
                 "overlap": len(parts) * (len(parts) - 1) // 2,
                 "lookalike": 1 + gd_rounds}.get(task, 1)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total} rounds"), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            bar = progress.add_task(f"Federated {task}", total=total)
            result = simulate(
                parts, spec_path=spec_path, out_dir=out, state_dir=state_dir,
                run_config=config, policy=policy, seed=seed, evaluate=evaluate,
                capture=capture, seed_file=seed_file,
                on_round=lambda msg: progress.update(bar, advance=1, description=msg))
    except FedprofileError as exc:
        raise _fail(exc) from None
    if task == "overlap":
        from fedprofile.cli.overlap_print import print_overlap
        print_overlap(result.model, result.metrics, result.report)  # type: ignore[arg-type]
        return
    if task == "lookalike":
        from fedprofile.cli.lookalike_print import print_lookalike
        print_lookalike(result.metrics, result.report, state_dir)
        return
    from fedprofile.models.segment_model import SegmentModel

    for stage in result.stages or (result,):
        _print_summary(stage.metrics, stage.report,
                       segments=isinstance(stage.model, SegmentModel))
    _print_quality(result.metrics)
    for suggestion in result.suggestions:
        console.print(f"[bold yellow]Category:[/] {suggestion}", highlight=False)
    if result.stages:
        console.print(f"The whole pipeline spends epsilon = {eps:g} (both stages composed "
                      "exactly); the scoring stage sends nothing.", highlight=False)
        console.print("Each partner's local scores: "
                      f"{state_dir}/partners/*/outputs/scores-*.parquet", highlight=False)


def _print_quality(metrics: dict[str, Any]) -> None:
    """Each partner's data-quality counts and the run's warnings."""
    quality = metrics.get("data_quality") or {}
    if quality:
        table = Table(title="Data quality at each partner (local counts, never sent)")
        for col in ("partner", "rows", "customers", "dropped", "missing", "unparseable",
                    "clipped", "(other)"):
            table.add_column(col, justify="left" if col == "partner" else "right")
        for name, q in quality.items():
            table.add_row(name, *(f"{q.get(key, 0):,}" for key in (
                "rows", "customers", "dropped", "missing", "unparseable", "clipped",
                "other_category")))
        console.print(table)
    for warning in metrics.get("warnings") or []:
        console.print(f"[bold yellow]Warning:[/] {warning}", highlight=False)


_PLACEMENTS = {"partner": "by each partner, in full",
               "secagg": "a share by each partner; the coordinator sees only secure sums"}


def _print_summary(metrics: dict[str, Any], report: Path, *, segments: bool) -> None:
    title = "Segmentation" if segments else "Response model"
    table = Table(title=f"{title} run", show_header=False)
    privacy = metrics["privacy"]
    eps = privacy.get("epsilon_spent")
    table.add_row("privacy", "NOT PRIVATE (epsilon = inf)" if privacy["non_private"]
                  else f"epsilon = {eps:.4f}, delta = {privacy['delta']:g}")
    table.add_row("partners", str(metrics["n_partners"]))
    if not privacy["non_private"]:
        table.add_row("noise added", _PLACEMENTS.get(privacy.get("noise_placement", ""),
                                                     str(privacy.get("noise_placement"))))
    resp = metrics.get("response")
    if resp:
        scaled = " (on the scaled target)" if "r2" in resp["federated"] else ""
        for key in ("r2", "rmse", "auc", "log_loss"):
            if key in resp["federated"]:
                table.add_row(f"{key} federated / centralized{scaled}",
                              f"{resp['federated'][key]:.4f} / {resp['centralized'][key]:.4f}")
    km = metrics.get("kmeans")
    if km:
        table.add_row("cost / centralized", f"{km['cost_ratio']:.4f}")
        table.add_row("ARI vs centralized", f"{km['ari']:.3f}")
        table.add_row("suppressed segments", str(km["suppressed_segments"]))
    table.add_row("wall time", f"{metrics['wall_time_s']:.1f} s")
    console.print(table)
    console.print(f"Report: [bold]{report}[/]", highlight=False)

"""``fedprofile bench``: the benchmarks whose tables the README and BENCHMARKS.md quote."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from fedprofile.cli_common import PRESET_NAMES, console
from fedprofile.cli_common import fail as _fail
from fedprofile.errors import FedprofileError

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks whose tables the README quotes.")


@bench_app.command("utility")
def bench_utility(
    dataset: Annotated[str, typer.Option(help=f"One of {', '.join(PRESET_NAMES)}.")] = "bank",
    partners: Annotated[int | None, typer.Option(min=1, max=1000, help="Partners.")] = None,
    k: Annotated[int, typer.Option(min=1, max=100, help="Number of segments.")] = 6,
    seeds: Annotated[int, typer.Option(min=1, max=100, help="Seeds per epsilon.")] = 3,
    rounds: Annotated[int, typer.Option(min=1, max=50, help="Lloyd rounds.")] = 3,
    task: Annotated[str, typer.Option(help="segments, ridge or logistic.")] = "segments",
    target: Annotated[str, typer.Option(help="Target of ridge/logistic.")] = "",
    gd_rounds: Annotated[int, typer.Option(min=1, max=100, help="Logistic rounds.")] = 3,
) -> None:
    """Quality against centralized scikit-learn for epsilon in 0.5..8 and inf.

    Segments: k-means cost ratio and ARI. Ridge: held-out R². Logistic: held-out AUC.
    """
    from fedprofile.contract import load_spec
    from fedprofile.features import transform_frame
    from sim.bench import EPSILONS, kmeans_baselines, kmeans_utility
    from sim.datasets import load_preset

    if task != "segments":
        _bench_response(dataset, partners, task, target, seeds, gd_rounds)
        return
    try:
        preset = load_preset(dataset)
        spec = load_spec(preset.spec_path)
        parts = preset.partitions(partners)
        mats = [transform_frame(p.frame, spec, source=p.name).matrix for p in parts]
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task(f"{dataset}: {len(parts)} partners, k={k}",
                                     total=len(EPSILONS) * seeds)
            rows = kmeans_utility(mats, spec, k=k, seeds=seeds, rounds=rounds,
                                  progress=lambda: progress.advance(task))
    except FedprofileError as exc:
        raise _fail(exc) from None
    typer.echo(f"| epsilon | cost / centralized (mean ± sd, {seeds} seeds) | ARI | "
               "suppressed segments |")
    typer.echo("|---|---|---|---|")
    for r in rows:
        typer.echo(f"| {r.epsilon:g} | {r.ratio_mean:.4f} ± {r.ratio_sd:.4f} | "
                   f"{r.ari_mean:.3f} | {r.suppressed_mean:.1f} |")
    base = kmeans_baselines(mats, k=k)
    typer.echo(f"Non-private baselines: averaged local centres {base.averaged_local_centres:.4f}"
               f"; partners alone {base.partners_alone_mean:.4f} (mean), "
               f"{base.partners_alone_worst:.4f} (worst)")


@bench_app.command("speed")
def bench_speed(
    dataset: Annotated[str, typer.Option(help=f"One of {', '.join(PRESET_NAMES)}.")] = "bank",
    partners: Annotated[str, typer.Option(help="Comma-separated partner counts.")] = "5",
    customers: Annotated[str, typer.Option(
        help="Comma-separated customer counts (0 = the data set as shipped; more rows are a "
             "jittered scale-up of real rows).")] = "0",
    k: Annotated[int, typer.Option(min=1, max=100, help="Number of segments.")] = 6,
) -> None:
    """Wall time on Flower vs in process, per-round times, bytes sent and peak memory."""
    from sim.bench_speed import speed_run

    rows = []
    try:
        for n in (int(x) for x in customers.split(",")):
            for m in (int(x) for x in partners.split(",")):
                with console.status(f"{dataset}: {m} partners, {n or 'all'} customers"):
                    rows.append(speed_run(dataset=dataset, partners=m, customers=n, k=k))
    except (FedprofileError, ValueError) as exc:
        raise _fail(exc) from None
    typer.echo("| partners | customers | Flower wall (s) | in-process (s) | ratio | "
               "round times (s) | bytes / partner / round | peak RSS (MB) |")
    typer.echo("|---|---|---|---|---|---|---|---|")
    for r in rows:
        rounds = " ".join(f"{s:.1f}" for s in r.rounds_s)
        typer.echo(f"| {r.partners} | {r.customers:,} | {r.flower_s:.1f} | "
                   f"{r.inprocess_s:.1f} | {r.overhead:.1f} | {rounds} | "
                   f"{r.bytes_per_partner_round:,.0f} | {r.peak_rss_mb:,.0f} |")


def _bench_response(dataset: str, partners: int | None, task: str, target: str, seeds: int,
                    gd_rounds: int) -> None:
    from fedprofile.contract import load_spec
    from fedprofile.design import design_data, design_norm_bound, target_bound
    from sim.bench import EPSILONS, response_utility
    from sim.datasets import load_preset

    try:
        if task not in ("ridge", "logistic") or not target:
            raise FedprofileError("Give --task ridge|logistic and a --target of the spec.")
        preset = load_preset(dataset)
        spec = load_spec(preset.spec_path)
        designs = [design_data(p.frame, spec, target, segment_centers=None, holdout=0.2,
                               seed=0, source=p.name) for p in preset.partitions(partners)]
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            bar = progress.add_task(f"{dataset}: {len(designs)} partners, {task} {target}",
                                    total=len(EPSILONS) * seeds)
            rows = response_utility(designs, task=task, rounds=gd_rounds,
                                    norm_bound=design_norm_bound(spec, target,
                                                                 segment_aware=False),
                                    target_bound=target_bound(spec, target), seeds=seeds,
                                    progress=lambda: progress.advance(bar))
    except FedprofileError as exc:
        raise _fail(exc) from None
    metric = rows[0].metric
    typer.echo(f"| epsilon | federated {metric} (mean ± sd, {seeds} seeds) | centralized | gap |")
    typer.echo("|---|---|---|---|")
    for r in rows:
        typer.echo(f"| {r.epsilon:g} | {r.federated_mean:.4f} ± {r.federated_sd:.4f} | "
                   f"{r.centralized:.4f} | {r.centralized - r.federated_mean:+.4f} |")

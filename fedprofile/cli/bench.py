"""``fedprofile bench``: the benchmarks whose tables the README and BENCHMARKS.md quote."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast, get_args

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from fedprofile.cli.common import PRESET_NAMES, CliApp, console
from fedprofile.cli.common import fail as _fail
from fedprofile.config import InitMethod
from fedprofile.errors import ContractError, FedprofileError

if TYPE_CHECKING:
    from fedprofile.sim.inprocess import NoisePlacement

bench_app = CliApp(no_args_is_help=True, help="Benchmarks whose tables the README quotes.")


@bench_app.command("utility")
def bench_utility(
    dataset: Annotated[str, typer.Option(help=f"One of {', '.join(PRESET_NAMES)}.")] = "bank",
    partners: Annotated[str, typer.Option(
        help="Comma-separated partner counts, e.g. '5,10' (default: the preset's split).")] = "",
    k: Annotated[int, typer.Option(min=1, max=100, help="Number of segments.")] = 6,
    seeds: Annotated[int, typer.Option(min=1, max=100, help="Seeds per epsilon.")] = 3,
    rounds: Annotated[int, typer.Option(
        min=0, max=50,
        help="Lloyd rounds; 0: as a run (5, 8 or 12 from the budget; 20 at inf).")] = 0,
    task: Annotated[str, typer.Option(help="segments, ridge or logistic.")] = "segments",
    target: Annotated[str, typer.Option(help="Target of ridge/logistic.")] = "",
    gd_rounds: Annotated[int, typer.Option(min=1, max=100, help="Logistic rounds.")] = 3,
    init: Annotated[str, typer.Option(
        help="Comma-separated k-means starts (default: all the project offers).")] = "",
    epsilons: Annotated[str, typer.Option(
        help="Comma-separated epsilons, 'inf' for no noise (default: 0.5,1,2,4,8,inf).")] = "",
    plot: Annotated[Path | None, typer.Option(
        help="Write a PNG of utility against epsilon to this path.")] = None,
    noise: Annotated[str, typer.Option(
        help="Noise placement: 'partner' (each partner adds the full noise) or 'secagg' "
             "(Skellam shares summed by secure aggregation, run in process).")] = "partner",
) -> None:
    """Quality against centralized scikit-learn for epsilon in 0.5..8 and inf.

    Segments: k-means cost ratio and ARI per start and partner count, with non-private
    baselines. Ridge: held-out R². Logistic: held-out AUC.
    """
    from fedprofile.sim.bench import (
        EPSILONS,
        INITS,
        response_benchmark,
        response_table,
        segment_benchmark,
        segment_table,
    )
    from fedprofile.sim.bench_plots import plot_against_epsilon, response_panels, segment_panels

    try:
        _check_plot_path(plot)
        counts = _partner_counts(partners)
        eps = _epsilon_list(epsilons) if epsilons else EPSILONS
        inits = _init_list(init, INITS) if init else INITS
        placement = _placement(noise)
        if task not in ("segments", "ridge", "logistic"):
            raise ContractError(f"--task must be segments, ridge or logistic. Got {task!r}.")
        runs = len(counts) * len(eps) * seeds * (len(inits) if task == "segments" else 1)
        what = f"k={k}" if task == "segments" else f"{task} {target}"
        with _progress(f"{dataset}: {what}", runs) as advance:
            if task == "segments":
                rows, baselines = segment_benchmark(dataset, k=k, partner_counts=counts,
                                                    inits=inits, epsilons=eps, seeds=seeds,
                                                    rounds=rounds, noise=placement,
                                                    progress=advance)
            else:
                responses = response_benchmark(dataset, task=task, target=target,
                                               partner_counts=counts, epsilons=eps,
                                               seeds=seeds, rounds=gd_rounds, noise=placement,
                                               progress=advance)
    except FedprofileError as exc:
        raise _fail(exc) from None
    typer.echo(f"Noise placement: {noise}")
    if task == "segments":
        typer.echo(segment_table(rows, baselines))
        panels, ylabel = segment_panels(rows, baselines), "k-means cost / centralized"
        title = f"{dataset}, k = {k}: segment cost against ε ({seeds} seeds)"
    else:
        typer.echo(response_table(responses))
        metric = responses[0].metric
        panels, ylabel = response_panels(responses), f"held-out {metric}"
        title = f"{dataset}: {task} {target}, held-out {metric} against ε ({seeds} seeds)"
    if plot is not None:
        _write_plot(plot, lambda: plot_against_epsilon(plot, panels, ylabel=ylabel, title=title))


def _placement(text: str) -> NoisePlacement:
    """A ``--noise`` value, checked."""
    from fedprofile.sim.inprocess import NoisePlacement

    value = text.strip()
    if value not in get_args(NoisePlacement):
        raise ContractError(f"--noise must be partner or secagg. Got {text!r}.")
    return cast(NoisePlacement, value)


@bench_app.command("speed")
def bench_speed(
    dataset: Annotated[str, typer.Option(help=f"One of {', '.join(PRESET_NAMES)}.")] = "bank",
    partners: Annotated[str, typer.Option(help="Comma-separated partner counts.")] = "5",
    customers: Annotated[str, typer.Option(
        help="Comma-separated customer counts (0 = the data set as shipped; more rows are a "
             "jittered scale-up of real rows).")] = "0",
    k: Annotated[int, typer.Option(min=1, max=100, help="Number of segments.")] = 6,
    workers: Annotated[int | None, typer.Option(
        min=1, max=64, help="Partners Flower computes at a time (default: cores, at most 2); "
                            "the in-process reference computes one at a time with as many "
                            "BLAS threads.")] = None,
    plot: Annotated[Path | None, typer.Option(
        help="Also draw wall time and peak memory against customers and partners (PNG).")
    ] = None,
    noise: Annotated[str, typer.Option(
        help="Comma-separated noise placements to time: partner, secagg.")] = "partner",
) -> None:
    """Wall time on Flower vs in process, per stage and round, bytes sent and peak memory."""
    from fedprofile.sim.bench_speed import plot_speed, speed_run, speed_table

    rows = []
    try:
        _check_plot_path(plot)
        placements = [_placement(x) for x in noise.split(",")]
        for n in (int(x) for x in customers.split(",")):
            for m in (int(x) for x in partners.split(",")):
                for placement in placements:
                    with console.status(f"{dataset}: {m} partners, {n or 'all'} customers, "
                                        f"{placement} noise"):
                        rows.append(speed_run(dataset=dataset, partners=m, customers=n, k=k,
                                              workers=workers, noise=placement))
    except (FedprofileError, ValueError) as exc:
        raise _fail(exc) from None
    typer.echo(speed_table(rows))
    if plot is not None:
        _write_plot(plot, lambda: plot_speed(rows, plot))


@bench_app.command("sources")
def bench_sources(
    customers: Annotated[str, typer.Option(
        help="Comma-separated customer counts (a jittered scale-up of the bank rows).")
    ] = "1000000",
    sources: Annotated[str, typer.Option(
        help="Comma-separated sources read after the CSV: parquet, parquet-dir, postgresql.")
    ] = "parquet,parquet-dir,postgresql",
    postgres: Annotated[str | None, typer.Option(
        help="A PostgreSQL database URL without password (password in "
             "FEDPROFILE_DB_PASSWORD) the benchmark may load its table into.")] = None,
    folder: Annotated[Path, typer.Option(
        help="Scratch folder for the data and the caches (several GB at 10 million).")
    ] = Path(".fedprofile/bench-sources"),
    seed: Annotated[int, typer.Option(min=0, help="Seed of the synthetic rows.")] = 0,
) -> None:
    """Rows per second and peak memory reading a partner table into the matrix cache.

    The same rows as a CSV file (the reference), a Parquet file, a Parquet folder and a
    PostgreSQL table, each read by the partner's own code in a fresh process.
    """
    from fedprofile.sim.bench_sources import source_table, sources_run

    try:
        counts = [int(x) for x in customers.split(",")]
    except ValueError:
        raise _fail(ContractError("--customers must be comma-separated integers, e.g. "
                                  f"'1000000,10000000'. Got {customers!r}.")) from None
    rows = []
    try:
        kinds = ["csv", *(k for k in _split(sources, "--sources") if k != "csv")]
        if not all(n >= 1 for n in counts):
            raise ContractError(f"--customers must be positive integers. Got {customers!r}.")
        for n in counts:
            with console.status(f"{n:,} customers") as status:
                rows += sources_run(folder / str(n), customers=n, kinds=kinds,
                                    postgres=postgres, seed=seed,
                                    progress=lambda msg: status.update(msg))
    except FedprofileError as exc:
        raise _fail(exc) from None
    typer.echo(source_table(rows))


def _check_plot_path(path: Path | None) -> None:
    """Refuse a plot path that cannot be written before any benchmark runs."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FedprofileError(f"Cannot write the plot {str(path)!r}: "
                              f"{exc.strerror or exc}.") from None
    if not os.access(path.parent, os.W_OK) or path.is_dir():
        raise FedprofileError(f"Cannot write the plot {str(path)!r}: not a writable file path.")


def _write_plot(path: Path, draw: Callable[[], Path]) -> None:
    """Draw a plot; a path that cannot be written, or too few points, is a clear error."""
    try:
        typer.echo(f"Plot: {draw()}")
    except OSError as exc:
        raise _fail(FedprofileError(f"Cannot write the plot {str(path)!r}: "
                                    f"{exc.strerror or exc}.")) from None
    except ValueError as exc:
        raise _fail(exc) from None


@contextmanager
def _progress(description: str, total: int) -> Iterator[Callable[[], None]]:
    """A rich progress bar; yields the function that advances it by one run."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task(description, total=total)
        yield lambda: progress.advance(bar)


def _split(text: str, option: str) -> list[str]:
    """Non-empty comma-separated items of an option, or a ContractError naming it."""
    items = [x.strip() for x in text.split(",")]
    if not all(items):
        raise ContractError(f"{option} must be a comma-separated list without empty items. "
                            f"Got {text!r}.")
    return items


def _partner_counts(text: str) -> list[int | None]:
    """Partner counts of ``--partners``; empty text means the preset's default split."""
    if not text:
        return [None]
    items = _split(text, "--partners")
    if not all(x.isdigit() and 1 <= int(x) <= 1000 for x in items):
        raise ContractError("--partners must be comma-separated integers in [1, 1000], "
                            f"e.g. '5,10'. Got {text!r}.")
    return [int(x) for x in dict.fromkeys(items)]


def _epsilon_list(text: str) -> list[float]:
    """Epsilons of ``--epsilons``: positive numbers or 'inf'."""
    items = _split(text, "--epsilons")
    try:
        values = [float(x) for x in items]
    except ValueError:
        values = []
    if not values or not all(v > 0 for v in values):
        raise ContractError("--epsilons must be comma-separated positive numbers or 'inf', "
                            f"e.g. '1,inf'. Got {text!r}.")
    return values


def _init_list(text: str, offered: Sequence[InitMethod]) -> list[InitMethod]:
    """k-means starts of ``--init``, each one the project offers."""
    items = _split(text, "--init")
    unknown = [x for x in items if x not in offered]
    if unknown:
        raise ContractError(f"--init must be a comma-separated list of {', '.join(offered)}. "
                            f"Got unknown {', '.join(map(repr, unknown))}.")
    return [method for method in offered if method in items]

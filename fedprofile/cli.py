"""The ``fedprofile`` command line: a thin Typer layer over the library."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedprofile.errors import FedprofileError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Privacy-first federated profiling: DP audience segments on Flower.")
console = Console()
err_console = Console(stderr=True)

PRESET_NAMES = ("bank", "retail", "retail-transactions", "retail-holdout", "hillstrom")


def _fail(exc: Exception) -> typer.Exit:
    err_console.print("[bold red]Error:[/]", end=" ")
    err_console.print(str(exc), markup=False, highlight=False)
    return typer.Exit(code=2)


def _parse_epsilon(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter(f"must be a positive number or 'inf'. Got {text!r}.") from None
    if math.isnan(value) or value <= 0:
        raise typer.BadParameter(f"must be a positive number or 'inf'. Got {text!r}.")
    return value


@app.command()
def sim(
    dataset: Annotated[str | None, typer.Option(
        help=f"A shipped data set: {', '.join(PRESET_NAMES)}.")] = None,
    data: Annotated[Path | None, typer.Option(
        help="Any CSV/Parquet file, one row per customer (instead of --dataset).")] = None,
    spec: Annotated[Path | None, typer.Option(
        help="Feature contract TOML (required with --data).")] = None,
    partition_by: Annotated[str | None, typer.Option(
        help="Partner split: a COLUMN, 'iid', or 'dirichlet:ALPHA:COLUMN'.")] = None,
    partners: Annotated[int | None, typer.Option(min=1, max=1000,
                                                 help="Number of simulated partners.")] = None,
    k: Annotated[int, typer.Option(min=1, max=100, help="Number of segments.")] = 6,
    epsilon: Annotated[str, typer.Option(
        help="Target epsilon of the whole run (init included); 'inf' = non-private check."
    )] = "1.0",
    delta: Annotated[float, typer.Option(min=1e-12, max=0.1, help="Target delta.")] = 1e-6,
    rounds: Annotated[int, typer.Option(min=1, max=50, help="Lloyd rounds.")] = 3,
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
        help="What to learn: segments, ridge (value), logistic (conversion), or pipeline "
             "(segments, then a segment-aware model of --target, then local scoring).")
    ] = "segments",
    target: Annotated[str, typer.Option(help="Target of ridge/logistic ([target.NAME]).")
                      ] = "",
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
) -> None:
    """Simulate a federation on one machine and learn private audience segments."""
    from sim.jobs import prepare_partitions
    from sim.runner import simulate

    eps = _parse_epsilon(epsilon)
    try:
        spec_path, parts = prepare_partitions(dataset=dataset, data=data, spec=spec,
                                              partition_by=partition_by, partners=partners,
                                              seed=seed, overlap=overlap)
        console.print(f"Simulating [bold]{len(parts)}[/] partners: "
                      + ", ".join(f"{p.name} ({len(p.frame):,})" for p in parts), highlight=False)
        config = {"k": k, "epsilon": eps, "delta": delta, "rounds": rounds, "init": init,
                  "candidates": candidates, "min-segment-size": min_segment_size,
                  "task": task, "target": target, "alpha": alpha, "gd-rounds": gd_rounds,
                  "holdout": holdout, "segments": str(segments or "")}
        seg_rounds = rounds + (1 if init == "overcluster" else 0)
        total = {"segments": seg_rounds, "ridge": 1, "logistic": 1 + gd_rounds,
                 "pipeline": seg_rounds + 1 + gd_rounds}.get(task, 1)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total} rounds"), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            bar = progress.add_task(f"Federated {task}", total=total)
            result = simulate(
                parts, spec_path=spec_path, out_dir=out, state_dir=state_dir,
                run_config=config, policy=policy, seed=seed, evaluate=evaluate,
                capture=capture,
                on_round=lambda msg: progress.update(bar, advance=1, description=msg))
    except FedprofileError as exc:
        raise _fail(exc) from None
    for stage in result.stages or (result,):
        _print_summary(stage.metrics, stage.report)
    if result.stages:
        console.print(f"The whole pipeline spends epsilon = {eps:g} (both stages composed "
                      "exactly); the scoring stage sends nothing.", highlight=False)
        console.print("Each partner's local scores: "
                      f"{state_dir}/partners/*/outputs/scores-*.parquet", highlight=False)


def _print_summary(metrics: dict, report: Path) -> None:  # type: ignore[type-arg]
    title = "Segmentation" if metrics.get("kmeans") else "Response model"
    table = Table(title=f"{title} run", show_header=False)
    privacy = metrics["privacy"]
    eps = privacy.get("epsilon_spent")
    table.add_row("privacy", "NOT PRIVATE (epsilon = inf)" if privacy["non_private"]
                  else f"epsilon = {eps:.4f}, delta = {privacy['delta']:g}")
    table.add_row("partners", str(metrics["n_partners"]))
    resp = metrics.get("response")
    if resp:
        for key in ("r2", "rmse", "auc", "log_loss"):
            if key in resp["federated"]:
                table.add_row(f"{key} federated / centralized",
                              f"{resp['federated'][key]:.4f} / {resp['centralized'][key]:.4f}")
    km = metrics.get("kmeans")
    if km:
        table.add_row("cost / centralized", f"{km['cost_ratio']:.4f}")
        table.add_row("ARI vs centralized", f"{km['ari']:.3f}")
        table.add_row("suppressed segments", str(km["suppressed_segments"]))
    table.add_row("wall time", f"{metrics['wall_time_s']:.1f} s")
    console.print(table)
    console.print(f"Report: [bold]{report}[/]", highlight=False)


@app.command()
def keygen(
    out: Annotated[Path, typer.Option(help="Key file to write (mode 0600).")],
    key_id: Annotated[str | None, typer.Option(help="Key id (default: random).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing key file.")] = False,
) -> None:
    """Create a per-federation pseudonymisation key (share it with partners only)."""
    from privacy.keys import generate_key, write_key

    try:
        path = write_key(generate_key(key_id=key_id), out, overwrite=overwrite)
    except FedprofileError as exc:
        raise _fail(exc) from None
    console.print(f"Key written to [bold]{path}[/] (mode 0600). Share it with partners only, "
                  "never with the coordinator.", highlight=False)


@app.command()
def certs(
    out: Annotated[Path, typer.Option(help="Folder for certificates/ and keys/.")],
    partners: Annotated[int, typer.Option(min=1, max=1000, help="SuperNode key pairs.")] = 3,
    host: Annotated[list[str] | None, typer.Option(
        help="Extra SuperLink host name or IP for the certificate (repeatable).")] = None,
) -> None:
    """Create the CA, the SuperLink TLS certificate and one key pair per partner."""
    from fedprofile.credentials import create_credentials

    try:
        made = create_credentials(out, partners=partners, hosts=list(host or []))
    except FedprofileError as exc:
        raise _fail(exc) from None
    console.print(f"CA: {made.ca_cert}\nSuperLink: {made.server_cert}, {made.server_key}",
                  highlight=False)
    for private, public in made.partner_keys:
        console.print(f"Partner key: {private} (keep at the partner), {public} (register "
                      "with `flwr supernode register`)", highlight=False)


@app.command()
def pseudonymize(
    source: Annotated[Path, typer.Argument(help="CSV or Parquet file with raw identifiers.")],
    key: Annotated[Path, typer.Option(help="Key file from `fedprofile keygen`.")],
    out: Annotated[Path, typer.Option(help="Output CSV or Parquet file.")],
    email_col: Annotated[str | None, typer.Option(help="E-mail column.")] = None,
    phone_col: Annotated[str | None, typer.Option(help="Phone column.")] = None,
    id_col: Annotated[str, typer.Option(help="Name of the pseudonym column.")] = "pid",
    region: Annotated[str, typer.Option(help="Default phone region (ISO code).")] = "GB",
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows per chunk.")] = 100_000,
) -> None:
    """Replace e-mail/phone columns by keyed pseudonyms, streaming in chunks."""
    from privacy.keys import load_key
    from privacy.pseudonym import Pseudonymizer, pseudonymize_file

    try:
        pseudo = Pseudonymizer(load_key(key), default_region=region)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"),
                      TextColumn("{task.completed:,} rows"), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("Pseudonymising", total=None)
            report = pseudonymize_file(source, out, pseudo, email_col=email_col,
                                       phone_col=phone_col, id_col=id_col,
                                       chunk_rows=chunk_rows,
                                       progress=lambda n: progress.update(task, advance=n))
    except FedprofileError as exc:
        raise _fail(exc) from None
    table = Table(title=f"Pseudonymised {source.name} -> {out}", show_header=False)
    for name, value in report.to_dict().items():
        table.add_row(name.replace("_", " "), str(value))
    console.print(table)


@app.command()
def ledger(
    db: Annotated[Path, typer.Argument(help="A ledger database (partner or coordinator).")],
    delta: Annotated[float, typer.Option(min=1e-12, max=0.1, help="Delta for epsilon.")] = 1e-6,
    policy: Annotated[Path | None, typer.Option(help="Policy TOML, to show what is left.")
                      ] = None,
) -> None:
    """Show privacy spend per party and per run, and the budget left."""
    from privacy.ledger import Ledger
    from privacy.policy import load_policy

    try:
        if not db.is_file():
            raise FedprofileError(f"Ledger {str(db)!r} does not exist.")
        limits = load_policy(policy) if policy else None
        with Ledger(db) as book:
            table = Table(title=f"Privacy ledger {db}")
            for col in ("party", "run", "releases", "epsilon", "left"):
                table.add_column(col)
            for party in book.parties():
                runs = sorted({r["run_id"] for r in book.runs(party=party)})
                for run in runs:
                    s = book.spend(party=party, run_id=run, delta=delta)
                    table.add_row(party, run, str(s.releases), _fmt_eps(s.epsilon), "")
                total = book.spend(party=party, delta=delta)
                left = (_fmt_eps(max(limits.total_epsilon - total.epsilon, 0.0))
                        if limits else "")
                table.add_row(f"[bold]{party}[/]", "all runs", str(total.releases),
                              _fmt_eps(total.epsilon), left)
            console.print(table)
            for note in book.notes():
                console.print(f"[yellow]{note['kind']}[/] {note['party']} run {note['run_id']}: "
                              f"{note['message']}", highlight=False)
    except FedprofileError as exc:
        raise _fail(exc) from None


@app.command()
def score(
    data: Annotated[Path, typer.Option(help="The partner's CSV/Parquet customer table.")],
    out: Annotated[Path, typer.Option(help="Output CSV/Parquet: id, segment, score.")],
    model: Annotated[Path | None, typer.Option(help="A response model.json.")] = None,
    segments: Annotated[Path | None, typer.Option(help="A segment model.json.")] = None,
    key: Annotated[Path | None, typer.Option(
        help="The federation key, when the table holds raw identities.")] = None,
    id_col: Annotated[str | None, typer.Option(help="Customer id column to keep.")] = None,
) -> None:
    """Score your own customers locally with published models (nothing is sent)."""
    from fedprofile.io import read_table, write_table
    from fedprofile.response_model import ResponseModel
    from fedprofile.scoring import score_customers
    from fedprofile.segment_model import SegmentModel
    from privacy.keys import load_key
    from privacy.pseudonym import Pseudonymizer

    try:
        response = ResponseModel.load(model) if model else None
        segment_model = SegmentModel.load(segments) if segments else None
        pseudo = Pseudonymizer(load_key(key)) if key else None
        scored = score_customers(read_table(data), response=response, segments=segment_model,
                                 pseudonymizer=pseudo, id_column=id_col, source=str(data))
        write_table(scored, out)
    except FedprofileError as exc:
        raise _fail(exc) from None
    console.print(f"Scored {len(scored):,} customers into [bold]{out}[/]", highlight=False)


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks whose tables the README quotes.")
app.add_typer(bench_app, name="bench")


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


def _fmt_eps(value: float) -> str:
    return "inf (not private)" if math.isinf(value) else f"{value:.4f}"


def main() -> None:
    """Entry point of the ``fedprofile`` script."""
    app()


if __name__ == "__main__":
    main()

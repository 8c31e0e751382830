"""The ``fedprofile`` command line: a thin Typer layer over the library."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedprofile.cli.bench import bench_app
from fedprofile.cli.common import PRESET_NAMES, CliApp, console
from fedprofile.cli.common import fail as _fail
from fedprofile.errors import FedprofileError

app = CliApp(add_completion=False, no_args_is_help=True,
             help="Privacy-first federated profiling: DP audience segments on Flower.")


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


@app.command()
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
) -> None:
    """Simulate a federation on one machine and learn private audience segments."""
    from fedprofile.privacy.policy import load_policy
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
                  "holdout": holdout, "segments": str(segments or "")}
        seg_rounds = rounds + (1 if init == "overcluster" and not start_from else 0)
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
    _print_quality(result.metrics)
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


def _print_summary(metrics: dict[str, Any], report: Path) -> None:
    title = "Segmentation" if metrics.get("kmeans") else "Response model"
    table = Table(title=f"{title} run", show_header=False)
    privacy = metrics["privacy"]
    eps = privacy.get("epsilon_spent")
    table.add_row("privacy", "NOT PRIVATE (epsilon = inf)" if privacy["non_private"]
                  else f"epsilon = {eps:.4f}, delta = {privacy['delta']:g}")
    table.add_row("partners", str(metrics["n_partners"]))
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


@app.command()
def keygen(
    out: Annotated[Path, typer.Option(help="Key file to write (mode 0600).")],
    key_id: Annotated[str | None, typer.Option(help="Key id (default: random).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing key file.")] = False,
) -> None:
    """Create a per-federation pseudonymisation key (share it with partners only)."""
    from fedprofile.privacy.keys import generate_key, write_key

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
    """Create the CA, the SuperLink TLS certificate, and per partner a key pair and secret."""
    from fedprofile.deploy.credentials import create_credentials, create_superexec_secret

    try:
        made = create_credentials(out, partners=partners, hosts=list(host or []))
        secrets = [create_superexec_secret(out / "keys" / f"partner-{i}.superexec")
                   for i in range(1, partners + 1)]
    except (FedprofileError, OSError) as exc:
        raise _fail(exc) from None
    console.print(f"CA: {made.ca_cert} (give to partners)\nSuperLink and Fleet gateway: "
                  f"{made.server_cert}, {made.server_key} (keep at the coordinator)",
                  highlight=False)
    for (private, public), secret in zip(made.partner_keys, secrets, strict=True):
        console.print(f"Partner: {private} and {secret} (keep at the partner: SuperNode key, "
                      f"SuperNode/launcher secret), {public} (the coordinator registers it "
                      "with `flwr supernode register`)", highlight=False)
    console.print("Each partner approves the app it will run with `fedprofile approve-app`.",
                  highlight=False)


@app.command("approve-app")
def approve_app(
    source: Annotated[Path, typer.Argument(help="The app folder (as `flwr run` gets it) or a "
                                                ".fab file.")],
    allow_list: Annotated[Path | None, typer.Option(
        help="The partner's allow-list file to add the app's digest to.")] = None,
) -> None:
    """Print the SHA-256 of the app's FAB; with --allow-list, approve it at this partner."""
    from fedprofile.deploy.approval import approve_app as approve

    try:
        digest, added = approve(source, allow_list)
    except FedprofileError as exc:
        raise _fail(exc) from None
    console.print(digest, highlight=False)
    if allow_list is not None:
        console.print(f"{'Added to' if added else 'Already in'} {allow_list}: this partner's "
                      "launcher will run this exact app.", highlight=False)


@app.command()
def pseudonymize(
    source: Annotated[str, typer.Argument(
        help="CSV/Parquet file or Parquet folder with raw identifiers, or a database URL "
             "without password (with --data-query).")],
    key: Annotated[Path, typer.Option(help="Key file from `fedprofile keygen`.")],
    out: Annotated[Path, typer.Option(help="Output CSV or Parquet file.")],
    data_query: Annotated[str, typer.Option(
        help="With a database SOURCE: a table name or one SELECT query.")] = "",
    email_col: Annotated[str | None, typer.Option(help="E-mail column.")] = None,
    phone_col: Annotated[str | None, typer.Option(help="Phone column.")] = None,
    id_col: Annotated[str, typer.Option(help="Name of the pseudonym column.")] = "pid",
    region: Annotated[str, typer.Option(help="Default phone region (ISO code).")] = "GB",
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows per chunk.")] = 100_000,
) -> None:
    """Replace e-mail/phone columns by keyed pseudonyms, streaming in chunks.

    A database is read over a read-only connection (the password from FEDPROFILE_DB_PASSWORD
    or an owner-only file named by FEDPROFILE_DB_PASSWORD_FILE); the output is a file.
    """
    from fedprofile.io.sources import FileSource, open_source
    from fedprofile.privacy.keys import load_key
    from fedprofile.privacy.pseudonym import (
        Pseudonymizer,
        pseudonymize_chunks,
        pseudonymize_file,
    )

    try:
        pseudo = Pseudonymizer(load_key(key), default_region=region)
        table = open_source(source, data_query)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"),
                      TextColumn("{task.completed:,} rows"), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("Pseudonymising", total=None)
            options: dict[str, Any] = {
                "email_col": email_col, "phone_col": phone_col, "id_col": id_col,
                "progress": lambda n: progress.update(task, advance=n)}
            if isinstance(table, FileSource):
                report = pseudonymize_file(table.path, out, pseudo, chunk_rows=chunk_rows,
                                           **options)
            else:  # identities as text, as a CSV is read: a phone stored as a number
                identities = [c for c in (email_col, phone_col) if c]
                report = pseudonymize_chunks(
                    table.iter_chunks(chunk_rows=chunk_rows, text_columns=identities), out,
                    pseudo, source=table.label, **options)
    except FedprofileError as exc:
        raise _fail(exc) from None
    name = table.label if not isinstance(table, FileSource) else table.path.name
    result = Table(title=f"Pseudonymised {name} -> {out}", show_header=False)
    for field, value in report.to_dict().items():
        result.add_row(field.replace("_", " "), str(value))
    console.print(result)


@app.command()
def ledger(
    db: Annotated[Path, typer.Argument(help="A ledger database (partner or coordinator).")],
    delta: Annotated[float, typer.Option(min=1e-12, max=0.1, help="Delta for epsilon.")] = 1e-6,
    policy: Annotated[Path | None, typer.Option(help="Policy TOML, to show what is left.")
                      ] = None,
) -> None:
    """Show privacy spend per party and per run, and the budget left."""
    from fedprofile.privacy.ledger import Ledger
    from fedprofile.privacy.policy import epsilon_left, load_policy

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
                left = (_fmt_eps(epsilon_left(limits, book.events(party=party)))
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
    data: Annotated[str, typer.Option(
        help="The partner's CSV/Parquet customer table, Parquet folder or database URL "
             "without password (with --data-query).")],
    out: Annotated[Path, typer.Option(help="Output CSV/Parquet: id, segment, score.")],
    data_query: Annotated[str, typer.Option(
        help="With a database --data: a table name or one SELECT query.")] = "",
    model: Annotated[Path | None, typer.Option(help="A response model.json.")] = None,
    segments: Annotated[Path | None, typer.Option(help="A segment model.json.")] = None,
    key: Annotated[Path | None, typer.Option(
        help="The federation key, when the table holds raw identities.")] = None,
    id_col: Annotated[str | None, typer.Option(
        help="Customer id column to keep (default: the contract's id or pseudonym column, "
             "else customer_id, pid or id when present).")] = None,
) -> None:
    """Score your own customers locally with published models (nothing is sent)."""
    from fedprofile.io.sources import open_source
    from fedprofile.io.tables import write_table
    from fedprofile.models.response_model import ResponseModel
    from fedprofile.models.scoring import score_customers
    from fedprofile.models.segment_model import SegmentModel
    from fedprofile.privacy.keys import load_key
    from fedprofile.privacy.pseudonym import Pseudonymizer

    try:
        response = ResponseModel.load(model) if model else None
        segment_model = SegmentModel.load(segments) if segments else None
        pseudo = Pseudonymizer(load_key(key)) if key else None
        source = open_source(data, data_query)
        scored = score_customers(source.read(), response=response, segments=segment_model,
                                 pseudonymizer=pseudo, id_column=id_col, source=source.label)
        write_table(scored, out)
    except FedprofileError as exc:
        raise _fail(exc) from None
    scores = [c for c in ("segment", "score") if c in scored.columns]
    unscored = int(scored[scores].isna().any(axis=1).sum())
    console.print(f"Scored {len(scored) - unscored:,} customers into [bold]{out}[/]",
                  highlight=False)
    if unscored:
        console.print(f"[bold yellow]Warning:[/] {unscored:,} customers could not be scored "
                      "(a value the contract drops is missing); their rows are in the file "
                      "with an empty score.", highlight=False)
    id_cols = [c for c in scored.columns if c not in ("segment", "score")]
    if not id_cols:
        console.print("[bold yellow]Warning:[/] no customer id column was found, so rows are "
                      "in the input's order; name one with --id-col.", highlight=False)


app.add_typer(bench_app, name="bench")


def _fmt_eps(value: float) -> str:
    return "inf (not private)" if math.isinf(value) else f"{value:.4f}"


def main() -> None:
    """Entry point of the ``fedprofile`` script."""
    app()


if __name__ == "__main__":
    main()

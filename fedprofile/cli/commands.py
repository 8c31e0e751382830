"""The ``fedprofile`` command line: a thin Typer layer over the library."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedprofile.cli.bench import bench_app
from fedprofile.cli.common import CliApp, console
from fedprofile.cli.common import fail as _fail
from fedprofile.cli.sim_command import sim
from fedprofile.errors import ContractError, FedprofileError

app = CliApp(add_completion=False, no_args_is_help=True,
             help="Privacy-first federated profiling: DP audience segments on Flower.")
app.command()(sim)


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


@app.command("secagg-keys")
def secagg_keys(
    state_dir: Annotated[Path, typer.Option(help="This partner's state folder (its node "
                                                 "config 'state-dir').")],
    name: Annotated[str, typer.Option(help="This partner's name in the federation.")],
    trust: Annotated[list[str] | None, typer.Option(
        help="Another partner's key, NAME=HEX as that partner printed it (repeatable).")
    ] = None,
) -> None:
    """Print this partner's secure-aggregation public key; with --trust, set the others'.

    Each partner's administrator runs it once to get the key to send the others, then with
    every other partner's NAME=HEX: a partner refuses secure aggregation with partners
    whose keys it was not given.
    """
    from fedprofile.client.secure import public_key_hex, trust_keys

    try:
        own = public_key_hex(state_dir)
        console.print(f"{name}={own}", highlight=False)
        if trust:
            pairs = [item.split("=", 1) for item in trust]
            if any(len(p) != 2 for p in pairs):
                raise ContractError("--trust takes NAME=HEX, as `fedprofile secagg-keys` "
                                    "prints it.")
            keys = {name: own, **{n.strip(): k.strip() for n, k in pairs}}
            path = trust_keys(state_dir, keys)
            console.print(f"Trusted keys of {len(keys)} partners written to {path}.",
                          highlight=False)
    except (FedprofileError, OSError) as exc:
        raise _fail(exc) from None


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
    from fedprofile.privacy.pseudonym import Pseudonymizer
    from fedprofile.privacy.pseudonym_files import pseudonymize_chunks, pseudonymize_file

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

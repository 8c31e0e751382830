"""``make deploy-demo``: the pipeline over a real loopback deployment, with a summary.

Starts a SuperLink (TLS, SuperNode authentication, state database) whose Control API only
the coordinator reaches, the public Fleet-only gateway, and four partners on 127.0.0.1,
each with its own data, state and output folders, a SuperNode and a launcher that runs only
the app the partner approved (its FAB's SHA-256 in the partner's allow-list). Runs
``flwr run`` for the full pipeline under secure aggregation (``t = 1``: one partner may
drop out), kills the last partner's SuperNode after its first release, prints who finished,
the round times and where every role's log and output is, and stops every process it
started. ``--noise partner`` runs the partner-noise placement, ``--no-kill`` keeps everyone.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedprofile.deploy.loopback import LoopbackFederation
from fedprofile.presets.datasets import load_preset

__all__ = ["cli", "main"]


def main(root: Path = Path("runs/deploy-demo"), partners: int = 4, *, noise: str = "secagg",
         kill: bool = True) -> int:
    """Run the demo; return the process exit code."""
    console = Console()
    bank = load_preset("bank")
    configs = []
    for i, part in enumerate(bank.partitions(partners)):
        home = (root / "partners" / f"partner-{i + 1}").resolve()
        data = home / "data" / "customers.parquet"
        data.parent.mkdir(parents=True, exist_ok=True)
        part.frame.to_parquet(data)
        configs.append({"data-path": str(data), "spec": str(bank.spec_path),
                        "partner-name": part.name, "state-dir": str(home),
                        "output-dir": str(home / "outputs")})
    fed = LoopbackFederation(root=root.resolve(), partners=configs)
    start = time.perf_counter()
    with fed.running():
        console.print(f"SuperLink on 127.0.0.1:{fed.control_port} (coordinator only; TLS, node "
                      f"authentication), public Fleet gateway on 127.0.0.1:{fed.port}; "
                      f"{partners} partners registered; app sha256 {fed.app_digest} approved "
                      "by every partner", highlight=False)
        for i in range(partners):
            fed.start_partner(i)
        fed.wait_for_launchers()
        killer = threading.Thread(target=fed.kill_partner_after_release, args=(partners - 1,))
        if kill:
            console.print(f"partner-{partners} will be killed after its first release",
                          highlight=False)
            killer.start()
        done = fed.run({"spec": str(bank.spec_path), "out-dir": str(fed.root / "out"),
                        "task": "pipeline", "target": "y", "k": 6, "epsilon": 1.0,
                        "expected-partners": partners, "dataset": "", "noise": noise,
                        "secagg-dropouts": 1 if noise == "secagg" else 0,
                        "min-partners": partners - 1 if kill else partners})
        if kill:
            killer.join()
    wall = time.perf_counter() - start
    table = Table(title=f"Deployment demo ({wall:.0f} s)", show_header=False)
    # `flwr run --stream` exits 0 even when the ServerApp failed: the models say it finished
    written = all((fed.root / "out" / stage / "model.json").is_file()
                  for stage in ("segments", "response"))
    ok = done.returncode == 0 and written
    table.add_row("flwr run", "ok" if ok else f"failed (exit {done.returncode}"
                  f"{'' if written else ', no model written'}; see the flwr run log)")
    table.add_row("approved app (sha256)", fed.app_digest)
    for i in range(partners):
        table.add_row(f"allow-list: partner-{i + 1}", str(fed.allow_list(i)))
    for role in sorted(fed.processes):
        table.add_row(f"log: {role}", str(fed.logs / f"{role}.log"))
    table.add_row("log: flwr run", str(fed.logs / "flwr-run.log"))
    for stage in ("segments", "response"):
        model = fed.root / "out" / stage / "model.json"
        if model.is_file():
            doc = json.loads(model.read_text())
            params = doc["params"]
            rounds = ", ".join(f"{t['message']} {t['seconds']:.1f}s"
                               for t in params.get("round_seconds", []))
            table.add_row(f"{stage} report", str(model.parent / "report.html"))
            table.add_row(f"{stage}: noise, dropped", f"{doc['privacy']['noise_placement']}, "
                          f"{', '.join(params.get('dropped_partners', {})) or 'none'}")
            table.add_row(f"{stage} round times", rounds)
    for cfg in configs:
        table.add_row(f"scores: {cfg['partner-name']}", cfg["output-dir"])
    table.add_row("processes left", str(len(fed.alive())))
    console.print(table)
    return 0 if ok else 1


def cli(argv: list[str] | None = None) -> int:
    """Command line: ``python -m fedprofile.deploy.demo [--noise partner] [--no-kill]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", choices=("secagg", "partner"), default="secagg")
    parser.add_argument("--no-kill", action="store_true",
                        help="Keep every partner to the end of the run.")
    parser.add_argument("--root", type=Path, default=Path("runs/deploy-demo"))
    args = parser.parse_args(argv)
    return main(args.root, noise=args.noise, kill=not args.no_kill)


if __name__ == "__main__":
    sys.exit(cli())

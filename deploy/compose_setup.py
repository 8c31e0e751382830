"""Set-up for ``docker compose``: credentials and three partners' folders.

Writes ``deploy/credentials/`` (CA, SuperLink certificate, partner keys) and, for each
partner, ``deploy/partners/partner-N/`` with its slice of the bank data, the federation's
pseudonymisation key (shared by partners only) and a privacy policy. Run it once with
``python -m deploy.compose_setup`` (``make compose-setup``) before ``docker compose up``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from fedprofile.credentials import create_credentials
from privacy.keys import generate_key, write_key
from sim.datasets import load_preset

__all__ = ["PARTNERS", "main"]

DEPLOY_DIR = Path(__file__).resolve().parent
PARTNERS = 3
POLICY = """max_epsilon_per_run = 2.0
total_epsilon = 8.0
delta = 1e-6
min_segment_size = 50
allowed_stages = ["profile", "kmeans", "ridge", "logistic", "score"]
"""


def main(out: Path = DEPLOY_DIR) -> int:
    """Create every file the compose services mount; return the exit code."""
    create_credentials(out / "credentials", partners=PARTNERS)
    key = generate_key()
    for i, part in enumerate(load_preset("bank").partitions(PARTNERS), start=1):
        home = out / "partners" / f"partner-{i}"
        if home.exists():
            shutil.rmtree(home)
        for sub in ("data", "secrets", "state", "outputs"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        part.frame.to_parquet(home / "data" / "customers.parquet", index=False)
        write_key(key, home / "secrets" / "federation.key")
        (home / "policy.toml").write_text(POLICY, encoding="utf-8")
    (out / "state").mkdir(exist_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

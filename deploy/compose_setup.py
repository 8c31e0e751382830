"""Set-up for ``docker compose``: credentials, approvals and three partners' folders.

Writes ``deploy/credentials/`` (CA, SuperLink and gateway certificate, partner keys, the
coordinator's SuperExec secret and, per partner, ``partner-N/`` with the SuperNode/launcher
secret and the allow-list approving the app in this folder as ``flwr run .`` ships it) and,
for each partner, ``deploy/partners/partner-N/`` with its slice of the bank data, the
federation's pseudonymisation key (shared by partners only) and a privacy policy. Run it with
``python -m fedprofile.deploy.compose_setup`` (``make compose-setup``) before ``docker compose up``;
after any change to the app, each partner approves the new version again with
``fedprofile approve-app . --allow-list deploy/credentials/partner-N/approved-apps.txt``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

from fedprofile.client.secure import trust_each_other
from fedprofile.deploy.approval import approve_app
from fedprofile.deploy.credentials import (
    create_credentials,
    create_password,
    create_superexec_secret,
)
from fedprofile.presets.datasets import load_preset
from fedprofile.privacy.keys import generate_key, write_key

__all__ = ["PARTNERS", "main"]

DEPLOY_DIR = Path(__file__).resolve().parent
APP_DIR = DEPLOY_DIR.parent
PARTNERS = 3
DB_PARTNER = 3
"""The partner whose customers the optional ``partner-db`` compose profile also loads into
its own PostgreSQL database."""
_SQL_TYPES = {"i": "bigint", "f": "double precision", "b": "boolean"}
POLICY = """max_epsilon_per_run = 2.0
total_epsilon = 8.0
delta = 1e-6
min_segment_size = 50
allowed_stages = ["profile", "kmeans", "ridge", "logistic", "score"]
"""


def main(out: Path = DEPLOY_DIR, app: Path = APP_DIR) -> int:
    """Create every file the compose services mount; return the exit code."""
    create_credentials(out / "credentials", partners=PARTNERS)
    create_superexec_secret(out / "credentials" / "coordinator" / "superexec.secret")
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
        if i == DB_PARTNER:
            _partner_database(home, part.frame, out / "credentials" / f"partner-{i}-db")
        trust = out / "credentials" / f"partner-{i}"
        create_superexec_secret(trust / "superexec.secret")
        (trust / "approved-apps.txt").unlink(missing_ok=True)
        digest, _ = approve_app(app, trust / "approved-apps.txt")
    # each partner's administrator's key exchange for secure aggregation (fedprofile secagg-keys)
    trust_each_other({f"partner-{i}": out / "partners" / f"partner-{i}" / "state"
                      for i in range(1, PARTNERS + 1)})
    print(f"Every partner approved the app {app} as FAB sha256 {digest} and trusts the "  # noqa: T201
          "others' secure-aggregation signing keys.")
    (out / "state").mkdir(exist_ok=True)
    return 0


def _partner_database(home: Path, frame: pd.DataFrame, owner: Path) -> None:
    """The seed of the partner's own database: its table, its rows and two passwords.

    ``db/01-customers.sql`` creates and fills the table when the database is first created.
    The read-only role's password, the one the node connects with, is in the partner's
    folder (``secrets/db-reader-password``); the owner's is in ``owner`` (a folder no
    partner container mounts), as code run in the partner's launcher must not find it.
    Both are mode 0600 from their creation.
    """
    (home / "db").mkdir(exist_ok=True)
    frame.to_csv(home / "db" / "customers.csv", index=False)
    columns = ",\n    ".join(f'"{name}" {_SQL_TYPES.get(frame[name].dtype.kind, "text")}'
                              for name in frame.columns)
    (home / "db" / "01-customers.sql").write_text(
        f"CREATE TABLE customers (\n    {columns}\n);\n"
        "COPY customers FROM '/seed/customers.csv' (FORMAT csv, HEADER true);\n",
        encoding="utf-8")
    create_password(home / "secrets" / "db-reader-password")
    create_password(owner / "db-admin-password")


if __name__ == "__main__":
    sys.exit(main())

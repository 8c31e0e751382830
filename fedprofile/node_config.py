"""A partner node's local settings (``--node-config``), parsed once at the boundary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fedprofile.config_values import config_int as _int
from fedprofile.config_values import config_str as _str
from fedprofile.errors import ContractError

__all__ = ["NodeConfig"]


@dataclass(frozen=True)
class NodeConfig:
    """A partner node's local settings (``--node-config`` in deployment).

    Attributes
    ----------
    data_path : str
        The partner's customer table (CSV or Parquet file, or a folder of Parquet files).
    data_source : str
        Instead of ``data_path``: a file, a Parquet folder, or an SQLAlchemy URL without a
        password (it comes from ``FEDPROFILE_DB_PASSWORD`` or a 0600 file named by
        ``FEDPROFILE_DB_PASSWORD_FILE``).
    data_query : str
        With a database ``data_source``: a table name or one ``SELECT``/``WITH`` query.
    data_updated_at : str
        With a database ``data_source``: a column whose maximum changes whenever a row
        changes; the matrix cache is reused only while it and the row count do not (without
        one, the table is read afresh for every instruction).
    spec : str
        The partner's copy of the contract; its fingerprint must match the coordinator's.
    partner_name : str
        The partner's name in ledgers and reports.
    state_dir : str
        Where the partner keeps its ledger and caches.
    policy : str
        The partner's policy TOML. Without one a deployed node runs the documented default
        policy (:class:`fedprofile.privacy.policy.PartnerPolicy`); a simulated one runs
        without limits.
    mapping : str
        Optional TOML file mapping feature names to local column names.
    noise_seed : int
        -1 (default) draws release noise from OS entropy; only simulations may seed it.
    key : str
        The partner's copy of the federation's pseudonymisation key file (never sent).
    output_dir : str
        Where local scores are written (default: ``state_dir/outputs``).
    capture_dir : str
        Wire audit: when set, every message the partner sends is also written there as the
        exact serialized bytes.
    seed_file : str
        The partner's own file of pseudonymised customer ids defining its seed audience
        when a lookalike run names it the seed owner (read here only, never sent).
    simulation : bool
        Whether this is a simulated node (Flower gave it a ``partition-id``).
    """

    data_path: str = ""
    data_source: str = ""
    data_query: str = ""
    data_updated_at: str = ""
    spec: str = ""
    partner_name: str = ""
    state_dir: str = ""
    policy: str = ""
    mapping: str = ""
    noise_seed: int = -1
    key: str = ""
    capture_dir: str = ""
    output_dir: str = ""
    seed_file: str = ""
    simulation: bool = False

    @property
    def data_location(self) -> str:
        """Where the partner's table is: ``data_source``, else ``data_path``."""
        return self.data_source or self.data_path

    @classmethod
    def known_keys(cls) -> set[str]:
        """Field names (underscore spelling)."""
        return {f.name for f in fields(cls)} | {"partition_id", "num_partitions"}

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any], *, partition_id: int | None = None
                     ) -> NodeConfig:
        """Parse a node config; blanks get defaults derived from ``partition_id``."""
        cfg = {str(k).replace("-", "_"): v for k, v in cfg.items()}
        name = _str(cfg, "partner_name", "") or (f"partner-{partition_id}"
                                                 if partition_id is not None else "partner")
        state = _str(cfg, "state_dir", "") or str(Path(".fedprofile") / "partners" / name)
        noise_seed = _int(cfg, "noise_seed", -1, low=-1)
        if noise_seed >= 0 and partition_id is None:
            raise ContractError("The 'noise-seed' node config key is for simulations only: a "
                                "deployed partner draws its noise from OS entropy, so that no "
                                "two releases can share a noise draw.")
        if cfg.get("data_path") and cfg.get("data_source"):
            raise ContractError("Give one of the node config keys 'data-path' and "
                                "'data-source', not both.")
        return cls(data_path=_str(cfg, "data_path", ""), data_source=_str(cfg, "data_source", ""),
                   data_query=_str(cfg, "data_query", ""),
                   data_updated_at=_str(cfg, "data_updated_at", ""),
                   spec=_str(cfg, "spec", ""),
                   partner_name=name, state_dir=state, policy=_str(cfg, "policy", ""),
                   mapping=_str(cfg, "mapping", ""),
                   noise_seed=noise_seed, simulation=partition_id is not None,
                   key=_str(cfg, "key", ""), capture_dir=_str(cfg, "capture_dir", ""),
                   output_dir=_str(cfg, "output_dir", "") or str(Path(state) / "outputs"),
                   seed_file=_str(cfg, "seed_file", ""))

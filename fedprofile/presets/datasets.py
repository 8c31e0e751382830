"""Real public data sets as simulation presets: one customer table plus its feature spec.

A preset turns one of the files shipped in ``fedprofile/data/`` (see its ``README.md``) into
one row per customer with a stable ``customer_id``, names the TOML feature spec under
``fedprofile/specs/`` that describes it, and names the column that splits it into simulated
partner companies. The presets (``bank``, ``hillstrom``, ``retail``, ``retail-transactions``
and ``retail-holdout``) are listed in :data:`PRESETS`. Nothing is cached: every call reads
the file again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import pandas as pd

from fedprofile.contract.parser import load_spec
from fedprofile.errors import ContractError
from fedprofile.presets.files import (
    DEFAULT_DATA_DIR,
    SPEC_DIR,
    _data_file,
    _default_data_dir,
    _require_columns,
    _row_ids,
)
from fedprofile.presets.identity import customer_keys
from fedprofile.presets.partition import Partition, PartitionRule, partition_frame
from fedprofile.presets.retail import (
    RETAIL_CUTOFF,
    RETAIL_END,
    RETAIL_SNAPSHOT,
    _load_retail_full,
    _load_retail_holdout,
    retail_customer_features,
    retail_future_spend,
    retail_transactions,
    uk_shard,
)

__all__ = [
    "DEFAULT_DATA_DIR",
    "PRESETS",
    "RETAIL_CUTOFF",
    "RETAIL_END",
    "RETAIL_SNAPSHOT",
    "SPEC_DIR",
    "Preset",
    "PresetDefinition",
    "load_preset",
    "preset_partition_file",
    "retail_customer_features",
    "retail_future_spend",
    "retail_transactions",
    "uk_shard",
]


@dataclass(frozen=True, eq=False)
class Preset:
    """A loaded simulation preset.

    Parameters
    ----------
    name : str
        Preset name, a key of :data:`PRESETS`.
    frame : pandas.DataFrame
        One row per customer, with a unique ``customer_id`` column.
    spec_path : pathlib.Path
        The TOML feature spec that describes ``frame``.
    partition_column : str
        The column whose values define the default partners.
    default_partners : int
        The default number of partners.
    description : str
        One line on the data and the partner split.
    """

    name: str
    frame: pd.DataFrame = field(repr=False)
    spec_path: Path
    partition_column: str
    default_partners: int
    description: str

    def partitions(self, n_partners: int | None = None) -> list[Partition]:
        """Split the frame by the preset's partition column.

        Parameters
        ----------
        n_partners : int or None, default=None
            Number of partners; None means ``default_partners``.

        Returns
        -------
        list of Partition
            See :func:`fedprofile.presets.partition.partition_frame`; when the spec groups rows into
            customers, whole customers are split and counted.
        """
        count = self.default_partners if n_partners is None else n_partners
        rule = PartitionRule("column", column=self.partition_column)
        keys = customer_keys(self.frame, load_spec(self.spec_path))
        return partition_frame(self.frame, rule, count, customers=keys)


@dataclass(frozen=True)
class PresetDefinition:
    """How to build a preset: its loader, spec file and default partner split.

    Parameters
    ----------
    loader : callable
        ``loader(data_dir)`` returns the customer frame.
    spec_file : str
        File name under ``specs/``.
    partition_column : str
        Column that defines the partners.
    default_partners : int
        Default number of partners.
    description : str
        One line on the data and the partner split.
    """

    loader: Callable[[Path], pd.DataFrame]
    spec_file: str
    partition_column: str
    default_partners: int
    description: str


def load_preset(name: str, *, data_dir: Path | None = None) -> Preset:
    """Load a preset's customer table.

    Parameters
    ----------
    name : str
        One of the keys of :data:`PRESETS`.
    data_dir : pathlib.Path or None, default=None
        Folder holding the data files; None means the data shipped in the package.

    Returns
    -------
    Preset
        The customer table, its spec path and its default partner split.

    Raises
    ------
    ContractError
        If ``name`` is not a known preset.
    DataError
        If the data file is missing or lacks expected columns.
    """
    if name not in PRESETS:
        raise ContractError(
            f"The 'name' parameter of load_preset must be one of "
            f"{', '.join(repr(n) for n in PRESETS)}. Got {name!r} instead."
        )
    definition = PRESETS[name]
    folder = _default_data_dir() if data_dir is None else Path(data_dir)
    return Preset(
        name=name,
        frame=definition.loader(folder),
        spec_path=SPEC_DIR / definition.spec_file,
        partition_column=definition.partition_column,
        default_partners=definition.default_partners,
        description=definition.description,
    )


def _load_bank(data_dir: Path) -> pd.DataFrame:
    """UCI Bank Marketing (bank-full): one row per customer contact record."""
    file_name = "bank-full.csv.gz"
    frame = pd.read_csv(_data_file(data_dir, file_name), sep=";")
    _require_columns(frame, ["age", "balance", "job", "y"], file_name)
    frame.insert(0, "customer_id", _row_ids("bank", len(frame)))
    return frame


def _load_hillstrom(data_dir: Path) -> pd.DataFrame:
    """MineThatData e-mail test, with a ``channel_zip`` partner column."""
    file_name = "hillstrom.csv.gz"
    frame = pd.read_csv(_data_file(data_dir, file_name))
    _require_columns(frame, ["channel", "zip_code", "spend"], file_name)
    frame.insert(0, "customer_id", _row_ids("hillstrom", len(frame)))
    frame["channel_zip"] = frame["channel"].astype("str") + "-" + frame["zip_code"].astype("str")
    return frame


def preset_partition_file(dataset: str, partition_id: int, count: int, folder: Path) -> Path:
    """One partner's slice of a shipped data set as a Parquet file (created once).

    Used by virtual nodes under ``flwr run``, which only know their partition id. The names
    come from the run config, so only a shipped preset and integer ids make a file name:
    the coordinator cannot point a node at any other file.
    """
    if dataset not in PRESETS:
        raise ContractError(f"The 'dataset' parameter must be one of "
                            f"{', '.join(repr(n) for n in PRESETS)}. Got {dataset!r} instead.")
    for name, value in (("partition-id", partition_id), ("num-partitions", count)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ContractError(f"The '{name}' parameter must be a non-negative integer. "
                                f"Got {value!r} instead.")
    path = folder / f"{dataset}-{count}-{partition_id}.parquet"
    if not path.is_file():
        parts = load_preset(dataset).partitions(count)
        if not 0 <= partition_id < len(parts):
            raise ContractError(f"Partition id {partition_id} is outside 0..{len(parts) - 1}.")
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.parquet")
        parts[partition_id].frame.to_parquet(tmp, index=False)
        tmp.replace(path)
    return path


PRESETS: Mapping[str, PresetDefinition] = MappingProxyType(
    {
        "bank": PresetDefinition(
            _load_bank, "bank.toml", "job", 5,
            "UCI Bank Marketing (45,211 customers); partners are groups of jobs.",
        ),
        "hillstrom": PresetDefinition(
            _load_hillstrom, "hillstrom.toml", "channel_zip", 9,
            "MineThatData e-mail test (64,000 customers); partners are channel x zip code.",
        ),
        "retail": PresetDefinition(
            _load_retail_full, "retail.toml", "partner_region", 6,
            "UCI Online Retail, per-customer RFM features from the raw transactions over the "
            "whole year (snapshot 2011-12-10); partners are 3 UK shards, Germany, France, "
            "rest of world.",
        ),
        "retail-transactions": PresetDefinition(
            retail_transactions, "retail_transactions.toml", "partner_region", 6,
            "UCI Online Retail raw lines with synthetic e-mails/phones; partners pseudonymise "
            "and aggregate them into the 'retail' features.",
        ),
        "retail-holdout": PresetDefinition(
            _load_retail_holdout, "retail.toml", "partner_region", 6,
            "UCI Online Retail, RFM features before 2011-09-09 and future_spend to 2011-12-09 "
            "(for response models); partners as for 'retail'.",
        ),
    }
)  # fmt: skip
"""Known presets by name (read-only): loader, spec file, partition column, partners."""

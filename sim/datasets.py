"""Real public data sets as simulation presets: one customer table plus its feature spec.

A preset turns one of the files shipped in ``fedprofile/data/`` (see its ``README.md``) into
one row per
customer with a stable ``customer_id``, names the TOML feature spec under
``fedprofile/specs/`` that
describes it, and names the column that splits it into simulated partner companies. The
presets (``bank``, ``hillstrom``, ``retail`` and ``retail-full``) are listed in
:data:`PRESETS`. Nothing is cached: every call reads the file again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from fedprofile.contract.parser import load_spec
from fedprofile.errors import ContractError, DataError
from fedprofile.resources import CONTRACTS, DATA, packaged_dir
from fedprofile.sim.identity import customer_keys, synthetic_email, synthetic_phone
from fedprofile.sim.partition import Partition, PartitionRule, partition_frame

__all__ = [
    "PRESETS",
    "RETAIL_CUTOFF",
    "RETAIL_END",
    "RETAIL_SNAPSHOT",
    "Preset",
    "PresetDefinition",
    "load_preset",
    "retail_customer_features",
    "retail_future_spend",
    "retail_transactions",
    "uk_shard",
]

DEFAULT_DATA_DIR = packaged_dir(DATA)
SPEC_DIR = packaged_dir(CONTRACTS)

RETAIL_CUTOFF = pd.Timestamp("2011-09-09")
"""End (exclusive) of the retail feature window and snapshot date of the hold-out variant."""
RETAIL_END = pd.Timestamp("2011-12-10")
"""End (exclusive) of the retail target window: spend up to and including 2011-12-09."""
RETAIL_SNAPSHOT = pd.Timestamp("2011-12-10")
"""Snapshot date of the full-year retail variant (the day after the last invoice)."""

_UK = "United Kingdom"
_UK_SHARDS = 3
_RETAIL_FEATURES = (
    "recency_days", "frequency", "monetary", "mean_basket", "distinct_products",
    "tenure_days", "cancel_share",
)  # fmt: skip


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
            See :func:`fedprofile.sim.partition.partition_frame`; when the spec groups rows into
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


def _default_data_dir() -> Path:
    """``$FEDPROFILE_DATA_DIR``, else the data shipped in the package, else ``./data``.

    A Flower app bundle (FAB) carries code, not data, so under ``flwr run`` the data are
    found through the environment or the working directory when the bundle is imported.
    """
    if os.environ.get("FEDPROFILE_DATA_DIR"):
        return Path(os.environ["FEDPROFILE_DATA_DIR"])
    return DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else Path.cwd() / "data"


def _data_file(data_dir: Path, file_name: str) -> Path:
    """Return the path of a data file, or raise DataError naming it."""
    path = data_dir / file_name
    if not path.is_file():
        raise DataError(
            f"The data file {file_name!r} is not in {str(data_dir)!r}. Copy it there "
            "(see fedprofile/data/README.md for its source) or pass "
            "data_dir=<folder holding it>."
        )
    return path


def _require_columns(frame: pd.DataFrame, columns: list[str], file_name: str) -> None:
    """Raise DataError if ``frame`` lacks any of ``columns``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"The data file {file_name!r} lacks the columns {missing}; "
            "it does not look like the published data set."
        )


def _row_ids(prefix: str, n_rows: int) -> pd.Series:
    """Stable customer ids from the row number, e.g. ``bank-000123``."""
    return pd.Series([f"{prefix}-{i:06d}" for i in range(n_rows)], dtype="str")


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


def _read_retail_transactions(data_dir: Path) -> pd.DataFrame:
    """Rows with a CustomerID, with parsed dates, cancellation and cleanliness flags.

    Cleaning follows fedprofile/data/README.md: a line is *clean* when it is not a cancellation
    (InvoiceNo starting with "C") and has Quantity > 0 and UnitPrice > 0. Cancellations are
    kept (flagged) because the ``cancel_share`` feature counts them.
    """
    file_name = "online_retail.parquet"
    columns = ["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"]
    raw = pd.read_parquet(_data_file(data_dir, file_name), columns=[*columns, "Country"])
    raw = raw.loc[raw["CustomerID"].notna()]
    cancelled = raw["InvoiceNo"].astype("str").str.startswith("C").to_numpy()
    quantity = raw["Quantity"].to_numpy()
    price = raw["UnitPrice"].to_numpy()
    return pd.DataFrame(
        {
            "customer": raw["CustomerID"].astype("int64").to_numpy(),
            "invoice": raw["InvoiceNo"].to_numpy(),
            "product": raw["StockCode"].to_numpy(),
            "date": pd.to_datetime(raw["InvoiceDate"], format="%Y-%m-%d %H:%M:%S").to_numpy(),
            "amount": quantity * price,
            "country": raw["Country"].to_numpy(),
            "cancelled": cancelled,
            "clean": ~cancelled & (quantity > 0) & (price > 0),
        }
    )


def _main_country(clean: pd.DataFrame) -> pd.Series:
    """Each customer's country with the most clean lines (ties: alphabetical)."""
    sizes = clean.groupby(["customer", "country"]).size().rename("lines").reset_index()
    sizes = sizes.sort_values(["customer", "lines", "country"], ascending=[True, False, True])
    return sizes.drop_duplicates("customer").set_index("customer")["country"]


def retail_customer_features(transactions: pd.DataFrame, *, snapshot: pd.Timestamp) -> pd.DataFrame:
    """Per-customer RFM features from the transactions dated before ``snapshot``.

    Parameters
    ----------
    transactions : pandas.DataFrame
        Columns ``customer`` (int), ``invoice``, ``product``, ``date`` (datetime),
        ``amount``, ``country``, ``cancelled`` and ``clean`` (bool), as read by the preset.
    snapshot : pandas.Timestamp
        Features use lines dated strictly before it; recency and tenure count calendar days
        up to it.

    Returns
    -------
    pandas.DataFrame
        Indexed by customer number, one row per customer with at least one clean line in the
        window: ``country``, ``recency_days``, ``frequency`` (distinct invoices),
        ``monetary`` (sum of Quantity * UnitPrice), ``mean_basket`` (monetary / frequency),
        ``distinct_products``, ``tenure_days`` (days since the first purchase) and
        ``cancel_share`` (cancelled lines / all lines of the customer in the window).
    """
    window = transactions.loc[transactions["date"] < snapshot]
    clean = window.loc[window["clean"]]
    features = clean.groupby("customer").agg(
        first=("date", "min"),
        last=("date", "max"),
        frequency=("invoice", "nunique"),
        monetary=("amount", "sum"),
        distinct_products=("product", "nunique"),
    )
    day = snapshot.normalize()
    features["recency_days"] = (day - features["last"].dt.normalize()).dt.days
    features["tenure_days"] = (day - features["first"].dt.normalize()).dt.days
    features["mean_basket"] = features["monetary"] / features["frequency"]
    cancel_share = window.groupby("customer")["cancelled"].mean()
    features["cancel_share"] = cancel_share.reindex(features.index).astype("float64")
    features["country"] = _main_country(clean).reindex(features.index)
    return features[["country", *_RETAIL_FEATURES]]


def retail_future_spend(
    transactions: pd.DataFrame, *, start: pd.Timestamp, end: pd.Timestamp
) -> pd.Series:
    """Clean spend per customer in the window ``[start, end)``.

    Parameters
    ----------
    transactions : pandas.DataFrame
        As for :func:`retail_customer_features`.
    start, end : pandas.Timestamp
        Window bounds; ``end`` is exclusive.

    Returns
    -------
    pandas.Series
        Sum of Quantity * UnitPrice over clean lines, indexed by customer number; customers
        without a purchase in the window are absent.
    """
    dates = transactions["date"]
    in_window = transactions.loc[transactions["clean"] & (dates >= start) & (dates < end)]
    return in_window.groupby("customer")["amount"].sum().rename("future_spend")


def uk_shard(customer_number: int, n_shards: int = _UK_SHARDS) -> int:
    """Return the simulated UK shard of a customer: SHA-256 of the id text, modulo shards.

    For simulation only: the shard picks which virtual partner holds a customer and never
    leaves this process. Deployed partners never send an unkeyed hash of an identifier.

    Parameters
    ----------
    customer_number : int
        The retail CustomerID.
    n_shards : int, default=3
        Number of UK shards.

    Returns
    -------
    int
        Shard number in ``[0, n_shards)``, stable across runs and platforms.
    """
    digest = hashlib.sha256(str(int(customer_number)).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") % n_shards


def _retail_partner_region(customers: pd.Index, countries: pd.Series) -> pd.Series:
    """Partner of each customer: ``UK-1`` .. ``UK-3``, Germany, France or Rest of world."""
    country = countries.to_numpy(dtype=object)
    shards = np.array([f"UK-{uk_shard(c) + 1}" for c in customers], dtype=object)
    region = np.where(np.isin(country, ["Germany", "France"]), country, "Rest of world")
    region = np.where(country == _UK, shards, region)
    return pd.Series(region, index=customers, name="partner_region", dtype="str")


def _retail_frame(features: pd.DataFrame) -> pd.DataFrame:
    """Add ``customer_id`` and ``partner_region`` and number the rows from 0."""
    frame = features.sort_index()
    frame.insert(0, "customer_id", [f"retail-{c}" for c in frame.index])
    frame["partner_region"] = _retail_partner_region(frame.index, frame["country"])
    return frame.reset_index(drop=True)


def _load_retail_holdout(data_dir: Path) -> pd.DataFrame:
    """Features before 2011-09-09; target: spend from 2011-09-09 to 2011-12-09."""
    transactions = _read_retail_transactions(data_dir)
    features = retail_customer_features(transactions, snapshot=RETAIL_CUTOFF)
    future = retail_future_spend(transactions, start=RETAIL_CUTOFF, end=RETAIL_END)
    features["future_spend"] = future.reindex(features.index, fill_value=0.0)
    features["future_purchase"] = (features["future_spend"] > 0).astype("int64")
    return _retail_frame(features)


def _load_retail_full(data_dir: Path) -> pd.DataFrame:
    """Features over the whole year at snapshot 2011-12-10, without a target."""
    transactions = _read_retail_transactions(data_dir)
    return _retail_frame(retail_customer_features(transactions, snapshot=RETAIL_SNAPSHOT))


def retail_transactions(data_dir: Path) -> pd.DataFrame:
    """Raw Online Retail lines with synthetic identities instead of the CustomerID.

    Lines without a CustomerID are dropped (they cannot be linked to a customer); each
    customer's lines carry its synthetic e-mail (and phone) in varying forms; the partner
    is the customer's region as in the ``retail`` preset. The CustomerID is removed.
    """
    raw = pd.read_parquet(data_dir / "online_retail.parquet")
    raw = raw.loc[raw["CustomerID"].notna()].reset_index(drop=True)
    customers = raw["CustomerID"].astype("int64")
    tx = _read_retail_transactions(data_dir)
    country = _main_country(tx.loc[tx["clean"]])
    fallback = tx.groupby("customer")["country"].first()
    country = country.reindex(fallback.index).fillna(fallback)
    region = _retail_partner_region(country.index, country)
    line = range(len(raw))
    raw["email"] = [synthetic_email(c, variant=v) for c, v in zip(customers, line, strict=True)]
    raw["phone"] = [synthetic_phone(c, variant=v) for c, v in zip(customers, line, strict=True)]
    raw["partner_region"] = region.reindex(customers).to_numpy()
    return raw.drop(columns=["CustomerID"])


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

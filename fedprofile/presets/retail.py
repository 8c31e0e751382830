"""The UCI Online Retail presets: per-customer features and targets from raw transactions.

Lines are cleaned as ``fedprofile/data/README.md`` describes, grouped per customer into
RFM-style features at a snapshot date, and split into partner regions (three UK shards,
Germany, France, rest of world).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from fedprofile.presets.files import _data_file
from fedprofile.presets.identity import synthetic_email, synthetic_phone

__all__ = [
    "RETAIL_CUTOFF",
    "RETAIL_END",
    "RETAIL_SNAPSHOT",
    "retail_customer_features",
    "retail_future_spend",
    "retail_transactions",
    "uk_shard",
]

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

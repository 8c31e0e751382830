"""Identity in simulation: synthetic e-mails and phones, and customers shared by partners.

The shipped data sets hold no personal identifiers. To exercise the pseudonymisation path,
each customer gets a deterministic synthetic e-mail and UK mobile number derived from its
id, written in varied but equivalent forms (case, spaces, gmail dots and ``+tags``,
national or international phone formats), as real partner files are. A configurable share
of customers can also appear at a second partner, as in real federations.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from sim.partition import Partition

__all__ = ["add_overlap", "retail_transactions", "synthetic_email", "synthetic_phone"]

_FIRST = ("ada", "alan", "grace", "edsger", "barbara", "donald", "frances", "john", "radia",
          "tim", "margaret", "ken", "sophie", "dennis", "hedy", "linus")
_DOMAINS = ("gmail.com", "googlemail.com", "example.co.uk", "mail.example.com")


def _digest(customer: object, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}/{customer}".encode()).digest()[:8], "big")


def synthetic_email(customer: object, *, variant: int = 0) -> str:
    """A synthetic e-mail of ``customer``; variants are the same address written differently."""
    h = _digest(customer, "email")
    name, domain = f"{_FIRST[h % len(_FIRST)]}.{h % 1_000_003:x}", _DOMAINS[(h >> 8) % 4]
    if variant % 3 == 1:
        return f"  {name.upper()}@{domain.upper()} "
    if variant % 3 == 2 and domain in ("gmail.com", "googlemail.com"):
        other = "googlemail.com" if domain == "gmail.com" else "gmail.com"
        return f"{name.replace('.', '')}+shop@{other}"
    return f"{name}@{domain}"


def synthetic_phone(customer: object, *, variant: int = 0) -> str:
    """A synthetic UK mobile number of ``customer`` (07400 range), national or international."""
    number = f"{_digest(customer, 'phone') % 1_000_000:06d}"
    if variant % 2 == 1:
        return f"+44 7400 {number}"
    return f"07400 {number[:3]} {number[3:]}"


def add_overlap(partitions: list[Partition], *, share: float, id_column: str, seed: int
                ) -> list[Partition]:
    """Copy ``share`` of each partner's customers (all their rows) to another partner."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"The 'share' parameter must be in [0, 1]. Got {share!r} instead.")
    if share == 0.0 or len(partitions) < 2:
        return partitions
    rng = np.random.default_rng(seed)
    extra: list[list[pd.DataFrame]] = [[] for _ in partitions]
    for i, part in enumerate(partitions):
        ids = part.frame[id_column].dropna().unique()
        chosen = rng.choice(ids, size=round(share * len(ids)), replace=False)
        for cid in chosen:
            j = int(rng.choice([x for x in range(len(partitions)) if x != i]))
            extra[j].append(part.frame.loc[part.frame[id_column] == cid])
    return [Partition(name=p.name, frame=pd.concat([p.frame, *more], ignore_index=True))
            if more else p for p, more in zip(partitions, extra, strict=True)]


def retail_transactions(data_dir: Path) -> pd.DataFrame:
    """Raw Online Retail lines with synthetic identities instead of the CustomerID.

    Lines without a CustomerID are dropped (they cannot be linked to a customer); each
    customer's lines carry its synthetic e-mail (and phone) in varying forms; the partner
    is the customer's region as in the ``retail`` preset. The CustomerID is removed.
    """
    from sim.datasets import _main_country, _read_retail_transactions, _retail_partner_region

    raw = pd.read_parquet(data_dir / "online_retail.parquet")
    raw = raw.loc[raw["CustomerID"].notna()].reset_index(drop=True)
    customers = raw["CustomerID"].astype("int64")
    tx = _read_retail_transactions(data_dir)
    country = _main_country(tx.loc[tx["clean"]])
    fallback = tx.groupby("customer")["country"].first()
    country = country.reindex(fallback.index).fillna(fallback)
    region = _retail_partner_region(country.index, country)
    line = np.arange(len(raw))
    raw["email"] = [synthetic_email(c, variant=v) for c, v in zip(customers, line, strict=True)]
    raw["phone"] = [synthetic_phone(c, variant=v) for c, v in zip(customers, line, strict=True)]
    raw["partner_region"] = region.reindex(customers).to_numpy()
    return raw.drop(columns=["CustomerID"])

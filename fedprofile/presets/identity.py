"""Identity in simulation: synthetic e-mails and phones, and customers shared by partners.

The shipped data sets hold no personal identifiers. To exercise the pseudonymisation path,
each customer gets a deterministic synthetic e-mail and UK mobile number derived from its
id, written in varied but equivalent forms (case, spaces, gmail dots and ``+tags``,
national or international phone formats), as real partner files are. A configurable share
of customers can also appear at a second partner, as in real federations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import numpy as np
import pandas as pd

from fedprofile.contract.spec import FeatureSpec
from fedprofile.contract.suggest import did_you_mean
from fedprofile.errors import ContractError, DataError
from fedprofile.presets.partition import Partition
from fedprofile.privacy.pseudonym import normalize_email, normalize_phone

__all__ = ["add_overlap", "customer_keys", "synthetic_email",
           "synthetic_phone"]

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


def customer_keys(frame: pd.DataFrame, spec: FeatureSpec) -> pd.Series | None:
    """The customer each row belongs to at its partner, for splitting transaction tables.

    Parameters
    ----------
    frame : pandas.DataFrame
        The raw table (rows before the partner groups them).
    spec : FeatureSpec
        The contract.

    Returns
    -------
    pandas.Series or None
        None when the contract has no ``[customers]`` section (every row is a customer).
        With an ``[identity]`` section, the identifier the partner's pseudonym is derived
        from: the normalised e-mail when valid, else the normalised phone number (the
        pseudonym is a keyed hash of exactly that, so equal keys mean equal pseudonyms
        under any key); rows with neither get no key, as they get no pseudonym. Without
        identity, the ``[customers] id`` column. Positionally aligned with ``frame``; the
        keys stay in the simulation process.

    Raises
    ------
    ContractError
        If a column the key is read from is not in the table.
    """
    if spec.customers is None:
        return None
    if spec.identity is None:
        return frame[_column(frame, spec.customers.id, "[customers] id")].reset_index(drop=True)
    identity, region = spec.identity, spec.identity.region
    found: dict[str, list[str | None]] = {}
    for tag, column in (("email", identity.email), ("phone", identity.phone)):
        if column:
            values = frame[_column(frame, column, f"[identity] {tag}")]
            normal = normalize_email if tag == "email" else \
                partial(normalize_phone, default_region=region)
            canonical = {v: _canonical(v, normal) for v in values.dropna().unique()}
            found[tag] = [canonical.get(v) if isinstance(v, str) else None for v in values]
    none: list[str | None] = [None] * len(frame)
    keys = [f"email:{e}" if e else (f"phone:{p}" if p else None)
            for e, p in zip(found.get("email", none), found.get("phone", none), strict=True)]
    return pd.Series(keys, dtype=object)


def _column(frame: pd.DataFrame, name: str, role: str) -> str:
    """``name`` if the frame has it, else a ContractError suggesting the closest column."""
    if name in frame.columns:
        return name
    raise ContractError(f"The {role} column {name!r} of the contract is not in the data"
                        f"{did_you_mean(name, frame.columns)}.")


def _canonical(value: object, normal: Callable[[str], str]) -> str | None:
    """The normalised identifier, or None when it is not valid text."""
    if not isinstance(value, str):
        return None
    try:
        return normal(value)
    except DataError:
        return None


def add_overlap(partitions: list[Partition], *, share: float, id_column: str, seed: int
                ) -> list[Partition]:
    """Copy ``share`` of each partner's customers (all their rows) to another partner.

    A partition's customer count (when it has one) grows by the customers it receives.
    """
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
    return [replace(p, frame=pd.concat([p.frame, *more], ignore_index=True),
                    customers=None if p.customers is None else p.customers + len(more))
            if more else p for p, more in zip(partitions, extra, strict=True)]

r"""Keyed pseudonymisation of e-mail addresses and phone numbers.

A pseudonym is ``"<key_id>:<hex>"``, hex being HMAC-SHA256 under the secret key of a
domain tag (``EMAIL_TAG`` or ``PHONE_TAG``, so one string gives different pseudonyms as
e-mail and as phone) followed by the normalised identifier in UTF-8. No unkeyed hash of
an identifier is computed; error messages give reasons, never identifiers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, cast

import pandas as pd
from cryptography.hazmat.primitives import hashes, hmac

from fedprofile.errors import ContractError, DataError
from fedprofile.privacy.keys import PseudonymKey

if TYPE_CHECKING:
    from pandas._typing import Scalar
from fedprofile.privacy.identifiers import (
    _EDGE_RE,
    InvalidIdentifier,
    _check_region,
    normalize_email,
    normalize_phone,
)

__all__ = [
    "EMAIL_TAG",
    "PHONE_TAG",
    "InvalidIdentifier",
    "PseudonymizeReport",
    "Pseudonymizer",
    "check_identity_columns",
    "hmac_sha256",
    "normalize_email",
    "normalize_phone",
    "pseudonymize_frame",
]

EMAIL_TAG = b"fedprofile/email/v1\x00"  # HMAC domain-separation prefix for e-mail addresses
PHONE_TAG = b"fedprofile/phone/v1\x00"  # HMAC domain-separation prefix for phone numbers

_MISSING, _ABSENT = "\x00missing", "\x00absent"


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """Return HMAC-SHA256 of ``message`` under ``key`` (RFC 2104, via ``cryptography``)."""
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(message)
    return mac.finalize()


class Pseudonymizer:
    """Turns identifiers into pseudonyms ``"<key_id>:<64 hex>"`` keyed by a PseudonymKey.

    National phone numbers are read in ``default_region``.
    """

    def __init__(self, key: PseudonymKey, *, default_region: str = "GB") -> None:
        if not isinstance(key, PseudonymKey):
            raise ContractError(f"key must be a PseudonymKey, got {type(key).__name__}")
        self._key = key
        self._region = _check_region(default_region)

    @property
    def key_id(self) -> str:
        """Id of the key; it prefixes every pseudonym."""
        return self._key.key_id

    def email(self, value: str) -> str:
        """Return the pseudonym of an e-mail address (see :func:`normalize_email`)."""
        return self._pseudonym(EMAIL_TAG, normalize_email(value))

    def phone(self, value: str) -> str:
        """Return the pseudonym of a phone number (see :func:`normalize_phone`)."""
        return self._pseudonym(PHONE_TAG, normalize_phone(value, default_region=self._region))

    def _pseudonym(self, tag: bytes, normalised: str) -> str:
        digest = hmac_sha256(self._key.secret, tag + normalised.encode("utf-8"))
        return f"{self._key.key_id}:{digest.hex()}"

    def __repr__(self) -> str:
        """Show the key id and region only, never the secret."""
        return f"Pseudonymizer(key_id={self.key_id!r}, default_region={self._region!r})"


def _add(mine: Any, theirs: Any) -> Any:
    if isinstance(mine, Mapping):
        return dict(sorted((Counter(mine) + Counter(theirs)).items()))
    return mine + theirs


@dataclass(frozen=True)
class PseudonymizeReport:
    """Row counts; ``*_invalid`` map reasons to counts; ``ids_from_phone`` used the fallback."""

    rows: int = 0
    emails_valid: int = 0
    emails_missing: int = 0
    emails_invalid: Mapping[str, int] = field(default_factory=dict)
    phones_valid: int = 0
    phones_missing: int = 0
    phones_invalid: Mapping[str, int] = field(default_factory=dict)
    ids_from_phone: int = 0
    rows_without_identifier: int = 0

    def merge(self, other: PseudonymizeReport) -> PseudonymizeReport:
        """Return a report with the counts of ``self`` and ``other`` added."""
        return PseudonymizeReport(
            **{f.name: _add(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)}
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the counts as plain, JSON-serialisable data."""
        return asdict(self)


def _outcome(value: object, convert: Callable[[str], str]) -> tuple[str | None, str]:
    """Return (pseudonym, reason): reason "" when valid, _MISSING when null or blank."""
    blank = not _EDGE_RE.sub("", value) if isinstance(value, str) else None
    # is_scalar() admits single values only, the kind pd.isna answers with one bool
    if blank or (blank is None and pd.api.types.is_scalar(value)
                 and pd.isna(cast("Scalar | None", value))):
        return None, _MISSING
    try:
        # a non-text cell goes through too: convert refuses it with the reason "... is not text"
        return convert(value), ""  # type: ignore[arg-type]
    except InvalidIdentifier as exc:
        return None, exc.reason


def _tally(outcomes: list[tuple[str | None, str]]) -> tuple[int, int, dict[str, int]]:
    """Return (valid, missing, invalid by reason) counts of one column's outcomes."""
    counts = Counter(reason for _, reason in outcomes)
    counts.pop(_ABSENT, None)
    return counts.pop("", 0), counts.pop(_MISSING, 0), dict(sorted(counts.items()))


def check_identity_columns(
    columns: list[str], email_col: str | None, phone_col: str | None, id_col: str, where: str
) -> None:
    """Refuse identity columns that are not in ``columns``, or an ``id_col`` already there."""
    if email_col is None and phone_col is None:
        raise DataError(f"{where}give email_col and/or phone_col: the column(s) to pseudonymise")
    shown = ", ".join(repr(name) for name in columns[:30]) + (" ..." if len(columns) > 30 else "")
    for param, name in (("email_col", email_col), ("phone_col", phone_col)):
        if name is not None and (not name or name not in columns):
            raise DataError(f"{where}column {name!r} ({param}) not found; columns: {shown}")
    if id_col in columns and id_col not in (email_col, phone_col):
        raise DataError(f"{where}output column {id_col!r} (id_col) already exists; pick another")


def pseudonymize_frame(
    df: pd.DataFrame,
    pseudonymizer: Pseudonymizer,
    *,
    email_col: str | None = None,
    phone_col: str | None = None,
    id_col: str = "pid",
) -> tuple[pd.DataFrame, PseudonymizeReport]:
    """Replace the identity columns of ``df`` by a pseudonym column ``id_col`` (first).

    The pseudonym comes from the e-mail when it is valid, else from the phone number.
    Rows with neither get a null pseudonym; the caller decides whether to drop them.
    ``df`` is not modified; the returned frame lacks the raw identity columns.
    """
    check_identity_columns(list(df.columns), email_col, phone_col, id_col, "")
    absent: list[tuple[str | None, str]] = [(None, _ABSENT)] * len(df)
    emails = [_outcome(v, pseudonymizer.email) for v in df[email_col]] if email_col else absent
    phones = [_outcome(v, pseudonymizer.phone) for v in df[phone_col]] if phone_col else absent
    pids = [e if e is not None else p for (e, _), (p, _) in zip(emails, phones, strict=True)]
    email_counts, phone_counts = _tally(emails), _tally(phones)
    with_id = sum(pid is not None for pid in pids)
    out = df.drop(columns=[name for name in (email_col, phone_col) if name is not None])
    # pandas-stubs types DataFrame.insert without ExtensionArray, which pandas accepts
    out.insert(0, id_col, pd.array(pids, dtype="string"))  # type: ignore[arg-type]
    return out, PseudonymizeReport(
        len(df), *email_counts, *phone_counts, with_id - email_counts[0], len(df) - with_id
    )

r"""Keyed pseudonymisation of e-mail addresses and phone numbers.

A pseudonym is ``"<key_id>:<hex>"``, hex being HMAC-SHA256 under the secret key of a
domain tag (``EMAIL_TAG`` or ``PHONE_TAG``, so one string gives different pseudonyms as
e-mail and as phone) followed by the normalised identifier in UTF-8. No unkeyed hash of
an identifier is computed; error messages give reasons, never identifiers.
"""

from __future__ import annotations

import gzip
import itertools
import os
import re
import secrets
import unicodedata
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pandas as pd
import phonenumbers
import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.hazmat.primitives import hashes, hmac
from phonenumbers import NumberParseException, ValidationResult

from fedprofile.errors import ContractError, DataError
from fedprofile.privacy.keys import PseudonymKey

if TYPE_CHECKING:
    from pandas._typing import Scalar

__all__ = [
    "EMAIL_TAG",
    "PHONE_TAG",
    "InvalidIdentifier",
    "PseudonymizeReport",
    "Pseudonymizer",
    "hmac_sha256",
    "normalize_email",
    "normalize_phone",
    "pseudonymize_chunks",
    "pseudonymize_file",
    "pseudonymize_frame",
]

EMAIL_TAG = b"fedprofile/email/v1\x00"  # HMAC domain-separation prefix for e-mail addresses
PHONE_TAG = b"fedprofile/phone/v1\x00"  # HMAC domain-separation prefix for phone numbers

_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"
_EDGE_RE = re.compile(rf"^[\s{_INVISIBLE}]+|[\s{_INVISIBLE}]+$")
_LOCAL_SPECIALS = frozenset("!#$%&'*+-/=?^_`{|}~.")
_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
_PHONE_CHARS_RE = re.compile(r"\+?[\d\s().\-/]+")
_TOO_SHORT, _TOO_LONG = "phone number is too short", "phone number is too long"
_UNKNOWN_CC = "phone number has an unknown country code"
_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: _UNKNOWN_CC,
    NumberParseException.NOT_A_NUMBER: "phone number is not a number",
    NumberParseException.TOO_SHORT_AFTER_IDD: _TOO_SHORT,
    NumberParseException.TOO_SHORT_NSN: _TOO_SHORT,
    NumberParseException.TOO_LONG: _TOO_LONG,
}
_LENGTH_REASONS = {
    ValidationResult.TOO_SHORT: _TOO_SHORT,
    ValidationResult.TOO_LONG: _TOO_LONG,
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "phone number lacks an area code",
}
_MISSING, _ABSENT = "\x00missing", "\x00absent"
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, pa.ArrowException)


class InvalidIdentifier(DataError):
    """An e-mail address or phone number was rejected; the message is the reason only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise InvalidIdentifier(reason)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """Return HMAC-SHA256 of ``message`` under ``key`` (RFC 2104, via ``cryptography``)."""
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(message)
    return mac.finalize()


def _clean(value: object, what: str, *, lower: bool, spaces: bool) -> str:
    _require(isinstance(value, str), f"{what} is not text")
    text = unicodedata.normalize("NFKC", str(value))
    text = unicodedata.normalize("NFKC", text.lower()) if lower else text
    text = _EDGE_RE.sub("", text)
    _require(bool(text), f"{what} is empty")
    _require(spaces or not any(ch.isspace() for ch in text), f"{what} contains whitespace")
    visible = not any(unicodedata.category(ch).startswith("C") for ch in text)
    _require(visible, f"{what} contains control or invisible characters")
    return text


def _check_parts(local: str, domain: str) -> None:
    _require(bool(local), "e-mail has an empty local part")
    _require(len(local) <= 64, "e-mail local part is longer than 64 characters")
    dots_ok = not (local.startswith(".") or local.endswith(".") or ".." in local)
    _require(dots_ok, "e-mail local part has a leading, trailing or double '.'")
    chars_ok = all(ch.isalnum() or ch in _LOCAL_SPECIALS for ch in local)
    _require(chars_ok, "e-mail local part has a character that is not allowed")
    _require(bool(domain), "e-mail has an empty domain")
    _require("." in domain, "e-mail domain has no '.'")
    for label in domain.split("."):
        _require(bool(label), "e-mail domain has an empty label")
        _require(len(label) <= 63, "e-mail domain label is longer than 63 characters")
        chars_ok = all(ch.isalnum() or ch == "-" for ch in label)
        _require(chars_ok, "e-mail domain has a character that is not allowed")
        hyphen_ok = not (label.startswith("-") or label.endswith("-"))
        _require(hyphen_ok, "e-mail domain label starts or ends with '-'")


def normalize_email(value: str) -> str:
    """Return the canonical e-mail address; raise InvalidIdentifier (reason only) if malformed.

    Strips (unicode) whitespace, applies NFKC and lowercases. Only for ``gmail.com`` and
    ``googlemail.com`` are dots and a ``+tag`` dropped from the local part and the domain
    mapped to ``gmail.com``: other providers may treat dots and ``+`` as significant.
    """
    text = _clean(value, "e-mail", lower=True, spaces=False)
    _require("@" in text, "e-mail has no '@'")
    _require(text.count("@") == 1, "e-mail has more than one '@'")
    _require(len(text) <= 254, "e-mail is longer than 254 characters")
    local, _, domain = text.partition("@")
    _check_parts(local, domain)
    if domain in _GMAIL_DOMAINS:
        local, domain = local.partition("+")[0].replace(".", ""), "gmail.com"
        _require(bool(local), "e-mail has an empty local part")
    return f"{local}@{domain}"


def _check_region(region: str) -> str:
    if isinstance(region, str) and region.upper() in phonenumbers.SUPPORTED_REGIONS:
        return region.upper()
    raise ContractError(f"default_region must be a region code such as 'GB', got {region!r}")


def _parse_phone(text: str, region: str) -> tuple[phonenumbers.PhoneNumber | None, str]:
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        return None, _PARSE_REASONS.get(exc.error_type, "phone number cannot be parsed")
    length = phonenumbers.is_possible_number_with_reason(number)
    if length != ValidationResult.IS_POSSIBLE:
        return None, _LENGTH_REASONS.get(length, "phone number has an impossible length")
    if not phonenumbers.is_valid_number(number):
        return None, "phone number is not a valid number for its country"
    return number, ""


def normalize_phone(value: str, *, default_region: str = "GB") -> str:
    """Return a phone number in E.164 form; raise InvalidIdentifier (reason only) if invalid.

    National numbers are read in ``default_region`` (unknown region: ContractError);
    international ones may start with ``+``, the region's exit code or ``00``. Only
    digits, spaces, ``- . ( ) /`` and a leading ``+`` are accepted.
    """
    region = _check_region(default_region)
    text = re.sub(r"\s+", " ", _clean(value, "phone number", lower=False, spaces=True))
    allowed = _PHONE_CHARS_RE.fullmatch(text) is not None
    _require(allowed, "phone number has characters other than digits, spaces, -.()/ and '+'")
    number, reason = _parse_phone(text, region)
    digits = re.sub(r"\D", "", text)
    if number is None and digits.startswith("00") and not text.startswith("+"):
        number, _ = _parse_phone("+" + digits[2:], region)
    if number is None:
        raise InvalidIdentifier(reason)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


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


def _check_columns(
    columns: list[str], email_col: str | None, phone_col: str | None, id_col: str, where: str
) -> None:
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
    _check_columns(list(df.columns), email_col, phone_col, id_col, "")
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


def _file_kind(path: Path, role: str) -> tuple[str, bool]:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv", name.endswith(".gz")
    if name.endswith((".parquet", ".pq")):
        return "parquet", False
    raise DataError(f"{role} file {path}: unsupported suffix; use .csv, .csv.gz, .parquet or .pq")


def _input_schema(path: Path, kind: str) -> pa.Schema:
    try:
        if kind == "parquet":
            return pq.read_schema(path).remove_metadata()
        header = pd.read_csv(path, nrows=0, dtype=str)
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read {path} as {kind} ({type(exc).__name__})") from None
    return pa.schema([pa.field(str(name), pa.string()) for name in header.columns])


def _read_chunks(path: Path, kind: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        if kind == "parquet":
            with pq.ParquetFile(path) as parquet:
                for batch in parquet.iter_batches(batch_size=chunk_rows):
                    yield batch.to_pandas()
        else:
            with pd.read_csv(
                path, chunksize=chunk_rows, dtype=str, keep_default_na=False, na_values=[""]
            ) as reader:
                yield from reader
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read {path} as {kind} ({type(exc).__name__})") from None


@contextmanager
def _writer(path: Path, kind: tuple[str, bool], schema: pa.Schema) -> Iterator[Any]:
    if kind[0] == "parquet":
        with pq.ParquetWriter(path, schema) as writer:
            yield lambda frame: writer.write_table(
                pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
            )
        return
    opener: Callable[..., Any] = gzip.open if kind[1] else open
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        pd.DataFrame(columns=schema.names).to_csv(handle, index=False)
        yield lambda frame: frame.to_csv(handle, index=False, header=False)


def _check_target(target: Path) -> None:
    if not target.parent.is_dir():
        raise DataError(f"output directory {target.parent} does not exist")


def _write_pseudonymized(
    chunks: Iterable[pd.DataFrame],
    target: Path,
    out_kind: tuple[str, bool],
    out_schema: pa.Schema,
    pseudonymizer: Pseudonymizer,
    *,
    email_col: str | None,
    phone_col: str | None,
    id_col: str,
    where: str,
    progress: Callable[[int], None] | None,
) -> PseudonymizeReport:
    """Pseudonymise ``chunks`` into a staging file that replaces ``target`` once complete."""
    report = PseudonymizeReport()
    staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    try:
        with _writer(staging, out_kind, out_schema) as write:
            for chunk in chunks:
                frame, part = pseudonymize_frame(
                    chunk, pseudonymizer, email_col=email_col, phone_col=phone_col, id_col=id_col
                )
                try:
                    write(frame)
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                    changed = _changed_columns(frame, out_schema)
                    raise DataError(
                        f"{where}column(s) {changed} change type between chunks (a number "
                        "column with empty values, or mixed values); cast them in the query "
                        "or write a CSV output"
                    ) from None
                report = report.merge(part)
                if progress is not None:
                    progress(part.rows)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return report


def _changed_columns(frame: pd.DataFrame, schema: pa.Schema) -> list[str]:
    changed = []
    for item in schema:
        try:
            pa.array(frame[item.name], from_pandas=True).cast(item.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            changed.append(item.name)
    return changed


def pseudonymize_file(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    pseudonymizer: Pseudonymizer,
    *,
    email_col: str | None = None,
    phone_col: str | None = None,
    id_col: str = "pid",
    chunk_rows: int = 100_000,
    progress: Callable[[int], None] | None = None,
) -> PseudonymizeReport:
    """Pseudonymise a CSV or Parquet file chunk by chunk into a CSV or Parquet file.

    Formats follow the suffixes ``.csv``, ``.csv.gz``, ``.parquet``, ``.pq``; CSV is read as
    text so values pass through unchanged. The output replaces ``out_path`` once complete.
    ``progress`` gets each chunk's row count; columns and report are as in
    :func:`pseudonymize_frame`. Bad files, suffixes or columns raise DataError naming them.
    """
    source, target = Path(in_path), Path(out_path)
    in_kind, out_kind = _file_kind(source, "input"), _file_kind(target, "output")
    _check_chunk_rows(chunk_rows)
    if not source.is_file():
        raise DataError(f"input file {source} does not exist")
    _check_target(target)
    if target.exists() and target.resolve() == source.resolve():
        raise DataError(f"output file {target} is the input file; choose another path")
    schema = _input_schema(source, in_kind[0])
    _check_columns(schema.names, email_col, phone_col, id_col, f"{source}: ")
    kept = [item for item in schema if item.name not in (email_col, phone_col)]
    out_schema = pa.schema([pa.field(id_col, pa.string()), *kept])
    return _write_pseudonymized(
        _read_chunks(source, in_kind[0], chunk_rows), target, out_kind, out_schema,
        pseudonymizer, email_col=email_col, phone_col=phone_col, id_col=id_col,
        where=f"{source}: ", progress=progress,
    )


def pseudonymize_chunks(
    chunks: Iterable[pd.DataFrame],
    out_path: str | os.PathLike[str],
    pseudonymizer: Pseudonymizer,
    *,
    source: str,
    email_col: str | None = None,
    phone_col: str | None = None,
    id_col: str = "pid",
    progress: Callable[[int], None] | None = None,
) -> PseudonymizeReport:
    """Pseudonymise a table given in chunks (a database query, a Parquet folder) into a file.

    As :func:`pseudonymize_file`, for a table that is not one file: ``source`` names it in
    errors (a database URL without its password). The output's columns and, for Parquet, its
    column types are those of the first chunk (a column empty there is text); a later chunk
    whose types cannot be cast to them is a DataError. The identity columns should come as
    text (as a CSV is read), so that a phone number stored as a number keeps its digits.
    """
    target = Path(out_path)
    out_kind = _file_kind(target, "output")
    _check_target(target)
    where = f"{source}: "
    iterator = iter(chunks)
    try:
        first = next(iterator, None)
        if first is None:
            raise DataError(f"{where}the table has no rows")
        _check_columns([str(c) for c in first.columns], email_col, phone_col, id_col, where)
        kept = _frame_schema(first.drop(columns=[c for c in (email_col, phone_col) if c]))
        out_schema = pa.schema([pa.field(id_col, pa.string()), *kept])
        return _write_pseudonymized(
            itertools.chain([first], iterator), target, out_kind, out_schema, pseudonymizer,
            email_col=email_col, phone_col=phone_col, id_col=id_col, where=where,
            progress=progress,
        )
    finally:  # a reader stopped early closes its connection now, not when collected
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _frame_schema(frame: pd.DataFrame) -> pa.Schema:
    """Arrow types of ``frame``'s columns; a column with no value in it is text."""
    schema = pa.Schema.from_pandas(frame, preserve_index=False).remove_metadata()
    return pa.schema(
        [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in schema]
    )


def _check_chunk_rows(chunk_rows: int) -> None:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ContractError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")

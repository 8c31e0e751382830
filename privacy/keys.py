"""Secret keys for pseudonymisation: generation, key files, rotation.

A key file is a small JSON document holding the key id, its creation time and the
256-bit secret in base64. Key files are created with mode 0600 and never overwritten
unless asked. The secret never appears in a ``repr``, a ``str`` or an error message.

Pseudonyms have the form ``"<key_id>:<64 hex digits>"``, so
:func:`fedprofile.privacy.keyring.key_id_of` tells which key produced a pseudonym and data
made under a rotated-out key is recognised (rotation: :mod:`fedprofile.privacy.keyring`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import stat
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fedprofile.errors import DataError, PrivacyWarning

__all__ = [
    "KEY_FILE_FORMAT",
    "SECRET_BYTES",
    "PseudonymKey",
    "generate_key",
    "load_key",
    "write_key",
]

SECRET_BYTES = 32
"""Length of a pseudonymisation secret in bytes (256 bits)."""

KEY_FILE_FORMAT = "fedprofile/pseudonym-key/v1"
"""Value of the ``format`` field written to every key file."""

_KEY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_REQUIRED_FIELDS = ("key_id", "created_at", "secret")


def _check_key_id(key_id: object) -> str:
    if not isinstance(key_id, str) or _KEY_ID_RE.fullmatch(key_id) is None:
        raise DataError(
            "key_id must be 1-64 characters from letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return key_id


def _check_created_at(created_at: object) -> str:
    if not isinstance(created_at, str):
        raise DataError("created_at must be an ISO-8601 UTC timestamp string")
    try:
        moment = datetime.fromisoformat(created_at)
    except ValueError:
        raise DataError(
            f"created_at must be an ISO-8601 UTC timestamp, got {created_at!r}"
        ) from None
    offset = moment.utcoffset()
    if offset is None or offset.total_seconds() != 0:
        raise DataError(f"created_at must be in UTC (suffix 'Z' or '+00:00'), got {created_at!r}")
    return created_at


@dataclass(frozen=True)
class PseudonymKey:
    """A secret key for keyed pseudonymisation.

    Parameters
    ----------
    key_id : str
        Public identifier of the key; it prefixes every pseudonym made with it.
    created_at : str
        ISO-8601 UTC creation time.
    secret : bytes
        The 32-byte secret; excluded from ``repr`` and ``str``.
    """

    key_id: str
    created_at: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        """Check the id, the timestamp and the secret's length."""
        _check_key_id(self.key_id)
        _check_created_at(self.created_at)
        if not isinstance(self.secret, bytes) or len(self.secret) != SECRET_BYTES:
            length = len(self.secret) if isinstance(self.secret, bytes) else "non-bytes"
            raise DataError(f"secret must be {SECRET_BYTES} bytes, got {length}")


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generate_key(*, key_id: str | None = None) -> PseudonymKey:
    """Create a new random key.

    Parameters
    ----------
    key_id : str, optional
        Identifier to use; by default ``"k-"`` plus 12 random hex digits,
        independent of the secret.

    Returns
    -------
    PseudonymKey
        A key with a fresh 256-bit secret from the operating system's CSPRNG.
    """
    chosen = key_id if key_id is not None else f"k-{secrets.token_hex(6)}"
    secret = secrets.token_bytes(SECRET_BYTES)
    return PseudonymKey(key_id=chosen, created_at=_utc_now(), secret=secret)


def _key_document(key: PseudonymKey) -> bytes:
    document = {
        "format": KEY_FILE_FORMAT,
        "key_id": key.key_id,
        "created_at": key.created_at,
        "secret": base64.b64encode(key.secret).decode("ascii"),
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _write_exclusive(path: Path, payload: bytes) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def write_key(key: PseudonymKey, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``key`` to a new key file readable by its owner only (mode 0600).

    Parameters
    ----------
    key : PseudonymKey
        The key to store.
    path : str or os.PathLike
        Destination file.
    overwrite : bool, default False
        Replace an existing file (atomically) instead of refusing.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    DataError
        If the file exists and ``overwrite`` is false, or it cannot be written.
    """
    target = Path(path)
    payload = _key_document(key)
    try:
        if not overwrite:
            _write_exclusive(target, payload)
            return target
        staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        _write_exclusive(staging, payload)
        try:
            os.replace(staging, target)
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
    except FileExistsError:
        raise DataError(
            f"key file {target} already exists; refusing to overwrite it "
            "(pass overwrite=True to replace it, which orphans pseudonyms made with the old key)"
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DataError(f"cannot write key file {target}: {reason}") from None
    return target


def _warn_if_shared(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        warnings.warn(
            f"key file {path} has mode {mode:04o} and is accessible to group/other users; "
            f"restrict it with 'chmod 600 {path}'",
            PrivacyWarning,
            stacklevel=3,
        )


def _read_document(path: Path) -> dict[str, object]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"key file {path} is not UTF-8 text; expected a JSON key file") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DataError(f"cannot read key file {path}: {reason}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        raise DataError(f"key file {path} is not valid JSON; expected a key file") from None
    if not isinstance(document, dict):
        raise DataError(f"key file {path} must hold a JSON object")
    return document


def _decode_secret(path: Path, encoded: object) -> bytes:
    if not isinstance(encoded, str):
        raise DataError(f"key file {path}: field 'secret' must be a base64 string")
    try:
        secret = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise DataError(f"key file {path}: field 'secret' is not valid base64") from None
    if len(secret) != SECRET_BYTES:
        raise DataError(
            f"key file {path}: secret must be {SECRET_BYTES} bytes, found {len(secret)}"
        )
    return secret


def load_key(path: str | os.PathLike[str]) -> PseudonymKey:
    """Read a key file written by :func:`write_key`.

    Parameters
    ----------
    path : str or os.PathLike
        The key file.

    Returns
    -------
    PseudonymKey
        The stored key.

    Raises
    ------
    DataError
        If the file is missing, unreadable, malformed, lacks a field or holds a
        secret that is not 32 bytes. The message names the file, never the secret.

    Warns
    -----
    PrivacyWarning
        If the file is readable or writable by group or other users.
    """
    source = Path(path)
    if not source.is_file():
        raise DataError(
            f"key file {source} does not exist or is not a file; "
            "create one with generate_key() and write_key()"
        )
    _warn_if_shared(source)
    document = _read_document(source)
    missing = [name for name in _REQUIRED_FIELDS if name not in document]
    if missing:
        raise DataError(f"key file {source} lacks field(s): {', '.join(missing)}")
    declared = document.get("format", KEY_FILE_FORMAT)
    if declared != KEY_FILE_FORMAT:
        raise DataError(f"key file {source} has format {declared!r}; expected {KEY_FILE_FORMAT!r}")
    secret = _decode_secret(source, document["secret"])
    try:
        return PseudonymKey(
            key_id=_check_key_id(document["key_id"]),
            created_at=_check_created_at(document["created_at"]),
            secret=secret,
        )
    except DataError as exc:
        raise DataError(f"key file {source}: {exc}") from None
